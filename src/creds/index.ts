/** systemd credentials: systemd-creds encrypt/decrypt, the credential store, sealed identities. */
export {
  type CredentialItem,
  type Credstore,
  closeCredstore,
  commitCredentials,
  DEFAULT_CREDSTORE_DIR,
  openCredstore,
  type PreparedCredential,
  prepareCredentials,
  removeStale,
  type SyncStatus,
  storedCredentials,
} from "./credstore.js";
export { loadSealedIdentities, parseKeyMaterial } from "./sealed-identity.js";
export {
  CREDENTIAL_KEYS,
  type CredentialKey,
  decryptCredentialBytes,
  encryptCredential,
  encryptCredentialBytes,
  isCredentialKey,
  readCredentialFile,
  type SealedWith,
  type SystemdCredsOptions,
  sealedWith,
  validateCredentialName,
} from "./systemd-creds.js";

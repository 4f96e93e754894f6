/** Where identities and recipients come from: the public face of src/keys/. */
export {
  defaultIdentityPath,
  loadDefaultIdentities,
  SshDerivedX25519Identity,
} from "./default-identities.js";
export { newAgeKeyPair, newSshEd25519KeyPair, newWireGuardKeyPair } from "./generate.js";
export { loadIdentities, loadIdentitiesAsRecipients } from "./identities.js";
export {
  generateIdentity,
  type KeyContext,
  looksLikeSecretKey,
  parseIdentityString,
  parseRecipientString,
  pluginNameOfRecipient,
  recipientOfIdentity,
} from "./key-types.js";
export { loadRecipients, readKeyFile } from "./recipients.js";
export { looksLikeSshPublicKeys, sshPublicKeysToAgeRecipients } from "./ssh-public-keys.js";

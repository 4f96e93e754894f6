/** Where identities and recipients come from: the public face of src/keys/. */
export { defaultIdentityPath, identityFiles, loadDefaultIdentities } from "./default-identities.js";
export { loadIdentities, loadIdentitiesAsRecipients } from "./identities.js";
export {
  type KeyContext,
  parseIdentityString,
  parseRecipientString,
  recipientOfIdentity,
} from "./key-types.js";
export { loadRecipients, readKeyFile, readKeyFileText } from "./recipients.js";
export {
  looksLikeSshPrivateKey,
  parseSshPrivateKey,
  type SshKeyIdentity,
  type SshPrivateKeyOptions,
  sshPrivateKeyToAgeIdentity,
} from "./ssh-private.js";
export {
  looksLikeSshPublicKey,
  parseSshPublicKey,
  parseSshPublicKeyLine,
  sshFingerprint,
  sshPublicKeyToAgeRecipient,
} from "./ssh-public.js";

/** SSH keys for age (what Go's agessh is): the ssh-ed25519 and ssh-rsa recipients and identities, the
 * public key line, private key files (OpenSSH and PEM) and the wire encoding. The public face of src/ssh/. */
export {
  SSH_ED25519_STANZA,
  SshEd25519Identity,
  SshEd25519Recipient,
  type SshEd25519Transfer,
} from "./ed25519.js";
export type { SshKeyIdentity } from "./key-identity.js";
export { generateSshEd25519Key } from "./openssh-writer.js";
export { looksLikeSshPrivateKey, MAX_SSH_KEY_FILE_SIZE, parseSshPrivateKey } from "./private-key.js";
export {
  decodeSshPublicKeyLine,
  isKnownUnsupportedSshType,
  looksLikeSshPublicKey,
  parseSshPublicKey,
  sshFingerprint,
  sshPublicKeyToAgeRecipient,
  sshPublicKeyWire,
} from "./public-key.js";
export { SSH_RSA_STANZA, SshRsaIdentity, SshRsaRecipient, type SshRsaTransfer } from "./rsa.js";

/** The age v1 format: the public face of src/age/. */

export type { EncryptOptions } from "./age.js";
export {
  AgeDecryptor,
  AgeEncryptor,
  decrypt,
  describeStanzas,
  encrypt,
  readHeader,
  unwrapFileKey,
} from "./age.js";
export { ARMOR_FOOTER, ARMOR_HEADER, ArmorDecoder, ArmorEncoder, looksArmored } from "./armor.js";
export { decodeBech32, encodeBech32 } from "./bech32.js";
export { type Header, parseHeader } from "./format.js";
export { HYBRID_STANZA, HybridIdentity, HybridRecipient } from "./hybrid.js";
export type { PluginOptions, PluginUI, PluginUnwrapResult } from "./plugin.js";
export {
  encodePluginIdentity,
  encodePluginRecipient,
  findPluginBinary,
  isPluginIdentity,
  isPluginRecipient,
  isValidPluginName,
  nonInteractivePluginUI,
  PluginIdentity,
  PluginRecipient,
  parsePluginIdentity,
  parsePluginKey,
  parsePluginRecipient,
  pluginBinaryName,
  pluginIdentities,
  pluginNameOf,
  pluginRecipients,
} from "./plugin.js";
export {
  SSH_ED25519_STANZA,
  SshEd25519Identity,
  SshEd25519Recipient,
  sshEd25519ToAgeRecipient,
  sshEd25519ToX25519Identity,
} from "./ssh-ed25519.js";
export { SSH_RSA_STANZA, SshRsaIdentity, SshRsaRecipient } from "./ssh-rsa.js";
export { CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, PayloadDecryptor, PayloadEncryptor } from "./stream.js";
export {
  PARALLEL_THRESHOLD,
  type ParallelOptions,
  ParallelPayloadDecryptor,
  ParallelPayloadEncryptor,
  StreamWorkerPool,
} from "./stream-parallel.js";
export { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";
export { X25519Identity, X25519Recipient } from "./x25519.js";

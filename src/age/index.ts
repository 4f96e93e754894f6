/** The age v1 format: the public face of src/age/. */

export {
  AgeDecryptor,
  AgeEncryptor,
  decrypt,
  decryptHeader,
  describeStanzas,
  type ExtractedHeader,
  encrypt,
  encryptHeader,
  extractHeader,
  fileKeyIdentity,
  readHeader,
  verifyPayload,
} from "./age.js";
export { ArmorDecoder, ArmorEncoder, looksArmored } from "./armor.js";
export { decodeBech32 } from "./bech32.js";
export { type Header, looksLikeAgeBinary, parseHeader } from "./format.js";
export { HYBRID_STANZA, HybridIdentity, HybridRecipient, loadMlKem } from "./hybrid.js";
export type { PluginUI } from "./plugin.js";
export {
  isPluginIdentity,
  isPluginRecipient,
  nonInteractivePluginUI,
  PluginIdentity,
  PluginRecipient,
  pluginIdentities,
  pluginNameOf,
  pluginRecipients,
} from "./plugin.js";
export {
  hkdfSha256,
  openZeroNonce,
  sealZeroNonce,
  x25519,
  x25519Ephemeral,
  x25519PrivateKey,
  x25519PublicBytes,
  x25519PublicKey,
} from "./primitives.js";
export { ScryptIdentity, ScryptRecipient } from "./scrypt.js";
export { PayloadEncryptor } from "./stream.js";
export { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";
export { X25519_STANZA, X25519Identity, X25519Recipient, type X25519Transfer } from "./x25519.js";

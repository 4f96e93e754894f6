/** Activation: manifest in, generation out. The public face of src/install/. */
export { type CheckReport, checkManifestFiles } from "./check.js";
export { type GenerationMeta, Generations, type MetaEntry } from "./generations.js";
export { type InstallOptions, type InstallReport, install } from "./installer.js";
export {
  MANIFEST_VERSION,
  MAX_MANIFEST_SIZE,
  type Manifest,
  type ManifestEntry,
  type ManifestIdentity,
  type ManifestSecret,
  type ManifestTemplate,
  parseManifest,
  readManifest,
  validateManifest,
} from "./manifest.js";
export { ensureRamDir, RAMFS_MAGIC, ramKindOf, TMPFS_MAGIC } from "./mount.js";
export { OwnerResolver } from "./owners.js";
export { GenerationDirSink, type InstallEntry, type SecretSink } from "./sink.js";

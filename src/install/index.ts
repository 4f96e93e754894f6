/** Activation: manifest in, generation out. The public face of src/install/. */
export { checkManifestFiles } from "./check.js";
export { type EarlyWorker, startEarlyWorker } from "./early-worker.js";
export { replaceSymlink } from "./generations.js";
export { type InstallReport, install } from "./installer.js";
export { InstallLock } from "./lock.js";
export { parseManifest, readManifestText } from "./manifest.js";
export { ramKindOf } from "./mount.js";
export { OwnerResolver } from "./owners.js";
export { createSecretFile } from "./sink.js";
export { decryptSource, readEncryptedFile } from "./sources.js";
export { systemctlVerb } from "./systemctl.js";

/** Activation: manifest in, generation out. The public face of src/install/. */
export { checkManifestFiles } from "./check.js";
export { type InstallReport, install } from "./installer.js";
export { readManifest } from "./manifest.js";

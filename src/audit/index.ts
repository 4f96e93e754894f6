/** The leak scanner: the public face of src/audit/. */
export { type AuditReport, auditPaths, type Leak } from "./audit.js";
export { DEFAULT_MIN_LENGTH, ENCODINGS } from "./encodings.js";
export type { ScanStats } from "./scan.js";
export { type LoadedSecrets, loadSecrets, wipeSecrets } from "./secrets.js";
export { closureOf, derivationsOf, storePathOf } from "./store.js";

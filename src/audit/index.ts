/** The leak scanner: the public face of src/audit/. */
export {
  type AuditOptions,
  type AuditReport,
  auditPaths,
  type Leak,
  prepareSecrets,
  type SkippedSecret,
} from "./audit.js";
export {
  DEFAULT_MIN_LENGTH,
  describeSkip,
  ENCODINGS,
  type EncodedPattern,
  type EncodingName,
  encodeAs,
  encodingLabel,
  patternsFor,
  skipReason,
} from "./encodings.js";
export { Matcher, Scanner } from "./matcher.js";
export {
  type Hit,
  type HitPlace,
  type ScanOptions,
  type ScanResult,
  type ScanStats,
  scanPaths,
} from "./scan.js";
export {
  type AuditSecret,
  coveredFiles,
  type LoadedSecrets,
  loadSecrets,
  type UndecryptableFile,
  wipeSecrets,
} from "./secrets.js";
export { closureOf, type Derivations, derivationsOf, storePathOf } from "./store.js";

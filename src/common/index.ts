/** The public face of src/common/. */

export {
  AtomicFile,
  abortAllAtomicFiles,
  syncDirectory,
  writeFileAtomic,
  writeNewFileAtomic,
  writeOutputFile,
} from "./atomic-file.js";
export { decodeBase64NoPad, encodeBase64NoPad, isCanonicalPaddedBase64 } from "./base64.js";
export { asBuffer, concatBytes, constantTimeEqual, utf8, wipe } from "./bytes.js";
export { enterEfficiencyMode } from "./efficiency-mode.js";
export { ioError, isNixsealError, NixsealError, rethrowUnlessNixseal } from "./errors.js";
export { readAll, readAllSync, readSome, writeAllSync } from "./fd-io.js";
export { nodeFs } from "./node-fs.js";
export { findExecutable } from "./path-search.js";
export { type Captured, captureOutput, childProcess } from "./processes.js";
export {
  MAX_PASSWORD_LENGTH,
  PASSWORD_CHARSETS,
  type PasswordCharset,
  randomCharacters,
  randomHex,
} from "./random-text.js";
export {
  checkShaCryptParameters,
  randomShaCryptSalt,
  SHA_CRYPT_DEFAULT_ROUNDS,
  SHA_CRYPT_MAX_PASSWORD,
  sha512Crypt,
} from "./sha-crypt.js";
export {
  booleanField,
  CREDENTIAL_KEYS,
  type CredentialKey,
  DUPLICATE_KEY_HINT,
  duplicateKey,
  enumField,
  type Field,
  type FieldTable,
  integerField,
  isObject,
  type Json,
  nullable,
  Problems,
  parseMode,
  pathProblem,
  principalProblem,
  readList,
  readMode,
  readObject,
  readPath,
  readPrincipal,
  readUnits,
  shown,
  stringField,
  typeName,
  unitNameProblem,
  validateCredentialName,
} from "./validation.js";
export { walkFiles } from "./walk.js";

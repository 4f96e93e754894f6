/** The user's secrets repository: the public face of src/vault/. */

export { type CheckProblem, type CheckReport, checkRepository } from "./check.js";
export { describeRecipient, normalizeRecipient, type RecipientInfo } from "./describe.js";
export { lastChanges } from "./git-info.js";
export { RECIPIENTS_RECORD_STANZA, recipientsDigest, withRecipientsRecord } from "./recipients-record.js";
export {
  LOCK_FILE,
  type RekeyOptions,
  type RekeyResult,
  rekeyRepository,
  sweepStaleTempFiles,
} from "./rekey.js";
export {
  compactNixError,
  evaluateRules,
  findRulesFile,
  findSecret,
  loadRules,
  parseRules,
  RULES_FILE,
  type Rules,
  requireSecret,
  type SecretRule,
} from "./rules.js";
export {
  decryptSecret,
  MAX_SECRET_FILE_SIZE,
  readSecretFile,
  recipientsFor,
  writeSecret,
} from "./secrets.js";

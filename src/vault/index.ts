/**
 * The user's secrets repository: the public face of src/vault/.
 * rekey.ts, check.ts, describe.ts, git-info.ts and edit-session.ts are imported directly by the
 * commands that use them: re-exporting them here would load rekey's worker machinery into the
 * start-up of every command.
 */
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

/** The user's secrets repository: the public face of src/vault/. */
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

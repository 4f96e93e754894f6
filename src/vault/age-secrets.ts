/**
 * Reading and writing a repository's age secrets, and describing recipients: loaded at first use
 * through loadAgeSecrets() in index.ts, since they load src/age, src/keys and src/ssh, which a
 * command that only evaluates rules or plans generators (check, generate with nothing to do) never
 * needs.
 */
export { describeRecipient, normalizeRecipient } from "./describe.js";
export { decryptSecret, encryptSecret, recipientsFor, recordNamesRule, writeSecret } from "./secrets.js";

/**
 * The user's secrets repository: the public face of src/vault/.
 * What reads or writes age secrets (secrets.ts, describe.ts) is loaded at first use through
 * loadAgeSecrets(): it loads src/age, src/keys and src/ssh.
 * What reads sops files or rekeys (check, rekey, sops-files, sops-rekey) is loaded at first use
 * through loadSopsAndRekey(): a static re-export here would load src/sops/ and rekey's worker
 * machinery into every command that only decrypts or encrypts an age secret.
 */

export type { CheckReport } from "./check.js";
export {
  chooseEditBase,
  type EditorOutcome,
  EditSession,
  editorString,
  runEditor,
  sweepStaleEditDirs,
  wipeTree,
} from "./edit-session.js";
export { lastChanges } from "./git-info.js";
export {
  hostNameProblem,
  readHostsFile,
  renderHostsFile,
  rulesImportHostsFile,
  writeHostsFile,
} from "./hosts-file.js";
export type { RekeyFailure, RekeyProgress, RekeyResult } from "./rekey.js";
export {
  compactNixError,
  evaluationRoot,
  findRulesFile,
  findSecret,
  loadNixValue,
  loadRules,
  loadRulesAsync,
  MAX_SECRET_FILE_SIZE,
  RULES_FILE,
  type Rules,
  requireSecret,
  type SecretRule,
} from "./rules.js";
export type { SopsExpectation } from "./sops-files.js";
export type { SopsTarget } from "./sops-rekey.js";

/** decryptSecret, encryptSecret, writeSecret, recipientsFor, recordNamesRule, describeRecipient, normalizeRecipient: loaded at first use (age-secrets.ts). */
export function loadAgeSecrets(): Promise<typeof import("./age-secrets.js")> {
  return import("./age-secrets.js");
}

/**
 * readRepositoryFile and the other sops-file functions alone, loaded at first use: reading one
 * sops file (`decrypt`) needs none of rekey's machinery (its worker threads, locks, writers).
 */
export function loadSopsFiles(): Promise<typeof import("./sops-files.js")> {
  return import("./sops-files.js");
}

/**
 * decryptSecret alone, loaded at first use: a command that only reads a secret (decrypt) needs
 * none of what loadAgeSecrets() brings for writing and describing secrets.
 */
export function loadSecretReader(): Promise<typeof import("./secret-reader.js")> {
  return import("./secret-reader.js");
}

/** checkRepository, rekeyRepository and the sops-file functions, loaded at first use. */
export function loadSopsAndRekey(): Promise<typeof import("./sops-and-rekey.js")> {
  return import("./sops-and-rekey.js");
}

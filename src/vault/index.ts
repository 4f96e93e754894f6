/**
 * The user's secrets repository: the public face of src/vault/.
 * What reads sops files or rekeys (check, rekey, sops-files, sops-rekey) is loaded at first use
 * through loadSopsAndRekey(): a static re-export here would load src/sops/ and rekey's worker
 * machinery into every command that only decrypts or encrypts an age secret.
 */

export type { CheckReport } from "./check.js";
export { describeRecipient, normalizeRecipient } from "./describe.js";
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
  RULES_FILE,
  type Rules,
  requireSecret,
  type SecretRule,
} from "./rules.js";
export {
  decryptSecret,
  encryptSecret,
  MAX_SECRET_FILE_SIZE,
  recipientsFor,
  recordNamesRule,
  writeSecret,
} from "./secrets.js";
export type { SopsExpectation } from "./sops-files.js";
export type { SopsTarget } from "./sops-rekey.js";

/** checkRepository, rekeyRepository and the sops-file functions, loaded at first use. */
export function loadSopsAndRekey(): Promise<typeof import("./sops-and-rekey.js")> {
  return import("./sops-and-rekey.js");
}

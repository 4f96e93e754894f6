/**
 * The user's secrets repository: the public face of src/vault/.
 * rekey.ts, check.ts, describe.ts, git-info.ts and edit-session.ts are imported directly by the
 * commands that use them: re-exporting them here would load rekey's worker machinery into the
 * start-up of every command.
 */

export { type CheckReport, checkRepository } from "./check.js";
export { describeRecipient, normalizeRecipient } from "./describe.js";
export {
  chooseEditBase,
  type EditorOutcome,
  EditSession,
  editorString,
  runEditor,
  sweepStaleEditDirs,
} from "./edit-session.js";
export { lastChanges } from "./git-info.js";
export { type RekeyFailure, type RekeyProgress, type RekeyResult, rekeyRepository } from "./rekey.js";
export { findRulesFile, findSecret, loadRules, RULES_FILE, type Rules, requireSecret } from "./rules.js";
export { decryptSecret, MAX_SECRET_FILE_SIZE, recipientsFor, writeSecret } from "./secrets.js";
export {
  diffSopsRecipients,
  expectationOfCreationRule,
  readRepositoryFile,
  rewrappedKeyGroups,
  type SopsExpectation,
  withKeyGroups,
} from "./sops-files.js";
export { findSopsTargets, prepareSopsRekey, type SopsTarget, writeSopsRekey } from "./sops-rekey.js";

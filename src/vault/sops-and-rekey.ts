/**
 * The vault's parts that read sops files or rekey: they load src/sops/ (the YAML library only
 * when a file needs it: src/sops/yaml-lib.ts) and rekey's worker machinery. index.ts hands them out through loadSopsAndRekey() at
 * first use, so commands on age secrets never load them.
 */

export { checkRepository } from "./check.js";
export { rekeyRepository } from "./rekey.js";
export {
  diffSopsRecipients,
  expectationOfCreationRule,
  readRepositoryFile,
  rewrappedKeyGroups,
  withKeyGroups,
} from "./sops-files.js";
export { findSopsTargets, prepareSopsRekey, writeSopsRekey } from "./sops-rekey.js";

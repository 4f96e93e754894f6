/** Build-time secrets: the public face of src/build/. */
export { type AgentAnswer, type AgentRequest, agentSocketOf, askAgent } from "./agent.js";
export { buildClientOf, uidOfUser } from "./client.js";
export { type Derivation, isFixedOutput, parseDerivation, readDerivationFile } from "./drv.js";
export { type HookResult, MARKER, postBuildHook, preBuildHook, SANDBOX_REFUSAL_PATH } from "./hook.js";
export {
  type BuildClient,
  type BuildSecretsPolicy,
  DEFAULT_HEADER,
  DEFAULT_POLICY_FILE,
  DEFAULT_RUNTIME_DIR,
  type Decision,
  decide,
  HEADER_ATTR,
  parsePolicy,
  readPolicy,
  SANDBOX_SECRET_PATH,
  SECRET_ATTR,
  type SecretPolicy,
} from "./policy.js";
export { DEFAULT_SWEEP_AGE_MS, sweepSecretDirs } from "./secret-dir.js";

/** The text the wrapper's grep looks for (how Nix writes the marker attribute in a .drv). */
export const MARKER_TEXT = '("nixsealSecret",';

/** Build-time secrets: the public face of src/build-secrets/. */
export { type AgentAnswer, askAgent } from "./agent.js";
export {
  addFetcherToStore,
  checkBuildSetup,
  FETCHER_FILE,
  updatePolicyFetcher,
} from "./doctor.js";
export { postBuildHook, preBuildHook } from "./hook.js";
export { DEFAULT_POLICY_FILE, readPolicy } from "./policy.js";
export { DEFAULT_SWEEP_AGE_MS, sweepSecretDirs } from "./secret-dir.js";

/** The text the wrapper's grep looks for (how Nix writes the marker attribute in a .drv). */
export const MARKER_TEXT = '("nixsealSecret",';
export { type AgentPrompt, serveAgent, socketAnswers } from "./agent.js";
export {
  agentConfigPath,
  parseRemember,
  RememberedAnswers,
  readAgentConfig,
  valueFromCommand,
  valueFromFile,
  valueSourceOf,
} from "./agent-config.js";

/** Generated secrets (`nixseal generate`): the public face of src/generate/. */
export { type Answers, executePlan, type PromptNeed, promptsNeeded } from "./engine.js";
export { loadFlakeGenerators, loadGeneratorsFile } from "./load.js";
export { makePlan, type Plan } from "./plan.js";
export { probeIsolation } from "./sandbox.js";
export type { Generators } from "./spec.js";

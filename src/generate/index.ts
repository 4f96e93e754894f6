/**
 * Generated secrets (`nixseal generate`): the public face of src/generate/. What runs
 * generators and encrypts (engine, sandbox) is loaded through loadEngine(): a run with nothing
 * to do only reads generators.nix and the state records.
 */
export type { Answers, PromptNeed } from "./engine.js";
export { loadFlakeGenerators, loadGeneratorsFile } from "./load.js";
export { makePlan, type Plan } from "./plan.js";
export type { Generators } from "./spec.js";

/** executePlan, promptsNeeded and probeIsolation, loaded at first use. */
export function loadEngine(): Promise<typeof import("./engine.js") & typeof import("./sandbox.js")> {
  return Promise.all([import("./engine.js"), import("./sandbox.js")]).then(([e, s]) => ({ ...e, ...s }));
}

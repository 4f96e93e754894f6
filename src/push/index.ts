/** Deploy-time keys (`nixseal push`, `nixseal receive`) and host bootstrap: the public face of src/push/. */

export { type HostReport, pushFleet } from "./deployer.js";
export { plansFromFlake } from "./flake.js";
export { type AddHostResult, addHost } from "./host-add.js";
export {
  DEFAULT_REMOTE_NIXSEAL,
  DEFAULT_SEALED_FILE,
  destinationProblem,
} from "./host-keys.js";
export { type Plan, type PlanHost, readPlanFile, UPLOAD_AT, type UploadAt } from "./plan.js";
export { receive, restore } from "./receiver.js";
export { resolveSources } from "./sources.js";

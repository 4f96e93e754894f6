/** Deploy-time keys: `nixseal push` and `nixseal receive`. The public face of src/push/. */
export { type HostReport, pushFleet } from "./deployer.js";
export { plansFromFlake } from "./flake.js";
export { type Plan, type PlanHost, readPlanFile, UPLOAD_AT, type UploadAt } from "./plan.js";
export { receive } from "./receiver.js";
export { resolveSources } from "./sources.js";

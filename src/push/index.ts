/** Deploy-time keys and host bootstrap: the public face of src/push/. */
export { type AddHostResult, addHost } from "./host-add.js";
export {
  DEFAULT_REMOTE_NIXSEAL,
  DEFAULT_SEALED_FILE,
  destinationProblem,
} from "./host-keys.js";

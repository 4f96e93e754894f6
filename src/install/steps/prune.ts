/**
 * The last step: old generations go, keeping the active one and `keepGenerations` before it
 * (Infinity, the manifest's "all": only leftovers of interrupted installs go).
 */
import { ioError } from "../../common/index.js";
import type { Generations } from "../generations.js";
import type { Manifest } from "../manifest.js";
import type { InstallProblems } from "./problems.js";

/** Returns the generations removed. */
export function prune(m: Manifest, gens: Generations, active: number, problems: InstallProblems): number[] {
  try {
    return gens.prune(active, m.keepGenerations, m.secretsDir);
  } catch (e) {
    problems.add(ioError("prune old generations in", m.generationsDir, e));
    return [];
  }
}

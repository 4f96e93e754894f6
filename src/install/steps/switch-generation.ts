/**
 * Step 9: the switch. The install lock is checked to be still this install's, the metadata is
 * written (its presence marks a complete generation), then secretsDir is replaced atomically by
 * a symlink to the new generation.
 */
import * as path from "node:path";
import { rethrowUnlessNixseal } from "../../common/index.js";
import { type Generations, type MetaEntry, replaceSymlink } from "../generations.js";
import type { InstallLock } from "../lock.js";
import type { Manifest } from "../manifest.js";
import { makeDirs } from "../mount.js";
import type { InstallProblems } from "./problems.js";

/** Returns true if generation `n` is now active; false (a problem added) if the switch failed. */
export function switchGeneration(
  m: Manifest,
  gens: Generations,
  n: number,
  meta: MetaEntry[],
  /** identitySetHash of the manifest's identities, recorded for the next install. */
  identities: string,
  lock: InstallLock,
  problems: InstallProblems,
): boolean {
  try {
    lock.verify();
    gens.writeMeta({ version: 1, generation: n, identities, entries: meta });
    makeDirs(path.dirname(m.secretsDir), 0o755);
    replaceSymlink(m.secretsDir, gens.pathOf(n));
    return true;
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
    return false;
  }
}

/**
 * Step 1: nothing of the user's is replaced. secretsDir and each entry's `path` are nixseal's only
 * as symlinks; anything else there (a file, a directory) stops the install before it starts, and
 * so does a `path` under a directory or symlink another user can change (safe-path.ts; checked
 * again when the link is made). Only with the manifest's `replaceExisting` (the compat modules)
 * is a regular file at a `path` replaced by the link, as sops-nix and agenix do.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { rethrowUnlessNixseal } from "../../common/index.js";
import type { Manifest, ManifestEntry } from "../manifest.js";
import { walkSafely } from "../safe-path.js";
import type { InstallProblems } from "./problems.js";

/** What is at `p`, when it is something install must not replace (not a symlink). */
export function inTheWay(p: string): string | null {
  try {
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) return null;
    return st.isDirectory() ? "a directory" : st.isFile() ? "a file" : "something other than a symlink";
  } catch {
    return null;
  }
}

/** What `replaceExisting` lets the link replace: a regular file, never a directory. */
export const REPLACEABLE = "a file";

export const PATH_IN_THE_WAY_HINT = "move it away (nixseal replaces only symlinks there)";

export function checkPathsFree(
  m: Manifest,
  entries: readonly ManifestEntry[],
  problems: InstallProblems,
): void {
  const secretsDirInWay = inTheWay(m.secretsDir);
  if (secretsDirInWay !== null) {
    problems.install(
      null,
      `secretsDir ${m.secretsDir} is ${secretsDirInWay}, not a symlink`,
      "move it away; nixseal makes secretsDir a symlink to the active generation",
      m.secretsDir,
    );
  }
  for (const e of entries) {
    if (e.path === null) continue;
    if (e.credential !== null) continue; // refused by the manifest's validation already
    const what = inTheWay(e.path);
    // The compat modules: a regular file is replaced by the link, as sops-nix and agenix do.
    if (what !== null && !(what === REPLACEABLE && m.replaceExisting)) {
      problems.install(e, `its path ${e.path} is ${what}, not a symlink`, PATH_IN_THE_WAY_HINT, e.path);
    }
    try {
      walkSafely(path.dirname(e.path), false);
    } catch (err) {
      rethrowUnlessNixseal(err);
      problems.install(e, `its path ${e.path}: ${err.message}`, err.hint ?? "", e.path);
    }
  }
}

/**
 * After the switch: each entry's `path` becomes a symlink to <secretsDir>/<name>; links of
 * entries that are gone are removed when they still point where nixseal made them point.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { NixsealError, rethrowUnlessNixseal } from "../../common/index.js";
import { type GenerationMeta, type MetaEntry, replaceSymlink } from "../generations.js";
import { makeDirs } from "../mount.js";
import { inTheWay, PATH_IN_THE_WAY_HINT } from "./check-paths.js";
import type { InstallProblems } from "./problems.js";

export function linkPaths(
  secretsDir: string,
  meta: readonly MetaEntry[],
  previous: GenerationMeta | null,
  problems: InstallProblems,
): void {
  const wanted = new Set<string>();
  for (const e of meta) {
    if (e.path === null || e.credential) continue;
    wanted.add(e.path);
    const target = path.join(secretsDir, e.name);
    try {
      const what = inTheWay(e.path);
      if (what !== null) {
        problems.add(
          new NixsealError("INSTALL", `${e.kind} "${e.name}": its path ${e.path} is ${what}, not a symlink`, {
            hint: PATH_IN_THE_WAY_HINT,
            file: e.path,
          }),
        );
        continue;
      }
      let current: string | null = null;
      try {
        current = fs.readlinkSync(e.path);
      } catch {}
      if (current === target) continue;
      makeDirs(path.dirname(e.path), 0o755);
      replaceSymlink(e.path, target);
    } catch (err) {
      rethrowUnlessNixseal(err);
      problems.add(
        new NixsealError(err.code, `${e.kind} "${e.name}": ${err.message}`, {
          hint: err.hint ?? "",
          file: e.path,
        }),
      );
    }
  }
  for (const old of previous?.entries ?? []) {
    if (old.path === null || wanted.has(old.path)) continue;
    try {
      if (fs.readlinkSync(old.path) === path.join(secretsDir, old.name)) fs.unlinkSync(old.path);
    } catch {}
  }
}

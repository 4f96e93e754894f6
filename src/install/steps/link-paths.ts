/**
 * After the switch: each entry's `path` becomes a symlink to <secretsDir>/<name>; links of
 * entries that are gone are removed when they still point where nixseal made them point. The
 * directories above each link are walked and made by safe-path.ts: nothing another user can
 * change is followed or used. With `replaceFiles` (the manifest's `replaceExisting`), a regular
 * file at a path is replaced by the link, each such file named in a warning.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { NixsealError, rethrowUnlessNixseal } from "../../common/index.js";
import { type GenerationMeta, type MetaEntry, replaceSymlink } from "../generations.js";
import { walkSafely } from "../safe-path.js";
import { inTheWay, PATH_IN_THE_WAY_HINT, REPLACEABLE } from "./check-paths.js";
import type { InstallProblems } from "./problems.js";

export function linkPaths(
  secretsDir: string,
  meta: readonly MetaEntry[],
  previous: GenerationMeta | null,
  problems: InstallProblems,
  replaceFiles = false,
): NixsealError[] {
  const warnings: NixsealError[] = [];
  const wanted = new Set<string>();
  for (const e of meta) {
    if (e.path === null || e.credential) continue;
    wanted.add(e.path);
    const target = path.join(secretsDir, e.name);
    try {
      // The link in the real directory the walk found: nothing is looked up through a symlink again.
      const link = path.join(walkSafely(path.dirname(e.path), true)!, path.basename(e.path));
      const what = inTheWay(link);
      if (what === REPLACEABLE && replaceFiles) {
        replaceSymlink(link, target);
        warnings.push(
          new NixsealError(
            "INSTALL",
            `${e.kind} "${e.name}": the file ${e.path} was replaced by a symlink to ${target}`,
            {
              hint: "its old content is gone; stop whatever wrote it there, or give the secret another path",
              file: e.path,
            },
          ),
        );
        continue;
      }
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
        current = fs.readlinkSync(link);
      } catch {}
      if (current === target) continue;
      replaceSymlink(link, target);
    } catch (err) {
      rethrowUnlessNixseal(err);
      problems.add(
        new NixsealError(err.code, `${e.kind} "${e.name}": its path ${e.path}: ${err.message}`, {
          hint: err.hint ?? "",
          file: e.path,
        }),
      );
    }
  }
  for (const old of previous?.entries ?? []) {
    if (old.path === null || wanted.has(old.path)) continue;
    try {
      const dir = walkSafely(path.dirname(old.path), false);
      if (dir === null) continue;
      const link = path.join(dir, path.basename(old.path));
      if (fs.readlinkSync(link) === path.join(secretsDir, old.name)) fs.unlinkSync(link);
    } catch {} // gone, not ours any more, or under a directory that is not safe: left alone
  }
  return warnings;
}

/**
 * The directories above a `path` symlink, walked without trusting anyone but root (docs/manifest.md,
 * "Where path symlinks may go"). nixseal install runs as root and makes the directories of a
 * `path` and a symlink in the last one; were it to follow a symlink (or use a directory) that
 * another user can change, that user could make root create directories and a symlink anywhere.
 *
 * Like systemd-tmpfiles' safe path walking, each component is looked at with lstat, from `/`
 * down: a symlink is followed only if root (or the user running the install: home-manager's
 * paths are in the user's own home) owns it; a directory must be owned by one of them and not
 * writable by others (group-writable only for group root; other-writable only with the sticky
 * bit, as /tmp). Since no one else can change any directory of the walk, what was checked cannot
 * be swapped before it is used, even though Node has no openat(2). Missing directories are made
 * one at a time (0755) and checked like the others.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError } from "../common/index.js";

/** Linux's limit of symlinks followed in one lookup. */
const MAX_SYMLINKS = 40;

export const UNSAFE_PATH_HINT =
  "a path may only lie under directories and symlinks that root owns and nobody else can change; choose another path, or make root own that directory (chown root, chmod go-w)";

/** Why a component (already lstat-ed) may not be used, or null. */
function unsafe(p: string, st: fs.Stats, self: number): string | null {
  const owner = st.uid === 0 || st.uid === self;
  if (st.isSymbolicLink()) return owner ? null : `${p} is a symlink owned by uid ${st.uid}`;
  if (!st.isDirectory()) return `${p} is not a directory`;
  if (!owner) return `${p} is a directory owned by uid ${st.uid}`;
  const sticky = (st.mode & 0o1000) !== 0;
  if ((st.mode & 0o002) !== 0 && !sticky) return `${p} is writable by every user`;
  if ((st.mode & 0o020) !== 0 && st.gid !== 0 && !sticky) return `${p} is writable by group ${st.gid}`;
  return null;
}

function refuse(dir: string, why: string): never {
  throw new NixsealError("INSTALL", `the directory ${dir} cannot be used safely: ${why}`, {
    file: dir,
    hint: UNSAFE_PATH_HINT,
  });
}

/**
 * Walks `dir` from `/` (an absolute, normalised path), following only trusted symlinks; with
 * `create`, makes the directories that are missing (root-owned, `mode`). Returns the directory's
 * real path (its symlinks resolved), or null when it does not exist and `create` is false.
 * Throws a NixsealError naming the component that is not safe.
 */
export function walkSafely(dir: string, create: boolean, mode = 0o755): string | null {
  const self = process.geteuid?.() ?? 0;
  const todo = dir.split("/").filter((s) => s !== "");
  let current = "/";
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === ".") continue;
    if (name === "..") {
      current = path.dirname(current);
      continue;
    }
    const next = path.join(current, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(next);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("look at", next, e);
      if (!create) return null;
      try {
        fs.mkdirSync(next, { mode });
      } catch (e2) {
        // Made in between by someone else: looked at like any other component.
        if ((e2 as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the directory", next, e2);
      }
      st = fs.lstatSync(next);
    }
    const why = unsafe(next, st, self);
    if (why !== null) refuse(dir, why);
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) refuse(dir, `more than ${MAX_SYMLINKS} symlinks`);
      const target = fs.readlinkSync(next);
      if (target.startsWith("/")) current = "/";
      todo.unshift(...target.split("/").filter((s) => s !== ""));
      continue;
    }
    current = next;
  }
  return current;
}

/**
 * Node's compile cache for nixseal's own modules (V8 code cache: start-up without compiling every
 * module again), kept only where no other user can write. A cache another user could plant files
 * in would be code run by whoever runs nixseal next (root, during activation), so the directory is
 * used only when it and its parents up to the base directory are this user's and writable by
 * nobody else, and every directory above is this user's or root's and writable by nobody else (or
 * sticky, as /tmp); otherwise nixseal simply runs without it. Imports only node: modules: it runs before the
 * rest of nixseal is loaded (src/cli/main.ts).
 *
 * Where: $XDG_CACHE_HOME/nixseal/compile-cache when XDG_CACHE_HOME is an existing absolute
 * directory, else $HOME/.cache/nixseal/compile-cache when HOME is an existing directory of this
 * user's (HOME itself is never created; HOME=/ counts as no home: root during activation).
 * NIXSEAL_NO_COMPILE_CACHE (any value) turns it off.
 *
 * node:fs is loaded with require(), not import, here and in the other files main.ts loads first:
 * for `import`, Node builds an ES module wrapper that reads every export of node:fs, the lazy
 * ones too, and so loads fs/promises, the streams and readline (~30 internal modules, ~10% of
 * Node's own start-up). `nixseal --version` needs none of them.
 */
import type { Stats } from "node:fs";
import * as module from "node:module";
import * as path from "node:path";

const fs = module.createRequire(import.meta.url)("node:fs") as typeof import("node:fs");

const GROUP_OR_OTHER_WRITABLE = 0o022;

const STICKY = 0o1000;

/** A real directory (no symlink), owned by `uid`, writable by nobody else. */
function owned(st: Stats, uid: number): boolean {
  return st.isDirectory() && st.uid === uid && (st.mode & GROUP_OR_OTHER_WRITABLE) === 0;
}

/**
 * A directory above the cache: this user's or root's, and writable by nobody else, or sticky
 * (/tmp): there nobody else can rename or remove the entry below, which is this user's.
 */
function safeAbove(st: Stats, uid: number): boolean {
  return (
    st.isDirectory() &&
    (st.uid === uid || st.uid === 0) &&
    ((st.mode & GROUP_OR_OTHER_WRITABLE) === 0 || (st.mode & STICKY) !== 0)
  );
}

/**
 * `dir` (an existing directory) resolved, when it is this user's and writable by nobody else,
 * and every directory above it is safe (safeAbove); else null.
 */
function trustedExisting(dir: string, uid: number): string | null {
  let real: string;
  try {
    real = fs.realpathSync(dir);
    if (!owned(fs.statSync(real), uid)) return null;
    for (let d = path.dirname(real); ; d = path.dirname(d)) {
      if (!safeAbove(fs.statSync(d), uid)) return null;
      if (path.dirname(d) === d) break;
    }
  } catch {
    return null;
  }
  return real;
}

/** `base/a/b/...`, each created 0700 if missing and each checked to be this user's alone; else null. */
function trustedBelow(base: string, parts: readonly string[], uid: number): string | null {
  let dir = base;
  for (const part of parts) {
    dir = path.join(dir, part);
    try {
      let st: Stats;
      try {
        st = fs.lstatSync(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") return null;
        fs.mkdirSync(dir, { mode: 0o700 });
        st = fs.lstatSync(dir);
      }
      if (!owned(st, uid)) return null;
    } catch {
      return null;
    }
  }
  return dir;
}

/** The compile cache directory to use (created if needed), or null for none. */
export function compileCacheDir(env: NodeJS.ProcessEnv, uid: number): string | null {
  if (env.NIXSEAL_NO_COMPILE_CACHE !== undefined) return null;
  const xdg = env.XDG_CACHE_HOME;
  // The XDG base directory spec: a relative path is invalid and is ignored.
  if (xdg && path.isAbsolute(xdg)) {
    const base = trustedExisting(xdg, uid);
    return base === null ? null : trustedBelow(base, ["nixseal", "compile-cache"], uid);
  }
  const home = env.HOME;
  if (!home || !path.isAbsolute(home) || path.resolve(home) === "/") return null;
  const base = trustedExisting(home, uid);
  return base === null ? null : trustedBelow(base, [".cache", "nixseal", "compile-cache"], uid);
}

/**
 * Enables Node's compile cache for the modules loaded from now on, when a safe directory exists
 * (see above). Never fails: without a cache nixseal only starts slower. Returns the directory or
 * null.
 */
export function enableCompileCache(env: NodeJS.ProcessEnv = process.env): string | null {
  // module.enableCompileCache exists from Node 22.1 on; geteuid not on every platform.
  if (typeof module.enableCompileCache !== "function" || typeof process.geteuid !== "function") return null;
  const dir = compileCacheDir(env, process.geteuid());
  if (dir === null) return null;
  try {
    const r = module.enableCompileCache(dir);
    return r.status === module.constants.compileCacheStatus.ENABLED ? dir : null;
  } catch {
    return null;
  }
}

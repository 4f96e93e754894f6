/** Walking a directory tree without following symlinks (repository scans). */
import type { Dirent } from "node:fs";
import * as path from "node:path";
import { nodeFs as fs } from "./node-fs.js";

/**
 * Calls `visit` for every entry that is not a directory under `dir`, depth first; directories
 * `skipDir` names are not entered, symlinks are never followed, unreadable directories are
 * skipped, and the walk stops `maxDepth` levels down.
 */
export function walkFiles(
  dir: string,
  skipDir: (name: string) => boolean,
  visit: (entry: Dirent, file: string) => void,
  maxDepth = 32,
): void {
  const walk = (d: string, depth: number) => {
    if (depth > maxDepth) return;
    let entries: Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (!skipDir(e.name)) walk(p, depth + 1);
      } else visit(e, p);
    }
  };
  walk(dir, 0);
}

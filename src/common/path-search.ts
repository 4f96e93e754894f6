/** Finding programs on PATH the way a shell does, without running a shell. */
import * as path from "node:path";
import { nodeFs as fs } from "./node-fs.js";

/**
 * The first executable regular file named `program` in `searchPath`, or null. Relative PATH
 * entries (including the empty one, "current directory") are skipped: a program found there
 * depends on where the user happens to stand, which is how planted binaries get run.
 */
export function findExecutable(
  program: string,
  searchPath: string | undefined = process.env.PATH,
): string | null {
  for (const dir of (searchPath ?? "").split(path.delimiter)) {
    if (dir === "" || !path.isAbsolute(dir)) continue;
    const candidate = path.join(dir, program);
    try {
      if (!fs.statSync(candidate).isFile()) continue;
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not here, or not executable: keep looking, as a shell would.
    }
  }
  return null;
}

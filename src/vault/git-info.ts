/**
 * Last change of each secret file in git, with ONE git process for the whole repository
 * (never one per secret).
 */
import { childProcess } from "../common/index.js";

/** Maps paths relative to `dir` to the ISO date of their last commit; empty outside git. */
export function lastChanges(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const r = childProcess().spawnSync(
    "git",
    ["-c", "core.quotepath=off", "log", "--relative", "--name-only", "--format=%x01%cI", "--", "."],
    { cwd: dir, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 },
  );
  if (r.status !== 0 || r.error) return out;
  let date = "";
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("\x01")) date = line.slice(1);
    else if (line !== "" && !out.has(line)) out.set(line, date);
  }
  return out;
}

/**
 * Sweeping the temp files a killed nixseal left beside secret files (AtomicFile writes each file
 * to a temp file, then renames it: a kill between the two leaves the temp file behind).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { deadLockSince, removeDeadLock } from "./rekey-lock.js";
import { type Rules, relativeName } from "./rules.js";

/** A temp file of ours older than this has no writer left (secrets are written in milliseconds). */
const STALE_TEMP_AGE_MS = 10 * 60 * 1000;

/** Our temp files: AtomicFile names them ".<target>.<12 hex>.tmp" beside the target. */
const TEMP_NAME = /^\.(.+)\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes temp files that a killed nixseal left beside secret files: those of a dead rekey (the
 * lock names it), and any older than 10 minutes. Only names of our pattern whose target is a
 * secret of the rules are touched. Throws if a live rekey holds the lock.
 */
export function sweepStaleTempFiles(rules: Rules): string[] {
  const deadSince = deadLockSince(rules);
  const targets = new Map<string, Set<string>>();
  for (const r of rules.secrets.values()) {
    const dir = path.dirname(r.file);
    const names = targets.get(dir) ?? new Set<string>();
    targets.set(dir, names);
    names.add(path.basename(r.file));
  }
  const now = Date.now();
  const swept: string[] = [];
  for (const [dir, names] of targets) {
    let entries: string[];
    try {
      entries = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const entry of entries) {
      const m = TEMP_NAME.exec(entry);
      if (!m || !names.has(m[1]!)) continue;
      const p = path.join(dir, entry);
      try {
        const st = fs.lstatSync(p);
        if (!st.isFile()) continue;
        // 1 s of slack: file times and Date.now() may round differently.
        const ofDeadRekey = deadSince !== null && st.mtimeMs >= deadSince - 1000;
        if (!ofDeadRekey && now - st.mtimeMs < STALE_TEMP_AGE_MS) continue;
        fs.unlinkSync(p);
        swept.push(relativeName(rules, p));
      } catch {}
    }
  }
  if (deadSince !== null) removeDeadLock(rules);
  return swept;
}

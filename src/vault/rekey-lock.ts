/**
 * The rekey lock: `.nixseal-rekey.lock` in the rules directory, naming the process that holds it
 * (pid, host, start time). It keeps two rekeys apart, and tells the next rekey whether a holder
 * died and since when (the temp files it left are those made after that: temp-sweep.ts).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ioError, NixsealError } from "../common/index.js";
import type { Rules } from "./rules.js";

export const LOCK_FILE = ".nixseal-rekey.lock";
/** A lock file still empty after this long was left by a writer that died creating it. */
const EMPTY_LOCK_STALE_MS = 60_000;

interface LockInfo {
  pid: number;
  host: string;
  started: number;
}

function readLock(file: string): LockInfo | null | "garbage" {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw ioError("read", file, e);
  }
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (typeof v.pid === "number" && typeof v.host === "string" && typeof v.started === "number") {
      return { pid: v.pid, host: v.host, started: v.started };
    }
  } catch {}
  return "garbage";
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, as another user.
    return (e as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** The lock, held by this process from acquire() to release(). */
export class RekeyLock {
  private constructor(readonly file: string) {}

  static acquire(rules: Rules): RekeyLock {
    const file = path.join(rules.dir, LOCK_FILE);
    const info: LockInfo = { pid: process.pid, host: os.hostname(), started: Date.now() };
    try {
      const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      try {
        fs.writeSync(fd, `${JSON.stringify(info)}\n`);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") throw busy(file, readLock(file));
      throw ioError("create the lock file", file, e);
    }
    return new RekeyLock(file);
  }

  release(): void {
    try {
      fs.unlinkSync(this.file);
    } catch {}
  }
}

function busy(file: string, info: LockInfo | null | "garbage"): NixsealError {
  const who = info && info !== "garbage" ? ` (pid ${info.pid} on ${info.host})` : "";
  return new NixsealError("IO", `another nixseal rekey is running${who}`, {
    file,
    hint: `wait for it to finish; if it is gone, remove ${file}`,
  });
}

/**
 * Whether a rekey holds the lock: null if none does; the time the holder started if it is dead
 * (on this host: its pid is gone; an empty lock: older than a minute). Throws if a live rekey
 * holds it.
 */
export function deadLockSince(rules: Rules): number | null {
  const lockFile = path.join(rules.dir, LOCK_FILE);
  const lock = readLock(lockFile);
  if (lock === null) return null;
  if (lock === "garbage") {
    // A lock without content: its writer died between create and write, or is writing it now.
    let mtime = Date.now();
    try {
      mtime = fs.statSync(lockFile).mtimeMs;
    } catch {}
    if (Date.now() - mtime > EMPTY_LOCK_STALE_MS) return mtime;
  } else if (lock.host === os.hostname() && !processAlive(lock.pid)) {
    return lock.started;
  }
  throw busy(lockFile, lock);
}

/** Removes the lock a dead rekey left (after its temp files are gone). */
export function removeDeadLock(rules: Rules): void {
  try {
    fs.unlinkSync(path.join(rules.dir, LOCK_FILE));
  } catch {}
}

/**
 * One install at a time per generationsDir (docs/manifest.md, "One install at a time"). Two
 * installs at once would each create a generation and each prune the other's; and two could
 * mount a ramfs on generationsDir one over the other.
 *
 * Node has no flock(2), so the lock is a file created with O_EXCL holding the holder's pid and
 * start time (/proc/<pid>/stat): a lock whose process is gone (or whose pid now names another
 * process) is stale and broken. It lives beside generationsDir, not in its bookkeeping
 * directory: that directory is on the ramfs this install may be about to mount, and a lock
 * under the mount point would be a different file for the next install. /run is cleared at
 * boot, so a crash leaves at most a stale lock, which the next install breaks.
 *
 * Breaking is race-free for the holders: the stale file is renamed aside (atomic) and removed
 * only if it is the very file (inode) judged stale; if a live lock was renamed instead (taken
 * in between), it is linked back. Should even that fail, its holder finds its lock file gone
 * when it checks (`verify`, just before the switch) and stops without switching.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError, writeAllSync } from "../common/index.js";

/** How long an install waits for another before giving up. */
export const LOCK_WAIT_MS = 10 * 60 * 1000;
/** A lock file with no readable owner (its creator died before writing it) is stale after this. */
const UNWRITTEN_STALE_MS = 10 * 1000;

export function lockFileOf(generationsDir: string): string {
  return path.join(path.dirname(generationsDir), `.${path.basename(generationsDir)}.lock`);
}

/** The start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), or null. */
function startTimeOf(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    // The command name (field 2) may hold spaces and parentheses: count from the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

interface Owner {
  pid: number;
  start: string | null;
}

function parseOwner(text: string): Owner | null {
  const m = /^([1-9][0-9]{0,9}) ([0-9]+|-)\n$/.exec(text);
  if (m === null) return null;
  return { pid: Number(m[1]), start: m[2] === "-" ? null : m[2]! };
}

/** True while the process that wrote the lock runs (the same process: its start time agrees). */
function alive(owner: Owner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  if (owner.start === null) return true;
  const now = startTimeOf(owner.pid);
  return now === null || now === owner.start;
}

function readSmall(file: string): string | null {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      const buf = Buffer.alloc(64);
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      return buf.subarray(0, n).toString("latin1");
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class InstallLock {
  private constructor(
    readonly file: string,
    private fd: number | null,
  ) {}

  /** Waits (up to `waitMs`) until no other install holds the lock, then holds it. */
  static async acquire(generationsDir: string, waitMs = LOCK_WAIT_MS): Promise<InstallLock> {
    const file = lockFileOf(generationsDir);
    const deadline = Date.now() + waitMs;
    const content = Buffer.from(`${process.pid} ${startTimeOf(process.pid) ?? "-"}\n`);
    for (let attempt = 0; ; attempt++) {
      let fd: number | null = null;
      try {
        fd = fs.openSync(
          file,
          fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
          0o600,
        );
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the lock", file, e);
      }
      if (fd !== null) {
        try {
          writeAllSync(fd, content);
        } catch (e) {
          fs.closeSync(fd);
          fs.rmSync(file, { force: true });
          throw ioError("write the lock", file, e);
        }
        return new InstallLock(file, fd);
      }
      let st: fs.Stats;
      try {
        st = fs.lstatSync(file);
      } catch {
        continue; // released in between: try again at once
      }
      if (!st.isFile()) {
        throw new NixsealError("INSTALL", `the install lock ${file} is not a regular file`, {
          file,
          hint: "remove what is there; nixseal install creates the lock file itself",
        });
      }
      const text = readSmall(file);
      const owner = text === null ? null : parseOwner(text);
      const stale = owner === null ? Date.now() - st.mtimeMs > UNWRITTEN_STALE_MS : !alive(owner);
      if (stale) {
        breakStale(file, st.ino);
        continue;
      }
      if (Date.now() > deadline) {
        throw new NixsealError(
          "INSTALL",
          `another nixseal install${owner === null ? "" : ` (pid ${owner.pid})`} has held ${file} for over ${Math.round(waitMs / 1000)} s`,
          {
            file,
            hint: "wait for it to finish; if no such process runs, remove the lock file",
          },
        );
      }
      // 10 ms at first (an install of a few secrets takes a few hundred), then at most 200 ms.
      await sleep(Math.min(10 * 2 ** Math.min(attempt, 5), 200));
    }
  }

  /** Throws unless the lock file is still this install's (never broken as stale by another). */
  verify(): void {
    if (this.fd === null || !this.holds()) {
      throw new NixsealError("INSTALL", `lost the install lock ${this.file} to another nixseal install`, {
        file: this.file,
        hint: "run nixseal install again; the previous generation stays active",
      });
    }
  }

  private holds(): boolean {
    try {
      return fs.lstatSync(this.file).ino === fs.fstatSync(this.fd!).ino;
    } catch {
      return false;
    }
  }

  release(): void {
    if (this.fd === null) return;
    try {
      if (this.holds()) fs.unlinkSync(this.file);
    } catch {}
    fs.closeSync(this.fd);
    this.fd = null;
  }
}

function breakStale(file: string, ino: number): void {
  const aside = `${file}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    fs.renameSync(file, aside);
  } catch {
    return; // someone else broke or released it
  }
  try {
    if (fs.lstatSync(aside).ino !== ino) {
      // A live lock was taken between the check and the rename: put it back where it was.
      try {
        fs.linkSync(aside, file);
      } catch {}
    }
  } finally {
    fs.rmSync(aside, { force: true });
  }
}

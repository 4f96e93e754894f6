/**
 * Writing rekeyed files: each file's new header in front of its old nonce and payload. All files
 * are written to temp files and made durable first, then renamed, each only if nobody changed
 * the file since it was read.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ArmorEncoder } from "../age/index.js";
import { AtomicFile, captureOutput, ioError, NixsealError } from "../common/index.js";
import type { Job } from "./rekey-job.js";

function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** The new file: new header, then the old nonce and payload, as they were; armored if the rules say so. */
function newFileBytes(job: Job): Uint8Array[] {
  const body = [job.newHeader!, job.payload];
  if (!job.rule.armor) return body;
  const out: Buffer[] = [];
  const enc = new ArmorEncoder();
  for (const b of body) enc.push(b, out);
  enc.finish(out);
  return out;
}

/** Files being written and synced at once by a TempWriter (one fsync each). */
const WRITES_IN_FLIGHT = 16;

/**
 * From this many files on, a TempWriter syncs their filesystem once instead of each file: 1000
 * fsyncs cost ~0.5 s of CPU and as much time here (a flush of the disk each), one syncfs a few
 * milliseconds. Below, a rekey never waits for others' data on the filesystem.
 */
export const SYNC_FILESYSTEM_FROM = 64;

/**
 * Writes new files to temp files as their headers are made (created and written on this
 * thread: short system calls), and makes them durable, either
 * - each file fsync-ed on libuv's thread pool at once, a few at a time (the disk syncs the
 *   first files while the threads still make the last headers), or, with `syncFilesystem`,
 * - each file closed at once, and once all are written, their filesystem synced by one syncfs
 *   (`sync -f DIR`, GNU coreutils; where it fails or does not exist, each file is fsync-ed).
 * A file descriptor is held only until its file is durable, or closed. Nothing is renamed here.
 */
export class TempWriter {
  /** Temp files written (durable once done() resolved), not renamed yet. */
  readonly prepared: { job: Job; file: AtomicFile }[] = [];
  readonly failed: { job: Job; error: NixsealError }[] = [];
  /** Sync the filesystem once (see above) instead of each file. */
  syncFilesystem = false;
  private readonly queue: Job[] = [];
  private running = 0;
  private idle: (() => void) | null = null;
  private stopped = false;
  /** Files opened and not yet in `prepared` (aborted by stop()). */
  private readonly open = new Set<AtomicFile>();

  add(job: Job): void {
    if (this.stopped) return;
    if (this.syncFilesystem) {
      const file = this.create(job);
      if (file === null) return;
      try {
        file.closeUnsynced();
        this.prepared.push({ job, file });
      } catch (e) {
        this.fail(job, e);
      }
      return;
    }
    this.queue.push(job);
    this.pump();
  }

  /** The temp file of `job`, created and written on this thread; null (failure noted) if not. */
  private create(job: Job): AtomicFile | null {
    try {
      const file = AtomicFile.open(job.rule.file, job.stat.mode & 0o777);
      file.write(newFileBytes(job));
      return file;
    } catch (e) {
      this.fail(job, e);
      return null;
    }
  }

  private fail(job: Job, e: unknown): void {
    if (!this.stopped)
      this.failed.push({ job, error: e instanceof NixsealError ? e : ioError("write", job.rule.file, e) });
  }

  private pump(): void {
    while (this.running < WRITES_IN_FLIGHT && this.queue.length > 0 && !this.stopped) {
      const job = this.queue.shift()!;
      this.running++;
      void this.writeOne(job).finally(() => {
        this.running--;
        this.pump();
        if (this.running === 0 && this.queue.length === 0) this.idle?.();
      });
    }
  }

  private async writeOne(job: Job): Promise<void> {
    const file = this.create(job);
    if (file === null) return;
    this.open.add(file);
    try {
      await file.syncAsync({ close: true });
      this.open.delete(file);
      if (this.stopped) file.abort();
      else this.prepared.push({ job, file });
    } catch (e) {
      this.open.delete(file);
      file.abort();
      this.fail(job, e);
    }
  }

  /** Resolves when every file added so far is written and durable (or failed). */
  async done(): Promise<void> {
    if (this.running > 0 || this.queue.length > 0) {
      await new Promise<void>((resolve) => {
        this.idle = resolve;
      });
      this.idle = null;
    }
    if (!this.syncFilesystem || this.prepared.length === 0 || this.stopped) return;
    const dirs = [...new Set(this.prepared.map((p) => path.dirname(p.file.tempPath)))];
    if ((await Promise.all(dirs.map(syncFilesystemOf))).every((ok) => ok)) {
      for (const { file } of this.prepared) file.markSynced();
      return;
    }
    // No syncfs here: each file, as without syncFilesystem.
    const all = this.prepared.splice(0);
    let next = 0;
    const lane = async () => {
      while (next < all.length) {
        const p = all[next++]!;
        try {
          await p.file.syncClosedAsync();
          this.prepared.push(p);
        } catch (e) {
          this.fail(p.job, e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(WRITES_IN_FLIGHT, all.length) }, lane));
  }

  /**
   * Writes nothing more; waits for the files under way and removes every temp file not renamed
   * (a failure before renaming: all or nothing).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    if (this.running > 0)
      await new Promise<void>((resolve) => {
        this.idle = resolve;
      });
    for (const f of this.open) f.abort();
    for (const { file } of this.prepared) file.abort();
  }
}

/**
 * syncfs(2) of the filesystem holding `dir`, by GNU coreutils' `sync -f` (Node has no syncfs):
 * every file written there is durable when it succeeds (Linux 5.8 and later report a failed
 * writeback here too). false when it can't be run or fails: the caller fsyncs each file.
 */
async function syncFilesystemOf(dir: string): Promise<boolean> {
  try {
    const r = await captureOutput("sync", ["-f", dir], { maxStdout: 4096, maxStderr: 4096 });
    return r.code === 0 && r.signal === null;
  } catch {
    return false;
  }
}

/**
 * Replaces one file with its synced temp file, refusing if the file changed since it was read (a
 * concurrent edit wins). The directory is fsync-ed once for all files, after the last rename.
 */
export function commitJob(job: Job, f: AtomicFile): void {
  f.commitSynced(() => {
    let now: fs.Stats;
    try {
      now = fs.lstatSync(job.rule.file);
    } catch (e) {
      throw ioError("read", job.rule.file, e);
    }
    if (!sameFile(now, job.stat)) {
      throw new NixsealError(
        "IO",
        `${job.rule.file} changed while rekey was running; it was left as it is now`,
        {
          file: job.rule.file,
          hint: "run 'nixseal rekey' again",
        },
      );
    }
  });
}

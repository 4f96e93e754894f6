/**
 * Writing rekeyed files: each file's new header in front of its old nonce and payload. All files
 * are written to temp files and made durable first, then renamed, each only if nobody changed
 * the file since it was read.
 */
import * as fs from "node:fs";
import { ArmorEncoder } from "../age/index.js";
import { AtomicFile, ioError, NixsealError } from "../common/index.js";
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

/** Files being written and synced at once by a TempWriter. */
const WRITES_IN_FLIGHT = 16;

/**
 * Writes new files to temp files as their headers are made, each created, written, then
 * fsync-ed and closed on libuv's thread pool, a few at a time: the disk syncs the first files
 * while the threads still make the headers of the last ones, instead of all at the end. A file
 * descriptor is held only until its file is durable. Nothing is renamed here.
 */
export class TempWriter {
  /** Durable temp files, not renamed yet. */
  readonly prepared: { job: Job; file: AtomicFile }[] = [];
  readonly failed: { job: Job; error: NixsealError }[] = [];
  private readonly queue: Job[] = [];
  private running = 0;
  private idle: (() => void) | null = null;
  private stopped = false;
  /** Files opened and not yet in `prepared` (aborted by stop()). */
  private readonly open = new Set<AtomicFile>();

  add(job: Job): void {
    if (this.stopped) return;
    this.queue.push(job);
    this.pump();
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
    let file: AtomicFile | null = null;
    try {
      // Created and written on this thread (short system calls, cheaper than three trips
      // through the thread pool: measured), fsync-ed on the pool.
      file = AtomicFile.open(job.rule.file, job.stat.mode & 0o777);
      this.open.add(file);
      file.write(newFileBytes(job));
      await file.syncAsync({ close: true });
      this.open.delete(file);
      if (this.stopped) file.abort();
      else this.prepared.push({ job, file });
    } catch (e) {
      if (file) {
        this.open.delete(file);
        file.abort();
      }
      if (!this.stopped)
        this.failed.push({ job, error: e instanceof NixsealError ? e : ioError("write", job.rule.file, e) });
    }
  }

  /** Resolves when every file added so far is written and synced (or failed). */
  async done(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return;
    await new Promise<void>((resolve) => {
      this.idle = resolve;
    });
    this.idle = null;
  }

  /**
   * Writes nothing more; waits for the files under way and removes every temp file not renamed
   * (a failure before renaming: all or nothing).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    await this.done();
    for (const f of this.open) f.abort();
    for (const { file } of this.prepared) file.abort();
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

/**
 * Writing rekeyed files: each file's new header in front of its old nonce and payload. All files
 * are written to temp files first, then made durable together, then renamed, each only if nobody
 * changed the file since it was read.
 */
import * as fs from "node:fs";
import { ArmorEncoder } from "../age/index.js";
import { AtomicFile, ioError, NixsealError } from "../common/index.js";
import type { Job } from "./rekey-job.js";

/** fsyncs under way at once: the disk batches their journal commits. */
const SYNCS_IN_FLIGHT = 16;

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

/**
 * The new file in a temp file beside the old one, created with the old file's permission bits
 * (less the umask), written, neither synced nor renamed: syncPrepared() and commitJob() do that
 * once every file is written. On this thread: creating and writing a small file are short system
 * calls while no fsync is under way, and cheaper than handing each to the thread pool. A failure
 * removes the temp file and throws.
 */
export function prepareJob(job: Job): AtomicFile {
  const f = AtomicFile.open(job.rule.file, job.stat.mode & 0o777);
  f.write(newFileBytes(job));
  return f;
}

/**
 * fsyncs prepared files, SYNCS_IN_FLIGHT at a time on libuv's thread pool, and closes them.
 * Returns the jobs whose fsync failed, with the error (their temp files are removed).
 */
export async function syncPrepared(
  prepared: ReadonlyArray<{ job: Job; file: AtomicFile }>,
): Promise<{ job: Job; error: NixsealError }[]> {
  const failed: { job: Job; error: NixsealError }[] = [];
  let next = 0;
  const lane = async () => {
    while (next < prepared.length) {
      const { job, file } = prepared[next++]!;
      try {
        await file.syncAsync({ close: true });
      } catch (e) {
        failed.push({ job, error: e instanceof NixsealError ? e : ioError("write", job.rule.file, e) });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(SYNCS_IN_FLIGHT, prepared.length) }, lane));
  return failed;
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

/**
 * Writing a rekeyed file: its new header in front of its old nonce and payload, replaced
 * atomically, and only if nobody changed the file since it was read.
 */
import * as fs from "node:fs";
import { ArmorEncoder } from "../age/index.js";
import { AtomicFile, ioError, NixsealError } from "../common/index.js";
import type { Job } from "./rekey-job.js";

function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** The new file: new header, then the old nonce and payload, as they were; armored if the rules say so. */
function newFileBytes(job: Job): Buffer {
  const body = [Buffer.from(job.newHeader!), Buffer.from(job.payload)];
  if (!job.rule.armor) return Buffer.concat(body);
  const out: Buffer[] = [];
  const enc = new ArmorEncoder();
  for (const b of body) enc.push(b, out);
  enc.finish(out);
  return Buffer.concat(out);
}

/**
 * The new file in a temp file beside the old one, written and fsync-ed but not renamed: rekey
 * prepares files while it still decrypts others, and renames them (commitJob) only once every
 * file decrypted. A failure removes the temp file; the caller aborts a file it never commits.
 */
export async function prepareJob(job: Job): Promise<AtomicFile> {
  const bytes = newFileBytes(job);
  // Keep the file's permission bits (the temp file is created with them, less the umask).
  // Opened and written off the main thread, which meanwhile wraps headers (see openAsync).
  const f = await AtomicFile.openAsync(job.rule.file, job.stat.mode & 0o777);
  await f.writeAsync(bytes);
  // Durable now; commitJob renames it without a second fsync.
  await f.syncAsync();
  return f;
}

/**
 * Replaces one file atomically with its prepared temp file, refusing if the file changed since
 * it was read (a concurrent edit wins). The directory is fsync-ed once for all files, after the
 * last rename.
 */
export async function commitJob(job: Job, f: AtomicFile): Promise<void> {
  await f.commitAsync(() => {
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

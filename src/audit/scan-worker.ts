/**
 * A scanning thread (src/audit/scan-pool.ts starts it): reads whole files and matches them with
 * its own Matcher, built from the patterns the main thread shares with it. Reads are synchronous
 * (page-cached files read as fast that way, and this thread has nothing else to do); the file is
 * opened as scan.ts opens it (O_NOFOLLOW, O_NONBLOCK) and must still be the regular file the walk
 * saw (same device and inode), else it is reported as replaced.
 *
 * The patterns arrive in a SharedArrayBuffer: they are copied into this thread's own buffers, so
 * that dispose() can zero them (and the index built from them) when the pool stops, while the
 * main thread zeroes the shared copy.
 */
import * as fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { Matcher } from "./matcher.js";
import type { ScanJob, ScanReply, ScanWorkerData } from "./scan-pool.js";

const data = workerData as ScanWorkerData;
const shared = new Uint8Array(data.patterns);
const patterns: Uint8Array[] = [];
for (let i = 0, at = 0; i < data.lengths.length; i++) {
  const n = data.lengths[i]!;
  patterns.push(shared.slice(at, at + n));
  at += n;
}
const matcher = new Matcher(patterns);
let found: number[] = [];
let extra = 0;
// The first maxHits matches are kept, the rest counted, as on the main thread (scan.ts).
const scanner = matcher.scanner((patternId, offset) => {
  if (found.length < 2 * data.maxHits) found.push(patternId, offset);
  else extra++;
}, data.chunkSize);

function scan(job: ScanJob): ScanReply {
  let fd: number;
  try {
    fd = fs.openSync(job.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    return { id: job.id, error: (e as NodeJS.ErrnoException).code ?? "EIO" };
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return { id: job.id, special: true };
    if (st.dev !== job.dev || st.ino !== job.ino) return { id: job.id, error: "replaced" };
    found = [];
    extra = 0;
    scanner.reset();
    let read = 0;
    for (;;) {
      const space = scanner.space();
      const n = fs.readSync(fd, space, 0, space.length, null);
      if (n === 0) break;
      scanner.commit(n);
      read += n;
      // As scan.ts: a short read that reaches fstat's size is the end.
      if (n < space.length && read >= st.size) break;
    }
    scanner.finish();
    return { id: job.id, bytes: read, hits: Float64Array.from(found), extra };
  } catch (e) {
    return { id: job.id, error: (e as NodeJS.ErrnoException).code ?? "EIO" };
  } finally {
    scanner.wipe();
    fs.closeSync(fd);
  }
}

parentPort!.on("message", (message: ScanJob | "stop") => {
  if (message === "stop") {
    matcher.dispose();
    parentPort!.close();
    return;
  }
  parentPort!.postMessage(scan(message));
});

/**
 * The worker thread of parallel-sources.ts: loads its modules as soon as it starts (possibly
 * before the main thread has parsed the manifest: early-worker.ts), the manifest's identities
 * itself once told them (its first message: WorkerStart) while the main thread prepares the
 * generation, then claims jobs (its second message: WorkerJobs) from the shared counter alongside
 * the main thread and does each whole (source-jobs.ts): the files it writes are created here,
 * and only their keyed hashes, origins and errors go back, never a plaintext.
 */
import { parentPort } from "node:worker_threads";
import type { Identity } from "../age/index.js";
import { loadManifestIdentities } from "./identities.js";
import {
  jobAt,
  jobCount,
  ResultsBuilder,
  type SerializedError,
  serializeError,
  type WorkerJobs,
  type WorkerResults,
  type WorkerStart,
} from "./parallel-sources.js";
import { contentHash, createSecretFile, linkRecordedFile } from "./sink.js";
import { type JobContext, runJob, type ValueOrigin } from "./source-jobs.js";

let identitiesLoaded: { identities: readonly Identity[] | null } | null = null;
let identities: Promise<readonly Identity[] | null> = Promise.resolve(null);

/** Starts loading the identities: that overlaps with the main thread's work until the jobs come. */
function loadIdentities(start: WorkerStart): void {
  identities = loadManifestIdentities(start.identities).then(
    (loaded) => {
      identitiesLoaded = { identities: loaded.identities.length > 0 ? loaded.identities : null };
      return identitiesLoaded.identities;
    },
    () => {
      identitiesLoaded = { identities: null };
      return null;
    },
  );
}

async function work(w: WorkerJobs): Promise<WorkerResults> {
  const claim = new Int32Array(w.counter);
  const made = new Set<string>();
  const count = jobCount(w.jobs);
  const out = new ResultsBuilder();
  const target = w.target;
  const activeDir = w.activeDir;
  const ctx: JobContext = {
    // At hand once loaded: no promise to wait for per job.
    identities: () => (identitiesLoaded === null ? identities : identitiesLoaded.identities),
    hmacKey: w.hmacKey,
    activeDir,
    storeDir: w.storeDir,
    linkRecorded:
      target === null || activeDir === null
        ? null
        : (name, recorded) => linkRecordedFile(activeDir, target, name, recorded, w.hmacKey, made),
  };
  for (;;) {
    const job = Atomics.add(claim, 0, 1);
    if (job >= count) break;
    const values: [number, string, ValueOrigin][] = [];
    const r = await runJob(jobAt(w.jobs, job), ctx, (entry, value, origin, _cipher, linked) => {
      const hmac = origin === "reused" ? entry.recorded!.hmac : contentHash(w.hmacKey, value);
      if (w.target !== null && entry.owner !== null && !linked)
        createSecretFile(w.target, entry.name, entry.owner, value, made);
      values.push([entry.index, hmac, origin]);
    });
    out.add({
      job,
      cipher: r.cipher,
      storeFile: r.storeFile,
      error: r.error === null ? null : serializeError(r.error),
      noIdentity: r.noIdentity,
      failed: r.failed.map((e) => e.index),
      entryErrors: r.entryErrors.map(([e, err]): [number, SerializedError] => [e.index, serializeError(err)]),
      values,
    });
  }
  return out.finish();
}

parentPort!.once("message", (start: WorkerStart) => {
  loadIdentities(start);
  parentPort!.once("message", async (w: WorkerJobs) => {
    try {
      parentPort!.postMessage(await work(w));
    } finally {
      w.hmacKey.fill(0);
      parentPort!.close();
    }
  });
});

/**
 * Jobs (source-jobs.ts) on two cores: a worker thread claims age files from a shared counter,
 * and so does the main thread when there are many to decrypt (so neither waits for the other,
 * and a worker that starts late simply does fewer). Each thread does its jobs whole: reads the
 * file, takes or decrypts each value, creates the file in the new generation, computes its keyed
 * hash. No plaintext crosses between the threads: the worker sends back only hashes, origins and
 * errors.
 *
 * A worker's start costs about twice what loading the key formats (src/age, src/ssh, src/keys)
 * costs the main thread: Node starts again in the thread, then loads those modules itself. So it
 * is started only when it will pay (workerModeFor), as soon as the install knows a new
 * generation is made (overlapping with its preparation), and told its jobs once they are known. It loads the identities from their files itself (ssh and age key files; not
 * sealed ones, which would need systemd-creds a second time). Anything it was given and did not
 * finish (it failed, or could load no identity) the main thread does again.
 */
import * as os from "node:os";
import type { Worker } from "node:worker_threads";
import { NixsealError } from "../common/index.js";
import type { GenerationMeta } from "./generations.js";
import type { Manifest, ManifestIdentity } from "./manifest.js";
import type { GenerationTarget } from "./sink.js";
import type { SourceJob, ValueOrigin } from "./source-jobs.js";

/**
 * Fewer files to decrypt than this are done faster on one thread than on two. A worker costs
 * ~100 ms of CPU to start Node in the thread, then loads the key formats and warms up the decrypt
 * path a second time: it is ready ~150-250 ms after it was made, when the main thread has done
 * most of 1000 small files alone, and until then it competes with it for the two cores. Measured
 * (cold install, CPU time user+sys and wall, bench/RESULTS.md "install, cold, after
 * install-cold"): with 1000 files the worker added ~270 ms of CPU (~+50%) for no gain in wall
 * time; with 2000, +260 ms of CPU for the same wall time; with 4000, +360 ms of CPU for 14% less.
 */
export const PARALLEL_MIN_DECRYPTS = 2048;
/**
 * In "rest" mode, the main thread also claims files to decrypt once its copies are done when at
 * least this many were left to the worker: then loading the key formats here too pays.
 */
export const REST_MAIN_JOINS_MIN = 512;
/**
 * A few files to decrypt among this many copied from the active generation: the worker loads the
 * key formats and decrypts them while the main thread copies, instead of the main thread loading
 * them after the copies. It pays only when the copies take longer than a worker's start, which
 * costs about twice what loading those modules costs the main thread (measured).
 */
export const PARALLEL_MIN_COPIES = 2048;

/**
 * How the two threads share the age files. "share": both claim whole jobs from one counter (a
 * first install, or many changes). "rest": the main thread copies what the active generation
 * holds and the worker decrypts the rest (a few changes among many). Copies alone are left to
 * the main thread: measured, a worker's start costs more than it takes off their syscalls.
 */
export type WorkerMode = "share" | "rest";

/** The worker's start (workerData). */
export interface WorkerStart {
  identities: ManifestIdentity[];
}

/** The worker's jobs, sent once they are known. */
export interface WorkerJobs {
  jobs: SourceJob[];
  /** Int32 at 0: the next job to claim, shared with the main thread. */
  counter: SharedArrayBuffer;
  hmacKey: Uint8Array;
  /** Where files go; null: nowhere (a dry run, or an install that already failed). */
  target: GenerationTarget | null;
  activeDir: string | null;
  /** The manifest's storeDir (source-jobs.ts, JobContext). */
  storeDir: string | null;
}

export interface SerializedError {
  code: string;
  message: string;
  hint: string | undefined;
  file: string | undefined;
}

/** One job the worker did. Entries are named by their index in the manifest's secrets. */
export interface WorkerJobResult {
  job: number;
  cipher: string | null;
  storeFile: boolean;
  error: SerializedError | null;
  /** Decrypting was needed and the worker could load no identity: the main thread does the job. */
  noIdentity: boolean;
  failed: number[];
  entryErrors: [number, SerializedError][];
  /** [index, keyed hash, origin] of each value written. */
  values: [number, string, ValueOrigin][];
}

export function serializeError(e: NixsealError): SerializedError {
  return { code: e.code, message: e.message, hint: e.hint, file: e.file };
}

export function deserializeError(e: SerializedError): NixsealError {
  return new NixsealError(e.code as NixsealError["code"], e.message, { hint: e.hint, file: e.file });
}

/**
 * How many age files a worker could take and how many of them will likely be decrypted (not
 * copied from the active generation: a different file, format, key or identity set than it
 * recorded), before anything is read.
 */
function estimate(m: Manifest, previous: GenerationMeta | null, identities: string): [number, number] {
  const recorded = new Map<string, string>(); // name -> the encrypted file it came from
  if (previous !== null && previous.identities === identities) {
    for (const e of previous.entries) {
      if (e.kind === "secret" && !e.credential && e.cipher && e.format === "age" && e.file)
        recorded.set(e.name, e.file);
    }
  }
  const files = new Map<string, boolean>(); // file -> likely decrypted
  for (const s of m.secrets) {
    if (s.format !== "age" || s.credential !== null) continue;
    const likely = recorded.get(s.name) !== s.file;
    files.set(s.file, (files.get(s.file) ?? false) || likely);
  }
  let decrypts = 0;
  for (const d of files.values()) if (d) decrypts++;
  return [files.size, decrypts];
}

/**
 * The identities the worker loads: those that open age files. gpg and gpg-ssh identities open
 * only sops files' pgp entries, and sops files stay on the main thread.
 */
function workerIdentities(identities: readonly ManifestIdentity[]): ManifestIdentity[] {
  return identities.filter((e) => e.type === "ssh" || e.type === "age");
}

/** Whether a worker pays for this install, and how the threads then share the files (null: it does not). */
export function workerModeFor(
  m: Manifest,
  previous: GenerationMeta | null,
  identities: string,
  cores: number,
): WorkerMode | null {
  if (cores < 2) return null;
  // A sealed identity would need systemd-creds a second time in the worker: the main thread alone.
  if (workerIdentities(m.identities).length === 0 || m.identities.some((e) => e.type === "systemd-creds"))
    return null;
  const [files, decrypts] = estimate(m, previous, identities);
  if (decrypts >= PARALLEL_MIN_DECRYPTS) return "share";
  if (decrypts > 0 && files - decrypts >= PARALLEL_MIN_COPIES) return "rest";
  return null;
}

/** A worker thread for the age files of one install. */
export class DecryptWorker {
  private done = false;

  private constructor(
    private readonly worker: Worker,
    readonly mode: WorkerMode,
  ) {
    // A worker that fails or stops before run() is simply not used.
    const gone = () => {
      this.done = true;
    };
    worker.on("error", gone);
    worker.on("exit", gone);
  }

  /** Starts a worker when it will pay (see the file comment), else returns null. */
  static async startIfWorthIt(
    m: Manifest,
    previous: GenerationMeta | null,
    identities: string,
  ): Promise<DecryptWorker | null> {
    const mode = workerModeFor(m, previous, identities, os.availableParallelism());
    if (mode === null) return null;
    try {
      const { Worker } = await import("node:worker_threads");
      const start: WorkerStart = { identities: workerIdentities(m.identities) };
      const url = new URL("./decrypt-worker.js", import.meta.url);
      return new DecryptWorker(new Worker(url, { workerData: start }), mode);
    } catch {
      return null;
    }
  }

  /** Gives the worker its jobs; resolves with what it did ([] if it failed). */
  run(jobs: WorkerJobs): Promise<WorkerJobResult[]> {
    if (this.done) return Promise.resolve([]);
    return new Promise((resolve) => {
      this.worker.once("message", (r: WorkerJobResult[]) => resolve(r));
      this.worker.once("error", () => resolve([]));
      this.worker.once("exit", () => resolve([]));
      this.worker.postMessage(jobs);
    });
  }

  /** Stops the worker (done or not). */
  async close(): Promise<void> {
    this.done = true;
    await this.worker.terminate();
  }
}

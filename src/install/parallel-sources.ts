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
 * is used only when it will pay (workerModeFor). On a first install of many files it was started
 * before the manifest was parsed (early-worker.ts); otherwise it is started as soon as the install
 * knows a new generation is made (overlapping with its preparation). It is told its identities
 * then (its first message) and its jobs once they are known (its second). It loads the
 * identities from their files itself (ssh and age key files; not sealed ones, which would need
 * systemd-creds a second time). Anything it was given and did not finish (it failed, or could
 * load no identity) the main thread does again.
 */
import * as os from "node:os";
import type { Worker } from "node:worker_threads";
import { enterEfficiencyMode, NixsealError } from "../common/index.js";
import { type EarlyWorker, PARALLEL_MIN_DECRYPTS } from "./early-worker.js";
import type { GenerationMeta } from "./generations.js";
import type { Manifest, ManifestIdentity } from "./manifest.js";
import type { GenerationTarget } from "./sink.js";
import {
  groupBySource,
  type JobEntry,
  type SourceGroups,
  type SourceJob,
  type ValueOrigin,
} from "./source-jobs.js";

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

/** The worker's first message: what it loads while the main thread prepares its jobs. */
export interface WorkerStart {
  identities: ManifestIdentity[];
}

/** The worker's second message: its jobs, sent once they are known. */
export interface WorkerJobs {
  jobs: PackedJobs;
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

/**
 * Jobs in columns, as they cross to the worker: cloning a few arrays costs a fraction of cloning
 * as many objects as there are jobs and entries (measured for 10 000 jobs: ~7 ms to post and ~10
 * ms until the worker has them, against ~20 ms and ~60 ms as objects), time during which the
 * worker cannot start. Job j's entries are firstEntry[j] to firstEntry[j + 1] - 1.
 */
export interface PackedJobs {
  files: string[];
  formats: SourceJob["format"][];
  firstEntry: Int32Array;
  index: Int32Array;
  names: string[];
  keys: (string | null)[];
  /** uid, gid and mode of each entry; uid -1: the entry has no owner (not written). */
  owners: Float64Array;
  recorded: (JobEntry["recorded"] | null)[];
  repaired: Uint8Array;
}

export function packJobs(jobs: readonly SourceJob[]): PackedJobs {
  let entries = 0;
  for (const job of jobs) entries += job.entries.length;
  const p: PackedJobs = {
    files: new Array(jobs.length),
    formats: new Array(jobs.length),
    firstEntry: new Int32Array(jobs.length + 1),
    index: new Int32Array(entries),
    names: new Array(entries),
    keys: new Array(entries),
    owners: new Float64Array(entries * 3),
    recorded: new Array(entries),
    repaired: new Uint8Array(entries),
  };
  let e = 0;
  for (let j = 0; j < jobs.length; j++) {
    const job = jobs[j]!;
    p.files[j] = job.file;
    p.formats[j] = job.format;
    p.firstEntry[j] = e;
    for (const entry of job.entries) {
      p.index[e] = entry.index;
      p.names[e] = entry.name;
      p.keys[e] = entry.key;
      const o = entry.owner;
      p.owners[e * 3] = o === null ? -1 : o.uid;
      p.owners[e * 3 + 1] = o === null ? -1 : o.gid;
      p.owners[e * 3 + 2] = o === null ? -1 : o.mode;
      p.recorded[e] = entry.recorded;
      p.repaired[e] = entry.repaired ? 1 : 0;
      e++;
    }
  }
  p.firstEntry[jobs.length] = e;
  return p;
}

/**
 * Job j of packed jobs, as an object: made when the job is claimed, not all at once (making
 * 10 000 jobs' objects in a thread that has just started took ~50 ms before its first job).
 */
export function jobAt(p: PackedJobs, j: number): SourceJob {
  const entries: JobEntry[] = [];
  for (let e = p.firstEntry[j]!; e < p.firstEntry[j + 1]!; e++) {
    const uid = p.owners[e * 3]!;
    entries.push({
      index: p.index[e]!,
      name: p.names[e]!,
      key: p.keys[e] ?? null,
      owner: uid === -1 ? null : { uid, gid: p.owners[e * 3 + 1]!, mode: p.owners[e * 3 + 2]! },
      recorded: p.recorded[e] ?? null,
      repaired: p.repaired[e] === 1,
    });
  }
  return { file: p.files[j]!, format: p.formats[j]!, entries };
}

/** How many jobs `p` holds. */
export function jobCount(p: PackedJobs): number {
  return p.files.length;
}

const ORIGINS: readonly ValueOrigin[] = ["reused", "decrypted", "repaired"];

/**
 * What the worker did, as it crosses back (in columns, for the reason PackedJobs gives): the jobs
 * done without any problem in columns, job k's values being valueStart[k] to valueStart[k + 1] -
 * 1; those with a problem (an error, a failed entry, no identity) whole, as objects.
 */
export interface WorkerResults {
  job: Int32Array;
  /** SHA-256 (hex) of each job's file. */
  cipher: string[];
  storeFile: Uint8Array;
  valueStart: Int32Array;
  /** Per value: the secret's index in the manifest, its keyed hash, its origin (an index in ORIGINS). */
  valueIndex: Int32Array;
  hmac: string[];
  origin: Uint8Array;
  withProblems: WorkerJobResult[];
}

/** The origin of value v of `r`. */
export function originOf(r: WorkerResults, v: number): ValueOrigin {
  return ORIGINS[r.origin[v]!]!;
}

/** Collects the worker's results (WorkerResults) as its jobs are done. */
export class ResultsBuilder {
  private readonly job: number[] = [];
  private readonly cipher: string[] = [];
  private readonly storeFile: number[] = [];
  private readonly valueStart: number[] = [];
  private readonly valueIndex: number[] = [];
  private readonly hmac: string[] = [];
  private readonly origin: number[] = [];
  private readonly withProblems: WorkerJobResult[] = [];

  add(r: WorkerJobResult): void {
    const problem =
      r.cipher === null ||
      r.error !== null ||
      r.noIdentity ||
      r.failed.length > 0 ||
      r.entryErrors.length > 0;
    if (problem) {
      this.withProblems.push(r);
      return;
    }
    this.job.push(r.job);
    this.cipher.push(r.cipher!);
    this.storeFile.push(r.storeFile ? 1 : 0);
    this.valueStart.push(this.valueIndex.length);
    for (const [index, hmac, origin] of r.values) {
      this.valueIndex.push(index);
      this.hmac.push(hmac);
      this.origin.push(ORIGINS.indexOf(origin));
    }
  }

  finish(): WorkerResults {
    return {
      job: Int32Array.from(this.job),
      cipher: this.cipher,
      storeFile: Uint8Array.from(this.storeFile),
      valueStart: Int32Array.from([...this.valueStart, this.valueIndex.length]),
      valueIndex: Int32Array.from(this.valueIndex),
      hmac: this.hmac,
      origin: Uint8Array.from(this.origin),
      withProblems: this.withProblems,
    };
  }
}

/** The results of a worker that did nothing (it failed or stopped). */
export function noResults(): WorkerResults {
  return new ResultsBuilder().finish();
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
function estimate(
  m: Manifest,
  groups: SourceGroups,
  previous: GenerationMeta | null,
  identities: string,
): [number, number] {
  const recorded = new Map<string, string>(); // name -> the encrypted file it came from
  if (previous !== null && previous.identities === identities) {
    for (const e of previous.entries) {
      if (e.kind === "secret" && !e.credential && e.cipher && e.format === "age" && e.file)
        recorded.set(e.name, e.file);
    }
  }
  const { order, start } = groups;
  let files = 0;
  let decrypts = 0;
  for (let g = 0; g + 1 < start.length; g++) {
    if (m.secrets[order[start[g]!]!]!.format !== "age") continue;
    let any = false;
    let likely = false;
    for (let e = start[g]!; e < start[g + 1]!; e++) {
      const s = m.secrets[order[e]!]!;
      if (s.credential !== null) continue;
      any = true;
      if (recorded.get(s.name) !== s.file) likely = true;
    }
    if (any) files++;
    if (likely) decrypts++;
  }
  return [files, decrypts];
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
  groups: SourceGroups = groupBySource(m.secrets),
): WorkerMode | null {
  if (cores < 2) return null;
  // A sealed identity would need systemd-creds a second time in the worker: the main thread alone.
  if (workerIdentities(m.identities).length === 0 || m.identities.some((e) => e.type === "systemd-creds"))
    return null;
  const [files, decrypts] = estimate(m, groups, previous, identities);
  if (decrypts >= PARALLEL_MIN_DECRYPTS) return "share";
  if (decrypts > 0 && files - decrypts >= PARALLEL_MIN_COPIES) return "rest";
  return null;
}

/** A worker thread for the age files of one install. */
export class DecryptWorker {
  private done: boolean;

  private constructor(
    private readonly worker: Worker,
    readonly mode: WorkerMode,
    gone: boolean,
  ) {
    // A worker that fails or stops before run() is simply not used.
    this.done = gone;
    const stopped = () => {
      this.done = true;
    };
    worker.on("error", stopped);
    worker.on("exit", stopped);
  }

  /**
   * A worker for this install when one will pay (see the file comment), else null: the one
   * started early if there is one (`early`, closed here when it will not pay), else a new one.
   */
  static async startIfWorthIt(
    m: Manifest,
    previous: GenerationMeta | null,
    identities: string,
    groups: SourceGroups,
    early: EarlyWorker | null = null,
  ): Promise<DecryptWorker | null> {
    const mode = workerModeFor(m, previous, identities, os.availableParallelism(), groups);
    if (mode === null) {
      await early?.close();
      return null;
    }
    let thread: { worker: Worker; gone: boolean } | null = null;
    try {
      if (early !== null) thread = early.take();
      else {
        const { Worker } = await import("node:worker_threads");
        // Two threads of JavaScript on two cores from now on: V8's helpers would compete with them.
        enterEfficiencyMode();
        thread = { worker: new Worker(new URL("./decrypt-worker.js", import.meta.url)), gone: false };
      }
      const start: WorkerStart = { identities: workerIdentities(m.identities) };
      thread.worker.postMessage(start);
      return new DecryptWorker(thread.worker, mode, thread.gone);
    } catch {
      // Without a worker the main thread does every job.
      await early?.close();
      await thread?.worker.terminate();
      return null;
    }
  }

  /** Gives the worker its jobs; resolves with what it did (nothing if it failed). */
  run(jobs: WorkerJobs): Promise<WorkerResults> {
    if (this.done) return Promise.resolve(noResults());
    return new Promise((resolve) => {
      this.worker.once("message", (r: WorkerResults) => resolve(r));
      this.worker.once("error", () => resolve(noResults()));
      this.worker.once("exit", () => resolve(noResults()));
      this.worker.postMessage(jobs);
    });
  }

  /** Stops the worker (done or not). */
  async close(): Promise<void> {
    this.done = true;
    await this.worker.terminate();
  }
}

/**
 * Worker threads for `nixseal rekey` (they run rekey-worker.ts): each file's key unwrapped and
 * its new header built there, or only the header when the main thread had to unwrap (an
 * identity that can't go to a worker). Started as soon as the rekey knows there is enough work,
 * so that they boot while the main thread still reads headers.
 */
import * as os from "node:os";
import { Worker } from "node:worker_threads";
import { NixsealError, wipe } from "../common/index.js";
import type { Job } from "./rekey-job.js";
import {
  compactStanzas,
  type FileOutcome,
  type FileWork,
  type PortableIdentity,
  type WorkBatch,
  type WorkerSetup,
  type WorkReply,
  type WrapSet,
  workerStart,
} from "./rekey-worker.js";

/** Files per message to a worker: large enough to amortise messaging, small enough to balance. */
const BATCH = 32;
/**
 * Below this much work (unwraps plus stanzas to wrap), a worker's start-up (~40 ms of CPU)
 * costs more than it saves.
 */
const WORKER_THRESHOLD = 400;

/**
 * Threads besides the main thread, which reads, decrypts and writes meanwhile. One per core but
 * one, at most 3: measured on 2 cores (1000 secrets × 11 recipients), one worker took a rekey
 * from 1.84 s to 1.69 s and two made it 2.04 s (OpenSSL 3 key generation and X25519 contend
 * across threads, and the main thread needs its core).
 */
function defaultWorkers(): number {
  return Math.max(1, Math.min(os.availableParallelism() - 1, 3));
}

/** How many workers to start for `work` units (unwraps plus wraps; none when too few to pay). */
export function workersFor(work: number): number {
  return work >= WORKER_THRESHOLD ? defaultWorkers() : 0;
}

/** A file a worker could not unwrap: src/age's error code, message and hint. */
export interface WorkerFailure {
  code: string;
  message: string;
  hint?: string;
}

/**
 * Unwraps and wraps on worker threads, batch by batch. Each worker gets at most two batches at
 * a time; the rest waits in `pending`, where the main thread takes files to do itself whenever
 * it has nothing else to do (so both cores work, whoever is free).
 */
export class RekeyPool {
  private readonly workers: Worker[] = [];
  private readonly inFlight = new Map<number, Job[]>();
  private readonly load: number[];
  private readonly pending: Job[] = [];
  /** Every job has been added: a short last batch may go out. */
  private complete = false;
  private ready = false;
  private nextBatch = 0;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];
  /** Workers unwrap (setup got identities). */
  unwraps = false;

  /** Starts `count` workers; they wait for setup(). */
  constructor(count: number) {
    for (let i = 0; i < count; i++) {
      const w = new Worker(new URL("./rekey-worker.js", import.meta.url), { workerData: workerStart() });
      w.on("message", (reply: WorkReply) => this.onReply(i, reply));
      w.on("error", (e) => this.fail(e));
      this.workers.push(w);
    }
    this.load = this.workers.map(() => 0);
  }

  /**
   * The recipient sets and the identities to unwrap with (null: the main thread unwraps, workers
   * only wrap). `onHeader` gets each job whose header a worker built (its key never comes back),
   * `onFailure` each job a worker could not unwrap.
   */
  setup(
    sets: WrapSet[],
    identities: PortableIdentity[] | null,
    onHeader: (job: Job) => void,
    onFailure: (job: Job, f: WorkerFailure) => void,
  ): void {
    this.onHeader = onHeader;
    this.onFailure = onFailure;
    this.unwraps = identities !== null;
    const msg: WorkerSetup = { type: "setup", sets, identities };
    for (const w of this.workers) w.postMessage(msg);
    this.ready = true;
    this.dispatch();
  }

  private onHeader: (job: Job) => void = () => {};
  private onFailure: (job: Job, f: WorkerFailure) => void = () => {};

  /** A job to do: unwrapped and wrapped if its key is not known yet (only when `unwraps`). */
  add(job: Job): void {
    this.pending.push(job);
    this.dispatch();
  }

  /** Every job has been added. */
  finishAdding(): void {
    this.complete = true;
    this.dispatch();
  }

  /** A job no worker has yet, for the main thread to do (the newest: workers take the oldest). */
  take(): Job | undefined {
    return this.pending.pop();
  }

  private dispatch(): void {
    for (;;) {
      if (!this.ready || this.pending.length === 0 || (this.pending.length < BATCH && !this.complete)) return;
      let w = 0;
      for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[w]!) w = i;
      if (this.load[w]! >= 2) return;
      const jobs = this.pending.splice(0, BATCH);
      const batch = this.nextBatch++;
      this.inFlight.set(batch, jobs);
      this.load[w]!++;
      const files = jobs.map(fileWork);
      const msg: WorkBatch = { type: "batch", batch, files };
      this.workers[w]!.postMessage(msg);
      for (const f of files) wipe(f.key);
    }
  }

  private onReply(worker: number, reply: WorkReply): void {
    this.load[worker]!--;
    const jobs = this.inFlight.get(reply.batch);
    this.inFlight.delete(reply.batch);
    if ("error" in reply) this.fail(new NixsealError("INTERNAL", `rekey worker failed: ${reply.error}`));
    else if (jobs) {
      for (const [i, j] of jobs.entries()) {
        const out: FileOutcome = reply.files[i]!;
        if ("header" in out) {
          j.newHeader = out.header;
          this.onHeader(j);
        } else this.onFailure(j, out);
      }
    }
    this.dispatch();
    this.wake();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Batches are being done by workers. */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /** Resolves when some batch finished; throws a worker failure. */
  async progress(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.inFlight.size === 0) return;
    await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * A job as a worker takes it: every byte copied into buffers of its own (a view would post the
 * whole, possibly pooled, buffer behind it). The key copy is wiped once posted.
 */
function fileWork(job: Job): FileWork {
  const { header, payload } = job;
  if (job.fileKey !== null) {
    return {
      set: job.set,
      key: Uint8Array.from(job.fileKey),
      stanzas: job.keepable ? compactStanzas(header.stanzas) : null,
      keepable: job.keepable,
      bytes: null,
      macInputLength: 0,
      headerLength: header.length,
    };
  }
  const m = header.macInput.length;
  const bytes = new Uint8Array(m + header.mac.length + payload.length);
  bytes.set(header.macInput, 0);
  bytes.set(header.mac, m);
  bytes.set(payload, m + header.mac.length);
  return {
    set: job.set,
    key: null,
    stanzas: compactStanzas(header.stanzas),
    keepable: job.keepable,
    bytes,
    macInputLength: m,
    headerLength: header.length,
  };
}

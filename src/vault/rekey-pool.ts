/**
 * Wrapping on worker threads for `nixseal rekey` (the workers run rekey-worker.ts). Wrapping is
 * the CPU work of a rekey and each header is independent, so it spreads over cores.
 */
import * as os from "node:os";
import { Worker } from "node:worker_threads";
import { FILE_KEY_SIZE } from "../age/index.js";
import { NixsealError, wipe } from "../common/index.js";
import type { Job } from "./rekey-job.js";
import {
  compactStanzas,
  type WrapJob,
  type WrapReply,
  type WrapSet,
  wrapWorkerSetup,
} from "./rekey-worker.js";

/** Files per message to a worker: large enough to amortise messaging, small enough to balance. */
const BATCH = 32;
/** Below this many stanzas to wrap, worker start-up (~40 ms) costs more than it saves. */
const WORKER_THRESHOLD = 400;

/**
 * Wrapping threads besides the main thread, which reads, decrypts and writes meanwhile. One
 * per core but one, at most 3: measured on 2 cores (1000 secrets × 11 recipients), one worker
 * took a rekey from 1.84 s to 1.69 s and two made it 2.04 s (OpenSSL 3 key generation and
 * X25519 contend across threads, and the main thread needs its core).
 */
function defaultWorkers(): number {
  return Math.max(1, Math.min(os.availableParallelism() - 1, 3));
}

/** How many workers to start for `stanzas` wraps (none when too few to pay for their start). */
export function workersFor(stanzas: number): number {
  return stanzas >= WORKER_THRESHOLD ? defaultWorkers() : 0;
}

/**
 * Wraps headers on worker threads, batch by batch as file keys become known. Each worker gets
 * at most two batches at a time; the rest waits in `pending`, where the main thread takes jobs
 * to wrap itself whenever it has nothing else to do (so both cores wrap, whoever is free).
 */
export class WrapPool {
  private readonly workers: Worker[] = [];
  private readonly inFlight = new Map<number, Job[]>();
  private readonly load: number[];
  private readonly pending: Job[] = [];
  /** Every file key is known: a short last batch may go out. */
  private complete = false;
  private nextBatch = 0;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];

  /** `onHeader` is called for each job whose header a worker wrapped. */
  constructor(
    sets: WrapSet[],
    count: number,
    private readonly onHeader: (job: Job) => void = () => {},
  ) {
    for (let i = 0; i < count; i++) {
      const w = new Worker(new URL("./rekey-worker.js", import.meta.url), {
        workerData: wrapWorkerSetup(sets),
      });
      w.on("message", (reply: WrapReply) => this.onReply(i, reply));
      w.on("error", (e) => this.fail(e));
      this.workers.push(w);
    }
    this.load = this.workers.map(() => 0);
  }

  add(job: Job): void {
    this.pending.push(job);
    this.dispatch();
  }

  /** Every job has been added. */
  finishAdding(): void {
    this.complete = true;
    this.dispatch();
  }

  /** A job no worker has yet, for the main thread to wrap (the newest: workers take the oldest). */
  take(): Job | undefined {
    return this.pending.pop();
  }

  private dispatch(): void {
    for (;;) {
      if (this.pending.length === 0 || (this.pending.length < BATCH && !this.complete)) return;
      let w = 0;
      for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[w]!) w = i;
      if (this.load[w]! >= 2) return;
      const jobs = this.pending.splice(0, BATCH);
      const keys = new Uint8Array(jobs.length * FILE_KEY_SIZE);
      for (const [i, j] of jobs.entries()) keys.set(j.fileKey!, i * FILE_KEY_SIZE);
      const batch = this.nextBatch++;
      this.inFlight.set(batch, jobs);
      this.load[w]!++;
      const job: WrapJob = {
        batch,
        sets: jobs.map((j) => j.set),
        keys,
        old: jobs.map((j) => (j.keepable ? compactStanzas(j.header.stanzas) : null)),
      };
      this.workers[w]!.postMessage(job);
      wipe(keys);
    }
  }

  private onReply(worker: number, reply: WrapReply): void {
    this.load[worker]!--;
    const jobs = this.inFlight.get(reply.batch);
    this.inFlight.delete(reply.batch);
    if ("error" in reply) this.fail(new NixsealError("INTERNAL", `wrapping failed: ${reply.error}`));
    else if (jobs) {
      for (const [i, j] of jobs.entries()) {
        j.newHeader = reply.headers[i]!;
        this.onHeader(j);
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

  /** Batches are being wrapped by workers. */
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

/**
 * The STREAM payload on several cores: drop-in subclasses of PayloadDecryptor/PayloadEncryptor
 * that open or seal runs of whole chunks on worker threads, with the main thread taking its
 * share. age spec: "Payload": chunks are independent (nonce = 11-byte counter || last flag).
 *
 * - Same API and same semantics as stream.ts, which still does everything but the runs of whole
 *   chunks: full-size chunks are tried as middle chunks, then as final chunks; plaintext is
 *   released in order and exactly as far as the sequential code releases it; same errors.
 * - push() stays synchronous: the main thread waits for the workers with Atomics.wait and takes
 *   their results with receiveMessageOnPort, so nobody needs to await anything and the caller's
 *   input is free again when push() returns. Inputs in a SharedArrayBuffer (the CLI reads into
 *   one) are read by the workers in place; others are copied, one job at a time.
 * - Workers start only once a payload passes PARALLEL_THRESHOLD bytes, so small files (secrets)
 *   never pay for them. They never keep the process alive (unref), and a payload's own workers
 *   are terminated by finish() and destroy(). The payload key reaches the workers as a
 *   SharedArrayBuffer that they never copy: wiping it here at the end wipes it there.
 * - Memory stays bounded: one job (at most 128 chunks, 8 MiB) is in flight at a time.
 */
import { createRequire } from "node:module";
import type { MessagePort, Worker } from "node:worker_threads";
import { NixsealError } from "../common/index.js";
import {
  CHUNK_SIZE,
  ENCRYPTED_CHUNK_SIZE,
  MAX_CHUNKS,
  openChunkAt,
  PayloadDecryptor,
  PayloadEncryptor,
  sealChunkAt,
} from "./stream.js";

/** Payload bytes after which workers are started. */
export const PARALLEL_THRESHOLD = 16 * 1024 * 1024;
/** Chunks per batch, the unit of work a thread claims (1 MiB). */
const BATCH_CHUNKS = 16;
/** Chunks per job, the most that is in flight at once (8 MiB). */
const JOB_CHUNKS = 128;
/** More threads than this do not help: reading the input is the limit by then. */
const MAX_WORKERS = 3;
/** A worker that makes no progress for this long is broken (it never happens in practice). */
const STALL_MS = 30_000;

// --- The protocol between the main thread and the workers, and the batch work they share ----
//
// age spec: "Payload": every chunk is sealed on its own, under a nonce made of its 11-byte
// counter and the last-chunk flag, so chunks can be opened and sealed in any order as long as
// the results are released in counter order. A job is a run of whole chunks cut into batches;
// the main thread and the workers claim batches from a counter they share (Atomics), so a busy
// or slow-starting worker never holds the main thread up: whoever is free takes the next batch.

type WorkerThreads = typeof import("node:worker_threads");
let threads: WorkerThreads | undefined;

/** node:worker_threads, loaded on first use: a process that only handles small files never does. */
function workerThreads(): WorkerThreads {
  threads ??= createRequire(import.meta.url)("node:worker_threads") as WorkerThreads;
  return threads;
}

/** Marks the workerData of our workers. */
export const WORKER_KIND = "nixseal-stream-worker";

/** Indices into a job's control words: an Int32Array over a SharedArrayBuffer. */
export const NEXT_BATCH = 0; // the next batch to claim (Atomics.add)
export const DONE_BATCHES = 1; // claimed batches done or skipped; waited on by the main thread
export const STOP_BATCH = 2; // the lowest batch that ended the payload; later batches are skipped
export const CONTROL_WORDS = 3;

/** How a batch of chunks to open ended. */
export const BATCH_OK = 0; // every chunk opened as a middle chunk
export const BATCH_FINAL = 1; // its last part opened as the final chunk; nothing after it opened
export const BATCH_BAD = 2; // the chunk after its last part opened neither as middle nor as final

export type ChunkOp = "open" | "seal";

/** What the main thread posts to each worker for one job. */
export interface ChunkJob {
  op: ChunkOp;
  /** The payload key (32 bytes at keyOffset), shared: the main thread wipes it when done. */
  key: SharedArrayBuffer;
  keyOffset: number;
  control: SharedArrayBuffer;
  input: SharedArrayBuffer;
  /** Byte offset of the job's first chunk in `input`. */
  offset: number;
  chunks: number;
  batchChunks: number;
  /** STREAM counter of the job's first chunk. */
  counter: number;
}

export interface BatchResult {
  batch: number;
  /** open: one plaintext per chunk that opened, in order; seal: ciphertext, tag, ciphertext, tag... */
  parts: Buffer[];
  status: number;
  /** The worker could not do this batch (it threw); the main thread does it again. */
  failed?: boolean;
}

export function batchCount(job: Pick<ChunkJob, "chunks" | "batchChunks">): number {
  return Math.ceil(job.chunks / job.batchChunks);
}

/**
 * Opens or seals the chunks of one batch. Opening follows PayloadDecryptor exactly: a chunk is
 * tried as a middle chunk, then as the final chunk; the batch stops at the first chunk that is
 * not a middle chunk.
 */
export function runBatch(
  job: Pick<ChunkJob, "op" | "offset" | "chunks" | "batchChunks" | "counter">,
  key: Uint8Array,
  input: Buffer,
  batch: number,
  nonce: Buffer,
): BatchResult {
  const start = batch * job.batchChunks;
  const end = Math.min(start + job.batchChunks, job.chunks);
  const parts: Buffer[] = [];
  if (job.op === "seal") {
    for (let k = start; k < end; k++) {
      const at = job.offset + k * CHUNK_SIZE;
      sealChunkAt(key, job.counter + k, false, input.subarray(at, at + CHUNK_SIZE), nonce, parts);
    }
    return { batch, parts, status: BATCH_OK };
  }
  for (let k = start; k < end; k++) {
    const at = job.offset + k * ENCRYPTED_CHUNK_SIZE;
    const chunk = input.subarray(at, at + ENCRYPTED_CHUNK_SIZE);
    let plain = openChunkAt(key, job.counter + k, false, chunk, nonce);
    if (plain !== null) {
      parts.push(plain);
      continue;
    }
    plain = openChunkAt(key, job.counter + k, true, chunk, nonce);
    if (plain === null) return { batch, parts, status: BATCH_BAD };
    parts.push(plain);
    return { batch, parts, status: BATCH_FINAL };
  }
  return { batch, parts, status: BATCH_OK };
}

/**
 * Claims batches of a job until none is left, calling `handle` on each (which returns the batch
 * status). Batches past a stop are skipped, and every claimed batch is counted done, even when
 * `handle` throws, so that the main thread's wait always ends.
 */
export function claimBatches(control: Int32Array, batches: number, handle: (batch: number) => number): void {
  for (;;) {
    const batch = Atomics.add(control, NEXT_BATCH, 1);
    if (batch >= batches) return;
    try {
      if (batch <= Atomics.load(control, STOP_BATCH)) {
        const status = handle(batch);
        if (status !== BATCH_OK) lowerStop(control, batch);
      }
    } finally {
      Atomics.add(control, DONE_BATCHES, 1);
      Atomics.notify(control, DONE_BATCHES);
    }
  }
}

/** STOP_BATCH = min(STOP_BATCH, batch). */
export function lowerStop(control: Int32Array, batch: number): void {
  for (;;) {
    const stop = Atomics.load(control, STOP_BATCH);
    if (stop <= batch || Atomics.compareExchange(control, STOP_BATCH, stop, batch) === stop) return;
  }
}

export interface ParallelOptions {
  /** Payload bytes after which workers are used (default PARALLEL_THRESHOLD). */
  threshold?: number;
  /** Worker threads besides the main thread (default: one per core but one, at most 3). */
  workers?: number;
  /** Workers to use instead of starting new ones; their owner closes them. */
  pool?: StreamWorkerPool;
  /** Chunks per batch (default 16); a run of whole chunks needs two batches to go to workers. */
  batchChunks?: number;
  /** Chunks per job, the most in flight at once (default 128). */
  jobChunks?: number;
  /** Whether the main thread takes batches too (default true); tests turn it off. */
  mainThreadHelps?: boolean;
}

/** How many worker threads a parallel payload starts on this machine by default. */
export function defaultWorkerCount(): number {
  const os = createRequire(import.meta.url)("node:os") as typeof import("node:os");
  return Math.max(0, Math.min(MAX_WORKERS, os.availableParallelism() - 1));
}

interface JobSettings {
  batchChunks: number;
  mainThreadHelps: boolean;
}

interface PooledWorker {
  worker: Worker;
  results: MessagePort;
  /** Settles when the worker runs (or has failed to start). */
  started: Promise<void>;
}

/**
 * Worker threads for STREAM jobs, and the main thread's part in each job. A payload starts its
 * own pool when it needs one; a program that handles many large payloads may share one pool
 * (ParallelOptions.pool) and close it when done.
 */
export class StreamWorkerPool {
  private readonly workers: PooledWorker[] = [];
  private readonly nonce = Buffer.alloc(12);
  /** Where inputs that are not in shared memory are copied for the workers, one job at a time. */
  private scratch: Buffer | null = null;
  private closed = false;
  private exited: Promise<void> = Promise.resolve();
  /** Batches done by worker threads so far. */
  workerBatches = 0;

  constructor(count: number = defaultWorkerCount()) {
    const { MessageChannel, Worker } = workerThreads();
    try {
      for (let i = 0; i < count; i++) {
        const { port1, port2 } = new MessageChannel();
        const worker = new Worker(new URL("./stream-worker.js", import.meta.url), {
          workerData: { kind: WORKER_KIND, results: port2 },
          transferList: [port2],
        });
        // Neither may keep the process alive. A worker that fails to start just never claims a
        // batch (the main thread does them all); a failing batch is redone on the main thread.
        worker.unref();
        worker.on("error", () => {});
        port1.unref();
        const started = new Promise<void>((resolve) => {
          worker.once("online", resolve);
          worker.once("exit", () => resolve());
        });
        this.workers.push({ worker, results: port1, started });
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /** Resolves once every worker is up (optional: jobs never wait for a worker to start). */
  async ready(): Promise<void> {
    // Waiting keeps the process alive: the workers themselves never do.
    for (const w of this.workers) w.worker.ref();
    try {
      await Promise.all(this.workers.map((w) => w.started));
    } finally {
      for (const w of this.workers) w.worker.unref();
    }
  }

  /**
   * Opens or seals the `chunks` whole chunks at the start of `input`, the first one at STREAM
   * counter `counter`, with `key` (in shared memory). Returns the batch results in order; for
   * "open", batches after the first one that ended the payload may be missing.
   */
  run(
    op: ChunkOp,
    key: Buffer,
    input: Buffer,
    counter: number,
    chunks: number,
    settings: JobSettings,
  ): (BatchResult | undefined)[] {
    if (this.closed) throw new NixsealError("INTERNAL", "the STREAM worker pool is closed");
    const size = chunks * (op === "open" ? ENCRYPTED_CHUNK_SIZE : CHUNK_SIZE);
    let shared = input;
    if (!(input.buffer instanceof SharedArrayBuffer)) {
      if (this.scratch === null || this.scratch.length < size) {
        this.scratch?.fill(0);
        this.scratch = Buffer.from(new SharedArrayBuffer(size));
      }
      shared = this.scratch;
      input.copy(shared, 0, 0, size);
    }
    const job: ChunkJob = {
      op,
      key: key.buffer as SharedArrayBuffer,
      keyOffset: key.byteOffset,
      control: new SharedArrayBuffer(CONTROL_WORDS * 4),
      input: shared.buffer as SharedArrayBuffer,
      offset: shared.byteOffset,
      chunks,
      batchChunks: settings.batchChunks,
      counter,
    };
    // Batches address the input by absolute offset, as the workers see it.
    const whole = Buffer.from(job.input);
    const batches = batchCount(job);
    const control = new Int32Array(job.control);
    Atomics.store(control, STOP_BATCH, batches);
    for (const w of this.workers) w.worker.postMessage(job);

    const results: (BatchResult | undefined)[] = new Array(batches);
    try {
      if (settings.mainThreadHelps) {
        claimBatches(control, batches, (batch) => {
          const r = runBatch(job, key, whole, batch, this.nonce);
          results[batch] = r;
          return r.status;
        });
      }
      this.waitForBatches(control, batches);
    } catch (e) {
      // Let the workers run out of batches, then drop whatever they made.
      Atomics.store(control, STOP_BATCH, -1);
      claimBatches(control, batches, () => BATCH_OK);
      this.waitForBatches(control, batches);
      this.receiveResults(results);
      wipeResults(results);
      throw e;
    } finally {
      if (shared === this.scratch && op === "seal") shared.fill(0, 0, size); // plaintext
    }
    this.receiveResults(results);
    // A batch a worker failed to do is done here (only running out of memory makes it fail).
    const stop = Atomics.load(control, STOP_BATCH);
    for (let b = 0; b < batches && b <= stop; b++) {
      if (results[b]?.failed) results[b] = runBatch(job, key, whole, b, this.nonce);
    }
    return results;
  }

  private waitForBatches(control: Int32Array, batches: number): void {
    for (;;) {
      const done = Atomics.load(control, DONE_BATCHES);
      if (done >= batches) return;
      if (
        Atomics.wait(control, DONE_BATCHES, done, STALL_MS) === "timed-out" &&
        Atomics.load(control, DONE_BATCHES) === done
      ) {
        throw new NixsealError("INTERNAL", "a STREAM worker thread stopped responding", {
          hint: "retry; if it happens again, report it",
        });
      }
    }
  }

  /** Takes every batch result the workers posted for the current job. */
  private receiveResults(results: (BatchResult | undefined)[]): void {
    const { receiveMessageOnPort } = workerThreads();
    for (const w of this.workers) {
      for (let m = receiveMessageOnPort(w.results); m !== undefined; m = receiveMessageOnPort(w.results)) {
        const r = m.message as { batch: number; parts: Uint8Array[]; status: number; failed?: boolean };
        if (r.failed !== true) this.workerBatches++;
        results[r.batch] = {
          batch: r.batch,
          parts: r.parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)),
          status: r.status,
          failed: r.failed === true,
        };
      }
    }
  }

  /**
   * Ends the workers and wipes the scratch input; resolves when the threads are gone (nobody
   * needs to wait for that). Safe to call twice.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.scratch?.fill(0);
      this.scratch = null;
      for (const w of this.workers) w.results.close();
      this.exited = Promise.all(this.workers.map((w) => w.worker.terminate())).then(() => {});
    }
    return this.exited;
  }
}

function wipeResults(results: readonly (BatchResult | undefined)[], from = 0): void {
  for (let b = from; b < results.length; b++) for (const p of results[b]?.parts ?? []) p.fill(0);
}

/**
 * One payload's side of the parallel engine: when to use workers, its copy of the key in shared
 * memory, and its pool (its own, or a borrowed one).
 */
class ParallelPart {
  private readonly threshold: number;
  /** Resolved on first need: small payloads never ask the OS how many cores there are. */
  private workerCount: number | undefined;
  private readonly borrowedPool: StreamWorkerPool | null;
  private pool: StreamWorkerPool | null = null;
  private key: Buffer | null = null;
  private seen = 0;
  private poolBatchesAtStart = 0;
  readonly settings: JobSettings;
  readonly jobChunks: number;

  constructor(options: ParallelOptions) {
    this.threshold = options.threshold ?? PARALLEL_THRESHOLD;
    this.borrowedPool = options.pool ?? null;
    this.workerCount = this.borrowedPool?.size ?? options.workers;
    const batchChunks = Math.max(1, Math.floor(options.batchChunks ?? BATCH_CHUNKS));
    this.settings = { batchChunks, mainThreadHelps: options.mainThreadHelps ?? true };
    this.jobChunks = Math.max(batchChunks, Math.floor(options.jobChunks ?? JOB_CHUNKS));
  }

  /** Counts the bytes of a run of whole chunks; true if it should go to the workers. */
  wants(chunks: number, chunkSize: number, counter: number): boolean {
    this.seen += chunks * chunkSize;
    if (
      // Fewer than two batches: the main thread alone is quicker than waking a worker.
      chunks < 2 * this.settings.batchChunks ||
      this.seen < this.threshold ||
      counter + chunks > MAX_CHUNKS
    ) {
      return false;
    }
    this.workerCount ??= defaultWorkerCount();
    return this.workerCount > 0;
  }

  /** Runs one job of at most jobChunks chunks, starting the workers on first use. */
  run(op: ChunkOp, payloadKey: Buffer, input: Buffer, counter: number, chunks: number) {
    if (this.key === null) {
      this.key = Buffer.from(new SharedArrayBuffer(payloadKey.length));
      this.key.set(payloadKey);
    }
    if (this.pool === null) {
      const count = this.workerCount ?? defaultWorkerCount();
      this.pool = this.borrowedPool ?? new StreamWorkerPool(count);
      this.poolBatchesAtStart = this.pool.workerBatches;
    }
    return this.pool.run(op, this.key, input, counter, chunks, this.settings);
  }

  get workerBatches(): number {
    return this.pool === null ? 0 : this.pool.workerBatches - this.poolBatchesAtStart;
  }

  /** Wipes the shared key (for the workers too) and ends the workers if they are ours. */
  stop(): void {
    this.key?.fill(0);
    if (this.pool !== null && this.pool !== this.borrowedPool) void this.pool.close();
  }
}

/** PayloadDecryptor whose runs of whole chunks are opened on worker threads. */
export class ParallelPayloadDecryptor extends PayloadDecryptor {
  private readonly parallel: ParallelPart;

  constructor(payloadKey: Uint8Array, options: ParallelOptions = {}) {
    super(payloadKey);
    this.parallel = new ParallelPart(options);
  }

  /** Batches opened by worker threads so far (diagnostics, tests). */
  get workerBatches(): number {
    return this.parallel.workerBatches;
  }

  protected override openFullChunks(buf: Buffer, out: Buffer[]): number {
    const chunks = Math.floor(buf.length / ENCRYPTED_CHUNK_SIZE);
    if (this.sawLast || !this.parallel.wants(chunks, ENCRYPTED_CHUNK_SIZE, this.counter)) {
      return super.openFullChunks(buf, out);
    }
    for (let done = 0; done < chunks; ) {
      // As in the sequential loop: a chunk after the final chunk is trailing data.
      if (this.sawLast) throw this.trailingData();
      const n = Math.min(this.parallel.jobChunks, chunks - done);
      const at = done * ENCRYPTED_CHUNK_SIZE;
      const input = buf.subarray(at, at + n * ENCRYPTED_CHUNK_SIZE);
      this.release(this.parallel.run("open", this.key, input, this.counter, n), n, out);
      done += n;
    }
    return chunks * ENCRYPTED_CHUNK_SIZE;
  }

  /**
   * Releases the opened chunks of a job in order, exactly as far as the sequential loop would
   * before it throws: up to and including a final chunk, or up to a chunk that did not open.
   */
  private release(results: readonly (BatchResult | undefined)[], chunks: number, out: Buffer[]): void {
    for (let b = 0; b < results.length; b++) {
      const r = results[b];
      if (r === undefined) {
        wipeResults(results, b);
        throw new NixsealError("INTERNAL", "a STREAM batch went missing", { hint: "report this" });
      }
      for (const p of r.parts) out.push(p);
      this.counter += r.parts.length;
      if (r.status === BATCH_OK) continue;
      wipeResults(results, b + 1);
      if (r.status === BATCH_BAD) throw this.authError();
      if (r.status === BATCH_FINAL) {
        this.sawLast = true;
        if (b * this.parallel.settings.batchChunks + r.parts.length < chunks) throw this.trailingData();
      }
    }
  }

  override finish(out: Buffer[]): void {
    try {
      super.finish(out);
    } finally {
      this.parallel.stop();
    }
  }

  override destroy(): void {
    super.destroy();
    this.parallel.stop();
  }
}

/** PayloadEncryptor whose runs of whole chunks are sealed on worker threads. */
export class ParallelPayloadEncryptor extends PayloadEncryptor {
  private readonly parallel: ParallelPart;

  constructor(payloadKey: Uint8Array, options: ParallelOptions = {}) {
    super(payloadKey);
    this.parallel = new ParallelPart(options);
  }

  /** Batches sealed by worker threads so far (diagnostics, tests). */
  get workerBatches(): number {
    return this.parallel.workerBatches;
  }

  protected override sealFullChunks(buf: Buffer, out: Buffer[]): number {
    // As in the sequential loop: only chunks that more data follows, never the last one.
    const chunks = buf.length > CHUNK_SIZE ? Math.floor((buf.length - 1) / CHUNK_SIZE) : 0;
    if (!this.parallel.wants(chunks, CHUNK_SIZE, this.counter)) return super.sealFullChunks(buf, out);
    for (let done = 0; done < chunks; ) {
      const n = Math.min(this.parallel.jobChunks, chunks - done);
      const at = done * CHUNK_SIZE;
      const results = this.parallel.run(
        "seal",
        this.key,
        buf.subarray(at, at + n * CHUNK_SIZE),
        this.counter,
        n,
      );
      for (const r of results) for (const p of r!.parts) out.push(p);
      this.counter += n;
      done += n;
    }
    return chunks * CHUNK_SIZE;
  }

  /** finish() ends here too (PayloadEncryptor.finish calls destroy). */
  override destroy(): void {
    super.destroy();
    this.parallel.stop();
  }
}

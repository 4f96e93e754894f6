/**
 * The batch work of the parallel STREAM engine (stream-parallel.ts), shared by the main thread
 * and its worker threads, and the worker threads' entry point.
 *
 * age spec: "Payload": every chunk is sealed on its own, under a nonce made of its 11-byte
 * counter and the last-chunk flag, so chunks can be opened and sealed in any order as long as
 * the results are released in counter order. A job is a run of whole chunks cut into batches;
 * the main thread and the workers claim batches from a counter they share (Atomics), so a busy
 * or slow-starting worker never holds the main thread up: whoever is free takes the next batch.
 */
import { isMainThread, type MessagePort, parentPort, workerData } from "node:worker_threads";
import { CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, openChunkAt, sealChunkAt } from "./stream.js";

/** Marks the workerData of our workers, so that importing this file elsewhere runs nothing. */
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

/** An ArrayBuffer holding exactly the bytes of `b`, to transfer without copying when possible. */
function ownArrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) {
    return b.buffer;
  }
  const copy = new ArrayBuffer(b.byteLength);
  new Uint8Array(copy).set(b);
  b.fill(0);
  return copy;
}

interface WorkerSetup {
  kind: typeof WORKER_KIND;
  results: MessagePort;
}

function serveJobs(setup: WorkerSetup): void {
  const nonce = Buffer.alloc(12);
  parentPort!.on("message", (job: ChunkJob) => {
    const control = new Int32Array(job.control);
    // Views, not copies: the key is never copied into this thread's memory.
    const key = Buffer.from(job.key, job.keyOffset, 32);
    const input = Buffer.from(job.input);
    claimBatches(control, batchCount(job), (batch) => {
      let result: BatchResult;
      try {
        result = runBatch(job, key, input, batch, nonce);
      } catch {
        setup.results.postMessage({ batch, parts: [], status: BATCH_OK, failed: true });
        return BATCH_OK;
      }
      const buffers = result.parts.map(ownArrayBuffer);
      try {
        // Posted before the batch is counted done: the main thread drains the port after.
        setup.results.postMessage(
          { batch, parts: buffers.map((b) => new Uint8Array(b)), status: result.status },
          buffers,
        );
      } catch {
        for (const b of buffers) if (b.byteLength > 0) new Uint8Array(b).fill(0);
        setup.results.postMessage({ batch, parts: [], status: BATCH_OK, failed: true });
        return BATCH_OK;
      }
      return result.status;
    });
  });
}

if (!isMainThread && (workerData as WorkerSetup | null)?.kind === WORKER_KIND) {
  serveJobs(workerData as WorkerSetup);
}

/**
 * The entry point of the parallel STREAM engine's worker threads (stream-parallel.ts): takes
 * the jobs the main thread posts, claims batches of them alongside the main thread, and posts
 * each batch's chunks back, transferring the buffers (no copy).
 *
 * It is started only by StreamWorkerPool, which is the only code that loads worker_threads: a
 * process that never handles a large payload never loads it.
 */
import { type MessagePort, parentPort, workerData } from "node:worker_threads";
import {
  BATCH_OK,
  type BatchResult,
  batchCount,
  type ChunkJob,
  claimBatches,
  runBatch,
  WORKER_KIND,
} from "./stream-parallel.js";

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

if ((workerData as WorkerSetup | null)?.kind === WORKER_KIND) serveJobs(workerData as WorkerSetup);

/**
 * The worker thread of parallel-sources.ts: loads the manifest's identities itself, claims files
 * from the shared counter alongside the main thread, decrypts them in memory and posts the
 * plaintexts back by transfer (no copy left behind in this thread).
 */
import { parentPort, workerData } from "node:worker_threads";
import { rethrowUnlessNixseal } from "../common/index.js";
import { loadManifestIdentities } from "./identities.js";
import { decryptAgeFile, type WorkerInput, type WorkerOutcome } from "./parallel-sources.js";

async function work(input: WorkerInput): Promise<void> {
  const { identities } = await loadManifestIdentities(input.identities);
  const claim = new Int32Array(input.counter);
  const out: WorkerOutcome[] = [];
  const transfer: ArrayBuffer[] = [];
  for (;;) {
    const index = Atomics.add(claim, 0, 1);
    if (index >= input.files.length) break;
    try {
      const plain = await decryptAgeFile(input.files[index]!, identities);
      const own = new ArrayBuffer(plain.byteLength);
      new Uint8Array(own).set(plain);
      plain.fill(0);
      out.push({ index, plain: own });
      transfer.push(own);
    } catch (e) {
      rethrowUnlessNixseal(e);
      out.push({ index, error: { code: e.code, message: e.message, hint: e.hint, file: e.file } });
    }
  }
  parentPort!.postMessage(out, transfer);
}

await work(workerData as WorkerInput);

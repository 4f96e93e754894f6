/**
 * Decrypting many small age files on two cores: the main thread and one worker thread claim
 * files from a shared counter (so neither waits for the other, and a worker that starts late
 * simply does fewer), each decrypts what it claimed in memory with the same identities, and the
 * worker hands its plaintexts back by transfer. The installer then takes each file's result as
 * if it had opened the file itself (see openSource): same values, same errors.
 *
 * Used only where it pays: many files (a worker costs ~30 ms to start), all small (everything
 * prefetched is held in memory until written), identities the worker can load itself from their
 * files (ssh and age key files; not sealed ones, which would need systemd-creds a second time).
 */
import * as os from "node:os";
import { decrypt as ageDecrypt, type Identity } from "../age/index.js";
import { NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import type { ManifestIdentity } from "./manifest.js";
import { readEncryptedFile } from "./sources.js";

/** Fewer files than this are decrypted faster than a worker starts. */
export const PARALLEL_MIN_FILES = 256;
/** Files larger than this are left to the one-at-a-time path (bounded memory). */
export const PARALLEL_MAX_FILE_SIZE = 64 * 1024;

/** What the worker sends back for one file. */
export type WorkerOutcome =
  | { index: number; plain: ArrayBuffer }
  | {
      index: number;
      error: { code: string; message: string; hint: string | undefined; file: string | undefined };
    };

export interface WorkerInput {
  files: string[];
  identities: ManifestIdentity[];
  counter: SharedArrayBuffer;
}

/** Decrypts one age file as openSource does (errors carry the file). */
export async function decryptAgeFile(file: string, identities: readonly Identity[]): Promise<Uint8Array> {
  const data = readEncryptedFile(file);
  try {
    return await ageDecrypt(data, identities);
  } catch (e) {
    throw e instanceof NixsealError ? e.withFile(file) : e;
  }
}

/** Results of prefetched files, each taken once. */
export class PrefetchedSources {
  constructor(private readonly results: Map<string, Uint8Array | NixsealError>) {}

  /** The plaintext of `file` (the caller owns and wipes it), or null if it was not prefetched. */
  take(file: string): Uint8Array | null {
    const r = this.results.get(file);
    if (r === undefined) return null;
    this.results.delete(file);
    if (r instanceof NixsealError) throw r;
    return r;
  }

  /** Wipes whatever was not taken (a run that stopped early). */
  close(): void {
    for (const r of this.results.values()) if (!(r instanceof NixsealError)) wipe(r);
    this.results.clear();
  }
}

function smallFiles(files: readonly string[], size: (f: string) => number | null): string[] {
  return files.filter((f) => {
    const n = size(f);
    return n !== null && n <= PARALLEL_MAX_FILE_SIZE;
  });
}

/**
 * Decrypts the small ones of `files` on the main thread and a worker together, or returns null
 * when parallelism would not pay (the caller then opens files one by one).
 */
export async function prefetchAgeFiles(
  files: readonly string[],
  entries: readonly ManifestIdentity[],
  identities: readonly Identity[],
  size: (f: string) => number | null,
): Promise<PrefetchedSources | null> {
  if (files.length < PARALLEL_MIN_FILES || os.availableParallelism() < 2) return null;
  if (entries.some((e) => e.type !== "ssh" && e.type !== "age")) return null;
  const list = smallFiles(files, size);
  if (list.length < PARALLEL_MIN_FILES) return null;

  const counter = new SharedArrayBuffer(4);
  const claim = new Int32Array(counter);
  const results = new Map<string, Uint8Array | NixsealError>();
  const { Worker } = await import("node:worker_threads");
  const input: WorkerInput = { files: list, identities: [...entries], counter };
  let worker: InstanceType<typeof Worker> | null = null;
  let fromWorker: Promise<WorkerOutcome[]>;
  try {
    worker = new Worker(new URL("./decrypt-worker.js", import.meta.url), { workerData: input });
    const w = worker;
    fromWorker = new Promise<WorkerOutcome[]>((resolve) => {
      // A worker that fails leaves its files to the main thread (below): never a lost secret.
      w.once("message", (m: WorkerOutcome[]) => resolve(m));
      w.once("error", () => resolve([]));
      w.once("exit", () => resolve([]));
    });
  } catch {
    fromWorker = Promise.resolve([]);
  }
  for (;;) {
    const i = Atomics.add(claim, 0, 1);
    if (i >= list.length) break;
    const file = list[i]!;
    try {
      results.set(file, await decryptAgeFile(file, identities));
    } catch (e) {
      rethrowUnlessNixseal(e);
      results.set(file, e);
    }
  }
  const outcomes = await fromWorker;
  await worker?.terminate();
  for (const o of outcomes) {
    const file = list[o.index]!;
    if ("plain" in o) results.set(file, new Uint8Array(o.plain));
    else {
      const err = new NixsealError(o.error.code as NixsealError["code"], o.error.message, {
        hint: o.error.hint,
        file: o.error.file,
      });
      results.set(file, err);
    }
  }
  // Whatever the worker claimed and did not deliver (it failed): decrypt here.
  for (const file of list) {
    if (results.has(file)) continue;
    try {
      results.set(file, await decryptAgeFile(file, identities));
    } catch (e) {
      rethrowUnlessNixseal(e);
      results.set(file, e);
    }
  }
  return new PrefetchedSources(results);
}

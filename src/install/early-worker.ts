/**
 * The decrypt worker (parallel-sources.ts) started before the manifest is parsed, when its text
 * names enough age files for a worker to pay on a first install. A worker's start (Node again in
 * the thread, then the key formats) takes ~150-200 ms before its first job; started once the
 * install knows what it will decrypt, it began ~200 ms after the main thread had begun its own
 * jobs. Started here, that start overlaps with the manifest's parsing and checks and the
 * generation's preparation instead, on the second core (bench/RESULTS.md, "The decrypt worker
 * started before the manifest is parsed").
 *
 * It is a guess, made from the text alone, and only for a first install (the manifest's
 * secretsDir does not exist yet: a boot), where everything is decrypted. A re-activation may
 * have nothing to decrypt, and a worker started for nothing cost it ~230 ms (10 000 secrets,
 * nothing changed): its start competes with the main thread's, and stopping it waits for that.
 * The install decides later all the same (workerModeFor) and closes a worker it does not need.
 * Until then the worker has been told nothing but to start: it gets its identities and its jobs
 * only from the install. It does not keep the process alive (unref) until the install takes it.
 *
 * This module is small and loads node:worker_threads and src/common only when it starts a
 * worker: every install loads it, and so does the install's floor (bench/install-floor.ts).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import type { Worker } from "node:worker_threads";

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

/** A secret of the age format, as the manifest's JSON names it (spaces allowed, as JSON does). */
const AGE_FORMAT = /"format"\s*:\s*"age"/g;
/** The manifest's secretsDir, a JSON string (a key inside a string would have its quotes escaped). */
const SECRETS_DIR = /"secretsDir"\s*:\s*("(?:[^"\\]|\\.)*")/;

/**
 * How many times `text` names the age format, counting up to `limit`: at least as many as the
 * age files the manifest's secrets read (a file read by two secrets is counted twice, a
 * template's or a string's text that happens to say so too), so a guess that errs only towards a
 * worker the install then closes. The pattern has no nested repetition: linear in the text.
 */
export function ageFormatsNamed(text: string, limit: number): number {
  AGE_FORMAT.lastIndex = 0;
  let n = 0;
  while (n < limit && AGE_FORMAT.exec(text) !== null) n++;
  AGE_FORMAT.lastIndex = 0;
  return n;
}

/**
 * Whether the manifest's text names a secretsDir that does not exist: no generation was ever
 * activated there (a boot, or a first install). False when that cannot be told from the text.
 */
export function firstInstall(text: string): boolean {
  const m = SECRETS_DIR.exec(text);
  if (m === null) return false;
  let dir: unknown;
  try {
    dir = JSON.parse(m[1]!);
  } catch {
    return false;
  }
  if (typeof dir !== "string" || !dir.startsWith("/")) return false;
  try {
    fs.lstatSync(dir);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT";
  }
}

/** A decrypt worker started early; the install takes it (take) or closes it. */
export class EarlyWorker {
  private gone = false;
  private taken = false;

  constructor(private readonly worker: Worker) {
    // A worker that fails or stops before it is taken is not used: the main thread does its jobs.
    const gone = () => {
      this.gone = true;
    };
    worker.on("error", gone);
    worker.on("exit", gone);
    worker.unref();
  }

  /**
   * The thread, for the install that uses it, and whether it already failed or stopped. Taken
   * once; it keeps the process alive from then on, as a worker started then would.
   */
  take(): { worker: Worker; gone: boolean } {
    if (this.taken) throw new Error("the early decrypt worker was already taken or closed");
    this.taken = true;
    this.worker.ref();
    return { worker: this.worker, gone: this.gone };
  }

  /** Stops the worker unless it was taken (then its user stops it). */
  async close(): Promise<void> {
    if (this.taken) return;
    this.taken = true;
    await this.worker.terminate();
  }
}

/**
 * Starts the decrypt worker now if this is a first install (firstInstall), the manifest's text
 * names at least PARALLEL_MIN_DECRYPTS age files and there are two cores, else returns null. V8
 * goes to efficiency mode with it, as when the install starts one (src/common/efficiency-mode.ts).
 * Never fails: without a worker the install starts one itself when it pays, as before.
 */
export async function startEarlyWorker(manifestText: string): Promise<EarlyWorker | null> {
  if (
    os.availableParallelism() < 2 ||
    ageFormatsNamed(manifestText, PARALLEL_MIN_DECRYPTS) < PARALLEL_MIN_DECRYPTS ||
    !firstInstall(manifestText)
  )
    return null;
  try {
    const [{ Worker }, { enterEfficiencyMode }] = await Promise.all([
      import("node:worker_threads"),
      import("../common/index.js"),
    ]);
    enterEfficiencyMode();
    return new EarlyWorker(new Worker(new URL("./decrypt-worker.js", import.meta.url)));
  } catch {
    return null;
  }
}

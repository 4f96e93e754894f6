/**
 * Scanning threads for large trees (src/audit/scan.ts decides when): each worker
 * (src/audit/scan-worker.ts) builds its own Matcher from the patterns and scans whole files the
 * main thread hands it, so matching runs on every core while the main thread walks, scans names
 * and keeps the results. The patterns reach the workers in one SharedArrayBuffer, zeroed by stop().
 *
 * Workers are started once a scan has seen enough bytes to pay for their start (~30-40 ms and a
 * Matcher each); a small scan (a build result, the tests) never starts one. A worker keeps the
 * process alive only while it has files to answer (the main thread awaits its replies), and
 * stop() ends them on every path.
 */
import { createRequire } from "node:module";
import type { Worker } from "node:worker_threads";
import type { Matcher } from "./matcher.js";

/** What a worker needs to build its Matcher. */
export interface ScanWorkerData {
  patterns: SharedArrayBuffer;
  lengths: Int32Array;
  chunkSize: number;
  /** Matches kept per file; more are only counted. */
  maxHits: number;
}

/** One file to scan: the walk's lstat says which file (device and inode) it must be. */
export interface ScanJob {
  id: number;
  file: string;
  dev: number;
  ino: number;
}

/**
 * A worker's answer: the matches as (patternId, offset) pairs; or the file was no longer a
 * regular file; or an errno code ("replaced": another file by then; "thread": a worker failed,
 * so the file was not scanned and the caller scans it itself).
 */
export type ScanReply =
  | { id: number; bytes: number; hits: Float64Array; extra: number }
  | { id: number; special: true }
  | { id: number; error: string };

/** Files handed to one worker at a time: one being read, one waiting, so it never idles. */
const PER_WORKER = 2;

interface Running {
  worker: Worker;
  inFlight: number;
  exited: boolean;
}

export class ScanPool {
  private readonly workers: Running[] = [];
  private readonly pending = new Map<number, { resolve(r: ScanReply): void; worker: Running }>();
  private readonly patterns: SharedArrayBuffer;
  private nextId = 0;
  private failure: Error | null = null;
  private readonly waiting: (() => void)[] = [];

  constructor(matcher: Matcher, count: number, chunkSize: number, maxHits: number) {
    const total = matcher.patterns.reduce((n, p) => n + p.length, 0);
    this.patterns = new SharedArrayBuffer(total);
    const bytes = new Uint8Array(this.patterns);
    let at = 0;
    for (const p of matcher.patterns) {
      bytes.set(p, at);
      at += p.length;
    }
    const data: ScanWorkerData = {
      patterns: this.patterns,
      lengths: Int32Array.from(matcher.patterns, (p) => p.length),
      chunkSize,
      maxHits,
    };
    const { Worker } = createRequire(import.meta.url)(
      "node:worker_threads",
    ) as typeof import("node:worker_threads");
    for (let i = 0; i < count; i++) {
      const worker = new Worker(new URL("./scan-worker.js", import.meta.url), { workerData: data });
      worker.unref();
      const running: Running = { worker, inFlight: 0, exited: false };
      worker.on("message", (reply: ScanReply) => {
        const p = this.pending.get(reply.id);
        if (p === undefined) return;
        this.pending.delete(reply.id);
        if (--running.inFlight === 0) worker.unref();
        p.resolve(reply);
        this.waiting.shift()?.();
      });
      worker.on("error", (e) => this.fail(e));
      worker.on("exit", (code) => {
        running.exited = true;
        if (code !== 0) this.fail(new Error(`a scanning thread exited with code ${code}`));
      });
      this.workers.push(running);
    }
  }

  /** Whether a worker failed: then every file not answered is answered with error "thread". */
  get failed(): boolean {
    return this.failure !== null;
  }

  /** Scans one file on the least busy worker; waits while every worker has PER_WORKER files. */
  async scan(file: string, dev: number, ino: number): Promise<ScanReply> {
    for (;;) {
      if (this.failure) return { id: -1, error: "thread" };
      const free = this.workers.reduce((a, b) => (b.inFlight < a.inFlight ? b : a));
      if (free.inFlight < PER_WORKER) {
        const id = this.nextId++;
        if (free.inFlight++ === 0) free.worker.ref();
        return new Promise<ScanReply>((resolve) => {
          this.pending.set(id, { resolve, worker: free });
          free.worker.postMessage({ id, file, dev, ino } satisfies ScanJob);
        });
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.resolve({ id, error: "thread" });
    }
    for (const w of this.waiting.splice(0)) w();
  }

  /** Ends the workers (they zero their copies of the patterns) and zeroes the shared one. */
  async stop(): Promise<void> {
    await Promise.all(
      this.workers.map(async (running) => {
        if (running.exited) return;
        const exited = new Promise<void>((resolve) => running.worker.once("exit", () => resolve()));
        // Kept alive until it has exited: the caller awaits that.
        running.worker.ref();
        if (this.failure === null) running.worker.postMessage("stop");
        else void running.worker.terminate();
        await exited;
      }),
    );
    new Uint8Array(this.patterns).fill(0);
  }
}

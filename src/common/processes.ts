/**
 * Running another program that handles a secret: gpg and systemd-creds (the secret goes in on
 * stdin), a user's command such as `pass show` (the secret comes out on stdout). One place for
 * what each of them needs (docs/architecture.md, invariant 1): the secret never in argv or the
 * environment, stdout bounded (a program that prints more is stopped), every chunk of stdout
 * wiped once joined, stderr kept only in part, for a message.
 *
 * node:child_process is loaded at first use: importing it costs ~7-10 ms of CPU at every start
 * (Node's ES module wrapper reads all its exports), and most runs start no process.
 */
import { createRequire } from "node:module";
import { asBuffer, wipe } from "./bytes.js";

let childProcessModule: typeof import("node:child_process") | undefined;

/** node:child_process, loaded on the first call. */
export function childProcess(): typeof import("node:child_process") {
  childProcessModule ??= createRequire(import.meta.url)(
    "node:child_process",
  ) as typeof import("node:child_process");
  return childProcessModule;
}

export interface CaptureOptions {
  /** Written to the program's stdin, which is then closed; without it stdin is closed at once. */
  input?: Uint8Array;
  /** The environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** More stdout than this stops the program: `stopped` is "too-large" and stdout is empty. */
  maxStdout: number;
  /** How much of stderr is kept (default 64 KiB): its beginning, or with `stderrTail` its end. */
  maxStderr?: number;
  stderrTail?: boolean;
  /** stderr goes to this process's stderr instead (a command whose messages the user reads). */
  inheritStderr?: boolean;
  /** Collect file descriptor 3 too (gpg's --status-fd 3), at most this many characters. */
  fd3?: number;
  /** Stopped after this long (`stopped` is "timeout"), or when `signal` aborts ("aborted"). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** How the program is stopped (default SIGKILL). */
  stopWith?: NodeJS.Signals;
}

export interface Captured {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The program's output; the caller wipes it when done. Empty when stopped. */
  stdout: Buffer;
  stderr: string;
  fd3: string;
  /** Why nixseal stopped the program, or null if it ended by itself. */
  stopped: "too-large" | "timeout" | "aborted" | null;
}

/**
 * Runs `program` with `args` (no shell) and collects what it prints. Rejects only when the
 * program cannot be started, with Node's spawn error (its `code`, e.g. ENOENT); everything else,
 * a failure included, is in the result for the caller to word.
 */
export function captureOutput(
  program: string,
  args: readonly string[],
  options: CaptureOptions,
): Promise<Captured> {
  const maxStderr = options.maxStderr ?? 64 * 1024;
  return new Promise((resolve, reject) => {
    const stdio: ("pipe" | "ignore" | "inherit")[] = [
      options.input === undefined ? "ignore" : "pipe",
      "pipe",
      options.inheritStderr ? "inherit" : "pipe",
    ];
    if (options.fd3 !== undefined) stdio.push("pipe");
    const child = childProcess().spawn(program, args, { stdio, env: options.env ?? process.env });
    const out: Buffer[] = [];
    let outSize = 0;
    let stderr = "";
    let fd3 = "";
    let stopped: Captured["stopped"] = null;
    let ended = false;
    const stop = (why: NonNullable<Captured["stopped"]>) => {
      stopped ??= why;
      child.kill(options.stopWith ?? "SIGKILL");
      // A process it started may hold the pipes open after it is gone: "close" must not wait for it.
      for (const s of child.stdio) s?.destroy();
    };
    const timer =
      options.timeoutMs === undefined ? undefined : setTimeout(() => stop("timeout"), options.timeoutMs);
    const onAbort = () => stop("aborted");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const finish = () => {
      ended = true;
      if (timer !== undefined) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    };
    child.on("error", (e) => {
      if (ended) return;
      finish();
      for (const c of out) wipe(c);
      reject(e);
    });
    child.stdout!.on("data", (chunk: Buffer) => {
      if (stopped === "too-large") return wipe(chunk);
      outSize += chunk.length;
      out.push(chunk);
      if (outSize > options.maxStdout) stop("too-large");
    });
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (s: string) => {
      if (options.stderrTail) stderr = (stderr + s).slice(-maxStderr);
      else if (stderr.length < maxStderr) stderr += s.slice(0, maxStderr - stderr.length);
    });
    if (options.fd3 !== undefined) {
      const pipe = child.stdio[3] as NodeJS.ReadableStream;
      pipe.setEncoding("utf8");
      pipe.on("data", (s: string) => {
        if (fd3.length < options.fd3!) fd3 += s;
      });
    }
    if (options.input !== undefined) {
      // The program may exit before reading everything (a bad option, a missing device): its
      // exit status says why, not the broken pipe.
      child.stdin!.on("error", () => {});
      child.stdin!.end(asBuffer(options.input));
    }
    child.on("close", (code, signal) => {
      if (ended) return;
      finish();
      const stdout = stopped === null ? Buffer.concat(out) : Buffer.alloc(0);
      for (const c of out) wipe(c);
      resolve({ code, signal, stdout, stderr, fd3, stopped });
    });
  });
}

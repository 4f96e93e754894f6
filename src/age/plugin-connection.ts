/**
 * One run of an age plugin program: the child process, and the stanza framing on its stdin and
 * stdout. age-plugin spec: "IPC protocol" — stanzas serialized exactly as in the age v1 header.
 *
 * A plugin is untrusted code that may crash, exit early, write garbage or hang: every read is
 * parsed strictly, bounded in size and (unless disabled) in time, and the child is killed when
 * anything goes wrong. Stanzas are framed exactly as in the header (format.ts); buffers that may
 * hold a secret body (file keys, values the user typed) are zeroed once the pipe has taken them.
 */
import type { ChildProcess } from "node:child_process";
import { tmpdir } from "node:os";
import { childProcess, NixsealError } from "../common/index.js";
import { encodeStanza, readStanza } from "./format.js";
import { findPluginBinary, pluginBinaryName } from "./plugin-encoding.js";
import type { Stanza } from "./types.js";

/** A stanza's first line; hybrid post-quantum stanzas carry ~1.5 kB arguments, so be generous. */
const MAX_LINE = 64 * 1024;
/** Everything a plugin may have written that we have not consumed yet. */
const MAX_PENDING = 1024 * 1024;
/** How much of the plugin's stderr we keep to explain a failure. */
const STDERR_TAIL = 4096;
/** After the child exits, how long we still wait for its stdout to close. */
const EXIT_GRACE_MS = 2000;
/** How long a plugin may take to exit after `done` (or after SIGTERM) before it is killed. */
const EXIT_WAIT_MS = 2000;

export const DEFAULT_READ_TIMEOUT_MS = 120_000;
export const DEFAULT_WAIT_TIMER_MS = 5000;

export interface PluginRunOptions {
  /**
   * How long one read from the plugin may take, in ms (default 2 minutes; 0 = no limit). The
   * clock only runs while we wait for the plugin: never while a UI prompt is open.
   */
  timeoutMs?: number;
  /** After this long waiting on one read, `waitTimer` is called once (default 5 s, as age). */
  waitTimerMs?: number;
  /**
   * The plugin's stderr: "collect" (default) keeps the last 4 kB and quotes its last line when
   * the plugin fails; "inherit" passes it through to our stderr (for debugging plugins).
   */
  stderr?: "collect" | "inherit";
  /** PATH to search for the plugin program (default: process.env.PATH). */
  searchPath?: string;
}

// --- stanza framing: the age header's own (format.ts) -------------------------------------------

/**
 * One command or response as bytes on the wire. The result may hold a secret body (a file key,
 * a value the user typed): the caller wipes it. (The base64 of the body passes through a string
 * on the way, which cannot be wiped; docs/threat-model.md, "The memory of the JavaScript process".)
 */
export function encodeCommand(
  type: string,
  args: readonly string[] = [],
  body: Uint8Array = new Uint8Array(0),
): Buffer {
  return Buffer.from(encodeStanza({ type, args: [...args], body }), "latin1");
}

// --- text coming from a plugin ---------------------------------------------------------------------

/**
 * Makes text from a plugin safe to show on a terminal or in an error: no control characters or
 * bidirectional overrides (which could forge output), at most `max` characters.
 */
export function sanitizePluginText(bytes: Uint8Array | string, max = 500): string {
  const s = typeof bytes === "string" ? bytes : Buffer.from(bytes).toString("utf8");
  let out = s
    .replace(/[\t\n\r]+/g, " ")
    .replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, "?")
    .trim();
  if (out.length > max) out = `${out.slice(0, max)}…`;
  return out;
}

// --- the child process ------------------------------------------------------------------------------

/**
 * A running plugin, speaking one state machine (`recipient-v1` or `identity-v1`).
 * Usage: start(), write()..., read()... until `done`, then finish(); on any error, kill().
 */
export class PluginProcess {
  readonly plugin: string;
  readonly binary: string;
  private readonly child: ChildProcess;
  private readonly timeoutMs: number;
  private readonly waitTimerMs: number;
  private pending: Buffer = Buffer.alloc(0);
  private pos = 0;
  private stdoutEnded = false;
  private exitedAt: number | null = null;
  private exitCode: number | null = null;
  private exitSignal: NodeJS.Signals | null = null;
  private spawnError: Error | null = null;
  private overflow = false;
  private stderrTail = "";
  private wake: (() => void) | null = null;
  private readonly closed: Promise<void>;
  private readonly exited: Promise<void>;

  private constructor(plugin: string, stateMachine: string, options: PluginRunOptions) {
    this.plugin = plugin;
    this.binary = findPluginBinary(plugin, options.searchPath ?? process.env.PATH);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    this.waitTimerMs = options.waitTimerMs ?? DEFAULT_WAIT_TIMER_MS;
    const stderr = options.stderr === "inherit" ? "inherit" : "pipe";
    // No shell; an empty temporary directory as cwd, as age does: plugins MUST NOT rely on it.
    this.child = childProcess().spawn(this.binary, [`--age-plugin=${stateMachine}`], {
      stdio: ["pipe", "pipe", stderr],
      cwd: tmpdir(),
      shell: false,
    });
    const child = this.child;
    this.closed = new Promise<void>((resolve) => {
      child.once("close", () => resolve());
      // A process that never started emits "error" and maybe no "close".
      child.once("error", () => resolve());
    });
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    child.on("error", (e) => {
      this.spawnError = e;
      this.notify();
    });
    child.on("exit", (code, signal) => {
      this.exitedAt = Date.now();
      this.exitCode = code;
      this.exitSignal = signal;
      this.notify();
    });
    child.stdin!.on("error", () => {
      // EPIPE when the plugin exits without reading: read() reports it as an early exit.
      this.notify();
    });
    child.stdout!.on("data", (chunk: Buffer) => this.onData(chunk));
    child.stdout!.on("end", () => {
      this.stdoutEnded = true;
      this.notify();
    });
    child.stdout!.on("error", () => {
      this.stdoutEnded = true;
      this.notify();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString("utf8")).slice(-STDERR_TAIL);
    });
    child.stderr?.on("error", () => {});
  }

  /** Starts `age-plugin-<name> --age-plugin=<stateMachine>`; throws AGE_PLUGIN if it is not on PATH. */
  static start(plugin: string, stateMachine: string, options: PluginRunOptions = {}): PluginProcess {
    return new PluginProcess(plugin, stateMachine, options);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private onData(chunk: Buffer): void {
    const unread = this.pending.length - this.pos;
    if (unread + chunk.length > MAX_PENDING) {
      this.overflow = true;
      chunk.fill(0);
      this.notify();
      return;
    }
    const next = Buffer.allocUnsafe(unread + chunk.length);
    this.pending.copy(next, 0, this.pos);
    chunk.copy(next, unread);
    // What we read may hold a file key: do not leave copies behind.
    this.pending.fill(0);
    chunk.fill(0);
    this.pending = next;
    this.pos = 0;
    this.notify();
  }

  /** Sends stanzas (phase 1, or one response). Secret buffers are wiped once written. */
  write(...stanzas: Buffer[]): void {
    const data = stanzas.length === 1 ? stanzas[0]! : Buffer.concat(stanzas);
    if (stanzas.length > 1) for (const s of stanzas) s.fill(0);
    const stdin = this.child.stdin!;
    if (stdin.destroyed || stdin.writableEnded) {
      data.fill(0);
      return;
    }
    stdin.write(data, () => data.fill(0));
  }

  /** Sends one stanza. */
  send(type: string, args: readonly string[] = [], body: Uint8Array = new Uint8Array(0)): void {
    this.write(encodeCommand(type, args, body));
  }

  protocolError(what: string): NixsealError {
    return new NixsealError(
      "AGE_PLUGIN",
      `${pluginBinaryName(this.plugin)} broke the plugin protocol: ${what}`,
      {
        hint: `the plugin is incompatible or broken; upgrade ${pluginBinaryName(this.plugin)}`,
      },
    );
  }

  /**
   * Reads the next stanza the plugin sends. Throws AGE_PLUGIN if the plugin exits, writes
   * something that is not a stanza, or is silent longer than the read timeout.
   */
  async read(onWaiting?: () => void): Promise<Stanza> {
    const started = Date.now();
    let waitNotified = onWaiting === undefined;
    for (;;) {
      if (this.overflow) throw this.protocolError("it wrote more than 1 MiB without a complete stanza");
      const r = readStanza(this.pending, this.pos, MAX_LINE);
      if ("stanza" in r) {
        // Wipe the consumed base64 (it may be a file key) as we go.
        this.pending.fill(0, this.pos, r.end);
        this.pos = r.end;
        return r.stanza;
      }
      if ("invalid" in r) throw this.protocolError(r.invalid);
      if (this.spawnError !== null) throw this.startError(this.spawnError);
      const now = Date.now();
      if (this.stdoutEnded || (this.exitedAt !== null && now - this.exitedAt >= EXIT_GRACE_MS)) {
        throw await this.earlyExitError();
      }
      let deadline = Number.POSITIVE_INFINITY;
      if (this.timeoutMs > 0) {
        if (now - started >= this.timeoutMs) throw this.timeoutError();
        deadline = started + this.timeoutMs;
      }
      if (!waitNotified) deadline = Math.min(deadline, started + this.waitTimerMs);
      if (this.exitedAt !== null) deadline = Math.min(deadline, this.exitedAt + EXIT_GRACE_MS);
      await this.waitForEvent(deadline - now);
      if (!waitNotified && Date.now() - started >= this.waitTimerMs) {
        waitNotified = true;
        onWaiting!();
      }
    }
  }

  private waitForEvent(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(() => this.notify(), Math.max(0, ms)) : null;
      this.wake = () => {
        if (timer !== null) clearTimeout(timer);
        resolve();
      };
    });
  }

  private startError(e: Error): NixsealError {
    const errno = (e as NodeJS.ErrnoException).code ?? "error";
    return new NixsealError("AGE_PLUGIN", `cannot start ${this.binary}: ${errno}`, {
      hint: `check that ${pluginBinaryName(this.plugin)} is an executable program`,
      cause: e,
    });
  }

  private timeoutError(): NixsealError {
    return new NixsealError(
      "AGE_PLUGIN",
      `${pluginBinaryName(this.plugin)} did not answer within ${
        this.timeoutMs < 10_000 ? `${this.timeoutMs} ms` : `${Math.round(this.timeoutMs / 1000)} s`
      }`,
      { hint: "the plugin may be waiting for a device or be stuck; try again, or check the plugin" },
    );
  }

  /** The last line the plugin wrote to stderr, made safe to show (empty if none or inherited). */
  stderrLastLine(): string {
    const lines = this.stderrTail.split("\n").filter((l) => l.trim() !== "");
    return sanitizePluginText(lines.at(-1) ?? "", 300);
  }

  private async earlyExitError(): Promise<NixsealError> {
    // stdout closed: the exit status follows right away (unless a grandchild holds the pipe).
    await settlesWithin(this.closed, EXIT_WAIT_MS);
    const status =
      this.exitSignal !== null
        ? `killed by ${this.exitSignal}`
        : this.exitCode !== null
          ? `exit code ${this.exitCode}`
          : "closed its output";
    const said = this.stderrLastLine();
    return new NixsealError(
      "AGE_PLUGIN",
      `${pluginBinaryName(this.plugin)} stopped before finishing (${status})${said ? `: ${said}` : ""}`,
      { hint: `check that ${pluginBinaryName(this.plugin)} supports this key and works on its own` },
    );
  }

  /**
   * After `done`: closes stdin and waits (briefly) for the plugin to exit; kills it if it does
   * not. Its exit status no longer matters: the protocol has finished (as age).
   */
  async finish(): Promise<void> {
    this.child.stdin!.end();
    if (await settlesWithin(this.exited, EXIT_WAIT_MS)) {
      // A daemon the plugin started (agent-style plugins) may hold our pipes: let go of them.
      this.releasePipes();
      await settlesWithin(this.closed, EXIT_WAIT_MS);
      this.wipeBuffers();
      return;
    }
    await this.kill();
  }

  /** Ends the plugin: SIGTERM, then SIGKILL if it is still there; waits until it is gone. */
  async kill(): Promise<void> {
    this.child.stdin!.destroy();
    if (this.exitedAt === null && this.spawnError === null) {
      this.child.kill("SIGTERM");
      if (!(await settlesWithin(this.exited, EXIT_WAIT_MS))) {
        this.child.kill("SIGKILL");
        await settlesWithin(this.exited, EXIT_WAIT_MS);
      }
    }
    this.releasePipes();
    await settlesWithin(this.closed, EXIT_WAIT_MS);
    this.wipeBuffers();
  }

  private releasePipes(): void {
    this.child.stdin!.destroy();
    this.child.stdout!.destroy();
    this.child.stderr?.destroy();
  }

  wipeBuffers(): void {
    this.pending.fill(0);
    this.pos = this.pending.length;
  }

  /** Whether the plugin closed its output or exited. */
  get stopped(): boolean {
    return this.stdoutEnded || this.exitedAt !== null || this.spawnError !== null;
  }

  /** For tests: the child's pid. */
  get pid(): number | undefined {
    return this.child.pid;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(resolve, ms).unref();
  });
}

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let settled = false;
  await Promise.race([p.then(() => (settled = true)), delay(ms)]);
  return settled;
}

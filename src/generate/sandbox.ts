/**
 * Running generators: each sh script in an empty environment (PATH of its runtimeInputs, `out`,
 * `in`, `prompts`, TMPDIR), with a time limit, its files in a private directory on a RAM-backed
 * filesystem, started by the run's one script runner (runner.ts); as root the runner is in
 * private mount and network namespaces (one `unshare` per run) with a private tmpfs on /tmp, so
 * nothing a script writes to /tmp reaches a disk or outlives the run. Or an import command, run
 * directly (no shell), whose standard output is the value. And, from a flake, building the
 * runtimeInputs `nix eval` left unbuilt.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { findExecutable, NixsealError } from "../common/index.js";
import { compactNixError } from "../vault/index.js";
import { MAX_OUTPUT_SIZE, type RunResult, runProcess } from "./process.js";
import type { GeneratorSpec, Generators } from "./spec.js";

export { MAX_OUTPUT_SIZE, type RunResult } from "./process.js";

export interface Isolation {
  /** True when scripts run in their own mount and network namespaces. */
  namespaces: boolean;
  /** Why not, when they don't. */
  reason: string | null;
  sh: string;
  unshare: string | null;
  mount: string | null;
}

/**
 * How scripts can be isolated here: private namespaces need root (an unprivileged user
 * namespace would make the script "root" in it, which scripts do not expect) and a working
 * `unshare`; the check runs `unshare` once.
 */
export function probeIsolation(): Isolation {
  const sh = findExecutable("sh") ?? "/bin/sh";
  const unshare = findExecutable("unshare");
  const mount = findExecutable("mount");
  const base = { sh, unshare, mount };
  if (process.getuid?.() !== 0) return { ...base, namespaces: false, reason: "not running as root" };
  if (unshare === null || mount === null)
    return { ...base, namespaces: false, reason: "unshare or mount is not on PATH" };
  const r = spawnSync(
    unshare,
    [
      "--mount",
      "--net",
      "--propagation",
      "private",
      "--",
      mount,
      "-t",
      "tmpfs",
      "-o",
      "size=1m",
      "nixseal-probe",
      "/tmp",
    ],
    {
      stdio: "ignore",
      env: {},
      timeout: 10_000,
    },
  );
  if (r.status !== 0) return { ...base, namespaces: false, reason: "unshare --mount --net failed here" };
  return { ...base, namespaces: true, reason: null };
}

/**
 * The PATH of a script: each runtimeInput is a command name found on the caller's PATH (its
 * directory), an absolute directory (its `bin` when it has one: a package), or an absolute
 * program (its directory).
 */
export function runtimePath(gen: GeneratorSpec, callerPath: string | undefined): string {
  const dirs: string[] = [];
  const missing: string[] = [];
  for (const input of gen.runtimeInputs) {
    if (path.isAbsolute(input)) {
      let st: fs.Stats | null = null;
      try {
        st = fs.statSync(input);
      } catch {}
      if (st === null) missing.push(input);
      else if (st.isDirectory()) {
        const bin = path.join(input, "bin");
        dirs.push(fs.existsSync(bin) ? bin : input);
      } else dirs.push(path.dirname(input));
      continue;
    }
    if (input.includes("/")) {
      missing.push(input);
      continue;
    }
    const found = findExecutable(input, callerPath);
    if (found === null) missing.push(input);
    else dirs.push(path.dirname(found));
  }
  if (missing.length > 0) {
    throw new NixsealError(
      "GENERATE",
      `generator "${gen.name}": runtimeInputs ${missing.map((m) => `"${m}"`).join(", ")} not found`,
      { hint: "name commands on your PATH, or absolute paths (a package directory, a program)" },
    );
  }
  return [...new Set(dirs)].join(":");
}

/**
 * Builds (or substitutes) the derivations of the runtimeInputs of the generators named, when
 * one of their inputs is missing: `nix eval` of a flake evaluates them but builds nothing. One
 * `nix-store --realise` for all of them.
 */
export function realiseRuntimeInputs(spec: Generators, names: Iterable<string>): void {
  const drvs = new Set<string>();
  const who = new Set<string>();
  for (const name of names) {
    const gen = spec.generators.get(name);
    const list = spec.runtimeDerivations?.get(name);
    if (gen === undefined || list === undefined) continue;
    if (gen.runtimeInputs.every((i) => !path.isAbsolute(i) || fs.existsSync(i))) continue;
    for (const d of list) drvs.add(d);
    who.add(name);
  }
  if (drvs.size === 0) return;
  const names_ = [...who].map((n) => `"${n}"`).join(", ");
  const r = spawnSync("nix-store", ["--realise", ...drvs], {
    encoding: "utf8",
    stdio: ["ignore", "ignore", "pipe"],
    maxBuffer: 16 * 1024 * 1024,
    env: process.env,
  });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : compactNixError(r.stderr ?? "");
    throw new NixsealError(
      "GENERATE",
      `cannot build the runtimeInputs of generator ${names_}: nix-store --realise failed: ${why}`,
      {
        hint: "build them yourself (nix build) or check the host's configuration and substituters; nothing was run",
      },
    );
  }
}

export interface ScriptDirs {
  out: string;
  in: string;
  prompts: string;
  tmp: string;
}

/**
 * One script runner (runner.ts) for a run: started at the first script, as root under one
 * `unshare --mount --net` with a private tmpfs on /tmp shared by the run's scripts (each still
 * has its own TMPDIR in its RAM directory). Closed at the end of the run and on exit.
 */
export class ScriptRunner {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (r: RunResult) => void>();
  private next = 0;
  private ended: string | null = null;
  private readonly onExit = () => this.close();

  constructor(private readonly isolation: Isolation) {
    const runner = fileURLToPath(new URL("./runner.js", import.meta.url));
    const node = process.execPath;
    const [program, args, env] = isolation.namespaces
      ? [
          isolation.unshare!,
          ["--mount", "--net", "--propagation", "private", "--", node, runner],
          { NIXSEAL_MOUNT: isolation.mount! },
        ]
      : [node, [runner], {}];
    this.child = spawn(program as string, args as string[], {
      env: env as NodeJS.ProcessEnv,
      cwd: "/",
      detached: true,
      stdio: ["ignore", "ignore", "ignore", "ipc"],
      serialization: "json",
    });
    this.child.on("message", (m: { id: number; ok: boolean; message: string; stderr: string }) => {
      // id -1: the runner's own failure (runner.ts), before it ends.
      if (m.id === -1) this.ended ??= String(m.message);
      const done = this.pending.get(m.id);
      if (done === undefined) return;
      this.pending.delete(m.id);
      done({
        ok: m.ok === true,
        message: String(m.message),
        stderr: String(m.stderr),
        stdout: Buffer.alloc(0),
      });
    });
    const end = (why: string) => {
      this.ended ??= why;
      for (const done of this.pending.values())
        done({
          ok: false,
          message: `the script runner ended: ${this.ended}`,
          stderr: "",
          stdout: Buffer.alloc(0),
        });
      this.pending.clear();
    };
    this.child.on("error", (e) => end(e.message));
    this.child.on("exit", (code, signal) => end(signal ? `killed by ${signal}` : `status ${code}`));
    this.child.unref();
    process.on("exit", this.onExit);
  }

  /** Runs a generator's script with `dirs` as $out, $in, $prompts and TMPDIR. */
  run(gen: GeneratorSpec, dirs: ScriptDirs, pathValue: string): Promise<RunResult> {
    if (this.ended !== null)
      return Promise.resolve({
        ok: false,
        message: `the script runner ended: ${this.ended}`,
        stderr: "",
        stdout: Buffer.alloc(0),
      });
    const id = this.next++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.child.send({
        id,
        sh: this.isolation.sh,
        script: gen.script!,
        env: { PATH: pathValue, out: dirs.out, in: dirs.in, prompts: dirs.prompts, TMPDIR: dirs.tmp },
        cwd: dirs.out,
        timeout: gen.timeout,
      });
    });
  }

  /** Ends the runner; it kills whatever script still runs. */
  close(): void {
    process.removeListener("exit", this.onExit);
    if (this.child.connected) this.child.disconnect();
    try {
      if (this.child.exitCode === null && this.child.pid !== undefined)
        process.kill(this.child.pid, "SIGTERM");
    } catch {}
  }
}

/**
 * Runs an import command (the user's own tool, e.g. `pass show db`): directly, no shell, with the
 * caller's environment (it needs the user's agent, store and home), stdout as the value.
 */
export function runImport(gen: GeneratorSpec, cwd: string): Promise<RunResult> {
  const [program, ...args] = gen.importCommand!;
  const resolved = path.isAbsolute(program!) ? program! : findExecutable(program!);
  if (resolved === null) {
    return Promise.resolve({
      ok: false,
      message: `import command "${program}" is not on PATH`,
      stderr: "",
      stdout: Buffer.alloc(0),
    });
  }
  return runProcess(resolved, args, process.env, cwd, gen.timeout, true);
}

/**
 * Reads the outputs a script wrote into `out`: exactly the files it declares, each a regular
 * file (never through a symlink), bounded in size.
 */
export function readOutputs(
  gen: GeneratorSpec,
  out: string,
): { files: Map<string, Uint8Array>; problem: string | null } {
  const files = new Map<string, Uint8Array>();
  const declared = new Set(gen.files.map((f) => f.name));
  let entries: string[];
  try {
    entries = fs.readdirSync(out);
  } catch (e) {
    return { files, problem: `cannot read its $out: ${(e as Error).message}` };
  }
  const extra = entries.filter((e) => !declared.has(e));
  if (extra.length > 0)
    return {
      files,
      problem: `it wrote ${extra.map((e) => `"${e}"`).join(", ")}, which files does not declare`,
    };
  for (const f of gen.files) {
    const file = path.join(out, f.name);
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why =
        code === "ENOENT" ? "did not write" : code === "ELOOP" ? "wrote a symlink as" : "cannot be read:";
      return { files, problem: `it ${why} $out/${f.name}` };
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return { files, problem: `$out/${f.name} is not a regular file` };
      if (st.size > MAX_OUTPUT_SIZE)
        return { files, problem: `$out/${f.name} is larger than ${MAX_OUTPUT_SIZE} bytes` };
      files.set(f.name, new Uint8Array(fs.readFileSync(fd)));
    } finally {
      fs.closeSync(fd);
    }
  }
  return { files, problem: null };
}

/**
 * Helpers shared by the benchmarks: finding programs, timing commands (with hyperfine when it is
 * installed, else spawn and a clock), medians, a scratch directory in RAM.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { findExecutable } from "../src/common/path-search.js";

/** The repository root (this file runs as dist/bench/common.js). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DEFAULT_CLI = path.join(REPO, "dist", "bundle", "main.js");

export interface BenchContext {
  /** Timed runs per command (after one untimed warm-up run). */
  runs: number;
  /** The nixseal CLI to run (dist/bundle/main.js of this checkout unless --nixseal). */
  cli: string;
  /** Where scratch files go (a tmpfs: /dev/shm when it exists). */
  scratch: string;
  hyperfine: string | null;
  /** Named numeric options from the command line (--size-mib, --files). */
  option(name: string): number | undefined;
  /** Named text options from the command line (--disk-dir). */
  text(name: string): string | undefined;
  /** Whether a flag without a value was given (--no-anchor). */
  flag(name: string): boolean;
  log(line: string): void;
}

/** One line of a result table: the times of nixseal and of its anchor, in ms per run. */
export interface ResultRow {
  name: string;
  nixseal: number[];
  anchorName: string;
  anchor: number[] | null;
  /** The goal, e.g. "≤ 1.0× age" or "< 300 ms". */
  target?: string;
}

export interface BenchResult {
  /** A title for the results section, e.g. "age-1gib: 1 GiB through nixseal age and age". */
  title: string;
  rows: ResultRow[];
  /** Extra lines printed under the table (method, caveats). */
  notes: string[];
}

export interface Benchmark {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchResult | null>;
}

/**
 * The V8 flags a nixseal CLI file runs with: those of its `#!/usr/bin/env -S node FLAGS` line
 * (none for `#!/usr/bin/env node`). The benchmarks run every build as its first line says, as a
 * user's system does, with this Node.
 */
export function nodeFlagsOf(cli: string): string[] {
  const fd = fs.openSync(cli, "r");
  const head = Buffer.alloc(256);
  const n = fs.readSync(fd, head, 0, head.length, 0);
  fs.closeSync(fd);
  const first = head.subarray(0, n).toString("utf8").split("\n", 1)[0]!;
  const m = /^#!\S*\/env -S node((?: --[a-z0-9-]+(?:=[\w.]+)?)*)\s*$/.exec(first);
  if (m === null && !/^#!\S*\/env node\s*$/.test(first))
    throw new Error(`${cli}: not a nixseal CLI (its first line is ${JSON.stringify(first)})`);
  return m === null
    ? []
    : m[1]!
        .trim()
        .split(/\s+/)
        .filter((f) => f !== "");
}

/** The command line that runs the nixseal CLI file `cli` (this Node, its flags, the file). */
export function cliArgv(cli: string): string[] {
  return [process.execPath, ...nodeFlagsOf(cli), cli];
}

export function which(program: string): string | null {
  return findExecutable(program);
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A fresh scratch directory under `base`, removed by the returned function. */
export function scratchDir(base: string, label: string): { dir: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(base, `nixseal-bench-${label}-`));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** /dev/shm when it is a writable directory, else the OS temp dir. */
export function defaultScratchBase(): string {
  try {
    fs.accessSync("/dev/shm", fs.constants.W_OK);
    if (fs.statSync("/dev/shm").isDirectory()) return "/dev/shm";
  } catch {}
  return os.tmpdir();
}

export function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

export interface TimedCommand {
  name: string;
  argv: string[];
}

/** Quotes an argument for hyperfine's shell-words splitting (used with -N, no shell). */
function quote(arg: string): string {
  return /^[A-Za-z0-9_./=:@%+,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

/** One run of a command: wall time, and CPU time (user + system) when hyperfine measured it. */
export interface Measurement {
  wallMs: number;
  cpuMs: number | null;
}

/**
 * Runs each command once, in the order given, and returns their wall times in ms (process start
 * to exit). Fails if a command fails. With hyperfine: `hyperfine -N --runs 1`.
 */
export function timeOnce(ctx: BenchContext, commands: readonly TimedCommand[]): number[] {
  return measureOnce(ctx, commands).map((m) => m.wallMs);
}

/** timeOnce, with each command's CPU time too (hyperfine only; null without it). */
export function measureOnce(ctx: BenchContext, commands: readonly TimedCommand[]): Measurement[] {
  if (ctx.hyperfine) {
    const json = path.join(ctx.scratch, `hyperfine-${process.pid}.json`);
    const args = ["-N", "--runs", "1", "--style", "none", "--export-json", json];
    // The = form: a name starting with "-" is not taken for an option.
    for (const c of commands) args.push(`--command-name=${c.name}`);
    for (const c of commands) args.push(c.argv.map(quote).join(" "));
    const r = spawnSync(ctx.hyperfine, args, { encoding: "utf8" });
    if (r.status !== 0) {
      throw new Error(
        `hyperfine failed (${commands.map((c) => c.name).join(", ")}): ${r.stderr || r.stdout}`,
      );
    }
    const results = (
      JSON.parse(fs.readFileSync(json, "utf8")) as {
        results: { times: number[]; user: number; system: number }[];
      }
    ).results;
    fs.rmSync(json, { force: true });
    return results.map((x) => ({ wallMs: x.times[0]! * 1000, cpuMs: (x.user + x.system) * 1000 }));
  }
  return commands.map((c) => {
    const t = performance.now();
    const r = spawnSync(c.argv[0]!, c.argv.slice(1), {
      stdio: ["ignore", "ignore", "pipe"],
      encoding: "utf8",
    });
    const ms = performance.now() - t;
    if (r.status !== 0) throw new Error(`${c.name} failed: ${r.stderr}`);
    return { wallMs: ms, cpuMs: null };
  });
}

/**
 * Interleaved runs: one untimed warm-up round, then `ctx.runs` rounds of every command, the
 * order reversed every other round so neither side always runs first (caches, frequency).
 * Returns the times per command name.
 */
export function interleaved(ctx: BenchContext, commands: readonly TimedCommand[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [name, ms] of interleavedMeasurements(ctx, commands, ctx.runs)) {
    out.set(
      name,
      ms.map((m) => m.wallMs),
    );
  }
  return out;
}

/** interleaved(), `runs` rounds, with the CPU time of every run too (see measureOnce). */
export function interleavedMeasurements(
  ctx: BenchContext,
  commands: readonly TimedCommand[],
  runs: number,
): Map<string, Measurement[]> {
  const times = new Map<string, Measurement[]>(commands.map((c) => [c.name, []]));
  ctx.log(`  warm-up: ${commands.map((c) => c.name).join(", ")}`);
  measureOnce(ctx, commands);
  for (let round = 0; round < runs; round++) {
    const order = round % 2 === 0 ? [...commands] : [...commands].reverse();
    const t = measureOnce(ctx, order);
    order.forEach((c, i) => {
      times.get(c.name)!.push(t[i]!);
    });
    ctx.log(
      `  run ${round + 1}/${runs}: ${order.map((c, i) => `${c.name} ${t[i]!.wallMs.toFixed(0)} ms`).join(", ")}`,
    );
  }
  return times;
}

/**
 * A command whose argv is decided when it runs (say, the manifest to switch to), after
 * `prepare` has set up its state (untimed).
 */
export interface Step {
  name: string;
  argv(): string[];
  prepare?(): void;
  /** Checked after each timed run. */
  check?(): void;
}

/**
 * Interleaved rounds as `interleaved`, each command timed alone so that its state
 * can be set up before it (untimed): one warm-up round, then `ctx.runs` rounds, the order
 * reversed every other round.
 */
export function rounds(ctx: BenchContext, steps: readonly Step[]): Map<string, number[]> {
  const times = new Map<string, number[]>(steps.map((s) => [s.name, []]));
  const once = (s: Step): number => {
    s.prepare?.();
    const [t] = timeOnce(ctx, [{ name: s.name, argv: s.argv() }]);
    s.check?.();
    return t!;
  };
  ctx.log(`  warm-up: ${steps.map((s) => s.name).join(", ")}`);
  for (const s of steps) once(s);
  for (let round = 0; round < ctx.runs; round++) {
    const order = round % 2 === 0 ? [...steps] : [...steps].reverse();
    const line: string[] = [];
    for (const s of order) {
      const t = once(s);
      times.get(s.name)!.push(t);
      line.push(`${s.name} ${t.toFixed(0)} ms`);
    }
    ctx.log(`  run ${round + 1}/${ctx.runs} (load ${os.loadavg()[0]!.toFixed(2)}): ${line.join(", ")}`);
  }
  return times;
}

/** The first line of `program --version`, or null. */
export function versionOf(program: string, args = ["--version"]): string | null {
  const r = spawnSync(program, args, { encoding: "utf8" });
  if (r.status !== 0 && !r.stdout) return null;
  return (r.stdout || r.stderr).trim().split("\n")[0] ?? null;
}

/** A digest of the files directly in `dir` (names and contents), to check what a run produced. */
export function digestOf(dir: string): string {
  const digest = createHash("sha256");
  for (const name of fs.readdirSync(dir).sort())
    digest.update(name).update(fs.readFileSync(path.join(dir, name)));
  return digest.digest("hex");
}

/** How a --previous build is named in results: its commit, when it is a git checkout's. */
export function previousLabel(cli: string): string {
  const r = spawnSync("git", ["-C", path.dirname(cli), "rev-parse", "--short", "HEAD"], { encoding: "utf8" });
  return r.status === 0 ? `commit ${r.stdout.trim()}` : path.basename(path.dirname(path.dirname(cli)));
}

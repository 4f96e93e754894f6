/**
 * The benchmark runner: `npm run bench` (all), or `node dist/bench/run.js NAME...`.
 * Benchmarks are not tests: they time nixseal against its anchors (the `age` binary, an
 * agenix-style loop) in the same run, print a Markdown table and record it in bench/RESULTS.md,
 * one section per benchmark, with the date, the machine and the exact command.
 *
 * Options:
 *   --runs N        timed runs per command, after one warm-up run (default 3; startup: 15)
 *   --nixseal FILE  the nixseal CLI to time (default dist/bundle/main.js of this checkout)
 *   --dir DIR       scratch directory (default /dev/shm, else the OS temp dir)
 *   --size-mib N    age-1gib: the file size (default 1024)
 *   --disk-dir DIR  age-1gib: where the on-disk runs put their files (default the OS temp dir)
 *   --files N       small-decrypt, install: the number of files (default 1000); push: keys per host (100)
 *   --hosts N       push: the number of hosts (default 20)
 *   --no-anchor     push: leave out the colmena-style loop (its one run takes minutes)
 *   --no-record     print only, do not update bench/RESULTS.md
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { age1gib } from "./age-1gib.js";
import { audit } from "./audit.js";
import { buildHook } from "./build-hook.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  DEFAULT_CLI,
  defaultScratchBase,
  median,
  previousLabel,
  REPO,
  type ResultRow,
  versionOf,
  which,
} from "./common.js";
import { creds } from "./creds.js";
import { generateBench } from "./generate.js";
import { installBench } from "./install.js";
import { installCreds } from "./install-creds.js";
import { nixEval } from "./nix-eval.js";
import { pushBench } from "./push.js";
import { smallDecrypt } from "./small-decrypt.js";
import { sopsDecrypt } from "./sops-decrypt.js";
import { sopsWrite } from "./sops-write.js";
import { startup } from "./startup.js";

/** bench/rekey.ts (its own author's), run through its exported benchRekey() when present. */
const rekey: Benchmark = {
  name: "rekey",
  description: "nixseal rekey of 1000 secrets vs an agenix-style loop (bench/rekey.ts)",
  async run(ctx) {
    let mod: {
      benchRekey?: (o: {
        log?: (l: string) => void;
        startupRuns?: number;
        cli?: string;
        previousCli?: string;
        floor?: boolean;
      }) => Promise<{
        secrets: number;
        recipients: number;
        nixsealRekeyMs: number;
        nixsealRekeyRuns: number[];
        nixsealRekeyCachedMs: number;
        agenixLoopMs: number | null;
        previousRekeyMs: number | null;
        previousRekeyRuns: number[];
        floorRuns: number[];
        floorNoFsyncRuns: number[];
        floorPhases: Record<string, number> | null;
        startupRuns: number[];
      }>;
    };
    try {
      // Imported by URL so that this runner builds whatever state that file is in.
      mod = await import(new URL("./rekey.js", import.meta.url).href);
    } catch {
      ctx.log("rekey: skipped: bench/rekey.ts is not built");
      return null;
    }
    if (typeof mod.benchRekey !== "function") return null;
    const previous = ctx.text("--previous");
    const r = await mod.benchRekey({ log: ctx.log, cli: ctx.cli, previousCli: previous, floor: true });
    const p = r.floorPhases;
    return {
      title: `rekey: ${r.secrets} secrets × ${r.recipients} recipients, one recipient added`,
      rows: [
        {
          name: "rekey",
          nixseal: r.nixsealRekeyRuns,
          anchorName: "agenix-style loop (age -d + age -e per file)",
          anchor: r.agenixLoopMs === null ? null : [r.agenixLoopMs],
          target: "< 600 ms",
        },
        ...(r.previousRekeyMs === null
          ? []
          : [
              {
                name: "rekey (the same fixture)",
                nixseal: r.nixsealRekeyRuns,
                anchorName: `the previous nixseal (${previousLabel(previous!)})`,
                anchor: r.previousRekeyRuns,
              },
            ]),
        ...(r.floorRuns.length === 0
          ? []
          : [
              {
                name: "rekey (the same fixture)",
                nixseal: r.nixsealRekeyRuns,
                anchorName: "its floor: a bare 2-thread script (bench/rekey-floor.ts)",
                anchor: r.floorRuns,
              },
              {
                name: "rekey (the same fixture)",
                nixseal: r.nixsealRekeyRuns,
                anchorName: "the floor without fsync (not durable, for reference)",
                anchor: r.floorNoFsyncRuns,
              },
            ]),
        {
          name: "rekey --force (rules cached)",
          nixseal: [r.nixsealRekeyCachedMs],
          anchorName: "",
          anchor: null,
        },
        {
          name: "`nixseal --version`",
          nixseal: r.startupRuns,
          anchorName: "",
          anchor: null,
          target: "< 120 ms",
        },
      ],
      notes: [
        "Measured by bench/rekey.ts: each rekey on a fresh copy of the fixture with a rules cache of its own, 3 rounds, nixseal and the previous build alternating which goes first; the agenix-style loop and --force once; start-up: several runs.",
        "Files on disk (/tmp). Why fresh copies: on ext4 without a journal, files created right after many were deleted cost up to ~10× more (recently freed inodes are skipped one by one), so a rekey running after another one's renames would pay for them.",
        ...(p === null
          ? []
          : [
              `The floor (bench/rekey-floor.ts) does only what this rekey cannot skip, with nixseal's own functions, on two threads taking files from a shared counter: the Nix evaluation and the modules together, then per file read, unwrap and verify, new header, temp file written and fsync-ed, then the renames. Its median run (ms from its start): modules and rules ready at ${p.ready}, files done at ${p.filesDone} (main thread ${p.mainFiles} files, worker ${p.workerFiles}), renamed at ${p.renamed}, process exited at ${p.wall}. Every round runs nixseal, the previous build and both floors, each on a fresh copy.`,
            ]),
      ],
    };
  },
};

const BENCHMARKS: Benchmark[] = [
  startup,
  age1gib,
  smallDecrypt,
  rekey,
  sopsDecrypt,
  sopsWrite,
  installBench,
  creds,
  nixEval,
  audit,
  buildHook,
  installCreds,
  generateBench,
  pushBench,
];

function usage(): string {
  return [
    "usage: node dist/bench/run.js [NAME...] [--runs N] [--nixseal FILE] [--dir DIR] [--size-mib N] [--disk-dir DIR] [--files N] [--hosts N] [--previous FILE] [--no-anchor] [--no-record] [--quiet LOAD]",
    "",
    ...BENCHMARKS.map((b) => `  ${b.name.padEnd(14)} ${b.description}`),
    "",
    "With no NAME, every benchmark runs. --previous FILE: another build's dist/bundle/main.js,",
    "timed in the same run as an anchor (sops-decrypt, sops-write, rekey; install: its 10 000-secret cold case): the previous nixseal.",
  ].join("\n");
}

interface Args {
  names: string[];
  values: Map<string, string>;
  flags: Set<string>;
}

function parseArgs(argv: string[]): Args {
  const withValue = new Set([
    "--runs",
    "--nixseal",
    "--dir",
    "--size-mib",
    "--disk-dir",
    "--files",
    "--quiet",
    "--hosts",
    "--previous",
  ]);
  const args: Args = { names: [], values: new Map(), flags: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (withValue.has(a)) {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      args.values.set(a, v);
    } else if (a.startsWith("--")) {
      args.flags.add(a);
    } else {
      args.names.push(a);
    }
  }
  return args;
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"));
    if (m) return m[1]!.trim();
  } catch {}
  return os.cpus()[0]?.model ?? "unknown CPU";
}

function machine(ctx: BenchContext): string {
  const age = which("age");
  return [
    `nproc ${os.availableParallelism()}`,
    cpuModel(),
    `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`,
    `${os.type()} ${os.release()}`,
    `node ${process.version}`,
    `age ${age ? (versionOf(age) ?? "?") : "not installed"}`,
    ctx.hyperfine ? `${versionOf(ctx.hyperfine) ?? "hyperfine"}` : "no hyperfine (spawn + clock)",
  ].join(", ");
}

const ms = (x: number) => `${x.toFixed(0)} ms`;

function table(result: BenchResult): string {
  const lines = [
    "| | nixseal (median) | anchor | anchor (median) | nixseal / anchor | target | runs (ms): nixseal; anchor |",
    "|---|---:|---|---:|---:|---|---|",
  ];
  for (const r of result.rows) lines.push(row(r));
  return lines.join("\n");
}

function row(r: ResultRow): string {
  const ns = median(r.nixseal);
  const anchor = r.anchor ? median(r.anchor) : null;
  const runs = [r.nixseal, r.anchor ?? []]
    .filter((xs) => xs.length > 0)
    .map((xs) => xs.map((x) => x.toFixed(0)).join(", "))
    .join("; ");
  return [
    "",
    r.name,
    ms(ns),
    r.anchorName || "-",
    anchor === null ? "-" : ms(anchor),
    anchor === null ? "-" : `${(ns / anchor).toFixed(2)}×`,
    r.target ?? "",
    runs,
    "",
  ]
    .join(" | ")
    .trim();
}

function section(
  name: string,
  result: BenchResult,
  info: { date: string; machine: string; command: string; load: string },
): string {
  return [
    `<!-- bench:${name} -->`,
    `## ${result.title}`,
    "",
    `- Date: ${info.date}`,
    `- Machine: ${info.machine}`,
    `- Load average (1 min) before / after: ${info.load}`,
    `- Command: \`${info.command}\``,
    "",
    table(result),
    "",
    ...result.notes.map((n) => `${n}\n`),
    `<!-- /bench:${name} -->`,
  ].join("\n");
}

const RESULTS_HEADER = `# Benchmark results

Recorded by \`bench/run.ts\` (\`npm run bench\`, or \`node dist/bench/run.js NAME...\`); each section
is replaced when its benchmark runs again. Times are wall-clock medians of interleaved runs (after
one warm-up run), process start-up included; "nixseal / anchor" below 1 means nixseal is faster.
Benchmarks are not tests: nothing in test/ times anything.
`;

/** Replaces (or appends) the section of one benchmark in bench/RESULTS.md. */
function record(file: string, name: string, text: string): void {
  let doc = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : RESULTS_HEADER;
  const start = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) doc = doc.slice(0, i) + text + doc.slice(j + end.length);
  else doc = `${doc.trimEnd()}\n\n${text}\n`;
  fs.writeFileSync(file, doc);
}

async function waitForQuiet(limit: number, log: (line: string) => void): Promise<void> {
  const deadline = Date.now() + 5 * 60_000;
  if (os.loadavg()[0]! >= limit) log(`waiting for the load average to fall below ${limit}...`);
  while (os.loadavg()[0]! >= limit && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5000));
  if (os.loadavg()[0]! >= limit) log(`load still ${os.loadavg()[0]!.toFixed(2)} after 5 minutes: going on`);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.flags.has("--help")) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const unknown = args.names.filter((n) => !BENCHMARKS.some((b) => b.name === n));
  if (unknown.length > 0) {
    process.stderr.write(`unknown benchmark: ${unknown.join(", ")}\n\n${usage()}\n`);
    return 2;
  }
  const selected = args.names.length > 0 ? BENCHMARKS.filter((b) => args.names.includes(b.name)) : BENCHMARKS;
  const num = (name: string) => {
    const v = args.values.get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
    return n;
  };
  const ctx: BenchContext = {
    runs: num("--runs") ?? 3,
    cli: path.resolve(args.values.get("--nixseal") ?? DEFAULT_CLI),
    scratch: args.values.get("--dir") ?? defaultScratchBase(),
    hyperfine: which("hyperfine"),
    option: num,
    text: (name) => args.values.get(name),
    flag: (name) => args.flags.has(name),
    log: (line) => process.stderr.write(`${line}\n`),
  };
  if (!fs.existsSync(ctx.cli)) throw new Error(`${ctx.cli} does not exist: run npm run build first`);
  // A --previous build is named by its commit, not by where it lies on this machine.
  const shown = process.argv
    .slice(2)
    .map((a, i, all) => (all[i - 1] === "--previous" ? `PREVIOUS (${previousLabel(a)})` : a));
  const command = `node ${path.relative(REPO, process.argv[1]!)} ${shown.join(" ")}`.trim();
  const info = {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    machine: machine(ctx),
    command,
    load: "",
  };
  process.stdout.write(`Machine: ${info.machine}\n`);
  const quiet = num("--quiet");
  for (const b of selected) {
    // Benchmarks load the machine themselves: with --quiet L, each one waits (at most 5 minutes)
    // until the 1-minute load average is below L again, so that the next one starts on a quiet machine.
    if (quiet !== undefined) await waitForQuiet(quiet, ctx.log);
    const before = os.loadavg()[0]!.toFixed(2);
    ctx.log(`== ${b.name}`);
    const result = await b.run(ctx);
    if (result === null) continue;
    info.load = `${before} / ${os.loadavg()[0]!.toFixed(2)}`;
    process.stdout.write(`\n### ${result.title}\n\n${table(result)}\n\n`);
    if (!args.flags.has("--no-record")) {
      record(path.join(REPO, "bench", "RESULTS.md"), b.name, section(b.name, result, info));
    }
  }
  return 0;
}

process.exitCode = await main();

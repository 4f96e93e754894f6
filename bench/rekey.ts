/**
 * Benchmark: `nixseal rekey` of 1000 secrets × 10 X25519 recipients after an 11th recipient is
 * added to secrets.nix, against an agenix-style loop (one `age -d` and one `age -e` process per
 * file, as agenix's rekey runs; agenix also evaluates secrets.nix once per file, which this
 * loop leaves out, so the anchor is generous), in the same run on the same files. Plus
 * `nixseal --version` start-up. Targets: rekey under 0.6 s, start-up under 120 ms.
 *
 * The files are written as the current nixseal writes them (recipients record version 2, whose
 * tags let rekey keep the 10 existing stanzas of each file and wrap only for the 11th
 * recipient). A repository written by an older nixseal or by agenix has no tags and pays a full
 * re-wrap (11 stanzas per file) once: that is what the `--force` row measures, since --force
 * wraps every stanza anew.
 *
 * Each timed rekey runs on a fresh copy of the same fixture, with a rules cache of its own (the
 * Nix evaluation is timed), `rounds` times, nixseal and the previous build alternating which goes
 * first; no copy is removed before the last run. The reason: on ext4 without a journal, a new
 * file's inode is not taken from inodes freed in the last minute(s), which are skipped one by one,
 * so creating files right after many were deleted (another rekey's renames, a removed fixture)
 * costs up to ~10× more. Whichever build ran second in the same directory would pay for the
 * first one's deletions.
 *
 * With `floor`, every round also times bench/rekey-floor.ts (a bare script doing only what this
 * rekey cannot skip, on two threads) with and without fsync, each on a fresh copy: what this
 * machine allows, beside what nixseal takes.
 *
 * Run on its own: `node dist/bench/rekey.js [--secrets N] [--recipients N] [--runs N] [--rounds N]
 * [--floor]`, or through bench/run.ts via `benchRekey()` (with the floor).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { encrypt, readHeader } from "../src/age/age.js";
import { X25519Identity } from "../src/age/x25519.js";
import { readRecipientsRecord, withRecipientsRecord } from "../src/vault/recipients-record.js";
import { cliArgv, nodeFlagsOf } from "./common.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The CLI users run (the bundle), unless the runner passes another (--nixseal). */
const DEFAULT_CLI = path.join(REPO, "dist", "bundle", "main.js");

export interface RekeyBenchOptions {
  secrets?: number;
  recipients?: number;
  /** Runs of `nixseal --version` for the start-up figure. */
  startupRuns?: number;
  /** Skip the agenix-style loop (it takes a while). */
  skipAnchor?: boolean;
  log?: (line: string) => void;
  /** The nixseal CLI to time (default: this checkout's bundle). */
  cli?: string;
  /** Another build's CLI, timed on a copy of the same fixture (the previous nixseal). */
  previousCli?: string;
  /** Timed rekeys of each build (each on a fresh copy), default 3. */
  rounds?: number;
  /** Also time the floor script (bench/rekey-floor.ts) each round, with and without fsync. */
  floor?: boolean;
}

export interface RekeyBenchResult {
  secrets: number;
  recipients: number;
  /** Median wall time of `nixseal rekey` (process start to exit, Nix evaluation of the new rules included). */
  nixsealRekeyMs: number;
  /** Every round's wall time of `nixseal rekey`. */
  nixsealRekeyRuns: number[];
  /** The same rekey on the same files with the rules already evaluated (cache warm). */
  nixsealRekeyCachedMs: number;
  /** Median of the same rekey by previousCli on copies of the same files (its own rules cache), or null. */
  previousRekeyMs: number | null;
  /** Every round's wall time of previousCli's rekey (empty without previousCli). */
  previousRekeyRuns: number[];
  /** Wall times of the floor script (bench/rekey-floor.ts) on fresh copies (empty without `floor`). */
  floorRuns: number[];
  /** The same without fsync (not durable; for reference). */
  floorNoFsyncRuns: number[];
  /** The floor's phases of its median run (ms since the script started), or null. */
  floorPhases: Record<string, number> | null;
  /** Wall time of the agenix-style loop, or null when skipped / age is missing. */
  agenixLoopMs: number | null;
  /** agenixLoopMs / nixsealRekeyMs. */
  ratio: number | null;
  /** Median and min of `nixseal --version` runs. */
  startupMedianMs: number;
  startupMinMs: number;
  startupRuns: number[];
}

function which(program: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const p = path.join(dir || ".", program);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function rulesText(names: string[], keys: string[]): string {
  const lets = keys.map((k, i) => `  k${i} = "${k}";`).join("\n");
  const list = keys.map((_, i) => `k${i}`).join(" ");
  const entries = names.map((n) => `  "${n}".publicKeys = all;`).join("\n");
  return `let\n${lets}\n  all = [ ${list} ];\nin {\n${entries}\n}\n`;
}

function timed(fn: () => void): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

export async function benchRekey(options: RekeyBenchOptions = {}): Promise<RekeyBenchResult> {
  const n = options.secrets ?? 1000;
  const k = options.recipients ?? 10;
  const log = options.log ?? (() => {});
  const CLI = options.cli ?? DEFAULT_CLI;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nixseal-bench-rekey-"));
  try {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: path.join(dir, "home"),
      XDG_CACHE_HOME: path.join(dir, "cache"),
    };
    delete env.RULES;
    delete env.NIXSEAL_IDENTITY;
    delete env.SOPS_AGE_KEY_FILE;
    delete env.SOPS_AGE_KEY;
    fs.mkdirSync(env.HOME!);
    const ids = Array.from({ length: k + 1 }, () => X25519Identity.generate());
    const keys = ids.map((i) => i.recipient().toString());
    const identityFile = path.join(dir, "identity.txt");
    fs.writeFileSync(identityFile, `${ids[0]!.encode()}\n`, { mode: 0o600 });

    // The repository before: n secrets for the first k recipients, written as nixseal writes them.
    const repoA = path.join(dir, "a");
    fs.mkdirSync(repoA);
    const names = Array.from({ length: n }, (_, i) => `s${String(i).padStart(4, "0")}.age`);
    fs.writeFileSync(path.join(repoA, "secrets.nix"), rulesText(names, keys.slice(0, k)));
    log(`writing ${n} secrets × ${k} recipients...`);
    const recipients = withRecipientsRecord(
      ids.slice(0, k).map((i) => i.recipient()),
      keys.slice(0, k),
      "bench",
    );
    for (const name of names) {
      const plain = Buffer.from(`secret value of ${name}\n`);
      fs.writeFileSync(path.join(repoA, name), await encrypt(plain, recipients));
    }
    // What this bench measures depends on it: files with tags (see the comment at the top).
    const record = readRecipientsRecord(readHeader(fs.readFileSync(path.join(repoA, names[0]!))).stanzas);
    if (record.state !== "present" || record.tags === null) throw new Error("the fixture has no v2 record");
    const repoB = path.join(dir, "b");
    fs.cpSync(repoA, repoB, { recursive: true });
    // Add the (k+1)-th recipient to every secret. repoA stays as it is now (the state before
    // the rekey): every timed run works on a fresh copy of it.
    fs.writeFileSync(path.join(repoA, "secrets.nix"), rulesText(names, keys));

    let copies = 0;
    /** A fresh copy of the fixture, flushed to disk (so the rekey's fsyncs time its own writes). */
    const freshCopy = (): string => {
      const copy = path.join(dir, `run-${copies++}`);
      fs.cpSync(repoA, copy, { recursive: true });
      spawnSync("sync");
      return copy;
    };
    const timeRekey = (cli: string, args: string[], cache: string, who: string): number => {
      const cwd = freshCopy();
      let r: ReturnType<typeof spawnSync> | undefined;
      const ms = timed(() => {
        r = spawnSync(process.execPath, [...cliArgv(cli).slice(1), "rekey", ...args, "-i", identityFile], {
          cwd,
          env: { ...env, XDG_CACHE_HOME: cache },
          encoding: "utf8",
        });
      });
      if (r!.status !== 0) throw new Error(`${who} rekey failed: ${r!.stderr}`);
      if (!String(r!.stderr).includes(`${n} rewritten`))
        throw new Error(`unexpected ${who} rekey output: ${r!.status} ${String(r!.stderr).slice(0, 300)}`);
      return ms;
    };
    const FLOOR = fileURLToPath(new URL("./rekey-floor.js", import.meta.url));
    const floorRuns: number[] = [];
    const floorNoFsyncRuns: number[] = [];
    const floorPhases: Record<string, number>[] = [];
    /** The floor script on a fresh copy, its Nix evaluation timed (a cache of its own). */
    const timeFloor = (round: number, fsync: boolean): void => {
      const cwd = freshCopy();
      const cache = path.join(dir, `cache-floor-${fsync ? "" : "nosync-"}${round}`);
      let r: ReturnType<typeof spawnSync> | undefined;
      const ms = timed(() => {
        // With the V8 flags nixseal runs with (the floor differs in the work done alone).
        r = spawnSync(
          process.execPath,
          [...nodeFlagsOf(CLI), FLOOR, identityFile, ...(fsync ? [] : ["--no-fsync"])],
          {
            cwd,
            env: { ...env, XDG_CACHE_HOME: cache },
            encoding: "utf8",
          },
        );
      });
      if (r!.status !== 0) throw new Error(`the floor script failed: ${r!.stderr}`);
      const phases = JSON.parse(String(r!.stdout)) as Record<string, number>;
      if (phases.mainFiles! + phases.workerFiles! !== n)
        throw new Error(`the floor script did ${String(r!.stdout)}`);
      if (fsync) {
        floorRuns.push(ms);
        floorPhases.push({ ...phases, wall: Math.round(ms) });
      } else floorNoFsyncRuns.push(ms);
      log(`floor${fsync ? "" : " without fsync"}: ${ms.toFixed(0)} ms ${String(r!.stdout).trim()}`);
    };
    const rounds = options.rounds ?? 3;
    const nixsealRekeyRuns: number[] = [];
    const previousRekeyRuns: number[] = [];
    let lastCache = "";
    for (let round = 0; round < rounds; round++) {
      // A new rules cache each time: the Nix evaluation of the changed secrets.nix is timed.
      const mine = () => {
        lastCache = path.join(dir, `cache-${round}`);
        nixsealRekeyRuns.push(timeRekey(CLI, [], lastCache, "nixseal"));
        log(`nixseal rekey: ${nixsealRekeyRuns.at(-1)!.toFixed(0)} ms`);
      };
      const theirs = () => {
        if (!options.previousCli) return;
        const cache = path.join(dir, `cache-previous-${round}`);
        previousRekeyRuns.push(timeRekey(options.previousCli, [], cache, "the previous nixseal's"));
        log(`previous nixseal rekey: ${previousRekeyRuns.at(-1)!.toFixed(0)} ms`);
      };
      if (round % 2 === 0) {
        mine();
        theirs();
      } else {
        theirs();
        mine();
      }
      if (options.floor) {
        timeFloor(round, true);
        timeFloor(round, false);
      }
    }
    const medianFloor = floorPhases.length > 0 ? median(floorRuns) : null;
    const nixsealRekeyMs = median(nixsealRekeyRuns);
    const previousRekeyMs = previousRekeyRuns.length > 0 ? median(previousRekeyRuns) : null;

    // --force on another fresh copy, the rules cached by the last run (no Nix evaluation), every
    // stanza wrapped anew (as for a repository without tags).
    const nixsealRekeyCachedMs = timeRekey(CLI, ["--force"], lastCache, "nixseal --force");
    log(`nixseal rekey --force (rules cached): ${nixsealRekeyCachedMs.toFixed(0)} ms`);

    let agenixLoopMs: number | null = null;
    const age = which("age");
    if (!options.skipAnchor && age) {
      const rArgs = keys.flatMap((key) => ["-r", key]);
      agenixLoopMs = timed(() => {
        for (const name of names) {
          const file = path.join(repoB, name);
          const d = spawnSync(age, ["-d", "-i", identityFile, file]);
          if (d.status !== 0) throw new Error(`age -d failed: ${d.stderr}`);
          const e = spawnSync(age, ["-e", ...rArgs, "-o", `${file}.new`], { input: d.stdout });
          if (e.status !== 0) throw new Error(`age -e failed: ${e.stderr}`);
          fs.renameSync(`${file}.new`, file);
        }
      });
      log(`agenix-style loop (age -d + age -e per file): ${agenixLoopMs.toFixed(0)} ms`);
    }

    const startupRuns: number[] = [];
    for (let i = 0; i < (options.startupRuns ?? 15); i++) {
      startupRuns.push(
        timed(() => {
          const v = spawnSync(process.execPath, [CLI, "--version"], { env });
          if (v.status !== 0) throw new Error("nixseal --version failed");
        }),
      );
    }
    log(
      `nixseal --version: median ${median(startupRuns).toFixed(0)} ms, min ${Math.min(...startupRuns).toFixed(0)} ms`,
    );
    return {
      secrets: n,
      recipients: k,
      nixsealRekeyMs,
      nixsealRekeyRuns,
      nixsealRekeyCachedMs,
      previousRekeyMs,
      previousRekeyRuns,
      floorRuns,
      floorNoFsyncRuns,
      floorPhases:
        floorPhases.find((p) => p.wall === Math.round(medianFloor ?? -1)) ?? floorPhases[0] ?? null,
      agenixLoopMs,
      ratio: agenixLoopMs === null ? null : agenixLoopMs / nixsealRekeyMs,
      startupMedianMs: median(startupRuns),
      startupMinMs: Math.min(...startupRuns),
      startupRuns,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function argValue(name: string): number | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : undefined;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const result = await benchRekey({
    secrets: argValue("--secrets"),
    recipients: argValue("--recipients"),
    startupRuns: argValue("--runs"),
    skipAnchor: process.argv.includes("--no-anchor"),
    rounds: argValue("--rounds"),
    floor: process.argv.includes("--floor"),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  const f = (x: number | null) => (x === null ? "-" : `${x.toFixed(0)} ms`);
  process.stdout.write(
    [
      `rekey ${result.secrets} secrets × ${result.recipients} recipients (+1)`,
      `  nixseal rekey                    ${f(result.nixsealRekeyMs)}   (target < 600 ms)`,
      `  nixseal rekey --force (cached)   ${f(result.nixsealRekeyCachedMs)}   (every stanza wrapped anew)`,
      ...(result.floorRuns.length === 0
        ? []
        : [
            `  floor (bench/rekey-floor.ts)     ${f(median(result.floorRuns))}   (without fsync ${f(median(result.floorNoFsyncRuns))})`,
          ]),
      `  agenix-style loop                ${f(result.agenixLoopMs)}${result.ratio ? `   (${result.ratio.toFixed(1)}× nixseal)` : ""}`,
      `nixseal --version start-up         median ${f(result.startupMedianMs)}, min ${f(result.startupMinMs)} over ${result.startupRuns.length} runs (target < 120 ms)`,
      "",
    ].join("\n"),
  );
  if (process.argv.includes("--json")) process.stdout.write(`${JSON.stringify(result)}\n`);
}

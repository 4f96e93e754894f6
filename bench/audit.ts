/**
 * audit: `nixseal audit` over 2 GiB of mixed files (text, random binary, many small files, a few
 * large ones; some holding secrets in various encodings) with 1000 secrets (one sops file of
 * 1000 values), against `rg -F -a -c -f PATTERNS` over the same tree with the same patterns
 * (every encoding nixseal looks for) in the same run. Throughput and ratio; target: nixseal at
 * least half of ripgrep's throughput. A second anchor gives ripgrep only the 1000 raw values (no
 * encodings): nixseal, looking for every encoding, should be at least as fast as that. The tree
 * is on disk (the OS temp dir), removed afterwards.
 */
import { randomBytes, randomInt } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { X25519Identity } from "../src/age/x25519.js";
import { patternsFor } from "../src/audit/encodings.js";
import { encryptNewDocument, YamlStore } from "../src/sops/index.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  interleaved,
  median,
  scratchDir,
  which,
} from "./common.js";

const MIB = 1 << 20;
const SECRETS = 1000;

const WORDS =
  "the of and to in is for on with as by at from server listen port user group enable true false path nix store etc config service after wants description ExecStart environment value key name host address timeout restart always".split(
    " ",
  );

/** 8 MiB of config-like text and 8 MiB of random bytes: files are slices of these. */
function pools(): { text: Buffer; binary: Buffer } {
  const parts: string[] = [];
  let n = 0;
  while (n < 8 * MIB) {
    const words = Array.from({ length: randomInt(3, 12) }, () => WORDS[randomInt(WORDS.length)]!);
    const line = `${words.join(" ")} = ${randomBytes(randomInt(4, 24)).toString("hex")};\n`;
    parts.push(line);
    n += line.length;
  }
  return { text: Buffer.from(parts.join("")), binary: randomBytes(8 * MIB) };
}

function secretValue(i: number): string {
  // Mostly base64url-ish tokens; every tenth has characters the escapes change.
  const core = randomBytes(randomInt(12, 30)).toString("base64url");
  return i % 10 === 0 ? `${core}"$'\\ x` : core;
}

/** The value in an encoding a leak would have, as it would appear in a file. */
function leakedForm(value: string, kind: number): Buffer {
  const v = Buffer.from(value);
  switch (kind % 5) {
    case 0:
      return Buffer.from(`password = ${value}\n`);
    case 1:
      return Buffer.from(`Authorization: Basic ${Buffer.from(`admin:${value}`).toString("base64")}\n`);
    case 2:
      return Buffer.from(`token_hex: ${v.toString("hex")}\n`);
    case 3:
      return Buffer.from(`${JSON.stringify({ secret: value })}\n`);
    default:
      return Buffer.from(`url: postgres://u:${encodeURIComponent(value)}@db/x\n`);
  }
}

interface Tree {
  bytes: number;
  files: number;
  leaks: number;
  leakFiles: Set<string>;
}

function slice(pool: Buffer, n: number): Buffer {
  const at = randomInt(0, pool.length - n + 1);
  return pool.subarray(at, at + n);
}

/** Writes `totalBytes` of files under `root`; some get a secret in some encoding. */
function generateTree(root: string, totalBytes: number, values: string[]): Tree {
  const { text, binary } = pools();
  const tree: Tree = { bytes: 0, files: 0, leaks: 0, leakFiles: new Set() };
  const dirs = [root];
  for (let i = 0; i < 64; i++) {
    const parent = dirs[randomInt(dirs.length)]!;
    const d = path.join(parent, `d${i}`);
    fs.mkdirSync(d);
    dirs.push(d);
  }
  const write = (size: number, isText: boolean) => {
    const file = path.join(dirs[randomInt(dirs.length)]!, `f${tree.files}${isText ? ".conf" : ".bin"}`);
    const fd = fs.openSync(file, "w");
    let written = 0;
    const withLeak = tree.files % 37 === 0;
    const leakAt = withLeak ? randomInt(0, size) : -1;
    while (written < size) {
      const n = Math.min(size - written, 4 * MIB);
      if (leakAt >= written && leakAt < written + n) {
        const form = leakedForm(values[randomInt(values.length)]!, tree.leaks);
        fs.writeSync(fd, slice(isText ? text : binary, Math.min(n, leakAt - written)));
        fs.writeSync(fd, form);
        written += Math.min(n, leakAt - written) + form.length;
        tree.leaks++;
        tree.leakFiles.add(file);
      } else {
        fs.writeSync(fd, slice(isText ? text : binary, n));
        written += n;
      }
    }
    fs.closeSync(fd);
    tree.files++;
    tree.bytes += written;
  };
  // A few large files, many small ones, the rest medium: text and binary alike.
  for (let i = 0; i < 2; i++) write(128 * MIB, i === 0);
  for (let i = 0; i < 5000; i++) write(randomInt(512, 16 * 1024), i % 2 === 0);
  while (tree.bytes < totalBytes)
    write(Math.min(totalBytes - tree.bytes, randomInt(64 * 1024, 8 * MIB)), tree.files % 2 === 0);
  return tree;
}

export const audit: Benchmark = {
  name: "audit",
  description:
    "nixseal audit of 2 GiB of mixed files for 1000 secrets vs rg -F -a -c -f (same patterns, and the raw values alone)",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const rg = which("rg");
    const sh = which("sh") ?? "/bin/sh";
    // On disk, as a store is: the OS temp dir, not the RAM scratch dir.
    const { dir, remove } = scratchDir(os.tmpdir(), "audit");
    try {
      const id = X25519Identity.generate();
      const identityFile = path.join(dir, "keys.txt");
      fs.writeFileSync(identityFile, `${id.encode()}\n`, { mode: 0o600 });
      const values = Array.from({ length: SECRETS }, (_, i) => secretValue(i));
      const store = new YamlStore();
      const yaml = values
        .map((v, i) => `secret_${String(i).padStart(4, "0")}: ${JSON.stringify(v)}\n`)
        .join("");
      const sopsFile = path.join(dir, "secrets.yaml");
      fs.writeFileSync(
        sopsFile,
        await encryptNewDocument(store.parsePlain(Buffer.from(yaml)), store, {
          keyGroups: [[id.recipient().toString()]],
        }),
      );
      // The same patterns for ripgrep, one per line (none of them holds a newline).
      const patterns: string[] = [];
      for (const v of values) {
        const r = patternsFor(Buffer.from(v));
        if (r.skipped !== null) throw new Error("a benchmark secret was skipped");
        for (const p of r.patterns) patterns.push(Buffer.from(p.bytes).toString("latin1"));
      }
      if (patterns.some((p) => p.includes("\n"))) throw new Error("a pattern holds a newline");
      const patternsFile = path.join(dir, "patterns.txt");
      fs.writeFileSync(patternsFile, `${patterns.join("\n")}\n`, "latin1");
      const rawPatternsFile = path.join(dir, "raw-patterns.txt");
      fs.writeFileSync(rawPatternsFile, `${values.join("\n")}\n`, "latin1");

      const root = path.join(dir, "tree");
      fs.mkdirSync(root);
      const sizeMib = 2048;
      ctx.log(`audit: writing ${sizeMib} MiB of files to ${root}`);
      const tree = generateTree(root, sizeMib * MIB, values);
      ctx.log(
        `audit: ${tree.files} files, ${tree.bytes} bytes, ${tree.leaks} leaks planted, ${patterns.length} patterns`,
      );

      const nixsealOut = path.join(dir, "nixseal.json");
      const rgOut = path.join(dir, "rg.txt");
      const rgRawOut = path.join(dir, "rg-raw.txt");
      const cwd = path.join(dir, "cwd"); // no secrets.nix or .sops.yaml here or above
      fs.mkdirSync(cwd);
      const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
      // nixseal exits 1 when it finds leaks (it will); the shell turns that into success.
      const nixsealCmd = `cd ${q(cwd)} && RULES= SOPS_CONFIG= ${cliArgv(ctx.cli).map(q).join(" ")} audit ${q(root)} --sops ${q(sopsFile)} -i ${q(identityFile)} --json > ${q(nixsealOut)}; test $? -eq 1`;
      const commands = [{ name: "nixseal", argv: [sh, "-c", nixsealCmd] }];
      if (rg) {
        commands.push({
          name: "rg",
          argv: [
            sh,
            "-c",
            `${q(rg)} -F -a -c --no-ignore --hidden -f ${q(patternsFile)} ${q(root)} > ${q(rgOut)}`,
          ],
        });
        commands.push({
          name: "rg-raw",
          argv: [
            sh,
            "-c",
            `${q(rg)} -F -a -c --no-ignore --hidden -f ${q(rawPatternsFile)} ${q(root)} > ${q(rgRawOut)}`,
          ],
        });
      }
      const times = interleaved(ctx, commands);

      // Both must have found what was planted.
      const report = JSON.parse(fs.readFileSync(nixsealOut, "utf8")) as { leaks: { file: string }[] };
      const nixsealFiles = new Set(report.leaks.map((l) => l.file));
      if (report.leaks.length !== tree.leaks || nixsealFiles.size !== tree.leakFiles.size) {
        throw new Error(
          `nixseal found ${report.leaks.length} leaks in ${nixsealFiles.size} files, ${tree.leaks} were planted`,
        );
      }
      if (rg) {
        const rgFiles = new Set(
          fs
            .readFileSync(rgOut, "utf8")
            .split("\n")
            .filter(Boolean)
            .map((l) => l.slice(0, l.lastIndexOf(":"))),
        );
        if (rgFiles.size !== tree.leakFiles.size)
          throw new Error(`rg found ${rgFiles.size} files, expected ${tree.leakFiles.size}`);
        // Given the raw values alone, rg finds the raw leaks and misses the encoded ones.
        if (fs.readFileSync(rgRawOut, "utf8").trim() === "") throw new Error("rg found no raw value");
      }
      const mbps = (ms: number) => (tree.bytes / 1e6 / (ms / 1000)).toFixed(0);
      const ns = median(times.get("nixseal")!);
      const rgTimes = times.get("rg") ?? null;
      const rgMs = rgTimes ? median(rgTimes) : null;
      const rgRawTimes = times.get("rg-raw") ?? null;
      return {
        title: `audit: ${(tree.bytes / 2 ** 30).toFixed(1)} GiB in ${tree.files} files, ${SECRETS} secrets (${patterns.length} patterns)`,
        rows: [
          {
            name: `${tree.files} files, ${SECRETS} secrets`,
            nixseal: times.get("nixseal")!,
            anchorName: rg ? "rg -F -a -c -f PATTERNS" : "rg (not installed)",
            anchor: rgTimes,
            target: "≥ 0.5× rg's throughput (≤ 2.0×)",
          },
          {
            name: `the same, rg given only the ${SECRETS} raw values`,
            nixseal: times.get("nixseal")!,
            anchorName: rg ? "rg -F -a -c -f RAW-VALUES" : "rg (not installed)",
            anchor: rgRawTimes,
            target: "≤ 1.0× (as fast as rg searching the raw values alone)",
          },
        ],
        notes: [
          `Throughput (median): nixseal ${mbps(ns)} MB/s` +
            (rgMs === null
              ? ""
              : `, rg ${mbps(rgMs)} MB/s: nixseal has ${(rgMs / ns).toFixed(2)}× rg's throughput.`),
          `Tree (in ${os.tmpdir()}, on disk, page-cached after the warm-up): 2 files of 128 MiB, 5000 of 0.5-16 KiB, ` +
            "the rest 64 KiB-8 MiB, half config-like text and half random bytes, in 65 directories; every 37th file " +
            `holds a secret (raw, base64 of admin:SECRET, hex, JSON, URL-encoded): ${tree.leaks} planted, all found by both.`,
          "nixseal: one process (start-up, identity, decrypting the 1000-value sops file, building the matcher " +
            "included), `--json`; rg: the same patterns (every encoding nixseal looks for) as fixed strings, " +
            "`-a` (binary files too), `--no-ignore --hidden`, its default threads.",
        ],
      };
    } finally {
      remove();
    }
  },
};

/**
 * age-1gib: encrypt and decrypt 1 GiB of random data with `nixseal age` and with the `age`
 * binary, interleaved in the same run, output -o /dev/null: once with the files in a tmpfs
 * (--dir, default /dev/shm) and once on disk, in the page cache (the OS temp dir, or --disk-dir
 * DIR; skipped when that is a tmpfs too). Targets: encrypt within 1.0× of age, decrypt within
 * 0.8×, wherever the input lies.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { X25519Identity } from "../src/age/x25519.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  freeBytes,
  interleavedMeasurements,
  median,
  type ResultRow,
  scratchDir,
  which,
} from "./common.js";

const TMPFS_MAGIC = 0x01021994;

function writeRandomFile(file: string, size: number): void {
  const fd = fs.openSync(file, "w", 0o600);
  try {
    const block = 16 * 1024 * 1024;
    for (let done = 0; done < size; ) {
      const n = Math.min(block, size - done);
      fs.writeSync(fd, randomBytes(n));
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

function isTmpfs(dir: string): boolean {
  return fs.statfsSync(dir).type >>> 0 === TMPFS_MAGIC;
}

/** Times the four commands with the files in `base`; rows named after `where`, CPU notes added. */
function runIn(
  ctx: BenchContext,
  age: string,
  base: string,
  where: string,
  size: number,
  label: string,
  notes: string[],
): ResultRow[] {
  if (freeBytes(base) < 2 * size + 64 * 1024 * 1024) {
    throw new Error(`not enough space in ${base} for 2 × ${label}; use --size-mib, --dir or --disk-dir`);
  }
  const { dir, remove } = scratchDir(base, "age");
  try {
    const id = X25519Identity.generate();
    const keyFile = path.join(dir, "key.txt");
    fs.writeFileSync(keyFile, `${id.encode()}\n`, { mode: 0o600 });
    const recipient = id.recipient().toString();
    const plain = path.join(dir, "plain");
    const encrypted = path.join(dir, "plain.age");
    ctx.log(`age-1gib: writing ${label} of random data to ${dir}`);
    writeRandomFile(plain, size);
    // The file to decrypt is written by age, the reference.
    const made = spawnSync(age, ["-r", recipient, "-o", encrypted, plain], { encoding: "utf8" });
    if (made.status !== 0) throw new Error(`age could not encrypt the input file: ${made.stderr}`);

    const m = interleavedMeasurements(
      ctx,
      [
        { name: "age -e", argv: [age, "-r", recipient, "-o", "/dev/null", plain] },
        {
          name: "nixseal age -e",
          argv: [...cliArgv(ctx.cli), "age", "-r", recipient, "-o", "/dev/null", plain],
        },
        { name: "age -d", argv: [age, "-d", "-i", keyFile, "-o", "/dev/null", encrypted] },
        {
          name: "nixseal age -d",
          argv: [...cliArgv(ctx.cli), "age", "-d", "-i", keyFile, "-o", "/dev/null", encrypted],
        },
      ],
      ctx.runs,
    );
    const wall = (name: string) => m.get(name)!.map((x) => x.wallMs);
    const cpu = (name: string) => m.get(name)!.map((x) => x.cpuMs);
    if (cpu("age -e").every((x) => x !== null)) {
      const med = (name: string) => median(cpu(name) as number[]);
      notes.push(
        `CPU time (user + system, medians), ${where}: encrypt nixseal ${med("nixseal age -e").toFixed(0)} ms, ` +
          `age ${med("age -e").toFixed(0)} ms; decrypt nixseal ${med("nixseal age -d").toFixed(0)} ms, ` +
          `age ${med("age -d").toFixed(0)} ms.`,
      );
    }
    return [
      {
        name: `encrypt ${label}, ${where}`,
        nixseal: wall("nixseal age -e"),
        anchorName: "age -e",
        anchor: wall("age -e"),
        target: "≤ 1.0× age",
      },
      {
        name: `decrypt ${label}, ${where}`,
        nixseal: wall("nixseal age -d"),
        anchorName: "age -d",
        anchor: wall("age -d"),
        target: "≤ 0.8× age",
      },
    ];
  } finally {
    remove();
  }
}

export const age1gib: Benchmark = {
  name: "age-1gib",
  description:
    "encrypt and decrypt 1 GiB with nixseal age and the age binary, tmpfs and disk page cache (--size-mib N, --disk-dir DIR)",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const age = which("age");
    if (!age) {
      ctx.log("age-1gib: skipped: the age binary is not installed (it is the anchor)");
      return null;
    }
    const mib = ctx.option("--size-mib") ?? 1024;
    const size = Math.round(mib * 1024 * 1024);
    const label = mib === 1024 ? "1 GiB" : `${mib} MiB`;
    const notes: string[] = [];
    const rows = runIn(
      ctx,
      age,
      ctx.scratch,
      `in ${isTmpfs(ctx.scratch) ? "tmpfs" : ctx.scratch}`,
      size,
      label,
      notes,
    );
    const disk = ctx.text("--disk-dir") ?? os.tmpdir();
    if (isTmpfs(disk)) {
      notes.push(`The on-disk runs were skipped: ${disk} is a tmpfs (pass --disk-dir DIR on a disk).`);
    } else {
      rows.push(...runIn(ctx, age, disk, "on disk (page cache)", size, label, notes));
    }
    notes.unshift(
      `Input and ciphertext in ${ctx.scratch} and in ${disk} (written just before, so in the page cache), ` +
        "output `-o /dev/null`, one X25519 recipient; the file to decrypt was written by `age`. Wall time " +
        "of the whole process, start-up included. On a machine whose cores are busy with other work, " +
        "nixseal's threads do not run in parallel and its wall time approaches its CPU time.",
    );
    return { title: `age-1gib: ${label} through \`nixseal age\` and \`age\``, rows, notes };
  },
};

/**
 * age-1gib: encrypt and decrypt 1 GiB of random data (in a tmpfs, output -o /dev/null) with
 * `nixseal age` and with the `age` binary, interleaved in the same run. Targets (issue): decrypt
 * within 1.0× of age, encrypt within 1.1×.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { X25519Identity } from "../src/age/x25519.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  freeBytes,
  interleaved,
  scratchDir,
  which,
} from "./common.js";

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

export const age1gib: Benchmark = {
  name: "age-1gib",
  description: "encrypt and decrypt 1 GiB with nixseal age and the age binary (--size-mib N to change)",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const age = which("age");
    if (!age) {
      ctx.log("age-1gib: skipped: the age binary is not installed (it is the anchor)");
      return null;
    }
    const mib = ctx.option("--size-mib") ?? 1024;
    const size = Math.round(mib * 1024 * 1024);
    const label = mib === 1024 ? "1 GiB" : `${mib} MiB`;
    if (freeBytes(ctx.scratch) < 2 * size + 64 * 1024 * 1024) {
      throw new Error(`not enough space in ${ctx.scratch} for 2 × ${label}; use --size-mib or --dir`);
    }
    const { dir, remove } = scratchDir(ctx.scratch, "age");
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

      const node = process.execPath;
      const times = interleaved(ctx, [
        { name: "age -e", argv: [age, "-r", recipient, "-o", "/dev/null", plain] },
        { name: "nixseal age -e", argv: [node, ctx.cli, "age", "-r", recipient, "-o", "/dev/null", plain] },
        { name: "age -d", argv: [age, "-d", "-i", keyFile, "-o", "/dev/null", encrypted] },
        {
          name: "nixseal age -d",
          argv: [node, ctx.cli, "age", "-d", "-i", keyFile, "-o", "/dev/null", encrypted],
        },
      ]);
      return {
        title: `age-1gib: ${label} through \`nixseal age\` and \`age\``,
        rows: [
          {
            name: `encrypt ${label}`,
            nixseal: times.get("nixseal age -e")!,
            anchorName: "age -e",
            anchor: times.get("age -e")!,
            target: "≤ 1.1× age",
          },
          {
            name: `decrypt ${label}`,
            nixseal: times.get("nixseal age -d")!,
            anchorName: "age -d",
            anchor: times.get("age -d")!,
            target: "≤ 1.0× age",
          },
        ],
        notes: [
          `Input and ciphertext in ${ctx.scratch} (tmpfs), output \`-o /dev/null\`, one X25519 recipient;` +
            " the file to decrypt was written by `age`. Wall time of the whole process, start-up included.",
        ],
      };
    } finally {
      remove();
    }
  },
};

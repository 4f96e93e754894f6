/**
 * small-decrypt: 1000 small age files (100-300 bytes of plaintext) encrypted to one identity,
 * decrypted by one Node process through the engine (`decrypt()`, see small-decrypt-child.ts),
 * against the agenix-style loop: one `age -d` process per file, in the same run on the same
 * files. Both write every plaintext to a file in a tmpfs. Done for an X25519 identity and for
 * an ssh-ed25519 key (the usual agenix host key). Target (issue): nixseal well under 300 ms.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes, randomInt } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { encrypt } from "../src/age/age.js";
import { X25519Identity } from "../src/age/x25519.js";
import { parseRecipientString } from "../src/keys/key-types.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  digestOf,
  interleaved,
  type ResultRow,
  scratchDir,
  which,
} from "./common.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "small-decrypt-child.js");

interface KeyPair {
  label: string;
  identityFile: string;
  recipient: string;
}

function x25519Key(dir: string): KeyPair {
  const id = X25519Identity.generate();
  const identityFile = path.join(dir, "x25519.txt");
  fs.writeFileSync(identityFile, `${id.encode()}\n`, { mode: 0o600 });
  return { label: "X25519", identityFile, recipient: id.recipient().toString() };
}

function sshEd25519Key(dir: string, sshKeygen: string): KeyPair {
  const identityFile = path.join(dir, "id_ed25519");
  const r = spawnSync(sshKeygen, ["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", identityFile]);
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  const pub = fs.readFileSync(`${identityFile}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
  return { label: "ssh-ed25519", identityFile, recipient: pub };
}

/** Writes `count` files of 100-300 random bytes, encrypted to `key`; returns their digest. */
async function makeFiles(dir: string, key: KeyPair, count: number): Promise<string> {
  const recipient = parseRecipientString(key.recipient, "benchmark recipient");
  const digest = createHash("sha256");
  for (let i = 0; i < count; i++) {
    const name = `secret-${String(i).padStart(4, "0")}`;
    const plain = randomBytes(randomInt(100, 301));
    digest.update(name).update(plain);
    fs.writeFileSync(path.join(dir, `${name}.age`), await encrypt(plain, [recipient]));
  }
  return digest.digest("hex");
}

export const smallDecrypt: Benchmark = {
  name: "small-decrypt",
  description: "1000 small files decrypted by one nixseal process vs one age process per file (--files N)",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const age = which("age");
    if (!age) {
      ctx.log("small-decrypt: skipped: the age binary is not installed (it is the anchor)");
      return null;
    }
    const count = ctx.option("--files") ?? 1000;
    const { dir, remove } = scratchDir(ctx.scratch, "small");
    const notes: string[] = [];
    try {
      const keys = [x25519Key(dir)];
      const sshKeygen = which("ssh-keygen");
      if (sshKeygen) keys.push(sshEd25519Key(dir, sshKeygen));
      else notes.push("The ssh-ed25519 variant was skipped: ssh-keygen is not installed.");

      const loop = path.join(dir, "agenix-loop.sh");
      // What agenix's activation script does per secret, reduced to the decryption itself.
      fs.writeFileSync(
        loop,
        'for f in "$2"/*.age; do "$1" --decrypt -i "$3" -o "$4/$(basename "$f" .age)" "$f" || exit 1; done\n',
      );
      const rows: ResultRow[] = [];
      for (const key of keys) {
        const inDir = path.join(dir, `in-${key.label}`);
        fs.mkdirSync(inDir);
        ctx.log(`small-decrypt: encrypting ${count} files to ${key.label}`);
        const expected = await makeFiles(inDir, key, count);
        const out = (who: string) => {
          const d = path.join(dir, `out-${key.label}-${who}`);
          fs.rmSync(d, { recursive: true, force: true });
          fs.mkdirSync(d, { mode: 0o700 });
          return d;
        };
        const nsOut = out("nixseal");
        const ageOut = out("age");
        const times = interleaved(ctx, [
          { name: "nixseal", argv: [process.execPath, CHILD, key.identityFile, inDir, nsOut] },
          { name: "agenix-style loop", argv: ["/bin/sh", loop, age, inDir, key.identityFile, ageOut] },
        ]);
        // Both wrote every plaintext, byte for byte.
        if (digestOf(nsOut) !== expected) throw new Error(`nixseal wrote wrong plaintexts (${key.label})`);
        if (digestOf(ageOut) !== expected) throw new Error(`age wrote wrong plaintexts (${key.label})`);
        rows.push({
          name: `${count} files, ${key.label}`,
          nixseal: times.get("nixseal")!,
          anchorName: "agenix-style loop (age -d per file)",
          anchor: times.get("agenix-style loop")!,
          target: "< 300 ms",
        });
      }
      notes.unshift(
        `Each file holds 100-300 random bytes, encrypted to one recipient. nixseal: one \`node\` process ` +
          "(start-up included) loads the identity file and calls `decrypt()` per file; the anchor runs " +
          "one `age -d -o FILE` process per file from a shell loop. Both write every plaintext to a " +
          "file in a tmpfs, and the outputs are checked.",
      );
      return { title: `small-decrypt: ${count} small files`, rows, notes };
    } finally {
      remove();
    }
  },
};

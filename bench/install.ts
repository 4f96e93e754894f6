/**
 * install: activation of N small age secrets encrypted to an ssh-ed25519 host key, by one
 * `nixseal install` process (start-up included) against an agenix-style activation loop: per
 * secret one `age -d` process, then chown and chmod, as agenix's activation script does, in the
 * same run on the same files. Both write a fresh generation of files owned by nobody:nogroup
 * (mode 0400) in a tmpfs, and both outputs are checked. Also 10 000 secrets with nixseal alone,
 * to show how the cost grows. Target: at most 300 ms for 1000 secrets.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes, randomInt } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { encrypt } from "../src/age/age.js";
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

interface Fixture {
  inDir: string;
  manifest: string;
  secretsDir: string;
  expected: string;
}

function idOf(db: "passwd" | "group", name: string): boolean {
  return spawnSync("getent", [db, name]).status === 0;
}

/** `count` secrets of 100-300 random bytes and the manifest installing them. */
async function makeFixture(
  dir: string,
  label: string,
  count: number,
  hostKey: string,
  recipient: string,
  owner: { user: string; group: string },
): Promise<Fixture> {
  const inDir = path.join(dir, `in-${label}`);
  fs.mkdirSync(inDir);
  const r = parseRecipientString(recipient, "benchmark host key");
  const digest = createHash("sha256");
  const secrets: unknown[] = [];
  for (let i = 0; i < count; i++) {
    const name = `secret-${String(i).padStart(5, "0")}`;
    const plain = randomBytes(randomInt(100, 301));
    digest.update(name).update(plain);
    const file = path.join(inDir, `${name}.age`);
    fs.writeFileSync(file, await encrypt(plain, [r]));
    secrets.push({
      name,
      file,
      format: "age",
      key: null,
      owner: owner.user,
      group: owner.group,
      mode: "0400",
      path: null,
      restartUnits: [`svc-${i % 50}.service`],
      reloadUnits: [],
    });
  }
  const secretsDir = path.join(dir, `secrets-${label}`);
  const manifest = path.join(dir, `manifest-${label}.json`);
  fs.writeFileSync(
    manifest,
    JSON.stringify({
      version: 1,
      secretsDir,
      generationsDir: path.join(dir, `generations-${label}`),
      keepGenerations: 0,
      // The scratch dir is a tmpfs already (benchmarks do not mount): same as a host's /run.
      mount: "existing",
      identities: [{ type: "ssh", path: hostKey }],
      secrets,
      templates: [],
      placeholders: {},
    }),
  );
  return { inDir, manifest, secretsDir, expected: digest.digest("hex") };
}

export const installBench: Benchmark = {
  name: "install",
  description: "nixseal install of 1000 (and 10 000) age secrets vs an agenix-style activation loop",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const age = which("age");
    const sshKeygen = which("ssh-keygen");
    if (!age || !sshKeygen) {
      ctx.log("install: skipped: needs age (the anchor) and ssh-keygen");
      return null;
    }
    if (process.geteuid?.() !== 0) {
      ctx.log("install: skipped: needs root (files are given to nobody:nogroup, as on a host)");
      return null;
    }
    const count = ctx.option("--files") ?? 1000;
    const { dir, remove } = scratchDir(ctx.scratch, "install");
    try {
      fs.chmodSync(dir, 0o755);
      const hostKey = path.join(dir, "ssh_host_ed25519_key");
      const k = spawnSync(sshKeygen, ["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", hostKey]);
      if (k.status !== 0) throw new Error(`ssh-keygen failed: ${k.stderr}`);
      const recipient = fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
      const owner = {
        user: idOf("passwd", "nobody") ? "nobody" : "root",
        group: idOf("group", "nogroup") ? "nogroup" : "root",
      };
      ctx.log(`install: encrypting ${count} secrets to an ssh-ed25519 host key`);
      const small = await makeFixture(dir, "small", count, hostKey, recipient, owner);

      // agenix's activation, reduced to what it does per secret: a new generation directory,
      // then per secret age -d into it, chown, chmod; finally the symlink switch.
      const loop = path.join(dir, "agenix-loop.sh");
      fs.writeFileSync(
        loop,
        [
          'age="$1"; in="$2"; key="$3"; out="$4"; owner="$5"',
          'gen="$out/gen.$$.$(date +%s%N)"; mkdir -p "$gen"',
          'for f in "$in"/*.age; do',
          '  n="$gen/$(basename "$f" .age)"',
          '  (umask u=r,g=,o=; "$age" --decrypt -i "$key" -o "$n" "$f") || exit 1',
          '  chown "$owner" "$n" && chmod 0400 "$n" || exit 1',
          "done",
          'ln -sfn "$gen" "$out/current"',
          "",
        ].join("\n"),
      );
      const agenixOut = path.join(dir, "agenix");
      fs.mkdirSync(agenixOut);
      const times = interleaved(ctx, [
        { name: "nixseal", argv: [process.execPath, ctx.cli, "install", "--manifest", small.manifest] },
        {
          name: "agenix-style loop",
          argv: ["/bin/bash", loop, age, small.inDir, hostKey, agenixOut, `${owner.user}:${owner.group}`],
        },
      ]);
      if (digestOf(small.secretsDir) !== small.expected)
        throw new Error("nixseal installed wrong plaintexts");
      if (digestOf(path.join(agenixOut, "current")) !== small.expected)
        throw new Error("the loop wrote wrong plaintexts");
      const rows: ResultRow[] = [
        {
          name: `${count} secrets, ssh-ed25519 host key`,
          nixseal: times.get("nixseal")!,
          anchorName: "agenix-style loop (age -d, chown, chmod per secret)",
          anchor: times.get("agenix-style loop")!,
          target: "≤ 300 ms",
        },
      ];

      const bigCount = count * 10;
      ctx.log(`install: encrypting ${bigCount} secrets`);
      const big = await makeFixture(dir, "big", bigCount, hostKey, recipient, owner);
      const bigTimes = interleaved(ctx, [
        { name: "nixseal", argv: [process.execPath, ctx.cli, "install", "--manifest", big.manifest] },
      ]);
      if (digestOf(big.secretsDir) !== big.expected)
        throw new Error("nixseal installed wrong plaintexts (big)");
      rows.push({
        name: `${bigCount} secrets, ssh-ed25519 host key`,
        nixseal: bigTimes.get("nixseal")!,
        anchorName: "",
        anchor: null,
      });

      return {
        title: `install: ${count} and ${bigCount} secrets activated`,
        rows,
        notes: [
          `Each secret holds 100-300 random bytes, age-encrypted to one ssh-ed25519 host key, installed as ${owner.user}:${owner.group} 0400 into a new generation in a tmpfs (/dev/shm; the manifest says mount "existing", so no ramfs is mounted). nixseal: one \`nixseal install\` process (start-up, manifest validation, metadata, restart lists, pruning of the previous generation included). The anchor: a bash loop running \`age -d\`, \`chown\` and \`chmod\` per secret, as agenix's activation does. Both outputs are checked.`,
        ],
      };
    } finally {
      remove();
    }
  },
};

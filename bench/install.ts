/**
 * install: activation of N small age secrets encrypted to an ssh-ed25519 host key, by one
 * `nixseal install` process (start-up included) against an agenix-style activation loop: per
 * secret one `age -d` process, then chown and chmod, as agenix's activation script does, in the
 * same run on the same files. Both write a fresh generation of files owned by nobody:nogroup
 * (mode 0400) in a tmpfs, and both outputs are checked. The encrypted files are in the Nix store,
 * as on a host (`nix-store --add` of the fixture's directory, deleted again at the end; the
 * manifest names the store as the modules do, storeDir); without nix-store they stay in the
 * scratch directory and the manifest names no store, so every file is read at every install.
 *
 * Cases, each timed in the same rounds as the anchor (which does the same work every time: agenix
 * decrypts everything at every activation):
 * - cold (boot): an empty generations dir, no active generation: everything is decrypted.
 *   Targets: 1000 secrets in at most 150 ms; 10 000 (nixseal alone) in at most 1.2 s, linear.
 * - re-activation (`nixos-rebuild switch`), the previous install active: nothing changed, the
 *   active generation is verified and stays active (at most 80 ms for 1000); 10 of the 1000
 *   changed (another encrypted file each), only those decrypted, the other files hard-linked
 *   from the active generation (at most 100 ms).
 * Floors, timed in the same rounds: bench/install-floor.ts for the cold cases, and
 * bench/reactivation-floor.ts (only the verification of the active generation) for "nothing
 * changed".
 * The floor of the cold case is about 100 ms: Node's start, one X25519 per file (~40 µs, on two
 * cores), creating the files. On a shared machine, read the ratios to the anchor (and the load
 * averages): absolute times follow the load.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes, randomInt } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { encrypt } from "../src/age/age.js";
import type { Recipient } from "../src/age/index.js";
import { parseRecipientString } from "../src/keys/key-types.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  DEFAULT_CLI,
  digestOf,
  nodeFlagsOf,
  previousLabel,
  type ResultRow,
  rounds,
  type Step,
  scratchDir,
  which,
} from "./common.js";

/** How many secrets the "changed" case changes. */
const CHANGED = 10;

interface Fixture {
  /** The encrypted files of manifest A, and nothing else (the anchor decrypts them all). */
  inDir: string;
  /** The store path the encrypted files were added as, or null (not in the store). */
  storePath: string | null;
  /** A: the secrets; B: the same with CHANGED of them from other encrypted files. */
  manifests: [string, string];
  /** digestOf(secretsDir) after installing A, B. */
  expected: [string, string];
  secretsDir: string;
  generationsDir: string;
}

function idOf(db: "passwd" | "group", name: string): boolean {
  return spawnSync("getent", [db, name]).status === 0;
}

function secretName(i: number): string {
  return `secret-${String(i).padStart(5, "0")}`;
}

async function encryptedFile(file: string, plain: Uint8Array, r: Recipient): Promise<void> {
  fs.writeFileSync(file, await encrypt(plain, [r]));
}

/** Adds `dir` to the Nix store (as a host's configuration has its encrypted files); null without nix-store. */
function addToStore(dir: string): string | null {
  const nixStore = which("nix-store");
  if (!nixStore) return null;
  const r = spawnSync(nixStore, ["--add", dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`nix-store --add failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** Deletes what addToStore added (nothing refers to it: generation metadata is no GC root). */
function deleteFromStore(storePath: string | null): void {
  if (storePath !== null) spawnSync("nix-store", ["--delete", storePath], { stdio: "ignore" });
}

/** `count` secrets of 100-300 random bytes, and manifests A and B installing them. */
async function makeFixture(
  dir: string,
  label: string,
  count: number,
  hostKey: string,
  recipient: string,
  owner: { user: string; group: string },
): Promise<Fixture> {
  // in/: manifest A's files; changed/: the other files of manifest B.
  const encDir = path.join(dir, `encrypted-${label}`);
  fs.mkdirSync(path.join(encDir, "in"), { recursive: true });
  fs.mkdirSync(path.join(encDir, "changed"));
  const r = parseRecipientString(recipient, "benchmark host key");
  const changed = new Set(
    Array.from({ length: Math.min(CHANGED, count) }, (_, k) => Math.floor((k * count) / CHANGED)),
  );
  const digests = [createHash("sha256"), createHash("sha256")];
  for (let i = 0; i < count; i++) {
    const name = secretName(i);
    const plain = randomBytes(randomInt(100, 301));
    await encryptedFile(path.join(encDir, "in", `${name}.age`), plain, r);
    let plainB = plain;
    if (changed.has(i)) {
      plainB = randomBytes(randomInt(100, 301));
      await encryptedFile(path.join(encDir, "changed", `${name}.age`), plainB, r);
    }
    digests[0]!.update(name).update(plain);
    digests[1]!.update(name).update(plainB);
  }
  const storePath = addToStore(encDir);
  const root = storePath ?? encDir;
  const lists: unknown[][] = [[], []];
  for (let i = 0; i < count; i++) {
    const name = secretName(i);
    const file = path.join(root, "in", `${name}.age`);
    const fileB = changed.has(i) ? path.join(root, "changed", `${name}.age`) : file;
    for (const [k, f] of [file, fileB].entries()) {
      lists[k]!.push({
        name,
        file: f,
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
  }
  const secretsDir = path.join(dir, `secrets-${label}`);
  const generationsDir = path.join(dir, `generations-${label}`);
  const manifests = (["a", "b"] as const).map((ab, k) => {
    const manifest = path.join(dir, `manifest-${label}-${ab}.json`);
    fs.writeFileSync(
      manifest,
      JSON.stringify({
        version: 1,
        secretsDir,
        generationsDir,
        keepGenerations: 0,
        // The scratch dir is a tmpfs already (benchmarks do not mount): same as a host's /run.
        mount: "existing",
        ...(storePath === null ? {} : { storeDir: path.dirname(storePath) }),
        identities: [{ type: "ssh", path: hostKey }],
        secrets: lists[k],
        templates: [],
        placeholders: {},
      }),
    );
    return manifest;
  }) as [string, string];
  return {
    inDir: path.join(root, "in"),
    storePath,
    manifests,
    expected: [digests[0]!.digest("hex"), digests[1]!.digest("hex")],
    secretsDir,
    generationsDir,
  };
}

const FLOOR_NAME = "its floor: a bare script (bench/install-floor.ts)";
const FLOOR = fileURLToPath(new URL("./install-floor.js", import.meta.url));
const REACTIVATION_FLOOR_NAME = "its floor: a bare script (bench/reactivation-floor.ts)";
const REACTIVATION_FLOOR = fileURLToPath(new URL("./reactivation-floor.js", import.meta.url));

/** A numeric id: `id -u USER`, or the third field of `getent group GROUP`. */
function numericId(db: "passwd" | "group", name: string): number {
  const r =
    db === "passwd"
      ? spawnSync("id", ["-u", name], { encoding: "utf8" })
      : spawnSync("getent", ["group", name], { encoding: "utf8" });
  const id = Number(db === "passwd" ? r.stdout.trim() : r.stdout.split(":")[2]);
  if (r.status !== 0 || !Number.isInteger(id)) throw new Error(`no id for ${db} entry ${name}`);
  return id;
}

/**
 * The floor of a cold install of fixture `f` (bench/install-floor.ts: a bare script doing only
 * what activation cannot skip), into a fresh directory of the scratch tmpfs each time.
 */
function floorStep(f: Fixture, label: string, dir: string, owner: { user: string; group: string }): Step {
  const uid = String(numericId("passwd", owner.user));
  const gid = String(numericId("group", owner.group));
  let runs = 0;
  let out = "";
  return {
    name: `${label} floor`,
    prepare: () => {
      if (out !== "") fs.rmSync(out, { recursive: true, force: true });
      out = path.join(dir, `floor-${label}-${runs++}`);
      fs.mkdirSync(out);
    },
    // With the V8 flags nixseal runs with: the floor differs from it in the work done alone.
    argv: () => [process.execPath, ...nodeFlagsOf(DEFAULT_CLI), FLOOR, f.manifests[0], out, uid, gid],
    check: () => {
      if (digestOf(out) !== f.expected[0])
        throw new Error(`the floor script wrote wrong plaintexts (${label})`);
    },
  };
}

/**
 * The install steps of one fixture: cold, and (with `reactivation`) nothing changed, CHANGED
 * changed; `cli` another build (the previous one) instead of ctx.cli.
 */
function installSteps(
  ctx: BenchContext,
  f: Fixture,
  label: string,
  reactivation: boolean,
  cli = ctx.cli,
): Step[] {
  // Which manifest is active (0: A, 1: B; null: none), to switch to the same or the other one.
  let active: 0 | 1 | null = null;
  const argv = (k: 0 | 1) => [...cliArgv(cli), "install", "--manifest", f.manifests[k]];
  const check = () => {
    if (active === null || digestOf(f.secretsDir) !== f.expected[active])
      throw new Error(`nixseal installed wrong plaintexts (${label})`);
  };
  const steps: Step[] = [
    {
      name: `${label} cold`,
      prepare: () => {
        fs.rmSync(f.generationsDir, { recursive: true, force: true });
        fs.rmSync(f.secretsDir, { force: true });
      },
      argv: () => {
        active = 0;
        return argv(0);
      },
      check,
    },
  ];
  if (!reactivation) return steps;
  const switchTo = (k: 0 | 1) => {
    active = k;
    return argv(k);
  };
  steps.push(
    { name: `${label} unchanged`, argv: () => switchTo(active ?? 0), check },
    { name: `${label} ${CHANGED} changed`, argv: () => switchTo(active === 0 ? 1 : 0), check },
  );
  return steps;
}

export const installBench: Benchmark = {
  name: "install",
  description:
    "nixseal install of 1000 (and 10 000) age secrets in the Nix store (nix-store --add), cold and re-activated, vs an agenix-style activation loop",
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
    const added: (string | null)[] = [];
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
      added.push(small.storePath);
      ctx.log(`install: the encrypted files are in ${small.storePath ?? "the scratch dir (no nix-store)"}`);

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
      const anchor: Step = {
        name: "agenix-style loop",
        // Its previous generations go first, untimed (agenix removes them after the switch).
        prepare: () => {
          for (const g of fs.readdirSync(agenixOut)) fs.rmSync(path.join(agenixOut, g), { recursive: true });
        },
        argv: () => ["/bin/bash", loop, age, small.inDir, hostKey, agenixOut, `${owner.user}:${owner.group}`],
        check: () => {
          if (digestOf(path.join(agenixOut, "current")) !== small.expected[0])
            throw new Error("the loop wrote wrong plaintexts");
        },
      };
      const label = String(count);
      const times = rounds(ctx, [
        anchor,
        ...installSteps(ctx, small, label, true),
        floorStep(small, label, dir, owner),
        // After the installs: it verifies whichever of their generations is active (it fails
        // the run if a file does not match).
        {
          name: `${label} unchanged floor`,
          argv: () => [process.execPath, ...nodeFlagsOf(DEFAULT_CLI), REACTIVATION_FLOOR, small.manifests[0]],
        },
      ]);
      const anchorName = "agenix-style loop (age -d, chown, chmod per secret)";
      const anchorTimes = times.get(anchor.name)!;
      const rows: ResultRow[] = [
        {
          name: `${count} secrets, cold (boot: empty ramfs)`,
          nixseal: times.get(`${label} cold`)!,
          anchorName,
          anchor: anchorTimes,
          target: "≤ 150 ms",
        },
        {
          name: `${count} secrets, cold`,
          nixseal: times.get(`${label} cold`)!,
          anchorName: FLOOR_NAME,
          anchor: times.get(`${label} floor`)!,
        },
        {
          name: `${count} secrets, re-activation, nothing changed`,
          nixseal: times.get(`${label} unchanged`)!,
          anchorName,
          anchor: anchorTimes,
          target: "≤ 80 ms",
        },
        {
          name: `${count} secrets, re-activation, nothing changed`,
          nixseal: times.get(`${label} unchanged`)!,
          anchorName: REACTIVATION_FLOOR_NAME,
          anchor: times.get(`${label} unchanged floor`)!,
        },
        {
          name: `${count} secrets, re-activation, ${CHANGED} changed`,
          nixseal: times.get(`${label} ${CHANGED} changed`)!,
          anchorName,
          anchor: anchorTimes,
          target: "≤ 100 ms",
        },
      ];

      const bigCount = count * 10;
      ctx.log(`install: encrypting ${bigCount} secrets`);
      const big = await makeFixture(dir, "big", bigCount, hostKey, recipient, owner);
      added.push(big.storePath);
      const bigLabel = String(bigCount);
      // With --previous, that build's cold install of the same fixture in the same rounds.
      const previous = ctx.text("--previous");
      const previousLabelOf = `${bigLabel} previous`;
      const bigTimes = rounds(ctx, [
        ...installSteps(ctx, big, bigLabel, false),
        floorStep(big, bigLabel, dir, owner),
        ...(previous === undefined ? [] : installSteps(ctx, big, previousLabelOf, false, previous)),
      ]);
      rows.push({
        name: `${bigCount} secrets, cold`,
        nixseal: bigTimes.get(`${bigLabel} cold`)!,
        anchorName: FLOOR_NAME,
        anchor: bigTimes.get(`${bigLabel} floor`)!,
        target: "≤ 1200 ms",
      });
      if (previous !== undefined) {
        rows.push({
          name: `${bigCount} secrets, cold`,
          nixseal: bigTimes.get(`${bigLabel} cold`)!,
          anchorName: `the previous nixseal (${previousLabel(previous)})`,
          anchor: bigTimes.get(`${previousLabelOf} cold`)!,
        });
      }

      return {
        title: `install: ${count} and ${bigCount} secrets activated, cold and re-activated`,
        rows,
        notes: [
          `Each secret holds 100-300 random bytes, age-encrypted to one ssh-ed25519 host key, ${small.storePath === null ? "in the scratch dir (no nix-store here; the manifest names no store, so every file is read at every install)" : "in the Nix store as on a host (nix-store --add of the fixture's directory; the manifest's storeDir as the modules write it)"}, installed as ${owner.user}:${owner.group} 0400 into a new generation in a tmpfs (/dev/shm; the manifest says mount "existing", so no ramfs is mounted). nixseal: one \`nixseal install\` process (start-up, manifest validation, metadata, restart lists, pruning of the previous generation included). Cold: the generations dir removed before each run (untimed). Re-activation: the previous run's generation active; "${CHANGED} changed" switches between two manifests that differ in ${CHANGED} encrypted files. The anchor: a bash loop running \`age -d\`, \`chown\` and \`chmod\` per secret, as agenix's activation does (at every activation). Every output is checked.`,
          "The re-activation floor (bench/reactivation-floor.ts) is a bare script that only verifies the active generation as a re-activation with nothing changed must: the manifest and the metadata read (JSON.parse), then per secret its file opened, fstat-ed (owner, group, mode) and read, and its HMAC compared with the recorded one; no nixseal module, no validation.",
          "The floor (bench/install-floor.ts) is a bare script that does only what a cold activation of the same manifest cannot skip, with nixseal's own key parser and decrypt(): per file read, decrypt, create O_EXCL 0400 in a fresh tmpfs directory, fchown, write; on two threads (the main thread and a worker taking files from a shared counter) when the manifest names 2048 age files or more, the worker made before the manifest is parsed and V8 in efficiency mode from its start (src/install/early-worker.ts, src/common/efficiency-mode.ts), as the installer on a first install. It is timed in the same rounds as nixseal.",
        ],
      };
    } finally {
      remove();
      for (const p of added) deleteFromStore(p);
    }
  },
};

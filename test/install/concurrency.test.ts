/**
 * Installs at the same time: the install lock (src/install/lock.ts) and pruning that never
 * removes what secretsDir points to. The lock and pruning are tested on a temp directory; the
 * real thing is two `nixseal install` runs started together, 50 times, as root in a private
 * mount namespace.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { Generations } from "../../src/install/generations.js";
import { InstallLock, lockFileOf } from "../../src/install/lock.js";
import { tempDir } from "../helpers.js";
import {
  ageFile,
  installTestsSkipReason,
  makeHost,
  runPlan,
  secret,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

function procStart(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
}

/** A pid that ran and is gone. */
function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

test("lock: a live holder is waited for, up to the limit, with its pid in the error", async () => {
  const { dir, cleanup } = tempDir();
  const sleeper = spawn("sleep", ["30"]);
  try {
    const gens = path.join(dir, "generations");
    fs.writeFileSync(lockFileOf(gens), `${sleeper.pid} ${procStart(sleeper.pid!)}\n`);
    const t0 = Date.now();
    await assert.rejects(InstallLock.acquire(gens, 300), (e: Error) => {
      assert.match(e.message, new RegExp(`another nixseal install \\(pid ${sleeper.pid}\\) has held`));
      return true;
    });
    assert.ok(Date.now() - t0 >= 300, "it waited");
  } finally {
    sleeper.kill();
    cleanup();
  }
});

test("lock: taken when free; waits for release; the next holder gets it", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const gens = path.join(dir, "generations");
    const first = await InstallLock.acquire(gens, 1000);
    assert.equal(fs.readFileSync(lockFileOf(gens), "latin1"), `${process.pid} ${procStart(process.pid)}\n`);
    let second: InstallLock | null = null;
    const waiting = InstallLock.acquire(gens, 5000).then((l) => {
      second = l;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(second, null, "the second waits while the first holds it");
    first.release();
    await waiting;
    assert.ok(second !== null);
    (second as InstallLock).verify();
    (second as InstallLock).release();
    assert.equal(fs.existsSync(lockFileOf(gens)), false, "released: the file is gone");
  } finally {
    cleanup();
  }
});

test("lock: a dead holder's lock, or one whose pid now names another process, is broken", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const gens = path.join(dir, "generations");
    fs.writeFileSync(lockFileOf(gens), `${deadPid()} 12345\n`);
    const a = await InstallLock.acquire(gens, 200);
    a.release();
    // Our own pid, but another start time: the process that wrote it is gone.
    fs.writeFileSync(lockFileOf(gens), `${process.pid} 1\n`);
    const b = await InstallLock.acquire(gens, 200);
    b.verify();
    b.release();
    assert.deepEqual(fs.readdirSync(dir), [], "no lock or stale copy left behind");
  } finally {
    cleanup();
  }
});

test("lock: a holder whose lock file was replaced knows it before switching", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const gens = path.join(dir, "generations");
    const lock = await InstallLock.acquire(gens, 200);
    fs.rmSync(lockFileOf(gens));
    fs.writeFileSync(lockFileOf(gens), "someone else\n");
    assert.throws(() => lock.verify(), /lost the install lock/);
    lock.release();
    assert.equal(fs.readFileSync(lockFileOf(gens), "latin1"), "someone else\n", "not ours to remove");
  } finally {
    cleanup();
  }
});

test("prune never removes the generation secretsDir points to", () => {
  const { dir, cleanup } = tempDir();
  try {
    const gens = new Generations(path.join(dir, "generations"));
    fs.mkdirSync(gens.dir);
    for (let i = 1; i <= 4; i++) gens.create();
    const secretsDir = path.join(dir, "secrets");
    fs.symlinkSync(gens.pathOf(4), secretsDir);
    // An install that switched to 2 (another then switched to 4): 4 is newer, but it is live.
    assert.deepEqual(gens.prune(2, 0, secretsDir), [1, 3]);
    assert.deepEqual(gens.list(), [2, 4]);
  } finally {
    cleanup();
  }
});

const skip = installTestsSkipReason();

test("two installs at once, 50 times: both succeed and secretsDir always points at a complete generation", {
  skip: skip ?? false,
  timeout: 15 * 60 * 1000,
}, async () => {
  const host = makeHost();
  try {
    const value = uniqueSecret("pair");
    const file = await ageFile(host, "pair", value);
    const m = writeManifest(host, [secret("pair", file)], [], { keepGenerations: 0 });
    const [r] = runPlan(host, [
      { op: "installPairs", args: ["--manifest", m], pairs: 50, secretsDir: host.secretsDir, file: "pair" },
    ]);
    assert.ok(r && r.op === "installPairs");
    r.rounds.forEach((round, i) => {
      assert.deepEqual(round.statuses, [0, 0], `round ${i}: both exit 0\n${round.stderr}`);
      assert.equal(round.content, value, `round ${i}: secretsDir (-> ${round.target}) holds the secret`);
    });
  } finally {
    host.cleanup();
  }
});

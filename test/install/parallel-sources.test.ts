/** The decryption worker of nixseal install, driven directly (the installer uses it only when it pays). */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { encrypt } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { EarlyWorker, PARALLEL_MIN_DECRYPTS } from "../../src/install/early-worker.js";
import { type GenerationMeta, identitySetHash } from "../../src/install/generations.js";
import { validateManifest } from "../../src/install/manifest.js";
import {
  DecryptWorker,
  jobAt,
  jobCount,
  originOf,
  PARALLEL_MIN_COPIES,
  packJobs,
  type WorkerJobResult,
  type WorkerJobs,
  type WorkerResults,
  type WorkerStart,
  workerModeFor,
} from "../../src/install/parallel-sources.js";
import { groupBySource, type SourceJob } from "../../src/install/source-jobs.js";
import { parseRecipientString } from "../../src/keys/key-types.js";
import { tempDir, which } from "../helpers.js";
import { secret } from "./fixture.js";

const WORKER = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "src",
  "install",
  "decrypt-worker.js",
);

/** Every job the worker did, as objects in the order of the jobs (whether its result came in columns or whole). */
function jobResults(r: WorkerResults): WorkerJobResult[] {
  const out: WorkerJobResult[] = [...r.withProblems];
  for (let k = 0; k < r.job.length; k++) {
    const values: WorkerJobResult["values"] = [];
    for (let v = r.valueStart[k]!; v < r.valueStart[k + 1]!; v++)
      values.push([r.valueIndex[v]!, r.hmac[v]!, originOf(r, v)]);
    out.push({
      job: r.job[k]!,
      cipher: r.cipher[k]!,
      storeFile: r.storeFile[k] === 1,
      error: null,
      noIdentity: false,
      failed: [],
      entryErrors: [],
      values,
    });
  }
  return out.sort((a, b) => a.job - b.job);
}

function runWorker(
  start: WorkerStart,
  jobs: Omit<WorkerJobs, "jobs"> & { jobs: SourceJob[] },
): Promise<WorkerJobResult[]> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER);
    w.once("message", (r: WorkerResults) => resolve(jobResults(r)));
    w.once("error", reject);
    // As the install does: what to load first, then the jobs.
    w.postMessage(start);
    w.postMessage({ ...jobs, jobs: packJobs(jobs.jobs) });
  });
}

test("decrypt worker: loads the host key itself, claims jobs from the shared counter, writes the files and returns only hashes, origins and errors", async (t) => {
  if (!which("ssh-keygen")) return t.skip("needs ssh-keygen");
  const { dir, cleanup } = tempDir();
  try {
    const key = path.join(dir, "ssh_host_ed25519_key");
    assert.equal(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]).status, 0);
    const host = parseRecipientString(fs.readFileSync(`${key}.pub`, "utf8").trim(), "host");
    const stranger = parseRecipientString(X25519Identity.generate().recipient().toString(), "stranger");
    const hmacKey = randomBytes(32);
    const hmac = (v: string) => createHmac("sha256", hmacKey).update(v).digest("hex");
    const active = path.join(dir, "active");
    const target = path.join(dir, "new");
    fs.mkdirSync(active);
    fs.mkdirSync(target);
    const me = { uid: process.geteuid!(), gid: process.getegid!() };
    const values = Array.from({ length: 8 }, (_, i) => `value ${i} ${randomBytes(8).toString("hex")}`);
    const jobs: SourceJob[] = [];
    for (let i = 0; i < values.length; i++) {
      const file = path.join(dir, `s${i}.age`);
      const data = await encrypt(Buffer.from(values[i]!), [i === 4 ? stranger : host]);
      fs.writeFileSync(file, data);
      const owner = { ...me, mode: 0o440 };
      // 5 and 6 as the active generation recorded them: 5 intact there, 6 altered since.
      let recorded = null;
      if (i === 5 || i === 6) {
        fs.writeFileSync(path.join(active, `n-${i}`), i === 5 ? values[i]! : "tampered", { mode: 0o440 });
        recorded = {
          cipher: createHash("sha256").update(data).digest("hex"),
          hmac: hmac(values[i]!),
          file,
          storeFile: false,
          ...owner,
        };
      }
      jobs.push({
        file,
        format: "age",
        // 3: left by the main thread to decrypt because its copy was not intact.
        entries: [{ index: 10 + i, name: `n-${i}`, key: null, owner, recorded, repaired: i === 3 }],
      });
    }
    // One file read by two secrets, one of them in a subdirectory.
    jobs[7]!.entries.push({
      index: 30,
      name: "sub/twin",
      key: null,
      owner: { ...me, mode: 0o400 },
      recorded: null,
      repaired: false,
    });
    const counter = new SharedArrayBuffer(4);
    // The main thread has already claimed the first two jobs.
    Atomics.store(new Int32Array(counter), 0, 2);
    const results = await runWorker(
      { identities: [{ type: "ssh", path: key, name: null }] },
      { jobs, counter, hmacKey, target: { dir: target, created: me }, activeDir: active, storeDir: null },
    );
    assert.deepEqual(
      results.map((r) => r.job),
      [2, 3, 4, 5, 6, 7],
      "only the unclaimed jobs, each once",
    );
    const text = JSON.stringify(results);
    for (const v of values) assert.ok(!text.includes(v), "no plaintext comes back");
    for (const r of results) {
      const i = r.job;
      if (i === 4) {
        assert.equal(r.error?.code, "AGE_NO_MATCH");
        assert.equal(r.error?.file, jobs[4]!.file);
        assert.ok(r.error?.hint);
        assert.deepEqual(r.failed, [14]);
        assert.deepEqual(r.values, []);
        assert.equal(fs.existsSync(path.join(target, "n-4")), false);
        continue;
      }
      assert.equal(r.error, null);
      assert.equal(r.cipher, createHash("sha256").update(fs.readFileSync(jobs[i]!.file)).digest("hex"));
      const origin = i === 5 ? "reused" : i === 6 || i === 3 ? "repaired" : "decrypted";
      assert.deepEqual(r.values[0], [10 + i, hmac(values[i]!), origin], `job ${i}`);
      const st = fs.statSync(path.join(target, `n-${i}`));
      assert.equal(st.mode & 0o7777, 0o440);
      assert.equal(fs.readFileSync(path.join(target, `n-${i}`), "utf8"), values[i]);
    }
    assert.deepEqual(results.find((r) => r.job === 7)!.values[1], [30, hmac(values[7]!), "decrypted"]);
    assert.equal(fs.readFileSync(path.join(target, "sub", "twin"), "utf8"), values[7]);
    assert.equal(fs.statSync(path.join(target, "sub")).mode & 0o7777, 0o751);
    assert.equal(fs.existsSync(path.join(target, "n-0")), false, "claimed by the main thread: not done here");
  } finally {
    cleanup();
  }
});

test("decrypt worker: without a loadable identity it decrypts nothing and says so; what it can copy it still copies", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const identity = X25519Identity.generate();
    const r = parseRecipientString(identity.recipient().toString(), "r");
    const file = path.join(dir, "s.age");
    const data = await encrypt(Buffer.from("v"), [r]);
    fs.writeFileSync(file, data);
    fs.mkdirSync(path.join(dir, "active"));
    fs.writeFileSync(path.join(dir, "active", "old"), "v", { mode: 0o400 });
    const hmacKey = randomBytes(32);
    const me = { uid: process.geteuid!(), gid: process.getegid!(), mode: 0o400 };
    const recorded = {
      cipher: createHash("sha256").update(data).digest("hex"),
      hmac: createHmac("sha256", hmacKey).update("v").digest("hex"),
      file,
      storeFile: false,
      ...me,
    };
    const results = await runWorker(
      { identities: [{ type: "age", path: path.join(dir, "missing-key.txt"), name: null }] },
      {
        jobs: [
          {
            file,
            format: "age",
            entries: [
              { index: 0, name: "old", key: null, owner: me, recorded, repaired: false },
              { index: 1, name: "new", key: null, owner: me, recorded: null, repaired: false },
            ],
          },
        ],
        counter: new SharedArrayBuffer(4),
        hmacKey,
        target: null,
        activeDir: path.join(dir, "active"),
        storeDir: null,
      },
    );
    assert.equal(results.length, 1);
    assert.equal(results[0]!.noIdentity, true);
    assert.deepEqual(results[0]!.failed, [1]);
    assert.deepEqual(results[0]!.values, [[0, recorded.hmac, "reused"]]);
  } finally {
    cleanup();
  }
});

const ids = [{ type: "ssh" as const, path: "/etc/ssh/ssh_host_ed25519_key", name: null }];
const idHash = identitySetHash(ids);
/** A manifest of n age secrets in the store; those in `changed` read another file than recorded. */
function manifest(n: number, changed = new Set<number>()) {
  return validateManifest(
    {
      version: 1,
      secretsDir: "/run/s",
      generationsDir: "/run/g",
      keepGenerations: 1,
      identities: ids,
      secrets: Array.from({ length: n }, (_, i) =>
        secret(`s${i}`, `/nix/store/${changed.has(i) ? "new" : "old"}-s${i}.age`),
      ),
      templates: [],
      placeholders: {},
    },
    "/m.json",
  );
}

test("worker mode: shared on a first install of many files, the rest after copies on a large re-activation, none otherwise", () => {
  const active = (n: number, identities = idHash): GenerationMeta => ({
    version: 1,
    generation: 1,
    identities,
    entries: Array.from({ length: n }, (_, i) => ({
      name: `s${i}`,
      kind: "secret",
      uid: 0,
      gid: 0,
      mode: 0o400,
      hmac: "h",
      path: null,
      restartUnits: [],
      reloadUnits: [],
      credential: null,
      file: `/nix/store/old-s${i}.age`,
      format: "age",
      key: null,
      cipher: "c",
    })),
  });
  const few = new Set([1, 2, 3]);
  const many = new Set(Array.from({ length: PARALLEL_MIN_DECRYPTS }, (_, i) => i));
  const big = PARALLEL_MIN_COPIES + 10;
  assert.equal(workerModeFor(manifest(PARALLEL_MIN_DECRYPTS), null, idHash, 2), "share", "a first install");
  assert.equal(workerModeFor(manifest(PARALLEL_MIN_DECRYPTS - 1), null, idHash, 2), null, "too few files");
  // Measured: a first install of 1000 small files is done sooner, and with ~1/3 less CPU, on one thread.
  assert.equal(workerModeFor(manifest(1000), null, idHash, 2), null, "1000 files: one thread");
  assert.equal(workerModeFor(manifest(PARALLEL_MIN_DECRYPTS), null, idHash, 1), null, "one core");
  assert.equal(workerModeFor(manifest(big), active(big), idHash, 2), null, "nothing changed");
  assert.equal(workerModeFor(manifest(big, few), active(big), idHash, 2), "rest", "a few changed among many");
  assert.equal(workerModeFor(manifest(big, many), active(big), idHash, 2), "share", "many changed");
  assert.equal(workerModeFor(manifest(300, few), active(300), idHash, 2), null, "a few changed among few");
  assert.equal(workerModeFor(manifest(big), active(big, "other"), idHash, 2), "share", "new identities");
  // gpg identities open no age file: the worker takes the age files with the others.
  const withGpg = (more: { type: string; path: string }[]) => {
    const m = manifest(PARALLEL_MIN_DECRYPTS);
    return { ...m, identities: [...m.identities, ...more.map((x) => ({ ...x, name: null }))] } as typeof m;
  };
  assert.equal(
    workerModeFor(withGpg([{ type: "gpg-ssh", path: "/etc/ssh/ssh_host_rsa_key" }]), null, idHash, 2),
    "share",
    "with a gpg-ssh identity",
  );
  const gpgOnly = {
    ...manifest(PARALLEL_MIN_DECRYPTS),
    identities: [{ type: "gpg" as const, path: "/var/lib/sops", name: null }],
  };
  assert.equal(workerModeFor(gpgOnly, null, idHash, 2), null, "only a gpg identity: nothing for the worker");
  assert.equal(
    workerModeFor(withGpg([{ type: "systemd-creds", path: "/k.cred" }]), null, idHash, 2),
    null,
    "a sealed identity",
  );
});

test("jobs cross to the worker in columns and come out as they went in: several entries, no owner, records, large ids", () => {
  const recorded = {
    cipher: "c".repeat(64),
    hmac: "h".repeat(64),
    file: "/nix/store/x-a.age",
    storeFile: true,
    uid: 4294967294,
    gid: 0,
    mode: 0o440,
  };
  const jobs: SourceJob[] = [
    {
      file: "/nix/store/x-a.yaml",
      format: "yaml",
      entries: [
        {
          index: 3,
          name: "db/user",
          key: "db/user",
          owner: { uid: 4294967294, gid: 7, mode: 0o400 },
          recorded,
          repaired: false,
        },
        { index: 9, name: "db/pass", key: "db/pass", owner: null, recorded: null, repaired: true },
      ],
    },
    { file: "/nix/store/x-b.age", format: "age", entries: [] },
    {
      file: "/nix/store/x-c.age",
      format: "age",
      entries: [
        {
          index: 0,
          name: "c",
          key: null,
          owner: { uid: 0, gid: 0, mode: 0o400 },
          recorded: null,
          repaired: false,
        },
      ],
    },
  ];
  const crossed = structuredClone(packJobs(jobs));
  assert.equal(jobCount(crossed), jobs.length);
  assert.deepEqual(
    Array.from({ length: jobCount(crossed) }, (_, j) => jobAt(crossed, j)),
    jobs,
  );
  assert.equal(jobCount(packJobs([])), 0);
});

test("a worker started early: closed when none pays; one that stopped before it was taken gives no results at once, and the main thread does its jobs", {
  timeout: 30_000,
}, async () => {
  const exited = (w: Worker) => new Promise<number>((resolve) => w.once("exit", resolve));

  // Too few files for a worker: the one started early is stopped.
  const few = manifest(10);
  const unused = new Worker(WORKER);
  const unusedExit = exited(unused);
  const none = await DecryptWorker.startIfWorthIt(
    few,
    null,
    idHash,
    groupBySource(few.secrets),
    new EarlyWorker(unused),
  );
  assert.equal(none, null);
  await unusedExit;

  // Enough files, but the early worker had already stopped: used as a worker that did nothing.
  const many = manifest(PARALLEL_MIN_DECRYPTS);
  const dead = new Worker(new URL("data:text/javascript,process.exit(0)"));
  const early = new EarlyWorker(dead);
  await exited(dead);
  const w = await DecryptWorker.startIfWorthIt(many, null, idHash, groupBySource(many.secrets), early);
  assert.ok(w !== null);
  assert.equal(w.mode, "share");
  const r = await w.run({
    jobs: packJobs([]),
    counter: new SharedArrayBuffer(4),
    hmacKey: new Uint8Array(32),
    target: null,
    activeDir: null,
    storeDir: null,
  });
  assert.equal(r.job.length, 0, "nothing done there: every job is the main thread's");
  assert.equal(r.withProblems.length, 0);
  await w.close();
});

/**
 * persist = "credential" (docs/push.md): nixseal push → receive over real OpenSSH
 * (test/push/harness.ts) seals each persisted key with the real systemd-creds on the host, and
 * `nixseal receive --restore` brings the keys back into an emptied RAM ("a reboot"). The host's
 * systemd-creds uses a test credential host key ($SYSTEMD_CREDENTIAL_SECRET, test/creds/creds-env.ts),
 * never the machine's own; the credstore is a directory of the test (`receive --credstore`).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { hostKeyPath, systemdCredsMissing, useHostKey } from "../creds/creds-env.js";
import { CLI, nixseal, type RunResult } from "../helpers.js";
import {
  ensurePrincipals,
  type Fleet,
  type HostJson,
  idOf,
  pushTestsSkipReason,
  startFleet,
  type TestHost,
} from "./harness.js";

const skip = pushTestsSkipReason() ?? systemdCredsMissing();

let fleet: Fleet;
let host: TestHost;
let removePrincipals: () => void;
let work: string;
/** The host's credential store (on the test's disk, outside the host's RAM /run). */
let credstore: string;
/** The file naming the credential host key the host's systemd-creds uses (a test can switch it). */
let hostKeyFile: string;
let goodHostKey: string;
let wrapper: string;

const DB = "db-password-one";
const API = "api-token-one";
const RAM = "ram-only-one";

function valueFile(name: string, value: string): string {
  const f = path.join(work, `${name}.value`);
  fs.writeFileSync(f, value);
  return f;
}

function planWith(keys: Record<string, unknown>): string {
  const f = path.join(work, "plan.json");
  fs.writeFileSync(
    f,
    JSON.stringify({ version: 1, hosts: { [host.name]: { ...host.plan, nixsealCommand: wrapper, keys } } }),
  );
  return f;
}

function push(keys: Record<string, unknown>): { status: number | null; host: HostJson; stderr: string } {
  const r = nixseal(
    ["push", "--plan", planWith(keys), "--ssh-option", `UserKnownHostsFile=${fleet.knownHosts}`, "--json"],
    { env: { NIX_SSHOPTS: `-F ${fleet.sshConfig}` }, cwd: work },
  );
  const report = JSON.parse(r.stdout.toString()) as { hosts: Record<string, HostJson> };
  return { status: r.status, host: report.hosts[host.name]!, stderr: r.stderr };
}

const KEYS = (db: string, api: string, ram: string, over: Record<string, unknown> = {}) => ({
  db: {
    source: { command: ["cat", valueFile("db", db)] },
    owner: "nspush",
    group: "keys",
    mode: "0400",
    keyUnit: "nixseal-key-db.service",
    persist: "credential",
  },
  api: {
    source: { command: ["cat", valueFile("api", api)] },
    destDir: "/run/app-keys",
    name: "api.token",
    mode: "0440",
    persist: "credential",
  },
  ram: { source: { command: ["cat", valueFile("ram", ram)] } },
  ...over,
});

/** The pushed keys' part of the credstore. */
const storeDir = () => path.join(credstore, "nixseal-keys");
const current = () => path.join(storeDir(), "current");
const sealedFile = (key: string) => path.join(current(), `nixseal-key-${key}`);

/** `systemd-creds decrypt FILE -`: the name is the file's own, as a user would run it. */
function decrypt(file: string): string {
  const r = spawnSync("systemd-creds", ["decrypt", file, "-"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** Every file of the credstore, recursively (symlinks not followed). */
function storeFiles(): Map<string, fs.Stats> {
  const out = new Map<string, fs.Stats>();
  const walk = (d: string) => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      const st = fs.lstatSync(p);
      out.set(path.relative(credstore, p), st);
      if (st.isDirectory()) walk(p);
    }
  };
  if (fs.existsSync(credstore)) walk(credstore);
  return out;
}

/** A reboot, as far as the keys go: the host's RAM loses every generation and key. */
function reboot(): void {
  host.shell("rm -rf /run/nixseal-keys /run/keys /run/app-keys");
}

/** `nixseal receive --restore` on the host, as its boot unit runs it. */
function restore(): RunResult {
  const r = spawnSync("nsenter", ["-t", String(host.sshd.pid), "-m", "--", wrapper, "receive", "--restore"], {
    encoding: "utf8",
  });
  return { status: r.status, stdout: Buffer.from(r.stdout), stderr: r.stderr };
}

describe('persist = "credential": sealed with systemd-creds on the host, restored after a reboot', {
  skip: skip ?? false,
}, () => {
  before(async () => {
    removePrincipals = ensurePrincipals(["nspush"], ["keys"]);
    fleet = await startFleet(1);
    host = fleet.hosts[0]!;
    work = path.join(fleet.dir, "deployer");
    fs.mkdirSync(work);
    credstore = path.join(fleet.dir, "host1-credstore");
    goodHostKey = hostKeyPath(fleet.dir, "persist");
    useHostKey(goodHostKey);
    hostKeyFile = path.join(fleet.dir, "host1-credential-secret-path");
    fs.writeFileSync(hostKeyFile, goodHostKey);
    // The host's nixseal: its systemd-creds with the test host key, its credstore the test's.
    wrapper = path.join(host.dir, "nixseal-persist");
    fs.writeFileSync(
      wrapper,
      `#!/bin/sh\nSYSTEMD_CREDENTIAL_SECRET=$(cat ${hostKeyFile})\nexport SYSTEMD_CREDENTIAL_SECRET\nexec ${host.plan.nixsealCommand} "$@" --credstore ${credstore}\n`,
      { mode: 0o755 },
    );
  });
  after(async () => {
    await fleet?.stop();
    removePrincipals?.();
  });

  test("a push seals each persisted key (0600, no plaintext, decrypts to the value); RAM-only keys leave the disk alone", () => {
    const r = push(KEYS(DB, API, RAM));
    assert.equal(r.status, 0, `${r.stderr}\n${JSON.stringify(r.host.problems)}`);
    assert.deepEqual([...r.host.added].sort(), ["api", "db", "ram"]);
    assert.deepEqual([...r.host.sealed].sort(), ["api", "db"]);
    assert.equal(host.inspect("/run/keys/db")!.content, DB);
    for (const [key, value] of [
      ["db", DB],
      ["api", API],
    ]) {
      const st = fs.lstatSync(sealedFile(key!));
      assert.ok(st.isFile());
      assert.equal(st.mode & 0o7777, 0o600, key);
      assert.equal(st.uid, 0);
      assert.equal(decrypt(sealedFile(key!)), value);
    }
    assert.equal(fs.existsSync(sealedFile("ram")), false, "a key without persist is not sealed");
    // Nothing in the store holds a value in the clear; the records say where keys go, and whose.
    for (const [rel, st] of storeFiles()) {
      if (!st.isFile()) continue;
      const text = fs.readFileSync(path.join(credstore, rel), "latin1");
      for (const v of [DB, API, RAM]) assert.equal(text.includes(v), false, `${v} in ${rel}`);
      assert.equal(st.mode & 0o077, 0, `${rel} is private`);
    }
    const record = JSON.parse(fs.readFileSync(path.join(current(), "keys.json"), "utf8"));
    assert.deepEqual(
      record.keys.map((k: { key: string; owner: string; mode: string; destDir: string }) => [
        k.key,
        k.owner,
        k.mode,
        k.destDir,
      ]),
      [
        ["db", "nspush", "0400", "/run/keys"],
        ["api", "root", "0440", "/run/app-keys"],
      ],
    );
  });

  test("an unchanged re-push leaves every sealed file as it was (same inode and mtime); a RAM-only change too", () => {
    const before = storeFiles();
    const target = fs.readlinkSync(current());
    const r = push(KEYS(DB, API, "ram-only-two"));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.host.changed, ["ram"]);
    assert.deepEqual([r.host.sealed, r.host.unsealed], [[], []]);
    assert.equal(host.inspect("/run/keys/ram")!.content, "ram-only-two");
    assert.equal(fs.readlinkSync(current()), target, "no new generation of the credstore");
    const now = storeFiles();
    assert.deepEqual([...now.keys()].sort(), [...before.keys()].sort());
    for (const [rel, st] of before) {
      if (!st.isFile()) continue;
      assert.equal(now.get(rel)!.ino, st.ino, rel);
      assert.equal(now.get(rel)!.mtimeMs, st.mtimeMs, rel);
    }
  });

  test("a reboot empties RAM; restore brings back the persisted keys with owner and mode, starts no unit", () => {
    const calls = host.systemctlCalls().length;
    reboot();
    assert.equal(host.inspect("/run/keys/db"), null);
    const r = restore();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /2 key\(s\) restored: /);
    const db = host.inspect("/run/keys/db")!;
    assert.equal(db.content, DB);
    assert.equal(db.target!.mode, 0o400);
    assert.equal(db.target!.uid, idOf("passwd", "nspush"));
    assert.equal(db.target!.gid, idOf("group", "keys"));
    const api = host.inspect("/run/app-keys/api.token")!;
    assert.equal(api.content, API);
    assert.equal(api.target!.mode, 0o440);
    assert.equal(api.target!.uid, 0);
    assert.equal(host.inspect("/run/keys/ram"), null, "a RAM-only key waits for the next push");
    assert.equal(host.systemctlCalls().length, calls, "the key units start by themselves at boot");

    // The next push finds the persisted keys as the deployer would send them: nothing crosses for
    // them, and the credstore stays as it is.
    const before = storeFiles();
    const p = push(KEYS(DB, API, "ram-only-two"));
    assert.equal(p.status, 0, p.stderr);
    assert.deepEqual(p.host.added, ["ram"]);
    assert.deepEqual([...p.host.kept].sort(), ["api", "db"]);
    for (const [rel, st] of before) if (st.isFile()) assert.equal(storeFiles().get(rel)!.ino, st.ino, rel);
  });

  test("a changed value is sealed anew; a key no longer persisted or removed loses its sealed file", () => {
    const r = push(KEYS(DB, "api-token-two", RAM));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(decrypt(sealedFile("api")), "api-token-two");
    assert.equal(decrypt(sealedFile("db")), DB);

    // db stays, in RAM only: its sealed file goes, its key stays in RAM as it is.
    const ramOnly = KEYS(DB, "api-token-two", RAM);
    (ramOnly.db as Record<string, unknown>).persist = false;
    const r2 = push(ramOnly);
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(fs.existsSync(sealedFile("db")), false);
    assert.equal(host.inspect("/run/keys/db")!.content, DB);
    assert.equal(decrypt(sealedFile("api")), "api-token-two");
    // Old generations (and with them the removed sealed file) are gone.
    assert.deepEqual(fs.readdirSync(storeDir()).sort(), [fs.readlinkSync(current()), "current"].sort());

    // db persisted again without a change of its value: sealed from the key in RAM.
    const r3 = push(KEYS(DB, "api-token-two", RAM));
    assert.equal(r3.status, 0, r3.stderr);
    assert.deepEqual([...r3.host.kept].sort(), ["api", "db", "ram"]);
    assert.deepEqual(r3.host.sealed, ["db"]);
    assert.equal(decrypt(sealedFile("db")), DB);

    // api removed from the plan: from RAM and from the credstore.
    const { api: _, ...withoutApi } = KEYS(DB, "api-token-two", RAM);
    const r4 = push(withoutApi);
    assert.equal(r4.status, 0, r4.stderr);
    assert.deepEqual(r4.host.removed, ["api"]);
    assert.deepEqual([r4.host.sealed, r4.host.unsealed], [[], ["api"]]);
    assert.equal(fs.existsSync(sealedFile("api")), false);
    assert.equal(
      [...storeFiles().keys()].some((f) => f.includes("nixseal-key-api")),
      false,
      "no sealed file of api anywhere",
    );
  });

  test("a credstore out of step with RAM (lost, or an older generation put back) is sealed again from RAM by the next push", () => {
    assert.equal(push(KEYS(DB, API, RAM)).status, 0);
    // An older generation made current again, as a crash between the credstore's switch and
    // RAM's, or a backup, would leave it: its sealed files are not the ones RAM's keys hold.
    const gen = Number(fs.readlinkSync(current()));
    fs.mkdirSync(path.join(storeDir(), String(gen + 1)), { mode: 0o700 });
    fs.writeFileSync(
      path.join(storeDir(), String(gen + 1), "keys.json"),
      JSON.stringify({ version: 1, keys: [] }),
      { mode: 0o600 },
    );
    fs.symlinkSync(String(gen + 1), path.join(storeDir(), "next"));
    fs.renameSync(path.join(storeDir(), "next"), current());
    const r = push(KEYS(DB, API, RAM));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual([...r.host.kept].sort(), ["api", "db", "ram"], "nothing crosses the wire");
    assert.equal(decrypt(sealedFile("db")), DB);
    assert.equal(decrypt(sealedFile("api")), API);

    // The whole store lost: the same.
    fs.rmSync(storeDir(), { recursive: true });
    const r2 = push(KEYS(DB, API, RAM));
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(decrypt(sealedFile("db")), DB);
    assert.equal(decrypt(sealedFile("api")), API);
  });

  test("a key that cannot be sealed fails the push: RAM and credstore keep the previous set", () => {
    const keys = KEYS(DB, API, RAM);
    assert.equal(push(keys).status, 0);
    const before = storeFiles();
    // A credential host key on a temporary file system: systemd-creds --with-key=auto refuses it.
    const shm = fs.mkdtempSync("/dev/shm/nixseal-persist-test-");
    fs.writeFileSync(hostKeyFile, path.join(shm, "host", "credential.secret"));
    try {
      const r = push(KEYS("db-password-two", API, "ram-only-three"));
      assert.equal(r.status, 1);
      assert.equal(r.host.result, "failed");
      assert.match(JSON.stringify(r.host.problems), /nothing changed: key \\"db\\": cannot seal it/);
    } finally {
      fs.writeFileSync(hostKeyFile, goodHostKey);
      fs.rmSync(shm, { recursive: true, force: true });
    }
    assert.equal(host.inspect("/run/keys/db")!.content, DB);
    assert.equal(host.inspect("/run/keys/ram")!.content, RAM, "RAM-only keys are not switched either");
    const now = storeFiles();
    assert.deepEqual([...now.keys()].sort(), [...before.keys()].sort());
    for (const [rel, st] of before) assert.equal(now.get(rel)!.ino, st.ino, rel);
    assert.equal(decrypt(sealedFile("db")), DB);
  });

  test("a tampered sealed file is reported by its key's name; the other keys are restored", () => {
    assert.equal(push(KEYS(DB, API, RAM)).status, 0);
    // Flip one character in the middle of the base64 text (a new file: the generation's link
    // to the old inode would otherwise change with it).
    const file = sealedFile("api");
    const text = fs.readFileSync(file, "latin1");
    const i = Math.floor(text.length / 2);
    const tampered = text.slice(0, i) + (text[i] === "A" ? "B" : "A") + text.slice(i + 1);
    fs.rmSync(file);
    fs.writeFileSync(file, tampered, { mode: 0o600 });
    reboot();
    const r = restore();
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /key "api" was not restored/);
    assert.equal(r.stderr.includes(API), false);
    assert.equal(r.stderr.includes(DB), false);
    assert.equal(host.inspect("/run/keys/db")!.content, DB);
    assert.equal(host.inspect("/run/app-keys/api.token"), null);
    // The next push sends api again and seals it anew.
    const p = push(KEYS(DB, API, RAM));
    assert.equal(p.status, 0, p.stderr);
    assert.equal(decrypt(sealedFile("api")), API);
  });

  test("sealed on another host (another credential host key): nothing decrypts, each key named", () => {
    assert.equal(push(KEYS(DB, API, RAM)).status, 0);
    fs.writeFileSync(hostKeyFile, hostKeyPath(fleet.dir, "other-host"));
    try {
      reboot();
      const r = restore();
      assert.equal(r.status, 1);
      assert.match(r.stderr, /key "db" was not restored/);
      assert.match(r.stderr, /key "api" was not restored/);
      assert.equal(host.inspect("/run/keys/db"), null);
    } finally {
      fs.writeFileSync(hostKeyFile, goodHostKey);
    }
    assert.equal(restore().status, 0);
    assert.equal(host.inspect("/run/keys/db")!.content, DB);
  });

  test("receive --restore with nothing persisted: nothing to do, nothing written", () => {
    const empty = path.join(fleet.dir, "empty-credstore-parent", "credstore");
    const r = spawnSync(
      "nsenter",
      [
        "-t",
        String(host.sshd.pid),
        "-m",
        "--",
        process.execPath,
        CLI,
        "receive",
        "--restore",
        "--credstore",
        empty,
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /0 key\(s\) restored/);
    assert.equal(fs.existsSync(path.dirname(empty)), false);
  });
});

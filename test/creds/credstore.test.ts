/** The credential store: re-encrypt only what changed, removal of stale credentials, safety checks. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import {
  closeCredstore,
  commitCredentials,
  credentialPath,
  openCredstore,
  prepareCredentials,
  removeStale,
  storedCredentials,
  syncCredential,
  syncCredentials,
} from "../../src/creds/credstore.js";
import { MAX_CREDENTIAL_SIZE } from "../../src/creds/systemd-creds.js";
import { isError, tempDir } from "../helpers.js";
import { hostKeyPath, systemdCredsMissing, useHostKey } from "./creds-env.js";

const missing = systemdCredsMissing();
const skip = missing ?? false;
let dir = "";
let cleanup = () => {};

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-credstore-"));
  useHostKey(hostKeyPath(dir, "main"));
});
after(() => cleanup());

function realDecrypt(name: string, file: string): Buffer {
  const r = spawnSync("systemd-creds", ["decrypt", `--name=${name}`, file, "-"]);
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

function mode(p: string): number {
  return fs.lstatSync(p).mode & 0o7777;
}

test("a new store is private: 0700 directories, the credential 0400, its record and key 0600", {
  skip,
}, async () => {
  const storeDir = path.join(dir, "fresh", "credstore");
  const store = await openCredstore(storeDir);
  try {
    assert.equal(mode(storeDir), 0o700);
    assert.equal(mode(path.join(storeDir, ".nixseal")), 0o700);
    assert.equal(mode(path.join(storeDir, ".nixseal", "hmac-key.cred")), 0o600);
    assert.equal(await syncCredential(store, "token", Buffer.from("abc"), "host"), "created");
    assert.equal(mode(credentialPath(store, "token")), 0o400);
    assert.equal(mode(path.join(storeDir, ".nixseal", "token.record")), 0o600);
    assert.deepEqual(realDecrypt("token", credentialPath(store, "token")), Buffer.from("abc"));
  } finally {
    closeCredstore(store);
  }
});

test("only a changed secret is encrypted again; unchanged ones keep their file byte for byte", {
  skip,
}, async () => {
  const storeDir = path.join(dir, "sync");
  let store = await openCredstore(storeDir);
  const file = credentialPath(store, "db-password");
  try {
    assert.equal(await syncCredential(store, "db-password", Buffer.from("one"), "host"), "created");
    const first = fs.readFileSync(file);
    assert.equal(await syncCredential(store, "db-password", Buffer.from("one"), "host"), "unchanged");
    assert.deepEqual(fs.readFileSync(file), first);
    assert.equal(await syncCredential(store, "db-password", Buffer.from("two"), "host"), "updated");
    assert.notDeepEqual(fs.readFileSync(file), first);
    assert.deepEqual(realDecrypt("db-password", file), Buffer.from("two"));
    // Another key type is a change too (the user asked for another binding).
    assert.equal(await syncCredential(store, "db-password", Buffer.from("two"), "auto"), "updated");
    assert.equal(
      await syncCredential(store, "db-password", Buffer.from("two"), "auto", { force: true }),
      "updated",
    );
  } finally {
    closeCredstore(store);
  }
  // A later run (a new process would do the same): the key unseals, nothing changed.
  store = await openCredstore(storeDir);
  try {
    assert.equal(store.keyRenewed, false);
    const kept = fs.readFileSync(file);
    assert.equal(await syncCredential(store, "db-password", Buffer.from("two"), "auto"), "unchanged");
    assert.deepEqual(fs.readFileSync(file), kept);
    // A credential file replaced or removed behind our back is written again.
    fs.rmSync(file);
    assert.equal(await syncCredential(store, "db-password", Buffer.from("two"), "auto"), "created");
    fs.writeFileSync(`${file}.x`, "tampered");
    fs.renameSync(`${file}.x`, file);
    assert.equal(await syncCredential(store, "db-password", Buffer.from("two"), "auto"), "updated");
    assert.deepEqual(realDecrypt("db-password", file), Buffer.from("two"));
  } finally {
    closeCredstore(store);
  }
});

test("the record reveals nothing: no plaintext, no plain hash of it", { skip }, async () => {
  const store = await openCredstore(path.join(dir, "records"));
  try {
    const secret = Buffer.from("hunter2");
    await syncCredential(store, "pw", secret, "host");
    const record = fs.readFileSync(path.join(store.dir, ".nixseal", "pw.record"), "latin1");
    assert.match(record, /^nixseal-credstore-v1 host - [0-9a-f]{64} [0-9a-f]{64}\n$/);
    assert.ok(!record.includes("hunter2"));
    assert.ok(!record.includes(createHash("sha256").update(secret).digest("hex")));
    // The HMAC key is sealed too, not lying in the clear beside the records.
    const key = fs.readFileSync(path.join(store.dir, ".nixseal", "hmac-key.cred"));
    assert.ok(!key.includes(store.hmacKey));
  } finally {
    closeCredstore(store);
  }
});

test("on another host key the store's key no longer unseals: every credential is encrypted again", {
  skip,
}, async () => {
  const storeDir = path.join(dir, "moved-store");
  let store = await openCredstore(storeDir);
  await syncCredential(store, "a", Buffer.from("A"), "host");
  closeCredstore(store);
  const original = process.env.SYSTEMD_CREDENTIAL_SECRET;
  useHostKey(hostKeyPath(dir, "replaced"));
  try {
    store = await openCredstore(storeDir);
    assert.equal(store.keyRenewed, true);
    assert.equal(await syncCredential(store, "a", Buffer.from("A"), "host"), "updated");
    assert.deepEqual(realDecrypt("a", credentialPath(store, "a")), Buffer.from("A"));
    closeCredstore(store);
  } finally {
    useHostKey(original!);
  }
});

test("syncCredentials: every problem collected, the good credentials in place", { skip }, async () => {
  const store = await openCredstore(path.join(dir, "batch"));
  try {
    const { results, problems } = await syncCredentials(store, [
      { name: "one", plaintext: Buffer.from("1"), withKey: "host" },
      { name: "two", plaintext: Buffer.from("2"), withKey: "host" },
      { name: "bad/name", plaintext: Buffer.from("3"), withKey: "host" },
      { name: "huge", plaintext: Buffer.alloc(MAX_CREDENTIAL_SIZE + 1), withKey: "host" },
      { name: "one", plaintext: Buffer.from("1 again"), withKey: "host" },
    ]);
    assert.deepEqual([...results.entries()].sort(), [
      ["one", "created"],
      ["two", "created"],
    ]);
    assert.deepEqual(problems.map((p) => p.code).sort(), ["CREDS_NAME", "CREDS_NAME", "CREDS_TOO_LARGE"]);
    assert.ok(problems.some((p) => /huge/.test(p.message)));
    assert.ok(problems.every((p) => p.hint));
    assert.deepEqual(storedCredentials(store), ["one", "two"]);
    assert.deepEqual(realDecrypt("two", credentialPath(store, "two")), Buffer.from("2"));
  } finally {
    closeCredstore(store);
  }
});

test("removeStale removes what is no longer wanted, and leaves files that are not ours", {
  skip,
}, async () => {
  const store = await openCredstore(path.join(dir, "stale"));
  try {
    for (const n of ["keep", "drop"]) await syncCredential(store, n, Buffer.from(n), "host");
    fs.writeFileSync(path.join(store.dir, "foreign"), "someone else's credential");
    const oldTemp = path.join(store.dir, ".keep.0123456789ab.tmp");
    const newTemp = path.join(store.dir, ".keep.ba9876543210.tmp");
    fs.writeFileSync(oldTemp, "");
    fs.writeFileSync(newTemp, "");
    const old = new Date(Date.now() - 3600_000);
    fs.utimesSync(oldTemp, old, old);
    const { removed, problems } = removeStale(store, ["keep"]);
    assert.deepEqual(removed, ["drop"]);
    assert.deepEqual(problems, []);
    assert.deepEqual(fs.readdirSync(store.dir).sort(), [
      ".keep.ba9876543210.tmp",
      ".nixseal",
      "foreign",
      "keep",
    ]);
    assert.deepEqual(storedCredentials(store), ["keep"]);
  } finally {
    closeCredstore(store);
  }
});

test("an unsafe store directory is refused", { skip }, async () => {
  const open = path.join(dir, "open");
  fs.mkdirSync(open, { mode: 0o755 });
  fs.chmodSync(open, 0o755);
  await assert.rejects(openCredstore(open), isError("CREDS_STORE", /not private/, /0700/));
  const real = path.join(dir, "real");
  fs.mkdirSync(real, { mode: 0o700 });
  const link = path.join(dir, "link");
  fs.symlinkSync(real, link);
  await assert.rejects(openCredstore(link), isError("CREDS_STORE", /symbolic link/));
  await assert.rejects(openCredstore("relative/dir"), isError("CREDS_STORE", /absolute/));
});

test("prepare, then commit: nothing is written until commit; a read-only open writes nothing at all", {
  skip,
}, async () => {
  const storeDir = path.join(dir, "staged");
  // Read-only on a store that does not exist: nothing made, everything would be created.
  let store = await openCredstore(storeDir, {}, { readOnly: true });
  try {
    const r = await prepareCredentials(store, [{ name: "a", plaintext: Buffer.from("A"), withKey: "host" }], {
      encrypt: false,
    });
    assert.deepEqual([...r.results], [["a", "created"]]);
    assert.deepEqual(r.prepared, []);
    assert.equal(fs.existsSync(storeDir), false);
  } finally {
    closeCredstore(store);
  }
  store = await openCredstore(storeDir);
  try {
    await syncCredential(store, "a", Buffer.from("A"), "host");
    const before = fs.readFileSync(credentialPath(store, "a"));
    const r = await prepareCredentials(store, [
      { name: "a", plaintext: Buffer.from("A2"), withKey: "host" },
      { name: "b", plaintext: Buffer.from("B"), withKey: "host" },
    ]);
    assert.deepEqual(r.problems, []);
    assert.deepEqual([...r.results].sort(), [
      ["a", "updated"],
      ["b", "created"],
    ]);
    // Encrypted, not written: the old credential is still the one in the store.
    assert.deepEqual(fs.readFileSync(credentialPath(store, "a")), before);
    assert.equal(fs.existsSync(credentialPath(store, "b")), false);
    assert.deepEqual(commitCredentials(store, r.prepared), {
      written: r.prepared.map((p) => p.name),
      problems: [],
    });
    assert.deepEqual(realDecrypt("a", credentialPath(store, "a")), Buffer.from("A2"));
    assert.deepEqual(realDecrypt("b", credentialPath(store, "b")), Buffer.from("B"));
    assert.equal(await syncCredential(store, "b", Buffer.from("B"), "host"), "unchanged");
  } finally {
    closeCredstore(store);
  }
  // Without its key: listing and removal work, changing does not.
  store = await openCredstore(storeDir, {}, { withoutKey: true });
  assert.deepEqual(storedCredentials(store), ["a", "b"]);
  await assert.rejects(
    syncCredential(store, "a", Buffer.from("A"), "host"),
    isError("CREDS_STORE", /without its key/),
  );
  assert.deepEqual(removeStale(store, ["b"]).removed, ["a"]);
});

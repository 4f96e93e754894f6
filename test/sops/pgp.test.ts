/**
 * sops files' pgp entries opened by the real gpg: sops-nix's own test files (written by the real
 * sops to its test PGP key and to the PGP key its ssh-to-pgp makes of its test RSA ssh key), and
 * files built here as sops builds them (a data key, `gpg --encrypt --armor -r FP` of it as the
 * entry's enc) with keys the real gpg generates.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, test } from "node:test";
import type { Identity } from "../../src/age/types.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import {
  closeDocument,
  DotenvStore,
  decryptDocument,
  GpgHomeIdentity,
  GpgSshIdentity,
  SopsBranch,
  YamlStore,
} from "../../src/sops/index.js";
import { sshRsaToPgp } from "../../src/sops/ssh-to-pgp.js";
import { parseSshPrivateKey, SshRsaIdentity } from "../../src/ssh/index.js";
import { isError, REPO, tempDir, which } from "../helpers.js";
import { cleanUpGpg, cleanups, fingerprintsOf, gpg, gpgHome, newKey, sopsFileFor } from "./pgp-fixture.js";

const FIX = path.join(REPO, "test", "fixtures", "sops", "sops-nix");
const GPG = which("gpg");
const skip = GPG === null ? "needs gpg (GnuPG)" : false;
after(cleanUpGpg);

/** A gpg wrapper that logs each run's first gpg command word (to count processes). */
function countingGpg(): { program: string; runs: () => string[] } {
  const { dir, cleanup } = tempDir("nixseal-gpg-count-");
  cleanups.push(cleanup);
  const log = path.join(dir, "log");
  const program = path.join(dir, "gpg");
  fs.writeFileSync(
    program,
    `#!/bin/sh\nfor a in "$@"; do case "$a" in --decrypt|--list-secret-keys|--import) echo "$a" >> ${JSON.stringify(log)};; esac; done\nexec ${JSON.stringify(GPG)} "$@"\n`,
    { mode: 0o755 },
  );
  return { program, runs: () => (fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n") : []) };
}

async function sshKeyDer(file: string): Promise<Buffer> {
  const id = await parseSshPrivateKey(fs.readFileSync(file), { file }).unlock();
  assert.ok(id instanceof SshRsaIdentity);
  return id.exportPkcs1();
}

test("ssh-to-pgp: sops-nix's test RSA key becomes the PGP key its published public key and its sops files name", {
  skip,
}, async () => {
  const der = await sshKeyDer(path.join(FIX, "ssh-key"));
  const key = sshRsaToPgp(der);
  const home = gpgHome();
  // Independent routes to the fingerprint: gpg reading sops-nix's own export of the key, and gpg
  // computing it from what nixseal built.
  assert.deepEqual(fingerprintsOf(home, path.join(FIX, "ssh-key.asc")), [key.fingerprint]);
  gpg(home, ["--import"], key.secretKey);
  const listing = gpg(home, ["--with-colons", "--check-sigs"]).stdout.toString();
  assert.match(listing, new RegExp(`^fpr:{9}${key.fingerprint}:`, "m"));
  // The self-signature verifies ("!" in field 2 of the sig record) and the key may encrypt.
  assert.match(listing, /^sig:!:/m);
  // Created at time 0 (field 6), as sops-nix makes it; usable to encrypt (E in field 12).
  assert.match(listing, /^pub:[^:]*:3072:1:[0-9A-F]{16}:0:(?:[^:\n]*:){5}[a-zA-Z]*E[a-zA-Z]*:/m);
  assert.match(fs.readFileSync(path.join(FIX, "secrets.yaml"), "utf8"), new RegExp(`fp: ${key.fingerprint}`));
});

test("sops-nix's secrets.yaml (sops 3.7.1, pgp entry for its ssh key) decrypts with the RSA ssh key alone", {
  skip,
}, async () => {
  const id = new GpgSshIdentity(await sshKeyDer(path.join(FIX, "ssh-key")), { file: "ssh-key" });
  try {
    const doc = await decryptDocument(fs.readFileSync(path.join(FIX, "secrets.yaml")), new YamlStore(), {
      identities: [id],
    });
    assert.equal(doc.branches[0]!.get("test_key"), "test_value"); // sops-nix main_test.go expects this
    assert.ok(doc.macVerified);
    closeDocument(doc);
  } finally {
    await id.close();
  }
});

test("sops-nix's secrets.env (pgp only) decrypts with a GnuPG home holding its test key", {
  skip,
}, async () => {
  const home = gpgHome();
  gpg(home, ["--import", path.join(FIX, "key.asc")]);
  const id = new GpgHomeIdentity(home);
  const doc = await decryptDocument(fs.readFileSync(path.join(FIX, "secrets.env")), new DotenvStore(), {
    identities: [id],
  });
  assert.ok(doc.macVerified);
  assert.equal(doc.branches[0]!.get("example_key"), "example_value");
  closeDocument(doc);
  id.close();
});

test("a file with age and pgp entries opens with whichever identity is there", { skip }, async () => {
  const home = gpgHome();
  const fp = newKey(home, "alice");
  const ageKey = X25519Identity.generate();
  const file = await sopsFileFor("db: hunter2\n", [{ home, fp }], [ageKey.recipient().toString()]);
  for (const identities of [[new GpgHomeIdentity(home)], [ageKey]] as Identity[][]) {
    const doc = await decryptDocument(file, new YamlStore(), { identities });
    assert.equal(doc.branches[0]!.get("db"), "hunter2");
    closeDocument(doc);
  }
});

test("no key fits: the error names the file's fingerprints and the GnuPG home tried", { skip }, async () => {
  const home = gpgHome();
  const fp = newKey(home, "bob");
  const other = gpgHome();
  newKey(other, "carol");
  const file = await sopsFileFor("x: 1\n", [{ home, fp }]);
  await assert.rejects(
    decryptDocument(file, new YamlStore(), { identities: [new GpgHomeIdentity(other)], file: "x.yaml" }),
    isError(
      "SOPS_NO_KEY",
      new RegExp(`pgp ${fp}: no secret key for it.*\\n.*tried: GnuPG home ${other}`),
      /GnuPG home/,
    ),
  );
  // No GnuPG identity at all: the fingerprints are named too.
  await assert.rejects(
    decryptDocument(file, new YamlStore(), { identities: [X25519Identity.generate()], file: "x.yaml" }),
    isError("SOPS_NO_KEY", new RegExp(`pgp ${fp}: no GnuPG identity given`)),
  );
});

test("a GnuPG home that does not exist: a GPG error naming it", { skip }, async () => {
  const home = gpgHome();
  const fp = newKey(home, "hank");
  const file = await sopsFileFor("x: 1\n", [{ home, fp }]);
  const missing = path.join(home, "no-such-home");
  await assert.rejects(
    decryptDocument(file, new YamlStore(), { identities: [new GpgHomeIdentity(missing)], file: "x.yaml" }),
    isError(
      "GPG",
      new RegExp(`gpg cannot list the secret keys of ${missing}: .*directory does not exist`),
      /GnuPG home/,
    ),
  );
});

test("a key that needs a passphrase, at activation: a GPG error at once, not a wait for a pinentry", {
  skip,
}, async () => {
  const home = gpgHome();
  gpg(home, [
    "--pinentry-mode",
    "loopback",
    "--passphrase",
    "pw",
    "--quick-gen-key",
    "ivy <ivy@example.org>",
    "future-default",
    "default",
    "never",
  ]);
  const listing = gpg(home, ["--with-colons", "--list-secret-keys"]).stdout.toString();
  const fp = listing
    .split("\n")
    .find((l) => l.startsWith("fpr:"))!
    .split(":")[9]!;
  // The agent forgets the passphrase it was given.
  spawnSync("gpgconf", ["--homedir", home, "--kill", "gpg-agent"]);
  const file = await sopsFileFor("x: 1\n", [{ home, fp }]);
  await assert.rejects(
    decryptDocument(file, new YamlStore(), { identities: [new GpgHomeIdentity(home)], file: "x.yaml" }),
    isError(
      "GPG",
      new RegExp(`gpg cannot decrypt the data key of pgp ${fp}`),
      /passphrase-protected key cannot be used at activation/,
    ),
  );
});

test("gpg missing from PATH: a GPG error that says to install it", { skip }, async () => {
  const home = gpgHome();
  const fp = newKey(home, "dave");
  const file = await sopsFileFor("x: 1\n", [{ home, fp }]);
  const id = new GpgHomeIdentity(home, { env: { ...process.env, PATH: "/nonexistent" } });
  await assert.rejects(
    decryptDocument(file, new YamlStore(), { identities: [id], file: "x.yaml" }),
    isError("GPG", new RegExp(`pgp ${fp}[^\\n]*\\n(.*\\n)*.*gpg is not installed`), /install GnuPG/),
  );
});

test("one gpg run per data key: a listing once, a file read twice decrypted once, others one each", {
  skip,
}, async () => {
  const home = gpgHome();
  const fp = newKey(home, "erin");
  const a = await sopsFileFor("a: 1\n", [{ home, fp }]);
  const b = await sopsFileFor("b: 2\n", [{ home, fp }]);
  const counting = countingGpg();
  const id = new GpgHomeIdentity(home, { program: counting.program });
  for (const file of [a, b, a, b, a])
    closeDocument(await decryptDocument(file, new YamlStore(), { identities: [id] }));
  assert.deepEqual(counting.runs().sort(), ["--decrypt", "--decrypt", "--list-secret-keys"]);

  // A hostile file repeating an entry of this key 50 times (its enc for another key): one try.
  const stranger = gpgHome();
  const other = await sopsFileFor("c: 3\n", [{ home: stranger, fp: newKey(stranger, "mallory") }]);
  const store = new YamlStore();
  const { branches, metadata } = store.parseEncrypted(other);
  const entry = (metadata!.get("pgp") as SopsBranch[])[0]!;
  const forged = new SopsBranch(entry.items.map((it) => (it.key === "fp" ? { key: "fp", value: fp } : it)));
  metadata!.set(
    "pgp",
    Array.from({ length: 50 }, () => forged),
  );
  const hostile = store.emitEncrypted(branches, metadata!);
  await assert.rejects(decryptDocument(hostile, store, { identities: [id] }), isError("SOPS_NO_KEY"));
  assert.equal(counting.runs().filter((r) => r === "--decrypt").length, 3);
});

test("an RSA ssh key's PGP key: nothing runs for files not encrypted to it; its temporary home is removed on close", {
  skip,
}, async () => {
  const { dir, cleanup } = tempDir("nixseal-gpg-ssh-");
  cleanups.push(cleanup);
  const keyFile = path.join(dir, "ssh_host_rsa_key");
  assert.equal(spawnSync("ssh-keygen", ["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", keyFile]).status, 0);
  const der = await sshKeyDer(keyFile);
  const counting = countingGpg();
  const env = { ...process.env };
  delete env.XDG_RUNTIME_DIR; // the temporary home then goes to /dev/shm, where this test looks
  const id = new GpgSshIdentity(der, { file: keyFile, program: counting.program, env });
  // Encrypt to the key sops-nix would make of it, as sops does: import the public half elsewhere.
  const pub = gpgHome();
  gpg(pub, ["--import"], sshRsaToPgp(der).secretKey);
  const forIt = await sopsFileFor("k: v\n", [{ home: pub, fp: id.fingerprint }]);
  const stranger = gpgHome();
  const notForIt = await sopsFileFor("k: v\n", [{ home: stranger, fp: newKey(stranger, "frank") }]);
  await assert.rejects(
    decryptDocument(notForIt, new YamlStore(), { identities: [id] }),
    isError("SOPS_NO_KEY"),
  );
  assert.deepEqual(counting.runs(), []);
  const before = new Set(fs.readdirSync("/dev/shm").filter((n) => n.startsWith("nixseal-gpg-")));
  const doc = await decryptDocument(forIt, new YamlStore(), { identities: [id] });
  assert.equal(doc.branches[0]!.get("k"), "v");
  closeDocument(doc);
  assert.deepEqual(counting.runs(), ["--import", "--decrypt"]);
  const made = fs.readdirSync("/dev/shm").filter((n) => n.startsWith("nixseal-gpg-") && !before.has(n));
  assert.equal(made.length, 1);
  assert.equal(fs.statSync(path.join("/dev/shm", made[0]!)).mode & 0o777, 0o700);
  await id.close();
  assert.equal(fs.existsSync(path.join("/dev/shm", made[0]!)), false);
});

test("a malformed pgp entry is a metadata error, not a gpg run", { skip }, async () => {
  const home = gpgHome();
  const fp = newKey(home, "gina");
  const file = (await sopsFileFor("x: 1\n", [{ home, fp }])).toString().replace(`fp: ${fp}`, "fp: not-hex");
  await assert.rejects(
    decryptDocument(Buffer.from(file), new YamlStore(), { identities: [new GpgHomeIdentity(home)] }),
    (e: unknown) =>
      e instanceof NixsealError &&
      e.code === "SOPS_METADATA" &&
      /fp is not a key fingerprint/.test(e.message),
  );
});

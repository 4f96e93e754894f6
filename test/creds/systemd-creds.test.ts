/** encryptCredential / decryptCredential with the real systemd-creds and a private host key. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import {
  decryptCredential,
  encryptCredential,
  MAX_CREDENTIAL_SIZE,
  MAX_ENCRYPTED_CREDENTIAL_SIZE,
  sealedWith,
  validateCredentialName,
} from "../../src/creds/systemd-creds.js";
import { isError, tempDir } from "../helpers.js";
import { hostKeyPath, startSoftwareTpm, systemdCredsMissing, useHostKey } from "./creds-env.js";

const missing = systemdCredsMissing();
let dir = "";
let cleanup = () => {};
let hostKey = "";

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-creds-"));
  hostKey = hostKeyPath(dir, "a");
  useHostKey(hostKey);
});
after(() => cleanup());

/** The real systemd-creds decrypting a file, as a unit's LoadCredentialEncrypted= would. */
function realDecrypt(name: string, file: string, env: NodeJS.ProcessEnv = process.env) {
  return spawnSync("systemd-creds", ["decrypt", `--name=${name}`, file, "-"], { env });
}

function filesIn(d: string): string[] {
  return fs.readdirSync(d).sort();
}

test("round trip: our decrypt and the real systemd-creds decrypt give the secret back; mode set at creation", {
  skip: missing ?? false,
}, async () => {
  const secret = Buffer.from("db password: correct horse\n");
  const out = path.join(dir, "db-password");
  const kind = await encryptCredential("db-password", secret, { withKey: "host", output: out, mode: 0o400 });
  assert.equal(kind, "host");
  assert.equal(fs.statSync(out).mode & 0o777, 0o400);
  const text = fs.readFileSync(out);
  assert.ok(!text.includes(secret), "the file holds ciphertext only");
  assert.equal(sealedWith(text), "host");
  assert.deepEqual(Buffer.from(await decryptCredential("db-password", out)), secret);
  const real = realDecrypt("db-password", out);
  assert.equal(real.status, 0, real.stderr.toString());
  assert.deepEqual(real.stdout, secret);
  // auto on a host without a TPM2 seals with the host key.
  const autoFile = path.join(dir, "auto");
  await encryptCredential("auto", secret, { withKey: "auto", output: autoFile });
  assert.equal(fs.statSync(autoFile).mode & 0o777, 0o600);
  assert.deepEqual(Buffer.from(await decryptCredential(undefined, autoFile)), secret);
});

test("a credential only decrypts under its own name", { skip: missing ?? false }, async () => {
  const out = path.join(dir, "named");
  await encryptCredential("api-token", Buffer.from("t0ken"), { withKey: "host", output: out });
  await assert.rejects(decryptCredential("other-name", out), isError("CREDS_DECRYPT", /another name/));
  // Without a name, the file's name is expected, as systemd-creds does.
  await assert.rejects(decryptCredential(undefined, out), isError("CREDS_DECRYPT", /another name/));
  assert.notEqual(realDecrypt("other-name", out).status, 0);
});

test("a credential moved to another host key does not decrypt", { skip: missing ?? false }, async () => {
  const out = path.join(dir, "moved");
  await encryptCredential("moved", Buffer.from("s3cret"), { withKey: "host", output: out });
  const otherKey = hostKeyPath(dir, "other");
  const env = { ...process.env, SYSTEMD_CREDENTIAL_SECRET: otherKey };
  // A host without any credential host key yet.
  await assert.rejects(
    decryptCredential("moved", out, { env }),
    isError("CREDS_DECRYPT", /no credential host key/),
  );
  // A host with its own, different key.
  assert.equal(spawnSync("systemd-creds", ["setup"], { env }).status, 0);
  await assert.rejects(
    decryptCredential("moved", out, { env }),
    isError("CREDS_DECRYPT", /this host's keys/),
  );
  assert.notEqual(realDecrypt("moved", out, env).status, 0);
  // And back on the host that sealed it, it still works.
  assert.deepEqual(Buffer.from(await decryptCredential("moved", out)), Buffer.from("s3cret"));
});

test("systemd's 1 MiB limit: checked before systemd-creds runs, and for the encrypted size", {
  skip: missing ?? false,
}, async () => {
  const out = path.join(dir, "big");
  const tooBig = Buffer.alloc(MAX_CREDENTIAL_SIZE + 1, 0x61);
  // A program that does not exist proves the size is refused before anything runs.
  await assert.rejects(
    encryptCredential("big", tooBig, {
      withKey: "host",
      output: out,
      program: path.join(dir, "no-such-program"),
    }),
    isError("CREDS_TOO_LARGE", /more than systemd's limit of 1 MiB/),
  );
  // Exactly 1 MiB is accepted by systemd-creds encrypt, but the result is more than systemd reads.
  await assert.rejects(
    encryptCredential("big", Buffer.alloc(MAX_CREDENTIAL_SIZE, 0x61), { withKey: "host", output: out }),
    isError("CREDS_TOO_LARGE", new RegExp(`more than the ${MAX_ENCRYPTED_CREDENTIAL_SIZE} bytes`)),
  );
  assert.ok(!fs.existsSync(out), "nothing written");
  // 800 KiB fits, and the real systemd-creds reads it back.
  const fits = Buffer.alloc(800 * 1024, 0x62);
  await encryptCredential("big", fits, { withKey: "host", output: out });
  assert.ok(fs.statSync(out).size <= MAX_ENCRYPTED_CREDENTIAL_SIZE);
  const real = realDecrypt("big", out);
  assert.equal(real.status, 0, real.stderr.toString());
  assert.ok(real.stdout.equals(fits));
});

test("a corrupted, truncated or foreign file is one clear CREDS_DECRYPT error", {
  skip: missing ?? false,
}, async () => {
  const good = path.join(dir, "victim");
  await encryptCredential("victim", Buffer.from("value"), { withKey: "host", output: good });
  const text = fs.readFileSync(good, "latin1").replace(/\s/g, "");
  const raw = Buffer.from(text, "base64");
  const cases: [string, Buffer | string][] = [];
  const flipped = Buffer.from(raw);
  flipped[flipped.length - 20]! ^= 1;
  cases.push(["flipped", flipped.toString("base64")]);
  cases.push(["truncated", text.slice(0, 60)]);
  cases.push(["garbage", "this is not a credential\n"]);
  cases.push(["empty", ""]);
  for (const [label, content] of cases) {
    const file = path.join(dir, "victim-copy");
    fs.writeFileSync(file, content);
    await assert.rejects(decryptCredential("victim", file), (e) => {
      isError("CREDS_DECRYPT")(e);
      assert.equal((e as { problems: unknown[] }).problems.length, 0, `${label}: one problem`);
      assert.match((e as Error).message, /victim-copy/, `${label}: names the file`);
      return true;
    });
  }
  await assert.rejects(decryptCredential("victim", path.join(dir, "absent")), isError("IO", /no such file/));
});

test("a failed encryption leaves an existing file as it was and no temp file behind", {
  skip: missing ?? false,
}, async () => {
  const sub = fs.mkdtempSync(path.join(dir, "atomic-"));
  const out = path.join(sub, "keep");
  await encryptCredential("keep", Buffer.from("v1"), { withKey: "host", output: out });
  const before = fs.readFileSync(out);
  // No TPM2 device at this path: systemd-creds fails.
  await assert.rejects(
    encryptCredential("keep", Buffer.from("v2"), {
      withKey: "tpm2",
      output: out,
      tpm2Device: path.join(sub, "no-tpm"),
    }),
    isError("CREDS_NO_TPM", /no usable TPM2/, /--with-key=host/),
  );
  assert.deepEqual(fs.readFileSync(out), before);
  assert.deepEqual(filesIn(sub), ["keep"]);
  await assert.rejects(
    encryptCredential("keep", Buffer.from("v3"), { withKey: "host", output: out, noClobber: true }),
    isError("IO", /refusing to overwrite/),
  );
  assert.deepEqual(fs.readFileSync(out), before);
  assert.deepEqual(filesIn(sub), ["keep"]);
});

test("missing systemd-creds and invalid names are clear errors", async () => {
  await assert.rejects(
    encryptCredential("x", Buffer.from("v"), {
      withKey: "host",
      output: path.join(dir, "x"),
      program: path.join(dir, "nope"),
    }),
    isError("CREDS_UNAVAILABLE", /not installed/, /systemd >= 250/),
  );
  for (const bad of ["", "a/b", "a:b", ".hidden", "..", "with space", "x".repeat(256), "new\nline"]) {
    assert.throws(() => validateCredentialName(bad), isError("CREDS_NAME"), JSON.stringify(bad));
  }
  for (const good of ["db-password", "grafana.admin_password", "a@b+c=d", "x".repeat(255)]) {
    validateCredentialName(good);
  }
});

test("TPM2 (software TPM): sealed to the TPM, refused by another TPM", {
  skip: missing ?? false,
}, async (t) => {
  const tpmA = await startSoftwareTpm(dir);
  if (typeof tpmA === "string") return t.skip(tpmA);
  const tpmB = await startSoftwareTpm(dir);
  try {
    if (typeof tpmB === "string") return t.skip(tpmB);
    // swtpm has no resource manager and systemd-creds 252 leaves a session open per run: at most
    // three operations per software TPM.
    const out = path.join(dir, "tpm-bound");
    const secret = Buffer.from("bound to this TPM");
    const kind = await encryptCredential("tpm-bound", secret, {
      withKey: "tpm2",
      output: out,
      tpm2Device: tpmA.device,
    });
    assert.equal(kind, "tpm2");
    assert.deepEqual(
      Buffer.from(await decryptCredential("tpm-bound", out, { tpm2Device: tpmA.device })),
      secret,
    );
    await assert.rejects(
      decryptCredential("tpm-bound", out, { tpm2Device: tpmB.device }),
      isError("CREDS_DECRYPT", /TPM2 refuses/),
    );
    // Without any TPM, the credential cannot be opened at all (a stolen disk image).
    await assert.rejects(
      decryptCredential("tpm-bound", out, { tpm2Device: path.join(dir, "no-tpm") }),
      isError("CREDS_NO_TPM"),
    );
  } finally {
    tpmA.stop();
    if (typeof tpmB !== "string") tpmB.stop();
  }
});

test("host+tpm2: needs both the host key and the TPM", { skip: missing ?? false }, async (t) => {
  const tpm = await startSoftwareTpm(dir);
  if (typeof tpm === "string") return t.skip(tpm);
  try {
    const out = path.join(dir, "both");
    const secret = Buffer.from("two keys");
    assert.equal(
      await encryptCredential("both", secret, { withKey: "host+tpm2", output: out, tpm2Device: tpm.device }),
      "host+tpm2",
    );
    assert.deepEqual(Buffer.from(await decryptCredential("both", out, { tpm2Device: tpm.device })), secret);
    const otherKey = hostKeyPath(dir, "both-other");
    const env = { ...process.env, SYSTEMD_CREDENTIAL_SECRET: otherKey };
    assert.equal(spawnSync("systemd-creds", ["setup"], { env }).status, 0);
    await assert.rejects(
      decryptCredential("both", out, { tpm2Device: tpm.device, env }),
      isError("CREDS_DECRYPT"),
    );
  } finally {
    tpm.stop();
  }
});

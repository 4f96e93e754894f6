/** nixseal host-key new / seal / recipient, and sealed identities decrypting age files. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { decrypt, encrypt } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { loadSealedIdentities } from "../../src/creds/sealed-identity.js";
import { parseRecipientString } from "../../src/keys/index.js";
import { isError, nixseal, tempDir, which } from "../helpers.js";
import { hostKeyPath, systemdCredsMissing, useHostKey } from "./creds-env.js";

const missing = systemdCredsMissing();
const skip = missing ?? false;
let dir = "";
let cleanup = () => {};
let env: Record<string, string> = {};

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-hostkey-"));
  const key = hostKeyPath(dir, "main");
  useHostKey(key);
  env = { SYSTEMD_CREDENTIAL_SECRET: key, NO_COLOR: "1" };
});
after(() => cleanup());

const secret = Buffer.from("the database password\n");

test("host-key new: prints only the recipient; the sealed identity decrypts files for it", {
  skip,
}, async () => {
  const sub = fs.mkdtempSync(path.join(dir, "new-"));
  const out = path.join(sub, "host-key.cred");
  const r = nixseal(["host-key", "new", "-o", out], { env });
  assert.equal(r.status, 0, r.stderr);
  const stdout = r.stdout.toString("utf8");
  assert.match(stdout, /^age1[0-9a-z]{58}\n$/);
  assert.ok(!r.stderr.includes("AGE-SECRET-KEY"));
  // Only the sealed file was written: no plaintext key beside it.
  assert.deepEqual(fs.readdirSync(sub), ["host-key.cred"]);
  assert.equal(fs.statSync(out).mode & 0o777, 0o600);
  assert.ok(!fs.readFileSync(out, "latin1").includes("AGE-SECRET-KEY"));

  const recipient = stdout.trim();
  const file = await encrypt(secret, [parseRecipientString(recipient, "test")]);
  const sealed = await loadSealedIdentities({ path: out });
  assert.deepEqual(sealed.recipients, [recipient]);
  assert.deepEqual(Buffer.from(await decrypt(file, sealed.identities)), secret);

  // The real systemd-creds opens it under the file's name, and it is an age identity file.
  const real = spawnSync("systemd-creds", ["decrypt", out, "-"], { env: { ...process.env, ...env } });
  assert.equal(real.status, 0);
  assert.match(
    real.stdout.toString(),
    new RegExp(`# public key: ${recipient}\nAGE-SECRET-KEY-1[0-9A-Z]+\n$`),
  );

  const shown = nixseal(["host-key", "recipient", out], { env });
  assert.equal(shown.status, 0, shown.stderr);
  assert.equal(shown.stdout.toString(), `${recipient}\n`);

  // An existing sealed key is never replaced without --force.
  const again = nixseal(["host-key", "new", "-o", out], { env });
  assert.equal(again.status, 1);
  assert.match(again.stderr, /refusing to overwrite/);
  assert.equal(nixseal(["host-key", "recipient", out], { env }).stdout.toString(), `${recipient}\n`);
  const forced = nixseal(["host-key", "new", "--force", "--json", "-o", out], { env });
  assert.equal(forced.status, 0, forced.stderr);
  const json = JSON.parse(forced.stdout.toString());
  assert.equal(json.sealedWith, "host");
  assert.equal(json.name, "host-key.cred");
  assert.notEqual(json.recipient, recipient);
});

test("host-key seal: an age identity from a file or stdin, an ssh-ed25519 key with its ssh-to-age identity", {
  skip,
}, async (t) => {
  const id = X25519Identity.generate();
  const keyFile = path.join(dir, "age-key.txt");
  fs.writeFileSync(keyFile, `# a comment\n${id.encode()}\n`, { mode: 0o600 });
  const fromFile = path.join(dir, "age-from-file.cred");
  let r = nixseal(["host-key", "seal", "-i", keyFile, "-o", fromFile], { env });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.toString(), `${id.recipient()}\n`);
  const fromStdin = path.join(dir, "age-from-stdin.cred");
  r = nixseal(["host-key", "seal", "--with-key", "host", "-o", fromStdin], {
    env,
    input: fs.readFileSync(keyFile),
  });
  assert.equal(r.status, 0, r.stderr);
  const file = await encrypt(secret, [id.recipient()]);
  for (const sealedFile of [fromFile, fromStdin]) {
    const sealed = await loadSealedIdentities({ path: sealedFile });
    assert.deepEqual(Buffer.from(await decrypt(file, sealed.identities)), secret);
  }

  if (which("ssh-keygen") === null) return t.skip("needs ssh-keygen");
  const sshKey = path.join(dir, "ssh_host_ed25519_key");
  assert.equal(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", sshKey]).status, 0);
  const sshSealed = path.join(dir, "ssh-host-key.cred");
  r = nixseal(["host-key", "seal", "--json", "-i", sshKey, "-o", sshSealed], { env });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout.toString());
  assert.equal(json.kind, "ssh");
  const [sshRecipient, ageRecipient] = json.recipients as string[];
  assert.equal(sshRecipient, fs.readFileSync(`${sshKey}.pub`, "utf8").trim());
  assert.match(ageRecipient!, /^age1/);
  const sealed = await loadSealedIdentities({ path: sshSealed });
  // Files for the ssh key (agenix) and for its ssh-to-age recipient (sops-nix) both decrypt.
  for (const rcpt of [sshRecipient!, ageRecipient!]) {
    const f = await encrypt(secret, [parseRecipientString(rcpt, "test")]);
    assert.deepEqual(Buffer.from(await decrypt(f, sealed.identities)), secret);
  }
  if (which("age") !== null) {
    const ageFile = path.join(dir, "by-real-age.age");
    const enc = spawnSync("age", ["-r", ageRecipient!, "-o", ageFile], { input: secret });
    assert.equal(enc.status, 0, enc.stderr.toString());
    assert.deepEqual(Buffer.from(await decrypt(fs.readFileSync(ageFile), sealed.identities)), secret);
  }

  // A passphrase-protected key is refused: nobody can type it at boot.
  const locked = path.join(dir, "locked_key");
  assert.equal(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "pass phrase", "-f", locked]).status, 0);
  const lockedOut = path.join(dir, "locked.cred");
  r = nixseal(["host-key", "seal", "-i", locked, "-o", lockedOut], { env });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /passphrase-protected/);
  assert.ok(!fs.existsSync(lockedOut));
});

test("host-key seal refuses what is not a key, and writes nothing", { skip }, () => {
  const out = path.join(dir, "junk.cred");
  const r = nixseal(["host-key", "seal", "-o", out], { env, input: "just some text\n" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /not an identity line/);
  assert.ok(!r.stderr.includes("just some text"), "the input is never echoed");
  assert.ok(!fs.existsSync(out));
});

test("a corrupted sealed key is one clear error", { skip }, async () => {
  const out = path.join(dir, "corrupt.cred");
  assert.equal(nixseal(["host-key", "new", "-o", out], { env }).status, 0);
  const text = fs.readFileSync(out, "latin1").replace(/\s/g, "");
  const raw = Buffer.from(text, "base64");
  raw[raw.length - 30]! ^= 0x40;
  fs.writeFileSync(out, raw.toString("base64"));
  await assert.rejects(loadSealedIdentities({ path: out }), isError("CREDS_DECRYPT", /corrupt\.cred/));
  const r = nixseal(["host-key", "recipient", out], { env });
  assert.equal(r.status, 1);
  const errors = r.stderr.split("\n").filter((l) => l.includes("error:"));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(errors[0]!, /corrupt\.cred/);
  assert.match(r.stderr, /hint: /);
});

test("host-key: help with an example, usage errors exit 2", () => {
  const help = nixseal(["host-key", "--help"]);
  assert.equal(help.status, 0);
  assert.match(help.stdout.toString(), /Examples?:\n\s+\$ sudo nixseal host-key new/);
  for (const args of [
    ["host-key"],
    ["host-key", "new"],
    ["host-key", "frobnicate", "-o", "x"],
    ["host-key", "new", "--with-key", "tpm3", "-o", "x"],
    ["host-key", "new", "-o", path.join(dir, "bad:name")],
    ["host-key", "recipient"],
  ]) {
    const r = nixseal(args, { env });
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /hint: /);
  }
});

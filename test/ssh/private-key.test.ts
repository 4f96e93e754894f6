/**
 * ssh private key files as identities, on keys made by the real `ssh-keygen` (and `openssl` for
 * the PKCS#8 Ed25519 keys ssh-keygen cannot write): OpenSSH format plain and with every cipher
 * ssh-keygen offers, PEM PKCS#1 (plain and legacy-encrypted), PKCS#8 (plain and encrypted);
 * the lazy passphrase (asked once, only for files to the key), wrong or missing passphrases,
 * unsupported key types and hostile or malformed files. Files come from the real `age` binary.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { constants, createPrivateKey, publicEncrypt, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { decrypt, encrypt } from "../../src/age/age.js";
import type { Recipient } from "../../src/age/types.js";
import { NixsealError } from "../../src/common/errors.js";
import type { SshKeyIdentity } from "../../src/ssh/key-identity.js";
import {
  looksLikeSshPrivateKey,
  MAX_SSH_KEY_FILE_SIZE,
  parseSshPrivateKey,
  sshPrivateKeyToAgeIdentity,
} from "../../src/ssh/private-key.js";
import { parseSshPublicKey, sshPublicKeyToAgeRecipient } from "../../src/ssh/public-key.js";
import { SshWireReader, SshWireWriter } from "../../src/ssh/wire.js";
import { isError } from "../helpers.js";

const plaintext = Buffer.from("a secret for an ssh key\n");
const PASS = "testpass";

function have(tool: string, args: string[]): boolean {
  return spawnSync(tool, args, { stdio: "ignore" }).error === undefined;
}
const HAVE_SSH_KEYGEN = have("ssh-keygen", ["-?"]);
const HAVE_AGE = have("age", ["--version"]);
const HAVE_OPENSSL = have("openssl", ["version"]);

function run(cmd: string, args: string[], input?: Uint8Array): Buffer {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 26 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

let dir = "";
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "nixseal-sshpriv-"));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

let counter = 0;
/** ssh-keygen a key into the temp dir; returns its path. Few bcrypt rounds keep tests quick. */
function keygen(args: string[], passphrase = ""): string {
  const file = path.join(dir, `key${counter++}`);
  run("ssh-keygen", [...args, "-N", passphrase, "-C", "test@nixseal", "-f", file, "-q"]);
  return file;
}

/** An age file for the public key line `pubLine`: by the age binary when present, else by us. */
async function ageFileFor(pubLine: string): Promise<Uint8Array> {
  if (HAVE_AGE) {
    const pubFile = path.join(dir, `r${counter++}.pub`);
    fs.writeFileSync(pubFile, pubLine);
    return run("age", ["-R", pubFile], plaintext);
  }
  return encrypt(plaintext, [parseSshPublicKey(pubLine)]);
}

/** A passphrase callback that counts its calls and hands out a fresh buffer each time. */
function passphraseCounter(pass = PASS) {
  const c = {
    calls: 0,
    given: [] as Buffer[],
    fn: async () => {
      c.calls++;
      const b = Buffer.from(pass);
      c.given.push(b);
      return b;
    },
  };
  return c;
}

function load(file: string, options: Partial<Parameters<typeof parseSshPrivateKey>[1]> = {}): SshKeyIdentity {
  return parseSshPrivateKey(fs.readFileSync(file), { file, ...options });
}

function skipWithout(t: { skip: (m: string) => void }, tools: [boolean, string][]): boolean {
  for (const [ok, name] of tools) {
    if (!ok) {
      t.skip(`${name} not installed`);
      return true;
    }
  }
  return false;
}

/** The base64-decoded blob of an OpenSSH key file, its cipher name and where the AEAD tag starts. */
function openSshBlob(file: string): { blob: Buffer; cipher: string; tagAt: number } {
  const text = fs.readFileSync(file, "latin1");
  const blob = Buffer.from(text.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64");
  const r = new SshWireReader(blob.subarray(15), (m) => new NixsealError("INTERNAL", m));
  const cipher = r.readText();
  r.readString(); // kdf name
  r.readString(); // kdf options
  r.readUint32(); // key count
  r.readString(); // public key
  r.readString(); // private section
  return { blob, cipher, tagAt: blob.length - r.remaining };
}

// --- OpenSSH format ---------------------------------------------------------------------------

test("unencrypted OpenSSH keys: identities that decrypt age's files, with type and file in the description", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  for (const [type, args] of [
    ["ssh-ed25519", ["-t", "ed25519"]],
    ["ssh-rsa", ["-t", "rsa", "-b", "2048"]],
  ] as const) {
    const file = keygen([...args]);
    const pubLine = fs.readFileSync(`${file}.pub`, "utf8");
    const id = load(file, {
      passphrase: async () => assert.fail("an unencrypted key never asks for a passphrase"),
    });
    assert.equal(id.description, `${type} key ${file}`);
    assert.equal(id.keyType, type);
    assert.equal(id.encrypted, false);
    assert.equal(String(id.recipient()), pubLine.split(" ").slice(0, 2).join(" "));
    assert.deepEqual(Buffer.from(await decrypt(await ageFileFor(pubLine), [id])), plaintext);
    assert.ok(looksLikeSshPrivateKey(fs.readFileSync(file)));
  }
});

const CIPHERS = [
  "aes128-ctr",
  "aes192-ctr",
  "aes256-ctr",
  "aes128-cbc",
  "aes192-cbc",
  "aes256-cbc",
  "3des-cbc",
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "chacha20-poly1305@openssh.com",
];

for (const cipher of CIPHERS) {
  test(`passphrase-protected OpenSSH ed25519 key, cipher ${cipher}: right and wrong passphrase`, async (t) => {
    if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
    const file = keygen(["-t", "ed25519", "-Z", cipher, "-a", "2"], PASS);
    assert.match(fs.readFileSync(file, "latin1"), /BEGIN OPENSSH PRIVATE KEY/);
    assert.equal(openSshBlob(file).cipher, cipher, "the file is encrypted with the cipher under test");
    const pubLine = fs.readFileSync(`${file}.pub`, "utf8");
    const ageFile = await ageFileFor(pubLine);
    const pass = passphraseCounter();
    const id = load(file, { passphrase: pass.fn });
    assert.equal(pass.calls, 0, "construction never asks");
    assert.equal(id.encrypted, true);
    assert.equal(id.keyType, "ssh-ed25519");
    assert.match(id.description, new RegExp(`^ssh-ed25519 key ${file}`));
    assert.deepEqual(Buffer.from(await decrypt(ageFile, [id])), plaintext);
    assert.equal(pass.calls, 1);
    assert.ok(
      pass.given[0]!.every((b) => b === 0),
      "the passphrase buffer is wiped after use",
    );

    const wrong = passphraseCounter("wrongpass");
    const bad = load(file, { passphrase: wrong.fn });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        decrypt(ageFile, [bad]),
        isError("KEY_ENCRYPTED", new RegExp(`${file}.*wrong passphrase`), /wrong passphrase/),
      );
    }
    assert.equal(wrong.calls, 1, "a wrong passphrase is not asked again for every file");
  });
}

for (const cipher of [
  "aes256-ctr",
  "aes256-cbc",
  "chacha20-poly1305@openssh.com",
  "aes128-gcm@openssh.com",
]) {
  test(`passphrase-protected OpenSSH rsa key, cipher ${cipher}`, async (t) => {
    if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
    const file = keygen(["-t", "rsa", "-b", "2048", "-Z", cipher, "-a", "2"], PASS);
    assert.equal(openSshBlob(file).cipher, cipher, "the file is encrypted with the cipher under test");
    const pubLine = fs.readFileSync(`${file}.pub`, "utf8");
    const pass = passphraseCounter();
    const id = load(file, { passphrase: pass.fn });
    assert.equal(id.keyType, "ssh-rsa");
    assert.deepEqual(Buffer.from(await decrypt(await ageFileFor(pubLine), [id])), plaintext);
    assert.equal(pass.calls, 1);
  });
}

test("chacha20-poly1305@openssh.com: an altered Poly1305 tag or section is refused even with the right passphrase", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const file = keygen(["-t", "ed25519", "-Z", "chacha20-poly1305@openssh.com", "-a", "2"], PASS);
  const { blob, cipher, tagAt } = openSshBlob(file);
  assert.equal(cipher, "chacha20-poly1305@openssh.com");
  assert.equal(blob.length - tagAt, 16, "the file ends in a 16-byte Poly1305 tag");
  const ageFile = await ageFileFor(fs.readFileSync(`${file}.pub`, "utf8"));
  const open = (data: Uint8Array, pass: ReturnType<typeof passphraseCounter>) =>
    decrypt(ageFile, [parseSshPrivateKey(data, { file, passphrase: pass.fn })]);
  // Our rebuild of the untouched blob opens: the crafting itself is sound.
  assert.deepEqual(
    Buffer.from(await open(openSshFile({ raw: blob } as never), passphraseCounter())),
    plaintext,
  );
  // Without the tag check, an altered tag would open and an altered last byte of the section
  // (padding) would be "invalid padding": both must fail authentication instead.
  for (const [what, at] of [
    ["tag", blob.length - 1],
    ["section", tagAt - 1],
  ] as const) {
    const altered = Buffer.from(blob);
    altered[at]! ^= 1;
    const pass = passphraseCounter();
    await assert.rejects(
      open(openSshFile({ raw: altered } as never), pass),
      isError("KEY_ENCRYPTED", new RegExp(`${file}.*wrong passphrase`)),
      what,
    );
    assert.equal(pass.calls, 1, what);
  }
});

test("@noble/ciphers is loaded only when a chacha20-poly1305@openssh.com key is decrypted", (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const keys = [
    keygen(["-t", "ed25519"]),
    keygen(["-t", "ed25519", "-Z", "aes256-ctr", "-a", "2"], PASS),
    keygen(["-t", "ed25519", "-Z", "chacha20-poly1305@openssh.com", "-a", "2"], PASS),
  ];
  // A separate process, so that no other test has loaded it; a resolve hook sees every import.
  const script = path.join(dir, `lazy${counter++}.mjs`);
  fs.writeFileSync(
    script,
    `import fs from "node:fs";
import { registerHooks } from "node:module";
let loaded = false;
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    if (r.url.includes("/@noble/ciphers/")) loaded = true;
    return r;
  },
});
const { parseSshPrivateKey } = await import(${JSON.stringify(new URL("../../src/ssh/index.js", import.meta.url).href)});
const seen = [loaded];
for (const file of ${JSON.stringify(keys)}) {
  const id = parseSshPrivateKey(fs.readFileSync(file), { file, passphrase: async () => Buffer.from(${JSON.stringify(PASS)}) });
  await id.unlock();
  seen.push(loaded);
}
process.stdout.write(JSON.stringify(seen));
`,
  );
  assert.deepEqual(JSON.parse(run(process.execPath, [script]).toString()), [false, false, false, true]);
});

test("a passphrase-protected key asks once for two files, never for a file to another key", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  // ssh-keygen's defaults: aes256-ctr, 16 bcrypt rounds.
  const file = keygen(["-t", "ed25519"], PASS);
  const other = keygen(["-t", "ed25519"]);
  const mine = fs.readFileSync(`${file}.pub`, "utf8");
  const files = [await ageFileFor(mine), await ageFileFor(mine)];
  const notMine = await ageFileFor(fs.readFileSync(`${other}.pub`, "utf8"));

  const pass = passphraseCounter();
  const id = load(file, { passphrase: pass.fn });
  await assert.rejects(decrypt(notMine, [id]), isError("AGE_NO_MATCH"));
  assert.equal(pass.calls, 0, "not asked for a file that is not encrypted to this key");
  for (const f of files) assert.deepEqual(Buffer.from(await decrypt(f, [id])), plaintext);
  assert.equal(pass.calls, 1, "asked once per identity, not once per file");
  await assert.rejects(decrypt(notMine, [id]), isError("AGE_NO_MATCH"));

  // Files decrypted concurrently still share one request.
  const pass2 = passphraseCounter();
  const id2 = load(file, { passphrase: pass2.fn });
  const outs = await Promise.all([...files, ...files].map((f) => decrypt(f, [id2])));
  for (const o of outs) assert.deepEqual(Buffer.from(o), plaintext);
  assert.equal(pass2.calls, 1);

  // Next to an identity that matches first, the encrypted one is not even asked.
  const pass3 = passphraseCounter();
  const plainId = load(other);
  const both = await encrypt(plaintext, [parseSshPublicKey(mine), plainId.recipient()!]);
  assert.deepEqual(
    Buffer.from(await decrypt(both, [plainId, load(file, { passphrase: pass3.fn })])),
    plaintext,
  );
  assert.equal(pass3.calls, 0);
});

test("a passphrase-protected key without a passphrase callback: KEY_ENCRYPTED naming the file", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const file = keygen(["-t", "ed25519", "-a", "2"], PASS);
  const other = keygen(["-t", "ed25519"]);
  const id = load(file);
  assert.equal(
    String(id.recipient()),
    fs.readFileSync(`${file}.pub`, "utf8").split(" ").slice(0, 2).join(" "),
  );
  await assert.rejects(
    decrypt(await ageFileFor(fs.readFileSync(`${file}.pub`, "utf8")), [id]),
    (e: unknown) => {
      isError(
        "KEY_ENCRYPTED",
        new RegExp(file),
        /passphrase-protected; run in a terminal or set NIXSEAL_PASSPHRASE_FILE/,
      )(e);
      assert.equal((e as NixsealError).file, file);
      return true;
    },
  );
  // Not a problem for files to other keys.
  await assert.rejects(
    decrypt(await ageFileFor(fs.readFileSync(`${other}.pub`, "utf8")), [id]),
    isError("AGE_NO_MATCH"),
  );
  // A callback that fails: a clear error, the cause kept.
  const failing = load(file, {
    passphrase: async () => {
      throw new Error("no tty");
    },
  });
  await assert.rejects(
    decrypt(await ageFileFor(fs.readFileSync(`${file}.pub`, "utf8")), [failing]),
    isError("KEY_ENCRYPTED", /could not read the passphrase/),
  );
});

test("an encrypted key refuses a malformed stanza of its type before asking for the passphrase", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const file = keygen(["-t", "ed25519", "-a", "2"], PASS);
  const pass = passphraseCounter();
  const id = load(file, { passphrase: pass.fn });
  await assert.rejects(
    Promise.resolve(id.unwrapFileKey([{ type: "ssh-ed25519", args: ["AAAAAA"], body: new Uint8Array(32) }])),
    isError("AGE_STANZA", /wrong number of arguments/),
  );
  assert.equal(
    await id.unwrapFileKey([{ type: "ssh-rsa", args: ["AAAAAA"], body: new Uint8Array(32) }]),
    null,
  );
  assert.equal(pass.calls, 0);
});

// --- PEM -----------------------------------------------------------------------------------------

test("PEM and PKCS#8 RSA keys, unencrypted: interop both ways with age", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  for (const [format, label] of [
    ["PEM", "BEGIN RSA PRIVATE KEY"],
    ["PKCS8", "BEGIN PRIVATE KEY"],
  ]) {
    const file = keygen(["-t", "rsa", "-b", "2048", "-m", format!]);
    assert.match(fs.readFileSync(file, "latin1"), new RegExp(label!));
    const id = load(file);
    assert.equal(id.description, `ssh-rsa key ${file}`);
    const pubLine = fs.readFileSync(`${file}.pub`, "utf8");
    assert.deepEqual(Buffer.from(await decrypt(await ageFileFor(pubLine), [id])), plaintext);
    if (HAVE_AGE) {
      const out = path.join(dir, `pem${counter++}.age`);
      fs.writeFileSync(out, await encrypt(plaintext, [id.recipient()!]));
      assert.deepEqual(run("age", ["-d", "-i", file, out]), plaintext);
    }
  }
});

test("encrypted PEM RSA keys (legacy Proc-Type and PKCS#8): lazy, with or without the .pub", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const other = keygen(["-t", "rsa", "-b", "2048"]);
  const otherEd = keygen(["-t", "ed25519"]);
  const notMine = await ageFileFor(fs.readFileSync(`${other}.pub`, "utf8"));
  const edFile = await ageFileFor(fs.readFileSync(`${otherEd}.pub`, "utf8"));
  for (const [format, label] of [
    ["PEM", /Proc-Type: 4,ENCRYPTED/],
    ["PKCS8", /BEGIN ENCRYPTED PRIVATE KEY/],
  ] as const) {
    const file = keygen(["-t", "rsa", "-b", "2048", "-m", format], PASS);
    assert.match(fs.readFileSync(file, "latin1"), label);
    const pubText = fs.readFileSync(`${file}.pub`, "utf8");
    const mine = await ageFileFor(pubText);

    // With the .pub: known tag, asked only for files to this key.
    const pass = passphraseCounter();
    const id = load(file, { passphrase: pass.fn, publicKey: pubText });
    assert.equal(id.keyType, "ssh-rsa");
    assert.equal(id.description, `ssh-rsa key ${file} (passphrase-protected)`);
    await assert.rejects(decrypt(notMine, [id]), isError("AGE_NO_MATCH"));
    assert.equal(pass.calls, 0);
    assert.deepEqual(Buffer.from(await decrypt(mine, [id])), plaintext);
    assert.deepEqual(Buffer.from(await decrypt(mine, [id])), plaintext);
    assert.equal(pass.calls, 1);

    // Without it: asked at the first ssh stanza the key might answer, once.
    const pass2 = passphraseCounter();
    const blind = load(file, { passphrase: pass2.fn, publicKey: Buffer.from(pubText) });
    const blind2 = load(file, { passphrase: pass2.fn });
    assert.equal(blind2.keyType, format === "PEM" ? "ssh-rsa" : null);
    assert.equal(blind2.recipient(), null);
    if (format === "PEM") {
      // PKCS#1 holds only RSA keys: an ssh-ed25519 stanza does not ask.
      await assert.rejects(decrypt(edFile, [blind2]), isError("AGE_NO_MATCH"));
      assert.equal(pass2.calls, 0);
    }
    await assert.rejects(decrypt(notMine, [blind2]), isError("AGE_NO_MATCH"));
    assert.equal(pass2.calls, 1);
    assert.deepEqual(Buffer.from(await decrypt(mine, [blind2])), plaintext);
    assert.equal(pass2.calls, 1);
    assert.equal(blind2.keyType, "ssh-rsa");
    assert.equal(String(blind2.recipient()), pubText.split(" ").slice(0, 2).join(" "));
    assert.deepEqual(Buffer.from(await decrypt(mine, [blind])), plaintext);

    // Wrong passphrase and a .pub of another key.
    await assert.rejects(
      decrypt(mine, [load(file, { passphrase: passphraseCounter("nope").fn })]),
      isError("KEY_ENCRYPTED", /wrong passphrase/, /wrong passphrase/),
    );
    const mismatched = load(file, {
      passphrase: passphraseCounter().fn,
      publicKey: fs.readFileSync(`${other}.pub`),
    });
    await assert.rejects(
      decrypt(notMine, [mismatched]),
      isError("KEY_FORMAT", /does not match the public key/),
    );
  }
});

test("Ed25519 PKCS#8 keys from openssl, plain and encrypted: interop with age", async (t) => {
  if (skipWithout(t, [[HAVE_OPENSSL, "openssl"]])) return;
  const plainFile = path.join(dir, "ed-pkcs8.pem");
  run("openssl", ["genpkey", "-algorithm", "ed25519", "-out", plainFile]);
  const passFile = path.join(dir, "pkcs8.pass");
  fs.writeFileSync(passFile, PASS);
  const encFile = path.join(dir, "ed-pkcs8-enc.pem");
  run("openssl", [
    "pkcs8",
    "-topk8",
    "-v2",
    "aes-256-cbc",
    "-in",
    plainFile,
    "-out",
    encFile,
    "-passout",
    `file:${passFile}`,
  ]);
  assert.match(fs.readFileSync(encFile, "latin1"), /BEGIN ENCRYPTED PRIVATE KEY/);

  const id = load(plainFile);
  assert.equal(id.keyType, "ssh-ed25519");
  const pubLine = String(id.recipient());
  assert.match(pubLine, /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI/);
  const file = await ageFileFor(pubLine);
  assert.deepEqual(Buffer.from(await decrypt(file, [id])), plaintext);
  if (HAVE_AGE) {
    const out = path.join(dir, "ed-pkcs8.age");
    fs.writeFileSync(out, await encrypt(plaintext, [id.recipient()!]));
    assert.deepEqual(run("age", ["-d", "-i", plainFile, out]), plaintext);
  }
  const pass = passphraseCounter();
  const enc = load(encFile, { passphrase: pass.fn, publicKey: `${pubLine} comment\n` });
  assert.equal(enc.description, `ssh-ed25519 key ${encFile} (passphrase-protected)`);
  assert.deepEqual(Buffer.from(await decrypt(file, [enc])), plaintext);
  assert.equal(pass.calls, 1);
  // Without the .pub, an encrypted PKCS#8 key may be either type: it asks and finds out.
  const blind = load(encFile, { passphrase: passphraseCounter().fn });
  assert.equal(blind.keyType, null);
  assert.deepEqual(Buffer.from(await decrypt(file, [blind])), plaintext);
  assert.equal(blind.keyType, "ssh-ed25519");
});

// --- small RSA keys ---------------------------------------------------------------------------

test("an RSA key under 2048 bits decrypts (as agessh) but gives no recipient", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const file = keygen(["-t", "rsa", "-b", "1024"]);
  const id = load(file);
  assert.throws(() => id.recipient(), isError("AGE_RECIPIENT", /too small/, /2048/));
  // A stanza made by hand with RSA-OAEP as agessh specifies.
  const pub = createPrivateKey(
    fs.readFileSync(file, "utf8").includes("OPENSSH") ? pemOf(file) : fs.readFileSync(file),
  );
  const fileKey = randomBytes(16);
  const body = publicEncrypt(
    {
      key: pub,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: "sha256",
      oaepLabel: Buffer.from("age-encryption.org/v1/ssh-rsa"),
    },
    fileKey,
  );
  const tag = (id as unknown as { tag: string }).tag;
  assert.deepEqual(Buffer.from((await id.unwrapFileKey([{ type: "ssh-rsa", args: [tag], body }]))!), fileKey);
});

/** A PEM copy of an OpenSSH key, converted by ssh-keygen (for node:crypto in the test). */
function pemOf(file: string): Buffer {
  const copy = path.join(dir, `pem-copy${counter++}`);
  fs.copyFileSync(file, copy);
  fs.chmodSync(copy, 0o600);
  run("ssh-keygen", ["-p", "-N", "", "-m", "PEM", "-f", copy, "-q"]);
  return fs.readFileSync(copy);
}

// --- unsupported key types ------------------------------------------------------------------------

test("unsupported key types: KEY_UNSUPPORTED naming the file, with a hint", (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const cases: [string[], string, RegExp][] = [
    [["-t", "ecdsa"], "", /ecdsa-sha2-nistp256/],
    [["-t", "ecdsa", "-a", "2"], PASS, /ecdsa-sha2-nistp256/],
    [["-t", "ecdsa", "-m", "PEM"], "", /ECDSA/],
    [["-t", "dsa"], "", /ssh-dss/],
    [["-t", "ecdsa", "-m", "PKCS8"], "", /ECDSA/],
  ];
  for (const [args, pass, pattern] of cases) {
    let file: string;
    try {
      file = keygen(args, pass);
    } catch {
      continue; // e.g. an ssh-keygen built without DSA
    }
    const asked = passphraseCounter();
    assert.throws(
      () => load(file, { passphrase: asked.fn }),
      (e: unknown) => {
        isError("KEY_UNSUPPORTED", pattern, /ssh-ed25519 and ssh-rsa/)(e);
        assert.equal((e as NixsealError).file, file);
        return true;
      },
      args.join(" "),
    );
    assert.equal(asked.calls, 0);
  }
});

/** Rebuilds an unencrypted OpenSSH key file from its parts (to craft hostile variants). */
function openSshFile(parts: {
  cipher?: string;
  kdf?: string;
  kdfOptions?: Uint8Array;
  nkeys?: number;
  publicKey: Uint8Array;
  section: Uint8Array;
  raw?: Uint8Array;
}): Buffer {
  const blob =
    parts.raw ??
    new SshWireWriter()
      .bytes(Buffer.from("openssh-key-v1\0", "latin1"))
      .string(parts.cipher ?? "none")
      .string(parts.kdf ?? "none")
      .string(parts.kdfOptions ?? new Uint8Array(0))
      .uint32(parts.nkeys ?? 1)
      .string(parts.publicKey)
      .string(parts.section)
      .finish();
  const b64 = Buffer.from(blob).toString("base64").replace(/.{70}/g, "$&\n");
  return Buffer.from(`-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}\n-----END OPENSSH PRIVATE KEY-----\n`);
}

/** The parts of an unencrypted OpenSSH key made by ssh-keygen. */
function openSshParts(file: string): { publicKey: Uint8Array; section: Uint8Array } {
  const text = fs.readFileSync(file, "latin1");
  const b64 = text.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  const blob = Buffer.from(b64, "base64");
  const r = new SshWireReader(blob.subarray(15), (m) => new NixsealError("INTERNAL", m));
  r.readString();
  r.readString();
  r.readString();
  r.readUint32();
  return { publicKey: Uint8Array.from(r.readString()), section: Uint8Array.from(r.readString()) };
}

/** An unencrypted private section with the given fields, padded as OpenSSH pads it. */
function section(check1: number, check2: number, fields: (w: SshWireWriter) => void, padTo = 8): Uint8Array {
  const w = new SshWireWriter().uint32(check1).uint32(check2);
  fields(w);
  const body = w.finish();
  const pad = (padTo - (body.length % padTo)) % padTo;
  return Buffer.concat([body, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
}

test("a security-key (sk-ssh-ed25519) OpenSSH key is KEY_UNSUPPORTED", () => {
  const pub = new SshWireWriter()
    .string("sk-ssh-ed25519@openssh.com")
    .string(randomBytes(32))
    .string("ssh:")
    .finish();
  const data = openSshFile({
    publicKey: pub,
    section: section(1, 1, (w) => w.string("sk-ssh-ed25519@openssh.com")),
  });
  assert.throws(
    () => parseSshPrivateKey(data, { file: "/k/id_ed25519_sk" }),
    isError("KEY_UNSUPPORTED", /sk-ssh-ed25519/, /plugin/),
  );
});

// --- malformed and hostile files -----------------------------------------------------------------

test("malformed and hostile key files: KEY_FORMAT naming the file", (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const file = keygen(["-t", "ed25519"]);
  const good = fs.readFileSync(file);
  const parts = openSshParts(file);
  const otherParts = openSshParts(keygen(["-t", "ed25519"]));
  const where = "/home/u/.ssh/id_test";
  const fails = (data: Uint8Array, pattern: RegExp, what: string, code = "KEY_FORMAT") =>
    assert.throws(
      () => parseSshPrivateKey(data, { file: where }),
      (e: unknown) => {
        isError(code, pattern)(e);
        assert.equal((e as NixsealError).file, where);
        if (code === "KEY_FORMAT") assert.match((e as NixsealError).message, new RegExp(where));
        return true;
      },
      what,
    );
  // Our rebuild of the untouched parts parses: the crafting itself is sound.
  assert.equal(parseSshPrivateKey(openSshFile(parts), { file: where }).keyType, "ssh-ed25519");

  fails(Buffer.alloc(0), /not an ssh private key/, "empty");
  fails(Buffer.from("AGE-SECRET-KEY-1QQQ\n"), /not an ssh private key/, "age key");
  fails(Buffer.from("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), /CERTIFICATE/, "cert");
  fails(good.subarray(0, good.length / 2), /missing the -----END/, "truncated");
  const text = good.toString("latin1");
  const lines = text.split("\n");
  // Whole base64 lines (70 characters each) dropped: the wire data ends early.
  fails(
    Buffer.from([lines[0], lines[1], lines[2], lines.at(-2), ""].join("\n")),
    /truncated|longer than/,
    "cut",
  );
  fails(Buffer.from(text.replace(/\n(.)/, "\n*$1")), /base64/, "bad base64");
  fails(Buffer.alloc(MAX_SSH_KEY_FILE_SIZE + 1, 0x41), /larger than 64 KiB/, "huge");
  fails(openSshFile({ raw: Buffer.from("openssh-key-v2\0xxxx") } as never), /openssh-key-v1/, "magic");
  // A wire string claiming more bytes than there are.
  const long = Buffer.concat([
    Buffer.from("openssh-key-v1\0", "latin1"),
    Buffer.from([0, 0, 0, 4, 110, 111, 110, 101]),
    Buffer.from([0xff, 0xff, 0xff, 0xf0, 1, 2]),
  ]);
  fails(openSshFile({ raw: long } as never), /longer than the data that is left/, "long string");
  fails(openSshFile({ ...parts, nkeys: 2 }), /2 keys/, "two keys");
  fails(openSshFile({ ...parts, kdf: "bcrypt" }), /kdf/, "kdf without cipher");
  fails(
    openSshFile({ ...parts, section: parts.section.subarray(0, parts.section.length - 1) }),
    /cipher blocks/,
    "odd section",
  );
  fails(openSshFile({ ...parts, publicKey: otherParts.publicKey }), /do not match/, "other public key");
  const badCheck = Buffer.from(parts.section);
  badCheck[0]! ^= 1;
  fails(openSshFile({ ...parts, section: badCheck }), /check values/, "check ints");
  // ssh-keygen's section for this key ends in padding (1, 2, ...): spoil its last byte.
  const badPad = Buffer.from(parts.section);
  assert.equal(badPad[badPad.length - 1], 1, "the section ends in padding");
  badPad[badPad.length - 1] = 0x63;
  fails(openSshFile({ ...parts, section: badPad }), /invalid padding/, "padding");
  fails(
    openSshFile({
      ...parts,
      cipher: "aes256-ctr",
      kdf: "bcrypt",
      kdfOptions: new SshWireWriter().string(randomBytes(16)).uint32(1_000_000).finish(),
    }),
    /rounds/,
    "rounds",
    "KEY_UNSUPPORTED",
  );
  fails(
    openSshFile({ ...parts, cipher: "blowfish-cbc", kdf: "bcrypt", kdfOptions: new Uint8Array(0) }),
    /blowfish-cbc/,
    "cipher",
    "KEY_UNSUPPORTED",
  );
  fails(
    openSshFile({ ...parts, cipher: "aes256-ctr", kdf: "scrypt", kdfOptions: new Uint8Array(0) }),
    /scrypt/,
    "kdf",
    "KEY_UNSUPPORTED",
  );
  fails(
    Buffer.from("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    /does not parse/,
    "bad PKCS#8",
  );
  fails(
    Buffer.from("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"),
    /ECDSA/,
    "EC",
    "KEY_UNSUPPORTED",
  );
});

test("an encrypted PEM key with a .pub of the wrong kind is refused at once", (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const file = keygen(["-t", "rsa", "-b", "2048", "-m", "PEM"], PASS);
  const ed = keygen(["-t", "ed25519"]);
  assert.throws(
    () => load(file, { publicKey: fs.readFileSync(`${ed}.pub`) }),
    isError("KEY_FORMAT", /ssh-ed25519/),
  );
  assert.throws(() => load(file, { publicKey: "\n# nothing\n" }), isError("KEY_FORMAT", /empty/));
  assert.throws(() => load(file, { publicKey: "ssh-rsa !!!!" }), isError("KEY_FORMAT", /base64/));
  assert.throws(
    () => load(file, { publicKey: "ecdsa-sha2-nistp256 AAAAE2VjZHNh" }),
    isError("KEY_UNSUPPORTED", /unsupported ssh key type/, /ssh-ed25519 and ssh-rsa/),
  );
});

test("identities from several key files work side by side in one decrypt", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const a = keygen(["-t", "ed25519"]);
  const b = keygen(["-t", "rsa", "-b", "2048", "-a", "2"], PASS);
  const recipients: Recipient[] = [parseSshPublicKey(fs.readFileSync(`${b}.pub`, "utf8"))];
  const file = await encrypt(plaintext, recipients);
  const pass = passphraseCounter();
  assert.deepEqual(Buffer.from(await decrypt(file, [load(a), load(b, { passphrase: pass.fn })])), plaintext);
  assert.equal(pass.calls, 1);
});

test("ssh-to-age on key files: the derived identity's recipient is the derived .pub recipient", async (t) => {
  if (skipWithout(t, [[HAVE_SSH_KEYGEN, "ssh-keygen"]])) return;
  const HAVE_AGE_KEYGEN = have("age-keygen", ["--version"]);
  for (const pass of ["", PASS]) {
    const file = keygen(["-t", "ed25519", "-a", "2"], pass);
    const pubLine = fs.readFileSync(`${file}.pub`, "utf8");
    const asked = passphraseCounter();
    const identity = await sshPrivateKeyToAgeIdentity(fs.readFileSync(file), { file, passphrase: asked.fn });
    assert.equal(asked.calls, pass === "" ? 0 : 1);
    const recipient = sshPublicKeyToAgeRecipient(pubLine);
    assert.match(recipient.toString(), /^age1[a-z0-9]{58}$/);
    assert.equal(identity.recipient().toString(), recipient.toString());
    assert.match(identity.description, new RegExp(file));
    if (HAVE_AGE_KEYGEN) {
      const idFile = path.join(dir, `derived${counter++}.txt`);
      fs.writeFileSync(idFile, `${identity.encode()}\n`, { mode: 0o600 });
      assert.equal(run("age-keygen", ["-y", idFile]).toString().trim(), recipient.toString());
    }
  }
  const rsa = keygen(["-t", "rsa", "-b", "2048"]);
  await assert.rejects(
    sshPrivateKeyToAgeIdentity(fs.readFileSync(rsa), { file: rsa }),
    isError("KEY_UNSUPPORTED", /only ssh-ed25519/),
  );
  assert.throws(
    () => sshPublicKeyToAgeRecipient(fs.readFileSync(`${rsa}.pub`, "utf8")),
    isError("AGE_RECIPIENT", /ssh-rsa/),
  );
});

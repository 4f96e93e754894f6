/** Identity sources: SOPS_AGE_KEY_CMD, and ssh-ed25519 keys acting as their ssh-to-age X25519 identity. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { decrypt, encrypt } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { loadDefaultIdentities, SshDerivedX25519Identity } from "../../src/keys/default-identities.js";
import { closeDocument, decryptDocument, encryptNewDocument, YamlStore } from "../../src/sops/index.js";
import { sshEd25519ToAgeRecipient } from "../../src/ssh/ed25519.js";
import { decodeSshPublicKeyLine } from "../../src/ssh/public-key.js";
import { isError, tempDir, which } from "../helpers.js";

const plaintext = Buffer.from("the secret\n");

function userEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: home, ...extra };
}

test("SOPS_AGE_KEY_CMD: runs once per process via sh -c, its keys decrypt, only the command line is logged", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const id = X25519Identity.generate();
    const script = path.join(dir, "print-key.sh");
    const counter = path.join(dir, "runs");
    fs.writeFileSync(
      script,
      `echo run >> '${counter}'\necho '# a comment'\necho '${id.encode()}'\necho 'progress on stderr' >&2\n`,
    );
    const file = await encrypt(plaintext, [id.recipient()]);
    const command = `sh '${script}' --unique-${path.basename(dir)}`;
    const logged: string[] = [];
    for (let i = 0; i < 2; i++) {
      const ids = await loadDefaultIdentities(
        { env: userEnv(dir, { SOPS_AGE_KEY_CMD: command }), home: dir, log: (l) => logged.push(l) },
        {},
      );
      assert.deepEqual(Buffer.from(await decrypt(file, ids)), plaintext);
    }
    assert.equal(fs.readFileSync(counter, "utf8"), "run\n", "the command ran once");
    assert.deepEqual(logged, [`running SOPS_AGE_KEY_CMD: ${command}`]);
    assert.ok(!logged.join("").includes("AGE-SECRET-KEY"));
  } finally {
    cleanup();
  }
});

test("SOPS_AGE_KEY_CMD: failure, bad output, too much output and a hang are clear errors without the output", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const load = (command: string, keyCommandTimeoutMs?: number) =>
      loadDefaultIdentities(
        {
          env: userEnv(dir, { SOPS_AGE_KEY_CMD: command }),
          home: dir,
          ...(keyCommandTimeoutMs ? { keyCommandTimeoutMs } : {}),
        },
        {},
      );
    const secretish = "AGE-SECRET-KEY-1NOTREALLYAKEY";
    await assert.rejects(load(`echo ${secretish}; exit 3 # ${dir}-a`), (e) => {
      isError("AGE_IDENTITY", /SOPS_AGE_KEY_CMD exited with status 3/)(e);
      assert.ok(!(e as Error).message.includes(secretish));
      return true;
    });
    await assert.rejects(load(`echo ${secretish}x # ${dir}-b`), (e) => {
      isError("AGE_IDENTITY", /SOPS_AGE_KEY_CMD output line 1/)(e);
      assert.ok(!(e as Error).message.includes(secretish));
      return true;
    });
    await assert.rejects(load(`echo '# nothing' # ${dir}-c`), isError("AGE_IDENTITY", /printed no identity/));
    await assert.rejects(
      load(`head -c 2000000 /dev/zero | tr '\\0' A # ${dir}-d`),
      isError("AGE_IDENTITY", /printed more than 1024 KiB/),
    );
    const started = Date.now();
    await assert.rejects(
      load(`exec sleep 30 # ${dir}-e`, 300),
      isError("AGE_IDENTITY", /did not finish within/),
    );
    assert.ok(Date.now() - started < 10_000);
  } finally {
    cleanup();
  }
});

function sshKeygen(file: string, passphrase: string): string {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", file]);
  return fs.readFileSync(`${file}.pub`, "utf8");
}

/** The recipient ssh-to-age prints for an ssh-ed25519 public key line. */
function sshToAgeRecipient(pubLine: string) {
  const { key } = decodeSshPublicKeyLine(pubLine.trim());
  assert.equal(key.type, "ssh-ed25519");
  return sshEd25519ToAgeRecipient((key as { publicKey: Uint8Array }).publicKey);
}

/** Encrypts with the real age binary (the tests that use it skip without it). */
function encryptTo(recipient: string): Uint8Array {
  return execFileSync("age", ["-r", recipient], { input: plaintext });
}

test("an ssh-ed25519 key (-i or ~/.ssh/id_ed25519) also decrypts files for its ssh-to-age recipient", async (t) => {
  if (which("ssh-keygen") === null) return t.skip("ssh-keygen not installed");
  if (which("age") === null) return t.skip("age binary not installed");
  const { dir, cleanup } = tempDir();
  try {
    fs.mkdirSync(path.join(dir, ".ssh"));
    const key = path.join(dir, ".ssh", "id_ed25519");
    const recipient = sshToAgeRecipient(sshKeygen(key, "")).toString();
    assert.match(recipient, /^age1[0-9a-z]{58}$/);
    const file = encryptTo(recipient);
    // From ~/.ssh/id_ed25519, and from -i.
    for (const source of [
      { env: userEnv(dir), home: dir },
      { flags: [key], env: userEnv(path.join(dir, "none")), home: path.join(dir, "none") },
    ]) {
      const ids = await loadDefaultIdentities(source, {});
      assert.ok(ids.some((i) => i instanceof SshDerivedX25519Identity));
      assert.deepEqual(Buffer.from(await decrypt(file, ids)), plaintext);
    }
  } finally {
    cleanup();
  }
});

test("a passphrase-protected ssh key: its derived identity asks once, and only when no other identity matched", async (t) => {
  if (which("ssh-keygen") === null) return t.skip("ssh-keygen not installed");
  if (which("age") === null) return t.skip("age binary not installed");
  const { dir, cleanup } = tempDir();
  try {
    const key = path.join(dir, "id_ed25519");
    const recipient = sshToAgeRecipient(sshKeygen(key, "correct horse")).toString();
    const other = X25519Identity.generate();
    let asked = 0;
    const ctx = {
      passphrase: async () => {
        asked++;
        return Buffer.from("correct horse");
      },
    };
    const otherFile = path.join(dir, "other.txt");
    fs.writeFileSync(otherFile, `${other.encode()}\n`);
    const ids = await loadDefaultIdentities({ flags: [key, otherFile], env: userEnv(dir), home: dir }, ctx);
    const derived = ids.filter((i) => i instanceof SshDerivedX25519Identity);
    assert.equal(derived.length, 1);
    assert.equal(ids[ids.length - 1], derived[0], "the derived identity comes last");
    assert.equal((derived[0] as SshDerivedX25519Identity).deferred, true);
    assert.equal(asked, 0, "loading asks nothing");

    // A file for another identity that is loaded: opened without asking.
    const forOther = encryptTo(other.recipient().toString());
    assert.deepEqual(Buffer.from(await decrypt(forOther, ids)), plaintext);
    assert.equal(asked, 0);

    // A file for the ssh-to-age recipient: asks once, even when used twice.
    const forSsh = encryptTo(recipient);
    assert.deepEqual(Buffer.from(await decrypt(forSsh, ids)), plaintext);
    assert.deepEqual(Buffer.from(await decrypt(forSsh, ids)), plaintext);
    assert.equal(asked, 1);

    // Nothing for us at all: the error lists what was tried, the passphrase is not asked again.
    const stranger = encryptTo(X25519Identity.generate().recipient().toString());
    await assert.rejects(decrypt(stranger, ids), isError("AGE_NO_MATCH"));
    assert.equal(asked, 1);
  } finally {
    cleanup();
  }
});

test("a sops file whose first age entry is an encrypted ssh key's: a plain key on a later entry opens it without a prompt", async (t) => {
  if (which("ssh-keygen") === null) return t.skip("ssh-keygen not installed");
  const { dir, cleanup } = tempDir();
  try {
    const key = path.join(dir, "id_ed25519");
    const sshRecipient = sshToAgeRecipient(sshKeygen(key, "correct horse")).toString();
    const plain = X25519Identity.generate();
    let asked = 0;
    const ctx = {
      passphrase: async () => {
        asked++;
        return Buffer.from("correct horse");
      },
    };
    const store = new YamlStore();
    const doc = await encryptNewDocument(store.parsePlain(Buffer.from("token: abc\n")), store, {
      keyGroups: [[sshRecipient, plain.recipient().toString()]],
    });
    const plainFile = path.join(dir, "plain.txt");
    fs.writeFileSync(plainFile, `${plain.encode()}\n`);
    const ids = await loadDefaultIdentities({ flags: [key, plainFile], env: userEnv(dir), home: dir }, ctx);
    const opened = await decryptDocument(doc, store, { identities: ids, file: "t.yaml" });
    closeDocument(opened);
    assert.equal(asked, 0, "the plain key on the second entry must win before any prompt");

    // Only the ssh key: its derived identity is tried, asking once.
    const onlySsh = await loadDefaultIdentities({ flags: [key], env: userEnv(dir), home: dir }, ctx);
    closeDocument(await decryptDocument(doc, store, { identities: onlySsh, file: "t.yaml" }));
    assert.equal(asked, 1);
  } finally {
    cleanup();
  }
});

test("SOPS_AGE_SSH_PRIVATE_KEY_FILE: that ssh key opens ssh-ed25519 stanzas; a missing one is an error", async (t) => {
  if (which("ssh-keygen") === null) return t.skip("ssh-keygen not installed");
  if (which("age") === null) return t.skip("age binary not installed");
  const { dir, cleanup } = tempDir();
  try {
    const key = path.join(dir, "elsewhere_ed25519");
    const pub = sshKeygen(key, "");
    fs.writeFileSync(path.join(dir, "key.pub"), pub);
    const file = execFileSync("age", ["-R", path.join(dir, "key.pub")], { input: plaintext });
    const home = path.join(dir, "home");
    const ids = await loadDefaultIdentities(
      { env: userEnv(home, { SOPS_AGE_SSH_PRIVATE_KEY_FILE: key }), home },
      {},
    );
    assert.deepEqual(Buffer.from(await decrypt(file, ids)), plaintext);
    await assert.rejects(
      loadDefaultIdentities(
        { env: userEnv(home, { SOPS_AGE_SSH_PRIVATE_KEY_FILE: path.join(dir, "missing") }), home },
        {},
      ),
      (e: unknown) => isError("IO")(e) || isError("AGE_IDENTITY")(e),
    );
  } finally {
    cleanup();
  }
});

test("-i files replace the defaults: no identity from the environment, the home or a key command is added", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const alice = X25519Identity.generate();
    const bob = X25519Identity.generate();
    const bobFile = path.join(dir, "bob.txt");
    fs.writeFileSync(bobFile, `${bob.encode()}\n`);
    const aliceFile = path.join(dir, "alice.txt");
    fs.writeFileSync(aliceFile, `${alice.encode()}\n`);
    fs.mkdirSync(path.join(dir, ".config", "nixseal"), { recursive: true });
    fs.writeFileSync(path.join(dir, ".config", "nixseal", "identity.txt"), `${alice.encode()}\n`);
    const forAlice = await encrypt(plaintext, [alice.recipient()]);
    const env = userEnv(dir, {
      NIXSEAL_IDENTITY: aliceFile,
      SOPS_AGE_KEY_FILE: aliceFile,
      SOPS_AGE_KEY: alice.encode(),
      SOPS_AGE_KEY_CMD: `cat '${aliceFile}'`,
    });
    // Without -i every one of them opens the file...
    assert.deepEqual(
      Buffer.from(await decrypt(forAlice, await loadDefaultIdentities({ env, home: dir }, {}))),
      plaintext,
    );
    // ...with -i bob.txt, none of them: bob is not a recipient.
    const ids = await loadDefaultIdentities({ flags: [bobFile], env, home: dir }, {});
    assert.equal(ids.length, 1);
    await assert.rejects(
      decrypt(forAlice, ids),
      isError("AGE_NO_MATCH", undefined, /tried: [^;]*bob\.txt:1; use/),
    );
  } finally {
    cleanup();
  }
});

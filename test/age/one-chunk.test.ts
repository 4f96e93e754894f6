/**
 * A payload of one chunk (every secret: at most 64 KiB of plaintext) is opened directly, without
 * the streaming decryptor (src/age/age.ts, openPayload; src/age/stream.ts, openOnlyChunk). Files
 * written by the real age binary, to an X25519 recipient and to an ssh-ed25519 key: decrypt()
 * gives their plaintext, agrees with the streaming AgeDecryptor (plaintext, or error code and
 * message), and every damage fails as it did: a cut header, a modified header MAC, the wrong key,
 * a modified or cut payload. Payloads of a full chunk or more take the streaming path and still
 * decrypt exactly.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { AgeDecryptor, decrypt, type Identity } from "../../src/age/index.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseSshPrivateKey } from "../../src/ssh/private-key.js";
import { tempDir, which } from "../helpers.js";

const AGE = which("age");
const SSH_KEYGEN = which("ssh-keygen");
const skip = (!AGE && "age not installed") || (!SSH_KEYGEN && "ssh-keygen not installed") || false;

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

/** Encrypts with the real age binary (`-r` for an age1 recipient, `-R` for an ssh public key file). */
function ageEncrypt(plaintext: Uint8Array, args: string[]): Buffer {
  const r = spawnSync(AGE!, args, { input: plaintext, maxBuffer: 16 * 1024 * 1024 });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

/** The same file through the streaming decryptor, pushed in 1000-byte pieces. */
async function streamed(file: Uint8Array, ids: readonly Identity[]): Promise<Buffer> {
  const dec = new AgeDecryptor(ids);
  const out: Buffer[] = [];
  for (let i = 0; i < file.length; i += 1000) await dec.push(file.subarray(i, i + 1000), out);
  await dec.finish(out);
  return Buffer.concat(out);
}

async function outcome(
  f: () => Promise<Uint8Array>,
): Promise<{ plain: string } | { code: string; message: string }> {
  try {
    return { plain: Buffer.from(await f()).toString("hex") };
  } catch (e) {
    assert.ok(e instanceof NixsealError, `a NixsealError, not ${String(e)}`);
    assert.ok(e.hint, "with a hint");
    return { code: e.code, message: e.message };
  }
}

/** decrypt() and the streaming path agree on `file`; returns decrypt()'s outcome. */
async function both(file: Uint8Array, ids: readonly Identity[]) {
  const one = await outcome(() => decrypt(file, ids));
  assert.deepEqual(await outcome(() => streamed(file, ids)), one, "decrypt() and the stream agree");
  return one;
}

interface Keys {
  name: string;
  /** age's arguments to encrypt to the key. */
  args: string[];
  ids: Identity[];
}

async function keys(): Promise<Keys[]> {
  const x = X25519Identity.generate();
  const sshKey = path.join(dir, "id_ed25519");
  if (!fs.existsSync(sshKey)) {
    const k = spawnSync(SSH_KEYGEN!, ["-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", sshKey]);
    assert.equal(k.status, 0, k.stderr.toString());
  }
  const ssh = await parseSshPrivateKey(fs.readFileSync(sshKey), { file: sshKey }).unlock();
  return [
    { name: "X25519", args: ["-r", x.recipient().toString()], ids: [x] },
    { name: "ssh-ed25519", args: ["-R", `${sshKey}.pub`], ids: [ssh] },
  ];
}

/** The header's length: up to and including the MAC line. */
function headerLength(file: Buffer): number {
  const mac = file.indexOf("\n---");
  return file.indexOf(0x0a, mac + 1) + 1;
}

test("one-chunk files from the real age: the plaintext, as the streaming path gives it", {
  skip,
}, async () => {
  for (const k of await keys()) {
    // 0 bytes (an empty final chunk alone), small, and one byte short of a full chunk.
    for (const size of [0, 1, 137, 65535]) {
      const plain = Buffer.alloc(size, size % 251);
      const r = await both(ageEncrypt(plain, k.args), k.ids);
      assert.deepEqual(r, { plain: plain.toString("hex") }, `${k.name}, ${size} bytes`);
    }
  }
});

test("a full chunk or more takes the streaming path and decrypts exactly", { skip }, async () => {
  for (const k of await keys()) {
    for (const size of [65536, 65537, 3 * 65536 + 5]) {
      const plain = Buffer.alloc(size);
      for (let i = 0; i < size; i++) plain[i] = (i * 7) & 0xff;
      const r = await both(ageEncrypt(plain, k.args), k.ids);
      assert.ok("plain" in r && r.plain === plain.toString("hex"), `${k.name}, ${size} bytes`);
    }
  }
});

test("damage to a one-chunk file fails as before, with the same error either way", { skip }, async () => {
  for (const k of await keys()) {
    const file = ageEncrypt(Buffer.from("a small secret value\n"), k.args);
    const h = headerLength(file);

    // A header cut short.
    assert.deepEqual(await both(file.subarray(0, h - 10), k.ids), {
      code: "AGE_HEADER",
      message: "invalid age header: the file is truncated",
    });

    // The header MAC changed (still canonical base64: a byte of the MAC itself flipped).
    const macLine = file.subarray(file.indexOf("\n---") + 5, h - 1).toString("latin1");
    const mac = Buffer.from(macLine, "base64");
    mac[0]! ^= 1;
    const badMac = Buffer.concat([
      file.subarray(0, file.indexOf("\n---") + 5),
      Buffer.from(`${mac.toString("base64").replace(/=+$/, "")}\n`, "latin1"),
      file.subarray(h),
    ]);
    const macError = await both(badMac, k.ids);
    assert.ok("code" in macError && macError.code === "AGE_HMAC", JSON.stringify(macError));

    // The wrong key.
    const other = X25519Identity.generate();
    const wrong = await both(file, [other]);
    assert.ok("code" in wrong && wrong.code === "AGE_NO_MATCH", JSON.stringify(wrong));

    // The payload modified: its last byte (the tag), and a byte of the ciphertext.
    for (const at of [file.length - 1, h + 16 + 3]) {
      const tampered = Buffer.from(file);
      tampered[at]! ^= 0x80;
      assert.deepEqual(await both(tampered, k.ids), {
        code: "AGE_PAYLOAD",
        message: "payload authentication failed: the file was truncated, modified or corrupted",
      });
    }

    // The payload cut: inside the chunk, to less than a tag, to the nonce alone, inside the nonce.
    const cutInside = await both(file.subarray(0, file.length - 5), k.ids);
    assert.ok("code" in cutInside && cutInside.code === "AGE_PAYLOAD", JSON.stringify(cutInside));
    const cutTag = await both(file.subarray(0, h + 16 + 10), k.ids);
    assert.ok("code" in cutTag && cutTag.code === "AGE_PAYLOAD", JSON.stringify(cutTag));
    assert.deepEqual(await both(file.subarray(0, h + 16), k.ids), {
      code: "AGE_PAYLOAD",
      message: "payload is missing: the file is truncated",
    });
    const cutNonce = await both(file.subarray(0, h + 8), k.ids);
    assert.ok("code" in cutNonce && cutNonce.code === "AGE_HEADER", JSON.stringify(cutNonce));

    // Bytes after the one chunk: a second chunk would have to follow a full one.
    const trailing = await both(Buffer.concat([file, Buffer.alloc(20)]), k.ids);
    assert.ok("code" in trailing && trailing.code === "AGE_PAYLOAD", JSON.stringify(trailing));
  }
});

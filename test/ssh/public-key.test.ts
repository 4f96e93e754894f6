/**
 * ssh public key lines as age recipients, on keys made by the real `ssh-keygen`: parsing,
 * comment and fingerprint (against `ssh-keygen -l`), strictness, unsupported types and the
 * 2048-bit RSA minimum; and the bounds of the SSH wire reader.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { NixsealError } from "../../src/common/errors.js";
import { SshEd25519Recipient } from "../../src/ssh/ed25519.js";
import { looksLikeSshPublicKey, parseSshPublicKey, parseSshPublicKeyLine } from "../../src/ssh/public-key.js";
import { SshRsaRecipient } from "../../src/ssh/rsa.js";
import { encodeSshMpint, SshWireReader, SshWireWriter } from "../../src/ssh/wire.js";
import { isError } from "../helpers.js";

const HAVE_SSH_KEYGEN = spawnSync("ssh-keygen", ["-?"], { stdio: "ignore" }).error === undefined;

function run(cmd: string, args: string[]): Buffer {
  const r = spawnSync(cmd, args);
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

let dir = "";
let n = 0;
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "nixseal-sshpub-"));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function keygenPub(args: string[], comment = "user@host"): string {
  const file = path.join(dir, `k${n++}`);
  run("ssh-keygen", [...args, "-N", "", "-C", comment, "-f", file, "-q"]);
  return `${file}.pub`;
}

function b64(b: Uint8Array): string {
  return Buffer.from(b).toString("base64");
}

test("ssh-ed25519 and ssh-rsa lines: recipient, comment, bits and the fingerprint ssh-keygen -l prints", (t) => {
  if (!HAVE_SSH_KEYGEN) return t.skip("ssh-keygen not installed");
  for (const [args, type, bits] of [
    [["-t", "ed25519"], "ssh-ed25519", 256],
    [["-t", "rsa", "-b", "2048"], "ssh-rsa", 2048],
    [["-t", "rsa", "-b", "3072"], "ssh-rsa", 3072],
  ] as const) {
    const pubFile = keygenPub([...args], "alice@laptop with spaces");
    const line = fs.readFileSync(pubFile, "utf8");
    const k = parseSshPublicKeyLine(line);
    assert.equal(k.type, type);
    assert.equal(k.comment, "alice@laptop with spaces");
    assert.equal(k.bits, bits);
    // "256 SHA256:... comment (ED25519)"
    const printed = run("ssh-keygen", ["-l", "-E", "sha256", "-f", pubFile]).toString().split(" ");
    assert.equal(k.fingerprint, printed[1]);
    assert.equal(Number(printed[0]), bits);
    assert.ok(k.recipient instanceof (type === "ssh-ed25519" ? SshEd25519Recipient : SshRsaRecipient));
    assert.equal(String(parseSshPublicKey(line)), line.split(" ").slice(0, 2).join(" "));
    // Surrounding whitespace and no comment are fine.
    assert.equal(parseSshPublicKeyLine(`  ${line.split(" ").slice(0, 2).join("\t")}  \n`).comment, "");
    assert.ok(looksLikeSshPublicKey(line));
  }
});

test("the type in the text must be the type inside the key", (t) => {
  if (!HAVE_SSH_KEYGEN) return t.skip("ssh-keygen not installed");
  const ed = fs.readFileSync(keygenPub(["-t", "ed25519"]), "utf8").split(" ");
  assert.throws(
    () => parseSshPublicKey(`ssh-rsa ${ed[1]}`),
    isError("AGE_RECIPIENT", /says ssh-rsa but the key inside is ssh-ed25519/),
  );
});

test("unsupported ssh key types are refused with a hint naming the supported ones", (t) => {
  if (!HAVE_SSH_KEYGEN) return t.skip("ssh-keygen not installed");
  const lines = [fs.readFileSync(keygenPub(["-t", "ecdsa"]), "utf8")];
  try {
    lines.push(fs.readFileSync(keygenPub(["-t", "dsa"]), "utf8"));
  } catch {
    // ssh-keygen built without DSA.
  }
  const sk = new SshWireWriter()
    .string("sk-ssh-ed25519@openssh.com")
    .string(randomBytes(32))
    .string("ssh:")
    .finish();
  lines.push(`sk-ssh-ed25519@openssh.com ${b64(sk)} yubikey`);
  lines.push("ecdsa-sha2-nistp384");
  for (const line of lines) {
    assert.throws(
      () => parseSshPublicKey(line),
      isError("AGE_RECIPIENT", /unsupported ssh key type/, /age supports only ssh-ed25519 and ssh-rsa keys/),
      line,
    );
  }
  // An ssh-ed25519 line whose blob holds another type is not accepted as that type either.
  const ecBlob = fs.readFileSync(keygenPub(["-t", "ecdsa"]), "utf8").split(" ")[1];
  assert.throws(
    () => parseSshPublicKey(`ssh-ed25519 ${ecBlob}`),
    isError("AGE_RECIPIENT", /unsupported ssh key type/),
  );
});

test("RSA keys under 2048 bits are refused as age refuses them", (t) => {
  if (!HAVE_SSH_KEYGEN) return t.skip("ssh-keygen not installed");
  const line = fs.readFileSync(keygenPub(["-t", "rsa", "-b", "1024"]), "utf8");
  assert.throws(() => parseSshPublicKey(line), isError("AGE_RECIPIENT", /too small \(1024 bits\)/, /2048/));
});

test("malformed lines and blobs", () => {
  const edBlob = new SshWireWriter().string("ssh-ed25519").string(randomBytes(32)).finish();
  const valid = `ssh-ed25519 ${b64(edBlob)}`;
  // The crafted key is a point with probability ~1/2: find one that is, so the line parses.
  let good = valid;
  while (true) {
    try {
      parseSshPublicKey(good);
      break;
    } catch {
      good = `ssh-ed25519 ${b64(new SshWireWriter().string("ssh-ed25519").string(randomBytes(32)).finish())}`;
    }
  }
  const goodBlob = Buffer.from(good.split(" ")[1]!, "base64");
  const cases: [string, RegExp][] = [
    ["", /unknown key type/],
    ["ssh-ed25519", /expected a key type and a base64 key/],
    ["age1qqqq", /unknown key type/],
    ["ssh-ed25519 !!!!", /base64/],
    [`ssh-ed25519 ${b64(goodBlob).replace(/=+$/, "")}x`, /base64/],
    [`ssh-ed25519 ${b64(Buffer.concat([goodBlob, Buffer.of(0)]))}`, /trailing data/],
    [`ssh-ed25519 ${b64(goodBlob.subarray(0, goodBlob.length - 1))}`, /truncated|longer than/],
    [
      `ssh-ed25519 ${b64(new SshWireWriter().string("ssh-ed25519").string(randomBytes(31)).finish())}`,
      /not 32 bytes/,
    ],
    [
      `ssh-rsa ${b64(new SshWireWriter().string("ssh-rsa").string(Buffer.of(0x80)).string(Buffer.of(1)).finish())}`,
      /negative/,
    ],
    [`ssh-ed25519 ${b64(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]))}`, /longer than the data that is left/],
  ];
  for (const [line, pattern] of cases)
    assert.throws(() => parseSshPublicKey(line), isError("AGE_RECIPIENT", pattern), line);
});

test("SshWireReader never reads past the end; the writer writes canonical mpints", () => {
  const fail = (m: string) => new NixsealError("KEY_FORMAT", m, { hint: "x" });
  const r = new SshWireReader(Buffer.from([0, 0, 0, 5, 1, 2]), fail);
  assert.throws(
    () => r.readString("blob"),
    isError("KEY_FORMAT", /blob is longer than the data that is left/),
  );
  assert.throws(
    () => new SshWireReader(Buffer.from([0, 0, 1]), fail).readUint32(),
    isError("KEY_FORMAT", /truncated/),
  );
  assert.throws(
    () => new SshWireReader(Buffer.from([0, 0, 0, 1]), fail).readBytes(5),
    isError("KEY_FORMAT", /truncated/),
  );
  const w = new SshWireReader(
    new SshWireWriter()
      .string("abc")
      .mpint(Buffer.of(0, 0, 0x80, 1))
      .uint32(7)
      .finish(),
    fail,
  );
  assert.equal(w.readText(), "abc");
  assert.deepEqual(Buffer.from(w.readMpint()), Buffer.of(0x80, 1));
  assert.equal(w.readUint32(), 7);
  assert.ok(w.atEnd());
  // RFC 4251 section 5 examples.
  assert.equal(Buffer.from(encodeSshMpint(new Uint8Array(0))).toString("hex"), "00000000");
  assert.equal(
    Buffer.from(encodeSshMpint(Buffer.from("0009a378f9b2e332a7", "hex"))).toString("hex"),
    "0000000809a378f9b2e332a7",
  );
  assert.equal(Buffer.from(encodeSshMpint(Buffer.of(0x80))).toString("hex"), "000000020080");
});

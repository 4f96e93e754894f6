/**
 * Conformance: every C2SP CCTV age test vector (npm `cctv-age`). Each vector says what must
 * happen (success, or which class of failure) and the SHA-256 of every plaintext byte an
 * implementation may release before failing. Round trips as the vectors' README describes.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { inflateSync } from "node:zlib";
import * as vectors from "cctv-age";
import { encodeHeaderWithoutMac, encodeMacLine } from "../../src/age/format.js";
import {
  AgeDecryptor,
  ArmorDecoder,
  ArmorEncoder,
  decrypt,
  type Identity,
  looksArmored,
  PayloadEncryptor,
  parseHeader,
} from "../../src/age/index.js";
import { hkdfSha256 } from "../../src/age/primitives.js";
import { ScryptIdentity } from "../../src/age/scrypt.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseIdentityString } from "../../src/keys/key-types.js";

interface Vector {
  name: string;
  expect: string;
  payloadHash: string | undefined;
  fileKey: string | undefined;
  identities: string[];
  passphrases: string[];
  armored: boolean;
  file: Buffer;
}

function loadVectors(): Vector[] {
  const out: Vector[] = [];
  for (const [name, bytes] of Object.entries(vectors as unknown as Record<string, Uint8Array>)) {
    if (!(bytes instanceof Uint8Array)) continue;
    const buf = Buffer.from(bytes);
    const split = buf.indexOf("\n\n");
    const headers = buf.subarray(0, split).toString("utf8").split("\n");
    const v: Vector = {
      name,
      expect: "",
      payloadHash: undefined,
      fileKey: undefined,
      identities: [],
      passphrases: [],
      armored: false,
      file: buf.subarray(split + 2),
    };
    let compressed = false;
    for (const line of headers) {
      const i = line.indexOf(": ");
      const key = line.slice(0, i);
      const value = line.slice(i + 2);
      if (key === "expect") v.expect = value;
      else if (key === "payload") v.payloadHash = value;
      else if (key === "file key") v.fileKey = value;
      else if (key === "identity") v.identities.push(value);
      else if (key === "passphrase") v.passphrases.push(value);
      else if (key === "armored") v.armored = value === "yes";
      else if (key === "compressed") compressed = value === "zlib";
    }
    if (compressed) v.file = inflateSync(v.file);
    out.push(v);
  }
  return out;
}

const all = loadVectors();

const EXPECTED_CODES: Record<string, string[]> = {
  "header failure": ["AGE_HEADER", "AGE_STANZA"],
  "armor failure": ["AGE_ARMOR"],
  "no match": ["AGE_NO_MATCH"],
  "HMAC failure": ["AGE_HMAC"],
  "payload failure": ["AGE_PAYLOAD"],
};

function identitiesOf(v: Vector): Identity[] {
  return [
    ...v.identities.map((s) => parseIdentityString(s, `vector ${v.name}`)),
    ...v.passphrases.map((p) => new ScryptIdentity(Buffer.from(p, "utf8"))),
  ];
}

/** Decrypts in uneven pieces, to exercise the streaming paths; returns released plaintext. */
async function decryptVector(v: Vector): Promise<{ released: Buffer; error: unknown }> {
  const dec = new AgeDecryptor(identitiesOf(v));
  const out: Buffer[] = [];
  let error: unknown;
  try {
    for (let off = 0, step = 1; off < v.file.length; off += step, step = step * 3 + 7) {
      await dec.push(v.file.subarray(off, off + step), out);
    }
    await dec.finish(out);
  } catch (e) {
    error = e;
  }
  return { released: Buffer.concat(out), error };
}

test("the installed cctv-age package has the vectors", () => {
  assert.ok(all.length >= 100, `only ${all.length} vectors found`);
  assert.ok(all.some((v) => v.name.startsWith("hybrid")));
});

for (const v of all) {
  test(`cctv ${v.name} (${v.expect})`, async () => {
    const { released, error } = await decryptVector(v);
    const hash = createHash("sha256").update(released).digest("hex");
    if (v.expect === "success") {
      assert.equal(error, undefined, `unexpected error: ${(error as Error)?.message}`);
      assert.equal(hash, v.payloadHash);
      return;
    }
    assert.ok(error instanceof NixsealError, `expected a NixsealError, got ${String(error)}`);
    const codes = EXPECTED_CODES[v.expect];
    assert.ok(codes, `unknown expectation ${v.expect}`);
    assert.ok(codes.includes(error.code), `expected ${codes.join("|")}, got ${error.code}: ${error.message}`);
    assert.ok(error.hint, "every error carries a hint");
    if (v.expect === "payload failure") {
      assert.equal(hash, v.payloadHash, "plaintext released before the failure must match");
    } else {
      assert.equal(released.length, 0, "nothing is released before the payload");
    }
  });

  test(`cctv ${v.name} (${v.expect}) through the in-memory decrypt()`, async () => {
    // decrypt() has a fast path for small binary files: it must agree with the streaming one.
    let plain: Uint8Array | undefined;
    let error: unknown;
    try {
      plain = await decrypt(v.file, identitiesOf(v));
    } catch (e) {
      error = e;
    }
    if (v.expect === "success") {
      assert.equal(error, undefined, `unexpected error: ${(error as Error)?.message}`);
      assert.equal(createHash("sha256").update(plain!).digest("hex"), v.payloadHash);
      return;
    }
    assert.ok(error instanceof NixsealError, `expected a NixsealError, got ${String(error)}`);
    assert.ok(EXPECTED_CODES[v.expect]!.includes(error.code), `got ${error.code}: ${error.message}`);
  });
}

function unarmor(file: Buffer): Buffer {
  const parts: Buffer[] = [];
  const dec = new ArmorDecoder();
  dec.push(file, parts);
  dec.finish(parts);
  return Buffer.concat(parts);
}

test("armor round-trips: decode then encode gives the canonical form of every valid armored vector", () => {
  let n = 0;
  for (const v of all) {
    if (!v.armored || v.expect === "armor failure") continue;
    const binary = unarmor(v.file);
    const enc = new ArmorEncoder();
    const parts: Buffer[] = [];
    enc.push(binary, parts);
    enc.finish(parts);
    const reencoded = Buffer.concat(parts).toString("latin1");
    // The vectors may use CRLF and surrounding whitespace; the canonical form uses neither.
    const canonical = v.file.toString("latin1").replace(/\r\n/g, "\n").trim();
    assert.equal(reencoded, `${canonical}\n`, v.name);
    n++;
  }
  assert.ok(n >= 5, `only ${n} armored vectors round-tripped`);
});

test("header round-trips: every parseable header re-encodes to the same bytes", () => {
  let n = 0;
  for (const v of all) {
    if (v.expect === "header failure" || v.expect === "armor failure") continue;
    const bin = v.armored ? unarmor(v.file) : v.file;
    const h = parseHeader(bin);
    assert.ok(h, `${v.name}: header did not parse`);
    const encoded = Buffer.concat([encodeHeaderWithoutMac(h.stanzas), encodeMacLine(h.mac)]);
    assert.deepEqual(encoded, bin.subarray(0, h.length), v.name);
    n++;
  }
  assert.ok(n >= 50, `only ${n} headers round-tripped`);
});

test("STREAM round-trips: re-encrypting each success vector's payload with its file key gives the same bytes", async () => {
  let n = 0;
  for (const v of all) {
    if (v.expect !== "success" || v.fileKey === undefined) continue;
    const bin = v.armored ? unarmor(v.file) : v.file;
    const h = parseHeader(bin)!;
    const nonce = bin.subarray(h.length, h.length + 16);
    const { released } = await decryptVector(v);
    const enc = new PayloadEncryptor(hkdfSha256(Buffer.from(v.fileKey, "hex"), nonce, "payload"));
    const parts: Buffer[] = [];
    // Feed in odd-sized pieces so chunk boundaries fall inside pushes.
    for (let off = 0; off < released.length; off += 40_000)
      enc.push(released.subarray(off, off + 40_000), parts);
    enc.finish(parts);
    assert.deepEqual(Buffer.concat(parts), bin.subarray(h.length + 16), v.name);
    n++;
  }
  assert.ok(n >= 10, `only ${n} payloads round-tripped`);
});

test("armored detection matches the vectors' own flag", () => {
  for (const v of all) {
    if (v.expect === "armor failure") continue;
    assert.equal(looksArmored(v.file), v.armored, v.name);
  }
});

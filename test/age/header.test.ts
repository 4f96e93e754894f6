/**
 * The header API of src/age (extractHeader, decryptHeader, encryptHeader, verifyPayload,
 * fileKeyIdentity): a file the real age binary wrote gets a new header for other recipients
 * around its very payload bytes, and the real age binary decrypts the result; every damage the
 * steps must catch is caught.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import {
  decrypt,
  decryptHeader,
  encrypt,
  encryptHeader,
  extractHeader,
  fileKeyIdentity,
  verifyPayload,
} from "../../src/age/age.js";
import type { Identity } from "../../src/age/types.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import { tempDir, which } from "../helpers.js";

const AGE = which("age");

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

function isError(code: string, message: RegExp) {
  return (e: unknown) => e instanceof NixsealError && e.code === code && message.test(e.message);
}

function ageEncrypt(plaintext: string, recipient: string, armor: boolean): Buffer {
  const r = spawnSync(AGE!, [...(armor ? ["-a"] : []), "-r", recipient], { input: plaintext });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

function ageDecrypt(file: Uint8Array, identity: X25519Identity): string {
  const idFile = path.join(dir, `id-${Math.random().toString(36).slice(2)}.txt`);
  fs.writeFileSync(idFile, `${identity.encode()}\n`, { mode: 0o600 });
  const r = spawnSync(AGE!, ["-d", "-i", idFile], { input: file });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout.toString();
}

for (const armor of [false, true]) {
  test(`a new header around the same payload (${armor ? "armored" : "binary"} input from age)`, {
    skip: !AGE && "age not installed",
  }, async () => {
    const [alice, bob] = [X25519Identity.generate(), X25519Identity.generate()];
    const plaintext = "x".repeat(70_000); // two chunks
    const file = ageEncrypt(plaintext, alice.recipient().toString(), armor);

    const parts = extractHeader(file);
    assert.equal(parts.armored, armor);
    assert.deepEqual(
      parts.header.stanzas.map((s) => s.type),
      ["X25519"],
    );
    assert.equal(parts.binary.length, parts.header.length + parts.payload.length);

    await assert.rejects(decryptHeader(parts.header, [bob]), isError("AGE_NO_MATCH", /no identity matched/));
    const fileKey = await decryptHeader(parts.header, [alice]);
    assert.equal(fileKey.length, 16);
    verifyPayload(fileKey, parts.payload);

    const header = await encryptHeader(fileKey, [bob.recipient()]);
    const rewritten = Buffer.concat([header, parts.payload]);
    assert.equal(ageDecrypt(rewritten, bob), plaintext);
    // The same file key: the old payload's bytes are kept, and its key still opens the header.
    const again = extractHeader(rewritten);
    assert.ok(Buffer.from(again.payload).equals(Buffer.from(parts.payload)));
    assert.ok(Buffer.from(await decryptHeader(again.header, [fileKeyIdentity(fileKey)])).equals(fileKey));
  });
}

test("damage each step must catch", { skip: !AGE && "age not installed" }, async () => {
  const alice = X25519Identity.generate();
  const file = ageEncrypt("secret value", alice.recipient().toString(), false);
  const parts = extractHeader(file);
  const fileKey = await decryptHeader(parts.header, [alice]);

  // A file key that is not this file's: the header MAC says so.
  const other = new Uint8Array(16).fill(1);
  await assert.rejects(
    decryptHeader(parts.header, [fileKeyIdentity(other)]),
    isError("AGE_HMAC", /header MAC does not verify/),
  );
  await assert.rejects(
    decryptHeader(parts.header, [fileKeyIdentity(new Uint8Array(15))]),
    isError("AGE_STANZA", /wrong size/),
  );

  // The payload: a flipped byte, a cut, a missing nonce.
  const flipped = Buffer.from(parts.payload);
  flipped[flipped.length - 1]! ^= 1;
  assert.throws(() => verifyPayload(fileKey, flipped), isError("AGE_PAYLOAD", /authentication failed/));
  assert.throws(
    () => verifyPayload(fileKey, parts.payload.subarray(0, parts.payload.length - 5)),
    isError("AGE_PAYLOAD", /./),
  );
  assert.throws(
    () => verifyPayload(fileKey, parts.payload.subarray(0, 10)),
    isError("AGE_HEADER", /payload nonce is missing/),
  );

  // extractHeader: empty, not age, a cut header.
  assert.throws(() => extractHeader(new Uint8Array(0)), isError("AGE_HEADER", /empty/));
  assert.throws(() => extractHeader(Buffer.from("hello\n")), isError("AGE_HEADER", /not an age file/));
  assert.throws(
    () => extractHeader(file.subarray(0, parts.header.length - 3)),
    isError("AGE_HEADER", /truncated/),
  );
});

test("identities are tried in order, whether each answers at once or with a promise", async () => {
  const right = X25519Identity.generate();
  const other = X25519Identity.generate();
  const file = await encrypt(Buffer.from("the value"), [right.recipient()]);
  const calls: string[] = [];
  // The same key answering later (as a plugin or a key to unlock does), or counted when asked.
  const later = (id: Identity, description: string): Identity => ({
    description,
    unwrapFileKey: async (s) => {
      calls.push(description);
      return id.unwrapFileKey(s);
    },
  });
  const now = (id: Identity, description: string): Identity => ({
    description,
    unwrapFileKey: (s) => {
      calls.push(description);
      return id.unwrapFileKey(s);
    },
  });
  const cases: [Identity[], string[]][] = [
    [
      [now(other, "a"), later(right, "b"), now(right, "c")],
      ["a", "b"],
    ],
    [
      [later(other, "a"), now(right, "b"), later(right, "c")],
      ["a", "b"],
    ],
    [
      [later(other, "a"), later(other, "b"), now(right, "c")],
      ["a", "b", "c"],
    ],
    [[now(right, "a"), later(right, "b")], ["a"]],
  ];
  for (const [ids, asked] of cases) {
    calls.length = 0;
    assert.equal(Buffer.from(await decrypt(file, ids)).toString(), "the value");
    assert.deepEqual(calls, asked, "asked in order, and no further than the first that answers");
  }
  // None opens it, answering either way: each asked once, in order, and all named in the hint.
  calls.length = 0;
  await assert.rejects(
    decrypt(file, [now(other, "first"), later(other, "second"), now(other, "third")]),
    (e: unknown) =>
      e instanceof NixsealError &&
      e.code === "AGE_NO_MATCH" &&
      /tried: first; second; third;/.test(e.hint ?? ""),
  );
  assert.deepEqual(calls, ["first", "second", "third"]);
  // An identity's error comes out as it is, thrown or rejected; a key of the wrong size is refused.
  const boom = new NixsealError("AGE_IDENTITY", "boom");
  const failing: Identity[] = [
    {
      description: "throws",
      unwrapFileKey: () => {
        throw boom;
      },
    },
    { description: "rejects", unwrapFileKey: async () => Promise.reject(boom) },
  ];
  for (const bad of failing)
    await assert.rejects(decrypt(file, [now(other, "x"), bad, right]), (e) => e === boom);
  for (const short of [() => new Uint8Array(15), async () => new Uint8Array(15)]) {
    await assert.rejects(
      decrypt(file, [{ description: "short", unwrapFileKey: short }]),
      isError("AGE_STANZA", /wrong size/),
    );
  }
});

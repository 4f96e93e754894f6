/**
 * The value cipher on ENC[...] strings made here with node:crypto (as sops's aes/cipher.go makes
 * them), well-formed and not: every value decrypts to its plaintext, the base64 Go's decoder
 * accepts is accepted, and every malformed part is refused with the error that names it.
 */
import assert from "node:assert/strict";
import { createCipheriv, randomBytes } from "node:crypto";
import { test } from "node:test";
import { NixsealError } from "../../src/common/errors.js";
import { SopsComment } from "../../src/sops/tree.js";
import { ValueCipher } from "../../src/sops/value-cipher.js";

const key = randomBytes(32);

/** A value as sops writes it: AES-256-GCM, a 32-byte IV, the path as additional data. */
function sopsValue(plain: string, aad: string, type = "str", iv = randomBytes(32)): string {
  const c = createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(Buffer.from(aad, "utf8"));
  const data = Buffer.concat([c.update(plain, "utf8"), c.final()]);
  const b64 = (b: Buffer) => b.toString("base64");
  return `ENC[AES256_GCM,data:${b64(data)},iv:${b64(iv)},tag:${b64(c.getAuthTag())},type:${type}]`;
}

function refusedWith(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof NixsealError, String(e));
    assert.equal(e.code, "SOPS_DECRYPT");
    assert.match(e.message, pattern);
    return true;
  };
}

/** Where the part after `from` (up to the next `,` or `]`) is in `s`. */
function partRange(s: string, from: string): [number, number] {
  const start = s.indexOf(from) + from.length;
  return [start, start + s.slice(start).search(/[,\]]/)];
}

function partOf(s: string, from: string): string {
  return s.slice(...partRange(s, from));
}

/** `s` with the part after `from` replaced. */
function withPart(s: string, from: string, part: string): string {
  const [start, end] = partRange(s, from);
  return s.slice(0, start) + part + s.slice(end);
}

test("values of every length, paths with non-ASCII keys, and many values in a row decrypt", () => {
  const cipher = new ValueCipher(key, false);
  for (let n = 0; n < 70; n++) {
    const plain = "x".repeat(n) + (n % 3 === 0 ? "é✓" : "");
    const aad = `svc_${n}:ключ:`;
    const s = sopsValue(plain, aad);
    assert.equal(cipher.decrypt(s, aad), plain);
  }
  // IVs of other lengths than sops's 32 bytes are read too (sops decrypts what is stored),
  // between values with 32-byte ones.
  for (const n of [12, 31, 32, 33, 48, 1]) {
    assert.equal(cipher.decrypt(sopsValue(`iv of ${n}`, "a:", "str", randomBytes(n)), "a:"), `iv of ${n}`);
    assert.equal(cipher.decrypt(sopsValue("iv of 32", "b:"), "b:"), "iv of 32");
  }
  const c = cipher.decrypt(sopsValue(" a comment", ":", "comment"), ":");
  assert.ok(c instanceof SopsComment);
  assert.equal(c.value, " a comment");
});

test("base64 with non-zero bits after the last byte decodes as Go's StdEncoding does", () => {
  const cipher = new ValueCipher(key, false);
  // 16-byte tag: 24 characters, the last group `xx==`; its second character's low 4 bits are
  // below the last byte. Go's (non-strict) decoder, and so sops, ignores them.
  const s = sopsValue("secret", "k:");
  const tag = partOf(s, ",tag:");
  assert.match(tag, /==$/);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const last = alphabet.indexOf(tag[21]!);
  const loose = tag.slice(0, 21) + alphabet[last | 0x0f] + tag.slice(22);
  assert.notEqual(loose, tag);
  assert.equal(cipher.decrypt(withPart(s, ",tag:", loose), "k:"), "secret");
});

test("malformed parts are refused and named; a wrong path fails authentication", () => {
  const cipher = new ValueCipher(key, false);
  const s = sopsValue("secret value", "db:password:");
  const data = partOf(s, "data:");
  const iv = partOf(s, ",iv:");
  const tag = partOf(s, ",tag:");
  const cases: [string, RegExp][] = [
    [withPart(s, ",tag:", tag.replace("==", "=A")), /malformed tag/],
    [withPart(s, ",tag:", `${tag.slice(0, -2)}-_`), /malformed tag/],
    [withPart(s, ",tag:", tag.slice(0, -1)), /malformed tag/],
    [withPart(s, ",tag:", Buffer.alloc(15).toString("base64")), /bad iv or tag length/],
    [withPart(s, ",iv:", iv.slice(4)), /authentication failed/],
    [withPart(s, ",iv:", `${iv.slice(0, 4)}=${iv.slice(5)}`), /malformed iv/],
    [withPart(s, ",iv:", `${iv}====`), /malformed iv/],
    [withPart(s, "data:", `${data.slice(0, 4)} ${data.slice(5)}`), /malformed data/],
    [withPart(s, "data:", ""), /not in sops's ENC\[AES256_GCM,\.\.\.\] format/],
    [s.replace("ENC[AES256_GCM,", "ENC[AES128_GCM,"), /not in sops's ENC/],
    [s.replace(",type:str]", ",type:str"), /not in sops's ENC/],
    [s.replace(",type:str]", ",type:STR]"), /unknown type "STR"/],
  ];
  for (const [bad, pattern] of cases) {
    assert.throws(() => cipher.decrypt(bad, "db:password:"), refusedWith(pattern), bad);
  }
  assert.throws(() => cipher.decrypt(s, "db:pass:"), refusedWith(/"db:pass" does not decrypt/));
  // The value itself still decrypts after all of these (nothing of them was kept).
  assert.equal(cipher.decrypt(s, "db:password:"), "secret value");
});

test("text after the closing bracket is ignored, as sops's regular expression ignores it", () => {
  const cipher = new ValueCipher(key, false);
  const s = sopsValue("v", "k:");
  assert.equal(cipher.decrypt(`${s} trailing`, "k:"), "v");
});

test("the IVs remembered for re-encryption are the values' own, not a buffer used again", () => {
  const cipher = new ValueCipher(key);
  const ivA = randomBytes(32);
  const ivB = randomBytes(32);
  const a = sopsValue("same", "a:", "str", ivA);
  const b = sopsValue("other", "b:", "str", ivB);
  assert.equal(cipher.decrypt(a, "a:"), "same");
  assert.equal(cipher.decrypt(b, "b:"), "other");
  // Unchanged values encrypt to the very strings they were read from.
  assert.equal(cipher.encrypt("same", "a:"), a);
  assert.equal(cipher.encrypt("other", "b:"), b);
});

test("a value read in a non-canonical form is written back in the canonical one, with its own IV", () => {
  const cipher = new ValueCipher(key);
  const s = sopsValue("secret", "k:");
  const tag = partOf(s, ",tag:");
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const loose = withPart(
    s,
    ",tag:",
    tag.slice(0, 21) + alphabet[alphabet.indexOf(tag[21]!) | 0x0f] + tag.slice(22),
  );
  assert.notEqual(loose, s);
  assert.equal(cipher.decrypt(loose, "k:"), "secret");
  // Not the string read (encrypt never writes that form), but the same IV, ciphertext and tag.
  assert.equal(cipher.encrypt("secret", "k:"), s);
});

test("only an unchanged value keeps its string: a new value, another path or another type is encrypted anew", () => {
  const cipher = new ValueCipher(key);
  const s = sopsValue("5", "a:");
  assert.equal(cipher.decrypt(s, "a:"), "5");
  const fresh = (out: string) => {
    assert.notEqual(out, s);
    assert.notEqual(partOf(out, ",iv:"), partOf(s, ",iv:"));
  };
  const changed = cipher.encrypt("6", "a:");
  fresh(changed);
  const moved = cipher.encrypt("5", "b:");
  fresh(moved);
  const asInt = cipher.encrypt(5n, "a:");
  fresh(asInt);
  assert.match(asInt, /,type:int\]$/);
  const reader = new ValueCipher(key, false);
  assert.equal(reader.decrypt(changed, "a:"), "6");
  assert.equal(reader.decrypt(moved, "b:"), "5");
  assert.equal(reader.decrypt(asInt, "a:"), 5n);
  // And the unchanged one, still.
  assert.equal(cipher.encrypt("5", "a:"), s);
});

test("a value whose plaintext is not the one it would be written with is encrypted anew", () => {
  const cipher = new ValueCipher(key);
  // A float written "1.50" reads as 1.5, which encrypt() writes as "1.5"; bytes that are not
  // UTF-8 read as U+FFFD, which is written as its UTF-8 encoding.
  const float = sopsValue("1.50", "f:", "float");
  assert.equal(cipher.decrypt(float, "f:"), 1.5);
  const iv = randomBytes(32);
  const c = createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(Buffer.from("s:", "utf8"));
  const data = Buffer.concat([c.update(Buffer.of(0xff)), c.final()]);
  const notUtf8 = `ENC[AES256_GCM,data:${data.toString("base64")},iv:${iv.toString("base64")},tag:${c.getAuthTag().toString("base64")},type:str]`;
  assert.equal(cipher.decrypt(notUtf8, "s:"), "\uFFFD");
  const reader = new ValueCipher(key, false);
  const floatOut = cipher.encrypt(1.5, "f:");
  assert.notEqual(floatOut, float);
  assert.equal(Buffer.from(partOf(floatOut, "data:"), "base64").length, 3); // "1.5"
  assert.equal(reader.decrypt(floatOut, "f:"), 1.5);
  const textOut = cipher.encrypt("\uFFFD", "s:");
  assert.notEqual(textOut, notUtf8);
  assert.equal(Buffer.from(partOf(textOut, "data:"), "base64").length, 3); // EF BF BD
  assert.equal(reader.decrypt(textOut, "s:"), "\uFFFD");
});

test("values that share a path (list items, comments) each keep their own string", () => {
  const cipher = new ValueCipher(key);
  const items = ["a", "b", "c"].map((v) => sopsValue(v, "list:"));
  const comments = [" one", " two"].map((v) => sopsValue(v, "", "comment"));
  for (const [i, s] of items.entries()) assert.equal(cipher.decrypt(s, "list:"), ["a", "b", "c"][i]);
  for (const s of comments) assert.ok(cipher.decrypt(s, "") instanceof SopsComment);
  assert.deepEqual(
    ["a", "b", "c"].map((v) => cipher.encrypt(v, "list:")),
    items,
  );
  assert.deepEqual(
    [" one", " two"].map((v) => cipher.encrypt(new SopsComment(v), "")),
    comments,
  );
  // The same text as a value at the comments' path is another value: encrypted anew.
  assert.notEqual(cipher.encrypt(" one", ""), comments[0]);
});

/**
 * Strict unpadded base64 (age spec: "decoders MUST reject non-canonical encodings and encodings
 * ending with padding"), against Node's own encoder: a string is accepted exactly when encoding
 * what it decodes to gives the string back.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeBase64NoPad, isCanonicalPaddedBase64 } from "../../src/common/base64.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

test("every last group of 2 and 3 characters: accepted exactly when canonical, decoded as Node decodes it", () => {
  let accepted = 0;
  for (const prefix of ["", "AAAA", "zz+/"]) {
    for (const a of ALPHABET) {
      for (const b of ALPHABET) {
        for (const tail of ["", ...ALPHABET]) {
          const s = prefix + a + b + tail;
          const bytes = Buffer.from(s, "base64");
          const canonical = bytes.toString("base64").replace(/=+$/, "") === s;
          const got = decodeBase64NoPad(s);
          if (!canonical) {
            assert.equal(got, null, s);
            continue;
          }
          assert.ok(got !== null, s);
          assert.deepEqual(Buffer.from(got), bytes, s);
          accepted++;
        }
      }
    }
  }
  // 2 characters: 64 × 4 canonical (4 unused bits), 3: 64 × 64 × 16 (2 unused bits).
  assert.equal(accepted, 3 * (64 * 4 + 64 * 64 * 16));
});

test("padding, a length of 4n+1, and characters outside the alphabet are refused", () => {
  for (const s of ["AA==", "AAA=", "AAAAA", "A", "AA-A", "AA_A", "AA A", "AA\nA", "AAé"])
    assert.equal(decodeBase64NoPad(s), null, JSON.stringify(s));
  assert.deepEqual(decodeBase64NoPad(""), new Uint8Array(0));
  assert.deepEqual(Buffer.from(decodeBase64NoPad("AAEC")!), Buffer.of(0, 1, 2));
});

test("padded base64: every last group of 2 and 3 characters is called canonical exactly when Node encodes its bytes so", () => {
  let canonicalCount = 0;
  for (const prefix of ["", "AAAA", "zz+/"]) {
    for (const a of ALPHABET) {
      for (const b of ALPHABET) {
        for (const tail of ["", ...ALPHABET]) {
          const s = `${prefix}${a}${b}${tail}${tail === "" ? "==" : "="}`;
          const canonical = Buffer.from(s, "base64").toString("base64") === s;
          assert.equal(isCanonicalPaddedBase64(s), canonical, s);
          if (canonical) canonicalCount++;
        }
      }
    }
  }
  assert.equal(canonicalCount, 3 * (64 * 4 + 64 * 64 * 16));
  // Without padding every string of whole groups is canonical.
  for (const s of ["", "AAAA", "zz+/AAEC"]) assert.equal(isCanonicalPaddedBase64(s), true, s);
});

/**
 * The MAC's accumulator: SHA-512 over every leaf's bytes in document order (sops.go ToBytes),
 * computed here leaf by leaf with node:crypto, against values whose UTF-8 would change if
 * neighbouring strings were hashed as one (lone surrogates at their ends).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { MacAccumulator } from "../../src/sops/mac.js";

/** What sops computes: each leaf's bytes in turn (strings as UTF-8, an int in decimal). */
function expected(leaves: (string | bigint)[]): string {
  const h = createHash("sha512");
  for (const l of leaves) h.update(Buffer.from(typeof l === "string" ? l : l.toString(), "utf8"));
  return h.digest("hex").toUpperCase();
}

test("the MAC of many values is each value's bytes in turn, lone surrogates at the ends included", () => {
  const leaves: (string | bigint)[] = [];
  for (let i = 0; i < 500; i++) leaves.push(`value ${i} ✓`);
  leaves.push("ends high \ud83d", "\ude00 starts low", "", "\ud83d", "\ude00", 42n, "after an int", "x");
  for (let i = 0; i < 10; i++) leaves.push(i % 2 === 0 ? "a\ud800" : "\udc00b");
  const mac = new MacAccumulator(false);
  for (const l of leaves) mac.add(l);
  const got = mac.hex();
  assert.equal(got, expected(leaves));
  // Hashed as one string, the pairs would be one code point: a different MAC.
  assert.notEqual(got, createHash("sha512").update(leaves.join(""), "utf8").digest("hex").toUpperCase());
});

test("the MAC of values hashed in batches across the batch size (a megabyte of characters) is still each value's bytes in turn", () => {
  const leaves: (string | bigint)[] = [];
  // ~3 MB of text in values of uneven sizes, ints between them, lone surrogates at some ends.
  for (let i = 0; i < 3000; i++) {
    leaves.push(`${"é✓x".repeat(i % 700)}${i}`);
    if (i % 97 === 0) leaves.push(BigInt(i));
    if (i % 251 === 0) leaves.push("end \ud83d", "\ude00 start");
  }
  const mac = new MacAccumulator(false);
  for (const l of leaves) mac.add(l);
  assert.equal(mac.hex(), expected(leaves));
});

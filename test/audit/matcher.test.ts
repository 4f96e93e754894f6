/**
 * The multi-pattern matcher against a naive indexOf oracle: random patterns inserted at random
 * offsets into random data, fed in random chunk sizes, must give exactly the oracle's matches.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Matcher } from "../../src/audit/matcher.js";
import { prng } from "../helpers.js";

type Match = { patternId: number; offset: number };

function oracle(data: Buffer, patterns: readonly Uint8Array[]): Match[] {
  const out: Match[] = [];
  patterns.forEach((p, patternId) => {
    for (let at = data.indexOf(p); at >= 0; at = data.indexOf(p, at + 1)) out.push({ patternId, offset: at });
  });
  return sorted(out);
}

function sorted(ms: Match[]): Match[] {
  return [...ms].sort((a, b) => a.offset - b.offset || a.patternId - b.patternId);
}

/** Feeds `data` to a scanner in random chunk sizes (1 byte up to 3× the longest pattern, or big). */
function scanInChunks(m: Matcher, data: Uint8Array, rand: () => number, chunkSize: number): Match[] {
  const out: Match[] = [];
  const s = m.scanner((patternId, offset) => out.push({ patternId, offset }), chunkSize);
  let at = 0;
  while (at < data.length) {
    const space = s.space();
    const want = rand() < 0.3 ? 1 + Math.floor(rand() * 3) : 1 + Math.floor(rand() * space.length);
    const n = Math.min(want, space.length, data.length - at);
    space.set(data.subarray(at, at + n));
    s.commit(n);
    at += n;
  }
  s.finish();
  assert.equal(s.position, data.length);
  return sorted(out);
}

function randomBytes(rand: () => number, n: number, alphabet: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * alphabet) + (alphabet < 256 ? 0x61 : 0);
  return out;
}

for (const [label, minLen, maxLen] of [
  ["fast path (patterns >= 7 bytes)", 7, 60],
  ["slow path (patterns from 1 byte)", 1, 12],
  ["slow path (patterns from 5 bytes)", 5, 30],
] as const) {
  test(`matcher: ${label}: random inserts in random data equal the indexOf oracle`, () => {
    for (let seed = 1; seed <= 60; seed++) {
      const rand = prng(seed * 7919 + minLen);
      // A small alphabet makes partial matches and accidental full matches common.
      const alphabet = seed % 3 === 0 ? 256 : seed % 3 === 1 ? 4 : 26;
      const count = 1 + Math.floor(rand() * 40);
      const patterns: Uint8Array[] = [];
      for (let i = 0; i < count; i++) {
        // The first pattern has the minimum length, so the path under test is the one taken.
        const n = i === 0 ? minLen : minLen + Math.floor(rand() * (maxLen - minLen + 1));
        patterns.push(randomBytes(rand, n, alphabet));
      }
      const data = Buffer.from(randomBytes(rand, Math.floor(rand() * 20000), alphabet));
      const inserts = Math.floor(rand() * 30);
      for (let i = 0; i < inserts && data.length > 0; i++) {
        const p = patterns[Math.floor(rand() * patterns.length)]!;
        const at = Math.floor(rand() * data.length);
        data.set(p.subarray(0, Math.min(p.length, data.length - at)), at);
      }
      const m = new Matcher(patterns.map((p) => Uint8Array.from(p)));
      assert.equal(m.fast, minLen >= 7);
      const chunk = rand() < 0.5 ? 16 : 4096;
      const want = oracle(data, patterns);
      assert.deepEqual(scanInChunks(m, data, rand, chunk), want, `seed ${seed}`);
      assert.deepEqual(sorted(m.matchAll(data)), want, `seed ${seed} (one buffer)`);
    }
  });
}

test("matcher: an occurrence straddling every possible chunk boundary is found once, at its offset", () => {
  const rand = prng(42);
  const pattern = randomBytes(rand, 23, 256);
  const m = new Matcher([Uint8Array.from(pattern)]);
  for (let at = 0; at < 40; at++) {
    const data = new Uint8Array(80).fill(0x20);
    data.set(pattern, at);
    for (let cut = 1; cut < 80; cut++) {
      const out: Match[] = [];
      const s = m.scanner((patternId, offset) => out.push({ patternId, offset }), 64);
      s.push(data.subarray(0, cut));
      s.push(data.subarray(cut));
      s.finish();
      assert.deepEqual(out, [{ patternId: 0, offset: at }], `at ${at}, cut ${cut}`);
    }
  }
});

test("matcher: data without the patterns reports nothing; a pattern at the very end is found", () => {
  const rand = prng(7);
  const patterns = Array.from({ length: 1000 }, () => randomBytes(rand, 8 + Math.floor(rand() * 40), 256));
  const m = new Matcher(patterns.map((p) => Uint8Array.from(p)));
  // Text-like data of bytes no pattern (all >= 0x80 here) contains.
  const data = Buffer.alloc(1 << 20);
  for (let i = 0; i < data.length; i++) data[i] = 0x20 + Math.floor(rand() * 0x5f);
  const ps = patterns.filter((p) => p.every((b) => b >= 0x80));
  assert.ok(ps.length === 0 || oracle(data, ps).length === 0);
  const clean = new Matcher(
    Array.from({ length: 500 }, () => randomBytes(rand, 12, 256).map((b) => b | 0x80)),
  );
  assert.deepEqual(clean.matchAll(data), []);
  const last = patterns[999]!;
  data.set(last, data.length - last.length);
  const found = m.matchAll(data).filter((x) => x.patternId === 999);
  assert.deepEqual(found, [{ patternId: 999, offset: data.length - last.length }]);
});

test("matcher: identical windows in many patterns, overlapping and repeated occurrences", () => {
  const enc = new TextEncoder();
  const patterns = ["sk_live_AAAAAAAA", "sk_live_AAAAAAAB", "sk_live_", "live_AAAAAAAAA", "AAAAAAAA"].map(
    (s) => enc.encode(s),
  );
  const data = Buffer.from("xx sk_live_AAAAAAAAAAAAA sk_live_AAAAAAAB sk_live_AAAAAAAA");
  const m = new Matcher(patterns.map((p) => Uint8Array.from(p)));
  const rand = prng(3);
  for (let i = 0; i < 20; i++) assert.deepEqual(scanInChunks(m, data, rand, 16), oracle(data, patterns));
});

test("matcher: dispose zeroes the patterns", () => {
  const p = new TextEncoder().encode("hunter2hunter2");
  const m = new Matcher([p]);
  m.dispose();
  assert.ok(p.every((b) => b === 0));
});

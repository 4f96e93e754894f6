/**
 * Property tests: random mutations of valid age files (bit flips, truncations, insertions,
 * deletions, armor re-wrapping) never produce anything but a clean NixsealError — no crash, no
 * foreign exception, and never a wrong plaintext. Seeded: a failure prints its seed.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { loadMlKem } from "../../src/age/hybrid.js";
import { decrypt, encrypt, HybridIdentity, type Identity, X25519Identity } from "../../src/age/index.js";
import { ScryptIdentity, ScryptRecipient } from "../../src/age/scrypt.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseIdentityString, parseRecipientString } from "../../src/keys/key-types.js";
import { prng } from "../helpers.js";

const ITERATIONS = Number(process.env.NIXSEAL_FUZZ_ITERATIONS ?? 1500);

function mutate(data: Uint8Array, rand: () => number): Uint8Array {
  const b = Buffer.from(data);
  const pick = (n: number) => Math.floor(rand() * n);
  switch (pick(6)) {
    case 0: {
      // flip 1-3 bits
      const n = 1 + pick(3);
      for (let i = 0; i < n; i++) b[pick(b.length)]! ^= 1 << pick(8);
      return b;
    }
    case 1:
      return b.subarray(0, pick(b.length));
    case 2: {
      const at = pick(b.length + 1);
      return Buffer.concat([b.subarray(0, at), randomBytesFrom(rand, 1 + pick(40)), b.subarray(at)]);
    }
    case 3: {
      const at = pick(b.length);
      return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + pick(20))]);
    }
    case 4: {
      // a byte set to a header-significant character
      const chars = [0x0a, 0x20, 0x2d, 0x3e, 0x3d, 0x0d, 0x00, 0x41];
      b[pick(b.length)] = chars[pick(chars.length)]!;
      return b;
    }
    default: {
      // duplicate a slice (e.g. a stanza line, a chunk)
      const from = pick(b.length);
      const len = 1 + pick(200);
      const at = pick(b.length);
      return Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
    }
  }
}

function randomBytesFrom(rand: () => number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

test("random mutations of valid files only ever fail with a NixsealError, never with a wrong plaintext", async () => {
  const x = X25519Identity.generate();
  await loadMlKem();
  const pq = HybridIdentity.generate();
  const pass = Buffer.from("fuzz passphrase");
  const samples: { name: string; file: Uint8Array; plain: Uint8Array; ids: Identity[] }[] = [];
  for (const [size, armor] of [
    [0, false],
    [100, false],
    [100, true],
    [70_000, false],
    [131_072, true],
  ] as const) {
    const plain = randomBytes(size);
    samples.push({
      name: `x25519-${size}-${armor}`,
      file: await encrypt(plain, [x.recipient()], { armor }),
      plain,
      ids: [x],
    });
  }
  const small = randomBytes(50);
  samples.push({ name: "hybrid", file: await encrypt(small, [pq.recipient()]), plain: small, ids: [pq] });
  samples.push({
    name: "scrypt",
    file: await encrypt(small, [new ScryptRecipient(pass, 2)]),
    plain: small,
    ids: [new ScryptIdentity(pass)],
  });

  const seed = Number(process.env.NIXSEAL_FUZZ_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  const counts = new Map<string, number>();
  for (let i = 0; i < ITERATIONS; i++) {
    const s = samples[i % samples.length]!;
    const mutated = mutate(s.file, rand);
    try {
      const out = await decrypt(mutated, s.ids);
      // Success is only acceptable if the plaintext is exactly the original one (e.g. armor
      // whitespace after the block was mutated), never a different one.
      assert.deepEqual(Buffer.from(out), Buffer.from(s.plain), `seed ${seed} iteration ${i} (${s.name})`);
      counts.set("unchanged", (counts.get("unchanged") ?? 0) + 1);
    } catch (e) {
      if (!(e instanceof NixsealError)) {
        assert.fail(
          `seed ${seed} iteration ${i} (${s.name}): not a NixsealError: ${(e as Error)?.stack ?? e}`,
        );
      }
      assert.ok(e.hint, `seed ${seed} iteration ${i}: error without a hint: ${e.message}`);
      counts.set(e.code, (counts.get(e.code) ?? 0) + 1);
    }
  }
  // The mutations must reach the different layers, or this test proves little.
  for (const code of ["AGE_HEADER", "AGE_PAYLOAD", "AGE_HMAC"]) {
    assert.ok((counts.get(code) ?? 0) > 0, `no ${code} seen in ${ITERATIONS} mutations (seed ${seed})`);
  }
});

test("random mutations of key strings give NixsealErrors that never echo the secret", () => {
  const secret = X25519Identity.generate().encode();
  const pqSecret = HybridIdentity.generate().encode();
  const recipient = X25519Identity.generate().recipient().toString();
  const seed = Number(process.env.NIXSEAL_FUZZ_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  for (let i = 0; i < 500; i++) {
    for (const [s, isSecret] of [
      [secret, true],
      [pqSecret, true],
      [recipient, false],
    ] as const) {
      const m = Buffer.from(mutate(Buffer.from(s), rand)).toString("latin1");
      try {
        if (isSecret) parseIdentityString(m, "fuzz");
        else parseRecipientString(m, "fuzz");
      } catch (e) {
        assert.ok(e instanceof NixsealError, `seed ${seed}: ${(e as Error)?.stack}`);
        if (isSecret) assert.ok(!e.message.includes(s.slice(20, 40)), `seed ${seed}: message echoes the key`);
      }
    }
  }
});

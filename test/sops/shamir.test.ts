import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { test } from "node:test";
import { isNixsealError } from "../../src/common/errors.js";
import { combine, gfDiv, gfInverse, gfMul, shareIndex, split } from "../../src/sops/shamir.js";

/**
 * An independent GF(2^8) multiply for the tests: schoolbook carry-less product of the two
 * polynomials, then reduction modulo X^8+X^4+X^3+X+1 (0x11b) from the top bit down. It shares no
 * code or method with src/sops/shamir.ts (which works bit by bit with a running reduction).
 */
function refMul(a: number, b: number): number {
  let p = 0;
  for (let i = 0; i < 8; i++) if ((b >> i) & 1) p ^= a << i;
  for (let bit = 14; bit >= 8; bit--) if ((p >> bit) & 1) p ^= 0x11b << (bit - 8);
  return p;
}

/** Evaluates sum c_k x^k with the reference multiply (no Horner). */
function refEval(coefficients: number[], x: number): number {
  let y = 0;
  let xPow = 1;
  for (const c of coefficients) {
    y ^= refMul(c, xPow);
    xPow = refMul(xPow, x);
  }
  return y;
}

/** Shares as sops encodes them, built from fixed polynomials (one per secret byte). */
function sharesFromPolynomials(polys: number[][], xs: number[]): Uint8Array[] {
  return xs.map((x) => Uint8Array.from([...polys.map((p) => refEval(p, x)), x]));
}

function expectShamirError(f: () => unknown, message: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(isNixsealError(e), `not a NixsealError: ${String(e)}`);
    assert.equal(e.code, "SOPS_SHAMIR");
    assert.match(e.message, message);
    assert.ok(e.hint && e.hint.length > 0, "error without a hint");
    return true;
  });
}

function* subsets<T>(items: T[], k: number, start = 0, acc: T[] = []): Generator<T[]> {
  if (acc.length === k) {
    yield [...acc];
    return;
  }
  for (let i = start; i < items.length; i++) {
    acc.push(items[i]!);
    yield* subsets(items, k, i + 1, acc);
    acc.pop();
  }
}

test("field: the known answers of sops' shamir_test.go", () => {
  assert.equal(gfMul(3, 7), 9);
  assert.equal(gfMul(3, 0), 0);
  assert.equal(gfMul(0, 3), 0);
  assert.equal(gfDiv(0, 7), 0);
  assert.equal(gfDiv(3, 3), 1);
  assert.equal(gfDiv(6, 3), 2);
  // The AES field's textbook example (FIPS-197 section 4.2): {57} x {83} = {c1}.
  assert.equal(gfMul(0x57, 0x83), 0xc1);
});

test("field: gfMul equals the reference product for all 65536 pairs; div inverts mul", () => {
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) {
      assert.equal(gfMul(a, b), refMul(a, b), `${a} * ${b}`);
      if (b !== 0) assert.equal(gfDiv(gfMul(a, b), b), a, `(${a} * ${b}) / ${b}`);
    }
  }
  assert.equal(gfInverse(0), 0);
  for (let a = 1; a < 256; a++) assert.equal(gfMul(a, gfInverse(a)), 1, `inverse of ${a}`);
  assert.throws(() => gfDiv(1, 0));
});

test("field: same field as the exp/log tables of older sops/Vault (generator 0xe5)", () => {
  // The first entries of logTable in sops' former shamir/tables.go (from samiam.org/galois.html):
  // logTable[x] = log_0xe5(x). Check 0xe5^logTable[x] == x with the reference multiply.
  const vaultLogTable = [
    0x00, 0xff, 0xc8, 0x08, 0x91, 0x10, 0xd0, 0x36, 0x5a, 0x3e, 0xd8, 0x43, 0x99, 0x77, 0xfe, 0x18,
  ];
  const exp: number[] = [1];
  for (let i = 1; i < 255; i++) exp.push(refMul(exp[i - 1]!, 0xe5));
  assert.equal(new Set(exp).size, 255, "0xe5 generates the multiplicative group");
  for (let x = 1; x < vaultLogTable.length; x++) {
    assert.equal(exp[vaultLogTable[x]! % 255], x, `0xe5^${vaultLogTable[x]} should be ${x}`);
  }
  // Table multiplication as Vault did it, against ours, for every pair.
  const log = new Array<number>(256).fill(0);
  exp.forEach((v, i) => {
    log[v] = i;
  });
  for (let a = 1; a < 256; a++) {
    for (let b = 1; b < 256; b++) assert.equal(gfMul(a, b), exp[(log[a]! + log[b]!) % 255]);
  }
});

test("combine: hand-computed shares (threshold 2, polynomial 0x2a + 3x)", () => {
  // y(x) = 0x2a ^ 3*x: x=2 -> 3*2 = 6 -> 0x2c; x=3 -> 3*3 = (X+1)^2 = X^2+1 = 5 -> 0x2f.
  const s2 = Uint8Array.from([0x2c, 2]);
  const s3 = Uint8Array.from([0x2f, 3]);
  assert.deepEqual(combine([s2, s3]), Uint8Array.from([0x2a]));
  assert.deepEqual(combine([s3, s2]), Uint8Array.from([0x2a]));
  // y(x) = 0x2a ^ x at x = 1, 2: 0x2b, 0x28.
  assert.deepEqual(
    combine([Uint8Array.from([0x2b, 1]), Uint8Array.from([0x28, 2])]),
    Uint8Array.from([0x2a]),
  );
});

test("combine: shares evaluated from fixed polynomials recover the constant terms", () => {
  // 4-byte secret "test" (sops' own test secret), threshold 3, 5 parts, fixed coefficients.
  const secret = [0x74, 0x65, 0x73, 0x74];
  const polys = secret.map((s, i) => [s, (0x11 * (i + 1)) & 0xff, (0xa5 + i) & 0xff]);
  const shares = sharesFromPolynomials(polys, [1, 2, 3, 4, 5]);
  for (const subset of subsets(shares, 3)) assert.deepEqual(combine(subset), Uint8Array.from(secret));
  for (const subset of subsets(shares, 4)) assert.deepEqual(combine(subset), Uint8Array.from(secret));
  assert.deepEqual(combine(shares), Uint8Array.from(secret));
  // Two shares of a degree-2 polynomial give a different value (the line through them).
  for (const subset of subsets(shares, 2)) assert.notDeepEqual(combine(subset), Uint8Array.from(secret));
});

test("split: share layout is y-values then the x-coordinate 1..parts", () => {
  const secret = randomBytes(32);
  const shares = split(secret, 5, 3);
  assert.equal(shares.length, 5);
  shares.forEach((s, i) => {
    assert.equal(s.length, 33);
    assert.equal(shareIndex(s), i + 1);
    assert.equal(s[32], i + 1);
  });
  // Each byte column lies on a polynomial of degree <= 2 whose value at 0 is the secret byte:
  // Lagrange through shares 1,2,3 must predict shares 4 and 5, checked with the reference field.
  for (let j = 0; j < 32; j++) {
    const pts = [1, 2, 3].map((x) => [x, shares[x - 1]![j]!] as const);
    const at = (x: number): number => {
      let y = 0;
      for (const [xi, yi] of pts) {
        let num = 1;
        let den = 1;
        for (const [xk] of pts) {
          if (xk === xi) continue;
          num = refMul(num, x ^ xk);
          den = refMul(den, xi ^ xk);
        }
        let inv = 1;
        for (let k = 0; k < 254; k++) inv = refMul(inv, den); // den^254 = den^-1
        y ^= refMul(yi, refMul(num, inv));
      }
      return y;
    };
    assert.equal(at(0), secret[j]);
    assert.equal(at(4), shares[3]![j]);
    assert.equal(at(5), shares[4]![j]);
  }
});

test("split/combine: random secrets, every threshold-subset recovers, fewer do not", () => {
  for (let round = 0; round < 40; round++) {
    const parts = randomInt(2, 7);
    const threshold = randomInt(2, parts + 1);
    const secret = randomBytes(randomInt(1, 40));
    const shares = split(secret, parts, threshold);
    for (let k = threshold; k <= parts; k++) {
      for (const subset of subsets(shares, k)) assert.deepEqual(combine(subset), new Uint8Array(secret));
    }
    // With threshold-1 >= 2 shares, combine gives a value; for a 32+-byte secret it is (with
    // overwhelming probability) not the secret. Short secrets could collide by chance; skip them.
    if (threshold - 1 >= 2 && secret.length >= 16) {
      for (const subset of subsets(shares, threshold - 1)) {
        assert.notDeepEqual(combine(subset), new Uint8Array(secret));
      }
    }
  }
});

test("split: a 32-byte data key into 255 parts with threshold 255 (the maximum)", () => {
  const secret = randomBytes(32);
  const shares = split(secret, 255, 255);
  assert.equal(shares.length, 255);
  assert.equal(shareIndex(shares[254]!), 255);
  assert.deepEqual(combine(shares.reverse()), new Uint8Array(secret));
});

test("split: two calls give different shares (fresh random polynomials)", () => {
  const secret = new Uint8Array(32);
  const a = split(secret, 3, 2);
  const b = split(secret, 3, 2);
  assert.notDeepEqual(a[0], b[0]);
  assert.notDeepEqual(a[0]!.subarray(0, 32), secret, "shares are not the secret");
});

test("split: parameter errors as in sops (same checks, same order)", () => {
  const secret = new TextEncoder().encode("test");
  expectShamirError(() => split(secret, 0, 0), /threshold must be at least 2/);
  expectShamirError(() => split(secret, 2, 3), /parts cannot be less than threshold/);
  expectShamirError(() => split(secret, 1000, 3), /parts cannot exceed 255/);
  expectShamirError(() => split(secret, 10, 1), /threshold must be at least 2/);
  expectShamirError(() => split(secret, 300, 256), /parts cannot exceed 255/);
  expectShamirError(() => split(new Uint8Array(0), 3, 2), /cannot split an empty secret/);
  expectShamirError(() => split(secret, 2.5, 2), /integers/);
});

test("combine: malformed shares are refused as in sops", () => {
  expectShamirError(() => combine([]), /less than two parts/);
  expectShamirError(() => combine([Uint8Array.from([1, 2, 3])]), /less than two parts/);
  expectShamirError(() => combine([Uint8Array.from([1, 2, 3]), Uint8Array.from([1, 2])]), /same length/);
  expectShamirError(() => combine([Uint8Array.from([1]), Uint8Array.from([2])]), /at least two bytes/);
  expectShamirError(
    () => combine([Uint8Array.from([1, 2, 3]), Uint8Array.from([9, 9, 3])]),
    /duplicate part/,
  );
  const shares = split(randomBytes(32), 3, 2);
  expectShamirError(() => combine([shares[0]!, shares[1]!, shares[0]!]), /duplicate part/);
  expectShamirError(() => combine([shares[0]!, shares[1]!.subarray(1)]), /same length/);
});

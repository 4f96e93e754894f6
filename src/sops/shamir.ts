/**
 * Shamir secret sharing over GF(2^8), byte-for-byte compatible with sops (shamir/shamir.go, a
 * fork of HashiCorp Vault's package). sops uses it when a file has more than one key group: the
 * 32-byte data key is split into one share per group and every key of group i wraps share i.
 *
 * Share encoding (sops shamir.Split): the y-values of the secret's bytes, then ONE trailing byte
 * holding the x-coordinate; share i (0-based) has x = i + 1. So a 32-byte key gives 33-byte shares.
 *
 * Field: GF(2)[X] / (X^8 + X^4 + X^3 + X + 1), the AES (Rijndael) field. Older sops/Vault used
 * exp/log tables with generator 0xe5; current sops multiplies bit by bit without tables or
 * secret-dependent branches. Both give the same products; we do the latter (constant time).
 */
import { randomBytes } from "node:crypto";
import { NixsealError, wipe } from "../common/index.js";

/** Bytes a share adds to the secret: the trailing x-coordinate. */
export const SHARE_OVERHEAD = 1;

/** The x-coordinate byte of a share (its last byte), as sops stores it. */
export function shareIndex(share: Uint8Array): number {
  return share[share.length - 1] ?? 0;
}

/**
 * a * b in GF(2^8), without tables and without branches on the operands: for each bit of b
 * from the top, double the accumulator modulo the AES polynomial (0x1b on carry) and add a when
 * the bit is set. The masks come from arithmetic, not comparisons.
 */
export function gfMul(a: number, b: number): number {
  let acc = 0;
  for (let i = 7; i >= 0; i--) {
    const bit = (b >> i) & 1;
    const aOrZero = -bit & a;
    const reduce = -(acc >> 7) & 0x1b;
    acc = (aOrZero ^ reduce ^ (acc << 1)) & 0xff;
  }
  return acc;
}

/** a^254 = a^-1 in GF(2^8) (Fermat), 0 for 0; a fixed chain of multiplications. */
export function gfInverse(a: number): number {
  let b = gfMul(a, a); // a^2
  let c = gfMul(a, b); // a^3
  b = gfMul(c, c); // a^6
  b = gfMul(b, b); // a^12
  c = gfMul(b, c); // a^15
  b = gfMul(b, b); // a^24
  b = gfMul(b, b); // a^48
  b = gfMul(b, c); // a^63
  b = gfMul(b, b); // a^126
  b = gfMul(a, b); // a^127
  return gfMul(b, b); // a^254
}

/** a / b in GF(2^8). Dividing by zero is a programming error (sops panics). */
export function gfDiv(a: number, b: number): number {
  if (b === 0) throw new NixsealError("INTERNAL", "GF(2^8) division by zero");
  return gfMul(a, gfInverse(b));
}

function shamirError(message: string, hint: string): NixsealError {
  return new NixsealError("SOPS_SHAMIR", message, { hint });
}

/**
 * Splits `secret` into `parts` shares, any `threshold` of which recover it (sops shamir.Split).
 * Checks and their order are those of sops; every byte gets a fresh random polynomial of degree
 * threshold-1 whose constant term is that byte, evaluated at x = 1..parts (Horner's rule).
 */
export function split(secret: Uint8Array, parts: number, threshold: number): Uint8Array[] {
  if (!Number.isInteger(parts) || !Number.isInteger(threshold)) {
    throw shamirError("parts and threshold must be integers", "give whole numbers");
  }
  if (parts < threshold) {
    throw shamirError(
      `parts cannot be less than threshold (${parts} key groups, threshold ${threshold})`,
      "lower shamir_threshold to at most the number of key groups",
    );
  }
  if (parts > 255) {
    throw shamirError(`parts cannot exceed 255 (got ${parts})`, "use at most 255 key groups");
  }
  if (threshold < 2) {
    throw shamirError(
      `threshold must be at least 2 (got ${threshold})`,
      "a Shamir threshold of 1 is no sharing: use a single key group instead",
    );
  }
  if (threshold > 255) {
    throw shamirError(`threshold cannot exceed 255 (got ${threshold})`, "use a threshold of at most 255");
  }
  if (secret.length === 0) {
    throw shamirError("cannot split an empty secret", "pass the data key to split");
  }

  const n = secret.length;
  const out: Uint8Array[] = [];
  for (let i = 0; i < parts; i++) {
    const share = new Uint8Array(n + SHARE_OVERHEAD);
    share[n] = i + 1; // x = 0 would be the secret itself
    out.push(share);
  }
  const degree = threshold - 1;
  // All random coefficients at once: byte j uses coefficients[j*degree .. (j+1)*degree).
  const coefficients = randomBytes(n * degree);
  try {
    for (let j = 0; j < n; j++) {
      const base = j * degree;
      for (let i = 0; i < parts; i++) {
        const x = i + 1;
        // Horner: ((c_d * x + c_{d-1}) * x + ...) * x + c_0
        let y = coefficients[base + degree - 1]!;
        for (let k = degree - 2; k >= 0; k--) y = gfMul(y, x) ^ coefficients[base + k]!;
        y = gfMul(y, x) ^ secret[j]!;
        out[i]![j] = y;
      }
    }
  } finally {
    wipe(coefficients);
  }
  return out;
}

/**
 * Recovers the secret from shares (sops shamir.Combine): Lagrange interpolation at x = 0.
 * Like sops, it cannot tell too few shares from enough: fewer than the threshold silently gives
 * a wrong value, which the caller notices when the data key fails the MAC or the values' tags.
 */
export function combine(shares: Uint8Array[]): Uint8Array {
  if (shares.length < 2) {
    throw shamirError(
      "less than two parts cannot be used to reconstruct the secret",
      "decrypt with keys from at least shamir_threshold key groups",
    );
  }
  const shareLen = shares[0]!.length;
  if (shareLen < 2) {
    throw shamirError("parts must be at least two bytes", "the file's key shares are malformed");
  }
  for (let i = 1; i < shares.length; i++) {
    if (shares[i]!.length !== shareLen) {
      throw shamirError("all parts must be the same length", "the file's key shares are malformed");
    }
  }
  const xs = shares.map((s) => s[shareLen - 1]!);
  const seen = new Set<number>();
  for (const x of xs) {
    if (seen.has(x)) {
      throw shamirError(
        "duplicate part detected",
        "two key groups carry the same share: the file's key groups are malformed",
      );
    }
    seen.add(x);
  }

  // The Lagrange basis at 0 depends only on the (public) x-coordinates: compute it once.
  // basis_i = prod_{j != i} (0 - x_j) / (x_i - x_j); subtraction is XOR.
  const basis = xs.map((xi, i) => {
    let b = 1;
    for (let j = 0; j < xs.length; j++) {
      if (j !== i) b = gfMul(b, gfDiv(xs[j]!, xi ^ xs[j]!));
    }
    return b;
  });

  const secret = new Uint8Array(shareLen - 1);
  for (let k = 0; k < secret.length; k++) {
    let acc = 0;
    for (let i = 0; i < shares.length; i++) acc ^= gfMul(shares[i]![k]!, basis[i]!);
    secret[k] = acc;
  }
  return secret;
}

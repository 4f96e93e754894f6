/**
 * SHA-512-crypt (`$6$`), the password hash of crypt(3) that /etc/shadow and NixOS's
 * `hashedPasswordFile` take, after Ulrich Drepper's published specification "Unix crypt using
 * SHA-256 and SHA-512" (the numbered steps below are its steps). node:crypto has SHA-512 but no
 * crypt(3); the password stays in bytes (wiped when done), never in a string.
 */
import { createHash, type Hash, randomBytes } from "node:crypto";
import { NixsealError } from "./errors.js";

/** crypt(3)'s base64 alphabet (not RFC 4648's). */
const ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

export const SHA_CRYPT_DEFAULT_ROUNDS = 5000;
export const SHA_CRYPT_MIN_ROUNDS = 1000;
export const SHA_CRYPT_MAX_ROUNDS = 999_999_999;
const MAX_SALT = 16;
/** Longer passwords are refused: the hash's work grows with the length. */
export const SHA_CRYPT_MAX_PASSWORD = 4096;

/** The byte triples of the final digest, in the order spec step 22 encodes them (SHA-512). */
const PERMUTATION: readonly (readonly [number, number, number])[] = [
  [0, 21, 42],
  [22, 43, 1],
  [44, 2, 23],
  [3, 24, 45],
  [25, 46, 4],
  [47, 5, 26],
  [6, 27, 48],
  [28, 49, 7],
  [50, 8, 29],
  [9, 30, 51],
  [31, 52, 10],
  [53, 11, 32],
  [12, 33, 54],
  [34, 55, 13],
  [56, 14, 35],
  [15, 36, 57],
  [37, 58, 16],
  [59, 17, 38],
  [18, 39, 60],
  [40, 61, 19],
  [62, 20, 41],
];

/** A fresh salt: 16 characters of crypt's alphabet (6 random bits each, uniformly). */
export function randomShaCryptSalt(): string {
  const raw = randomBytes(MAX_SALT);
  let s = "";
  for (const b of raw) s += ITOA64[b & 63];
  return s;
}

/**
 * Checks a salt (characters of crypt's alphabet, 1 to 16 of them) and a number of rounds given by
 * the user, before any work.
 */
export function checkShaCryptParameters(salt: string, rounds: number): void {
  if (salt.length < 1 || salt.length > MAX_SALT || ![...salt].every((c) => ITOA64.includes(c))) {
    throw new NixsealError("USAGE", "a sha512-crypt salt is 1 to 16 characters of a-z A-Z 0-9 . /", {
      hint: "leave out --salt for a random one",
    });
  }
  if (!Number.isSafeInteger(rounds) || rounds < SHA_CRYPT_MIN_ROUNDS || rounds > SHA_CRYPT_MAX_ROUNDS) {
    throw new NixsealError(
      "USAGE",
      `sha512-crypt rounds must be ${SHA_CRYPT_MIN_ROUNDS} to ${SHA_CRYPT_MAX_ROUNDS}`,
      { hint: `leave out --rounds for crypt's default (${SHA_CRYPT_DEFAULT_ROUNDS})` },
    );
  }
}

/** Spec steps 3 and 12: `length` bytes of `digest` repeated (whole digests, then a prefix). */
function addRepeated(h: Hash, digest: Uint8Array, length: number): void {
  let left = length;
  for (; left > 64; left -= 64) h.update(digest);
  h.update(digest.subarray(0, left));
}

/** A byte sequence of `length` built from repeats of `digest` (steps 16 and 20). */
function repeatedTo(digest: Uint8Array, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += 64) out.set(digest.subarray(0, Math.min(64, length - i)), i);
  return out;
}

/**
 * The `$6$[rounds=N$]salt$hash` string of `password` (bytes). `rounds` 5000 is written without
 * the `rounds=` field, as crypt(3) does for its default.
 */
export function sha512Crypt(password: Uint8Array, salt: string, rounds = SHA_CRYPT_DEFAULT_ROUNDS): string {
  checkShaCryptParameters(salt, rounds);
  if (password.length > SHA_CRYPT_MAX_PASSWORD) {
    throw new NixsealError("USAGE", `the password is longer than ${SHA_CRYPT_MAX_PASSWORD} bytes`, {
      hint: "use a shorter password",
    });
  }
  const P = password;
  const S = Buffer.from(salt, "latin1");
  const secrets: Uint8Array[] = [];
  try {
    // Steps 4-8: digest B of password, salt, password.
    const B = createHash("sha512").update(P).update(S).update(P).digest();
    secrets.push(B);
    // Steps 1-3, 9-12: digest A.
    const a = createHash("sha512").update(P).update(S);
    addRepeated(a, B, P.length);
    for (let n = P.length; n > 0; n >>= 1) a.update(n & 1 ? B : P);
    let A: Buffer = a.digest();
    secrets.push(A);
    // Steps 13-16: the P sequence.
    const dp = createHash("sha512");
    for (let i = 0; i < P.length; i++) dp.update(P);
    const DP = dp.digest();
    secrets.push(DP);
    const Pseq = repeatedTo(DP, P.length);
    secrets.push(Pseq);
    // Steps 17-20: the S sequence.
    const ds = createHash("sha512");
    for (let i = 0; i < 16 + A[0]!; i++) ds.update(S);
    const Sseq = repeatedTo(ds.digest(), S.length);
    // Step 21: the rounds.
    for (let i = 0; i < rounds; i++) {
      const c = createHash("sha512");
      c.update(i & 1 ? Pseq : A);
      if (i % 3 !== 0) c.update(Sseq);
      if (i % 7 !== 0) c.update(Pseq);
      c.update(i & 1 ? A : Pseq);
      const next = c.digest();
      A.fill(0);
      A = next;
    }
    secrets.push(A);
    // Step 22: the encoding.
    let out = "";
    const put = (w: number, chars: number) => {
      for (let k = 0; k < chars; k++, w >>= 6) out += ITOA64[w & 63];
    };
    for (const [x, y, z] of PERMUTATION) put((A[x]! << 16) | (A[y]! << 8) | A[z]!, 4);
    put(A[63]!, 2);
    const roundsField = rounds === SHA_CRYPT_DEFAULT_ROUNDS ? "" : `rounds=${rounds}$`;
    return `$6$${roundsField}${salt}$${out}`;
  } finally {
    for (const s of secrets) s.fill(0);
  }
}

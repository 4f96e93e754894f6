/**
 * Random secrets as text: passwords over a character set, and hex. Every character is drawn
 * uniformly: a random byte is used only if it falls below the largest multiple of the set's size
 * (rejection sampling), so no character is likelier than another (no modulo bias).
 */
import { randomBytes } from "node:crypto";
import { NixsealError } from "./errors.js";

const DIGITS = "0123456789";
const UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER = "abcdefghijklmnopqrstuvwxyz";

/** The character sets of `nixseal gen password --charset`. */
export const PASSWORD_CHARSETS = {
  alnum: UPPER + LOWER + DIGITS,
  base64: `${UPPER}${LOWER}${DIGITS}+/`,
  hex: `${DIGITS}abcdef`,
} as const;

export type PasswordCharset = keyof typeof PASSWORD_CHARSETS;

export const MAX_PASSWORD_LENGTH = 4096;
export const MAX_RANDOM_HEX_BYTES = 65536;

/**
 * `length` characters drawn uniformly from `alphabet` (2 to 256 distinct ASCII characters), as
 * ASCII bytes: the caller writes them out and wipes them.
 */
export function randomCharacters(length: number, alphabet: string): Uint8Array {
  if (!Number.isSafeInteger(length) || length < 1 || length > MAX_PASSWORD_LENGTH) {
    throw new NixsealError("USAGE", `a password length must be 1 to ${MAX_PASSWORD_LENGTH}`, {
      hint: "give --length N with N in that range (32 is the default)",
    });
  }
  const n = alphabet.length;
  if (n < 2 || n > 256 || new Set(alphabet).size !== n || !/^[\x21-\x7e]+$/.test(alphabet)) {
    throw new Error("randomCharacters: the alphabet must be 2 to 256 distinct printable ASCII characters");
  }
  const table = Buffer.from(alphabet, "latin1");
  // Bytes at or above `limit` would make the first (256 % n) characters likelier: drawn again.
  const limit = 256 - (256 % n);
  const out = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    // Enough for the rest in one draw on average (at most half the bytes are rejected), plus slack.
    const pool = randomBytes(2 * (length - filled) + 16);
    for (let i = 0; i < pool.length && filled < length; i++) {
      const b = pool[i]!;
      if (b < limit) out[filled++] = table[b % n]!;
    }
    pool.fill(0);
  }
  return out;
}

/** `count` random bytes as lowercase hex (ASCII bytes; the caller wipes them). */
export function randomHex(count: number): Uint8Array {
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_RANDOM_HEX_BYTES) {
    throw new NixsealError("USAGE", `the number of bytes must be 1 to ${MAX_RANDOM_HEX_BYTES}`, {
      hint: "e.g. 'nixseal gen hex 32' for 32 bytes (64 hex digits)",
    });
  }
  const raw = randomBytes(count);
  const digits = Buffer.from(PASSWORD_CHARSETS.hex, "latin1");
  const out = new Uint8Array(2 * count);
  for (let i = 0; i < count; i++) {
    out[2 * i] = digits[raw[i]! >> 4]!;
    out[2 * i + 1] = digits[raw[i]! & 15]!;
  }
  raw.fill(0);
  return out;
}

/**
 * Strict unpadded base64 as the age spec requires.
 * age spec: "decoders MUST reject non-canonical encodings and encodings ending with padding".
 */

const ALPHABET = /^[A-Za-z0-9+/]*$/;

/** The 6-bit value of a character of ALPHABET. */
function sextet(c: number): number {
  if (c >= 0x61) return c - 0x61 + 26; // a-z
  if (c >= 0x41) return c - 0x41; // A-Z
  if (c >= 0x30) return c - 0x30 + 52; // 0-9
  return c === 0x2b ? 62 : 63; // + /
}

/** Decodes canonical unpadded standard base64, or returns null. */
export function decodeBase64NoPad(s: string): Uint8Array | null {
  const rest = s.length % 4;
  if (rest === 1 || !ALPHABET.test(s)) return null;
  // Canonical: the bits of the last character beyond the last byte are zero (a last group of
  // 2 characters carries 1 byte and 4 bits more, one of 3 carries 2 bytes and 2 bits more), so
  // that re-encoding gives the same string; checked on that character instead of re-encoding
  // (3 decodes per age file, 1000 files at an activation).
  if (rest !== 0 && (sextet(s.charCodeAt(s.length - 1)) & (rest === 2 ? 0x0f : 0x03)) !== 0) return null;
  const out = Buffer.from(s, "base64");
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Whether `s`, padded standard base64 of the alphabet (length a multiple of 4, `=` only at the
 * end: the caller has checked that), is the canonical encoding of its bytes: the bits of the last
 * character before the padding beyond the last byte are zero, so that re-encoding the bytes
 * gives `s` again.
 */
export function isCanonicalPaddedBase64(s: string): boolean {
  const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
  if (pad === 0) return true;
  return (sextet(s.charCodeAt(s.length - pad - 1)) & (pad === 2 ? 0x0f : 0x03)) === 0;
}

export function encodeBase64NoPad(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64").replace(/=+$/, "");
}

/**
 * Strict unpadded base64 as the age spec requires.
 * age spec: "decoders MUST reject non-canonical encodings and encodings ending with padding".
 */

const ALPHABET = /^[A-Za-z0-9+/]*$/;

/** Decodes canonical unpadded standard base64, or returns null. */
export function decodeBase64NoPad(s: string): Uint8Array | null {
  if (!ALPHABET.test(s) || s.length % 4 === 1) return null;
  const out = Buffer.from(s, "base64");
  // Canonical: re-encoding gives the same string (unused trailing bits are zero).
  if (out.toString("base64").replace(/=+$/, "") !== s) return null;
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

export function encodeBase64NoPad(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64").replace(/=+$/, "");
}

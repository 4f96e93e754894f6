/**
 * The ssh-ed25519 recipient type: age files encrypted to an OpenSSH Ed25519 key.
 * Not in the C2SP age spec; defined by the reference implementation (age's agessh package):
 *
 *   -> ssh-ed25519 TAG SHARE
 *   BODY
 *
 * TAG is the first 4 bytes of SHA-256 of the key's SSH wire encoding, SHARE an ephemeral X25519
 * public key. The Ed25519 key is used as X25519 key through the birational map (public) and the
 * RFC 8032 secret scalar (private), and the shared secret is "tweaked" by a second X25519 with a
 * scalar derived from the public key, so the stanza is bound to the ssh key.
 *
 * Also here: the ssh-to-age derivations (an Ed25519 key as a plain age X25519 key), which
 * sops-nix users rely on to use host keys as age recipients.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import {
  FILE_KEY_SIZE,
  hkdfSha256,
  type Identity,
  openZeroNonce,
  type Recipient,
  type Stanza,
  sealZeroNonce,
  X25519Identity,
  X25519Recipient,
  x25519,
  x25519Ephemeral,
  x25519PrivateKey,
  x25519PublicBytes,
  x25519PublicKey,
} from "../age/index.js";
import {
  asBuffer,
  concatBytes,
  decodeBase64NoPad,
  encodeBase64NoPad,
  NixsealError,
  wipe,
} from "../common/index.js";

export const SSH_ED25519_STANZA = "ssh-ed25519";
/** agessh: the HKDF info of both the tweak and the wrapping key. */
const LABEL = "age-encryption.org/v1/ssh-ed25519";

// --- shared by both ssh recipient types -------------------------------------------------------

/** agessh: the recipient tag, base64 (unpadded) of the first 4 bytes of SHA-256(wire key). */
export function sshTag(wireKey: Uint8Array): string {
  return encodeBase64NoPad(createHash("sha256").update(wireKey).digest().subarray(0, 4));
}

/** RFC 4251 "string". Kept here (and not in src/ssh/wire.ts): lower layers do not import keys/. */
export function sshWireString(b: Uint8Array | string): Uint8Array {
  const bytes = typeof b === "string" ? Buffer.from(b, "latin1") : b;
  const out = Buffer.alloc(4 + bytes.length);
  out.writeUInt32BE(bytes.length);
  out.set(bytes, 4);
  return out;
}

/** The SSH wire encoding of an Ed25519 public key: string "ssh-ed25519", string key. */
export function sshEd25519WireKey(publicKey: Uint8Array): Uint8Array {
  return concatBytes(sshWireString(SSH_ED25519_STANZA), sshWireString(publicKey));
}

function stanzaError(message: string): NixsealError {
  return new NixsealError("AGE_STANZA", `invalid ssh-ed25519 recipient stanza: ${message}`, {
    hint: "the file is damaged or was not written by a conforming age implementation",
  });
}

/**
 * Checks the shape of an ssh-ed25519 stanza and returns its ephemeral share. Done for every
 * ssh-ed25519 stanza, whatever its tag, before any key work (agessh does the same checks in the
 * same order, so the same files are accepted and refused).
 */
export function checkSshEd25519Stanza(s: Stanza): Uint8Array {
  if (s.args.length !== 2) throw stanzaError("wrong number of arguments");
  const share = decodeBase64NoPad(s.args[1]!);
  if (share === null) throw stanzaError("the ephemeral share is not valid base64");
  if (share.length !== 32) throw stanzaError("the ephemeral share is not 32 bytes");
  return share;
}

// --- field arithmetic for the Edwards -> Montgomery map ---------------------------------------

/** 2^255 - 19 */
const P = (1n << 255n) - 19n;
/** Edwards25519 d = -121665/121666 (RFC 8032 section 5.1). */
const D = 37095705934669439343138083508754565189542113879843219016388785533085940283555n;
/** The order of the prime-order subgroup (RFC 8032 "L"). */
const L = (1n << 252n) + 27742317777372353535851937790883648493n;

function mod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

function powMod(base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n;
  base = mod(base, m);
  while (exp > 0n) {
    if (exp & 1n) result = (result * base) % m;
    base = (base * base) % m;
    exp >>= 1n;
  }
  return result;
}

/** Inverse mod P by Fermat; like the reference's field inversion, inv(0) = 0. */
function invP(a: bigint): bigint {
  return powMod(a, P - 2n, P);
}

function fromLE(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

function toLE32(n: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/**
 * The X25519 (Montgomery u) public key of an Ed25519 public key: u = (1 + y) / (1 - y).
 * Like filippo.io/edwards25519's SetBytes + BytesMontgomery, which agessh uses: the encoding is
 * refused if it is not a point of the curve (x^2 = (y^2 - 1) / (d y^2 + 1) has no root);
 * non-canonical y (>= p) is accepted and reduced; the sign bit of x is irrelevant to u.
 * Returns null for an invalid point.
 */
export function ed25519PublicToMontgomery(publicKey: Uint8Array): Uint8Array | null {
  if (publicKey.length !== 32) return null;
  const y = mod(fromLE(publicKey) & ((1n << 255n) - 1n), P);
  const y2 = (y * y) % P;
  const x2 = mod((y2 - 1n) * invP(mod(D * y2 + 1n, P)), P);
  // Euler's criterion: x2 is a square (or zero) iff x2^((p-1)/2) is 0 or 1.
  if (x2 !== 0n && powMod(x2, (P - 1n) / 2n, P) !== 1n) return null;
  return toLE32(mod((1n + y) * invP(mod(1n - y, P)), P));
}

/** RFC 7748 clamping, as X25519 applies to every scalar. */
function clampedScalar(k: Uint8Array): bigint {
  const c = Uint8Array.from(k);
  c[0]! &= 248;
  c[31]! &= 127;
  c[31]! |= 64;
  const n = fromLE(c);
  wipe(c);
  return n;
}

/**
 * One X25519 scalar k with X25519(k, P) = X25519(tweak, X25519(secret, P)) for every P on the
 * curve, so an unwrap costs one scalar multiplication instead of two.
 *
 * Why it works: X25519 multiplies by the clamped scalar, so the two steps compute
 * u([t*s]P) with s = clamp(secret), t = clamp(tweak), both multiples of 8. The curve group has
 * order 8L; t*s is a multiple of 8, so [t*s]P depends only on (t*s mod 8L), and u(Q) = u(-Q).
 * A clamped k is 8m with 2^251 <= m < 2^252; choosing m = ±(t*s/8) mod L (the sign that lands in
 * that range; one always does unless the residue is within 2^125 of 0 or L, which has
 * negligible probability) gives k = ±t*s mod 8L, a fixed point of clamping.
 *
 * For points on the twist (never made by an honest encryptor) the two computations differ; the
 * identity then falls back to the two-step form, so results match agessh exactly.
 * Returns null in the negligible case where no m fits.
 */
export function combinedTweakScalar(secret: Uint8Array, tweak: Uint8Array): Uint8Array | null {
  const st = clampedScalar(secret) * clampedScalar(tweak);
  const r = (st / 8n) % L;
  const lo = 1n << 251n;
  const hi = 1n << 252n;
  let m: bigint;
  if (r >= lo && r < hi) m = r;
  else if (L - r >= lo && L - r < hi) m = L - r;
  else return null;
  return toLE32(8n * m);
}

// --- the recipient type ---------------------------------------------------------------------

/** An Ed25519 public key as the X25519 KeyObject and u-coordinate the recipient type uses. */
function montgomeryOf(publicKey: Uint8Array): Uint8Array {
  const u = ed25519PublicToMontgomery(publicKey);
  if (u === null) {
    throw new NixsealError("AGE_RECIPIENT", "invalid ssh-ed25519 public key: not a point of the curve", {
      hint: "the key is damaged; copy it again from the .pub file",
    });
  }
  return u;
}

function tweakOf(wireKey: Uint8Array): Uint8Array {
  // agessh: HKDF-SHA-256 with empty input keying material and the wire key as the salt.
  return hkdfSha256(new Uint8Array(0), wireKey, LABEL);
}

export class SshEd25519Recipient implements Recipient {
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The SSH wire encoding of the key (what the tag and the tweak are computed from). */
  readonly wireKey: Uint8Array;
  readonly tag: string;
  private readonly theirPublic: Uint8Array;
  private readonly theirKey: KeyObject;
  private readonly tweakKey: KeyObject;

  constructor(publicKey: Uint8Array) {
    if (publicKey.length !== 32) {
      throw new NixsealError("AGE_RECIPIENT", "invalid ssh-ed25519 public key: not 32 bytes", {
        hint: "the key is damaged; copy it again from the .pub file",
      });
    }
    this.publicKey = Uint8Array.from(publicKey);
    this.wireKey = sshEd25519WireKey(this.publicKey);
    this.tag = sshTag(this.wireKey);
    this.theirPublic = montgomeryOf(this.publicKey);
    this.theirKey = x25519PublicKey(this.theirPublic);
    const tweak = tweakOf(this.wireKey);
    this.tweakKey = x25519PrivateKey(tweak);
    wipe(tweak);
  }

  /** The authorized_keys form, "ssh-ed25519 AAAA..." (no comment). */
  toString(): string {
    return `${SSH_ED25519_STANZA} ${asBuffer(this.wireKey).toString("base64")}`;
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const eph = x25519Ephemeral();
    let shared: Uint8Array;
    try {
      shared = x25519(eph.privateKey, this.theirKey);
    } catch {
      // OpenSSL refuses an all-zero result: the key is one of the few low-order points.
      throw new NixsealError("AGE_RECIPIENT", "invalid ssh-ed25519 public key: a low-order point", {
        hint: "this key cannot be encrypted to; use another key",
      });
    }
    const tweaked = x25519(this.tweakKey, x25519PublicKey(shared));
    const wrapKey = hkdfSha256(tweaked, concatBytes(eph.publicBytes, this.theirPublic), LABEL);
    const body = sealZeroNonce(wrapKey, fileKey);
    wipe(shared, tweaked, wrapKey);
    return [{ type: SSH_ED25519_STANZA, args: [this.tag, encodeBase64NoPad(eph.publicBytes)], body }];
  }
}

const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** The Ed25519 public key of a 32-byte seed (RFC 8032), via OpenSSL. */
export function ed25519PublicFromSeed(seed: Uint8Array): Uint8Array {
  const pkcs8 = Buffer.concat([ED25519_PKCS8_PREFIX, asBuffer(seed)]);
  try {
    const der = createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" })).export({
      format: "der",
      type: "spki",
    });
    return Uint8Array.from(der.subarray(der.length - 32));
  } finally {
    pkcs8.fill(0);
  }
}

/** RFC 8032 secret scalar of an Ed25519 seed, unclamped: the first half of SHA-512(seed). */
function ed25519SecretScalar(seed: Uint8Array): Uint8Array {
  const h = createHash("sha512").update(seed).digest();
  const scalar = Uint8Array.from(h.subarray(0, 32));
  h.fill(0);
  return scalar;
}

export interface SshEd25519IdentityOptions {
  /** For error messages, e.g. "ssh-ed25519 key /home/u/.ssh/id_ed25519". */
  description?: string;
}

/** An ssh-ed25519 identity as it crosses to a worker thread (SshEd25519Identity.transfer). */
export interface SshEd25519Transfer {
  kind: typeof SSH_ED25519_STANZA;
  description: string;
  publicKey: Uint8Array;
  secretKey: KeyObject;
  tweakKey: KeyObject;
  combinedKey: KeyObject | null;
}

export class SshEd25519Identity implements Identity {
  readonly description: string;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  readonly tag: string;
  private readonly wireKey: Uint8Array;
  private readonly secretKey: KeyObject;
  private readonly tweakKey: KeyObject;
  /** One scalar doing both multiplications (see combinedTweakScalar), or null. */
  private readonly combinedKey: KeyObject | null;
  private readonly ourPublic: Uint8Array;

  /**
   * `seed` is the 32-byte Ed25519 private key; it is not kept, the caller may wipe it. Or what
   * transfer() gave on another thread (fromTransfer).
   */
  constructor(seed: Uint8Array | SshEd25519Transfer, options: SshEd25519IdentityOptions = {}) {
    if (!(seed instanceof Uint8Array)) {
      this.description = seed.description;
      this.publicKey = Uint8Array.from(seed.publicKey);
      this.wireKey = sshEd25519WireKey(this.publicKey);
      this.tag = sshTag(this.wireKey);
      this.secretKey = seed.secretKey;
      this.tweakKey = seed.tweakKey;
      this.combinedKey = seed.combinedKey;
      this.ourPublic = x25519PublicBytes(this.secretKey);
      return;
    }
    if (seed.length !== 32)
      throw new NixsealError("AGE_IDENTITY", "an Ed25519 private key seed must be 32 bytes");
    this.description = options.description ?? "ssh-ed25519 key";
    this.publicKey = ed25519PublicFromSeed(seed);
    this.wireKey = sshEd25519WireKey(this.publicKey);
    this.tag = sshTag(this.wireKey);
    // Everything per key is computed once here, so an unwrap is one X25519 and one HKDF.
    const scalar = ed25519SecretScalar(seed);
    const tweak = tweakOf(this.wireKey);
    const combined = combinedTweakScalar(scalar, tweak);
    this.secretKey = x25519PrivateKey(scalar);
    this.tweakKey = x25519PrivateKey(tweak);
    this.combinedKey = combined === null ? null : x25519PrivateKey(combined);
    this.ourPublic = x25519PublicBytes(this.secretKey);
    wipe(scalar, tweak, combined);
  }

  recipient(): SshEd25519Recipient {
    return new SshEd25519Recipient(this.publicKey);
  }

  /**
   * This identity for another thread of this process: its KeyObjects (postMessage clones them
   * inside node:crypto: no copy of the key in the JS heap) and public key; fromTransfer makes it
   * there again.
   */
  transfer(): SshEd25519Transfer {
    return {
      kind: SSH_ED25519_STANZA,
      description: this.description,
      publicKey: this.publicKey,
      secretKey: this.secretKey,
      tweakKey: this.tweakKey,
      combinedKey: this.combinedKey,
    };
  }

  static fromTransfer(t: SshEd25519Transfer): SshEd25519Identity {
    return new SshEd25519Identity(t);
  }

  /** The same key as a plain age X25519 identity (ssh-to-age); see sshEd25519ToX25519Identity. */
  toX25519Identity(description?: string): X25519Identity {
    // The X25519 scalar kept here is the unclamped SHA-512(seed)[:32] that ssh-to-age uses.
    const der = this.secretKey.export({ format: "der", type: "pkcs8" });
    try {
      return new X25519Identity(
        der.subarray(der.length - 32),
        description ?? `age identity from ${this.description}`,
      );
    } finally {
      der.fill(0);
    }
  }

  /** The two-step shared secret exactly as agessh computes it: X25519(tweak, X25519(s, share)). */
  private sharedTwoStep(share: KeyObject): Uint8Array {
    const first = x25519(this.secretKey, share);
    try {
      return x25519(this.tweakKey, x25519PublicKey(first));
    } finally {
      wipe(first);
    }
  }

  private open(shared: Uint8Array, share: Uint8Array, body: Uint8Array): Uint8Array | null {
    const wrapKey = hkdfSha256(shared, concatBytes(share, this.ourPublic), LABEL);
    const fileKey = openZeroNonce(wrapKey, body);
    wipe(shared, wrapKey);
    return fileKey;
  }

  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | null {
    for (const s of stanzas) {
      if (s.type !== SSH_ED25519_STANZA) continue;
      const share = checkSshEd25519Stanza(s);
      // Another key's stanza: skipped before any private-key work.
      if (s.args[0] !== this.tag) continue;
      if (s.body.length !== FILE_KEY_SIZE + 16) throw stanzaError("the body is not 32 bytes");
      const shareKey = x25519PublicKey(share);
      let fileKey: Uint8Array | null = null;
      try {
        if (this.combinedKey !== null) fileKey = this.open(x25519(this.combinedKey, shareKey), share, s.body);
        // Not opened: either not for us after all (a tag collision, a damaged file) or a share
        // on the twist, where only the two-step computation gives agessh's result.
        if (fileKey === null) fileKey = this.open(this.sharedTwoStep(shareKey), share, s.body);
      } catch {
        // OpenSSL refuses an all-zero shared secret (low-order share); agessh refuses it too.
        throw stanzaError("the ephemeral share is a low-order point");
      }
      if (fileKey === null) {
        // agessh: a stanza with our tag that does not open is an error, not "not for us".
        throw new NixsealError("AGE_STANZA", "the ssh-ed25519 stanza for this key does not decrypt", {
          hint: "the file is damaged, or was encrypted to a different key with the same 4-byte tag",
        });
      }
      return fileKey;
    }
    return null;
  }
}

// --- ssh-to-age -------------------------------------------------------------------------------

/**
 * An Ed25519 public key (raw 32 bytes) as a plain age X25519 recipient (`age1...`), as the
 * ssh-to-age tool derives it for sops-nix: the Montgomery form of the point.
 */
export function sshEd25519ToAgeRecipient(publicKey: Uint8Array): X25519Recipient {
  if (publicKey.length !== 32) {
    throw new NixsealError("AGE_RECIPIENT", "invalid ssh-ed25519 public key: not 32 bytes", {
      hint: "the key is damaged; copy it again from the .pub file",
    });
  }
  return new X25519Recipient(montgomeryOf(publicKey));
}

/**
 * An Ed25519 private key (its 32-byte seed) as a plain age X25519 identity, as ssh-to-age
 * derives it: the first 32 bytes of SHA-512(seed) as the X25519 scalar.
 */
export function sshEd25519ToX25519Identity(seed: Uint8Array, description?: string): X25519Identity {
  if (seed.length !== 32)
    throw new NixsealError("AGE_IDENTITY", "an Ed25519 private key seed must be 32 bytes");
  const scalar = ed25519SecretScalar(seed);
  try {
    return new X25519Identity(scalar, description ?? "age identity derived from an ssh-ed25519 key");
  } finally {
    wipe(scalar);
  }
}

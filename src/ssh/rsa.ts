/**
 * The ssh-rsa recipient type: age files encrypted to an OpenSSH RSA key.
 * Not in the C2SP age spec; defined by the reference implementation (age's agessh package):
 *
 *   -> ssh-rsa TAG
 *   BODY
 *
 * TAG is the first 4 bytes of SHA-256 of the key's SSH wire encoding; BODY is the file key
 * encrypted with RSA-OAEP (SHA-256 for both the hash and MGF1) with the label
 * "age-encryption.org/v1/ssh-rsa".
 */
import { constants, createPublicKey, type KeyObject, privateDecrypt, publicEncrypt } from "node:crypto";
import type { Identity, Recipient, Stanza } from "../age/index.js";
import { concatBytes, NixsealError } from "../common/index.js";
import { sshTag, sshWireString } from "./ed25519.js";

export const SSH_RSA_STANZA = "ssh-rsa";
const OAEP_LABEL = Buffer.from("age-encryption.org/v1/ssh-rsa", "latin1");
/** agessh refuses to encrypt to keys whose modulus is shorter than 256 bytes. */
export const MIN_RSA_MODULUS_BYTES = 2048 / 8;
/** OpenSSH's own limit (SSH_RSA_MAXIMUM_MODULUS_SIZE); bounds the work a hostile key can cause. */
export const MAX_RSA_MODULUS_BITS = 16384;

function stripZeros(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  return b.subarray(i);
}

function bitLength(magnitude: Uint8Array): number {
  const m = stripZeros(magnitude);
  if (m.length === 0) return 0;
  return (m.length - 1) * 8 + (32 - Math.clz32(m[0]!));
}

/** RFC 4251 "mpint" of a non-negative big-endian magnitude. */
function sshWireMpint(magnitude: Uint8Array): Uint8Array {
  const m = stripZeros(magnitude);
  const pad = m.length > 0 && (m[0]! & 0x80) !== 0;
  return sshWireString(pad ? concatBytes(new Uint8Array(1), m) : m);
}

/** The canonical SSH wire encoding of an RSA public key: string "ssh-rsa", mpint e, mpint n. */
export function sshRsaWireKey(n: Uint8Array, e: Uint8Array): Uint8Array {
  return concatBytes(sshWireString(SSH_RSA_STANZA), sshWireMpint(e), sshWireMpint(n));
}

function recipientError(message: string, hint: string): NixsealError {
  return new NixsealError("AGE_RECIPIENT", `invalid ssh-rsa public key: ${message}`, { hint });
}

/**
 * Checks an RSA public key as golang.org/x/crypto/ssh does when parsing one (odd exponent of at
 * least 3 and at most 24 bits) plus OpenSSH's maximum size. The minimum size is the recipient's.
 */
export function checkRsaPublicKey(n: Uint8Array, e: Uint8Array): void {
  if (bitLength(e) > 24)
    throw recipientError("the public exponent is too large", "the key is damaged or not an RSA key");
  let eValue = 0;
  for (const b of stripZeros(e)) eValue = eValue * 256 + b;
  if (eValue < 3 || eValue % 2 === 0) {
    throw recipientError("the public exponent is invalid", "the key is damaged or not an RSA key");
  }
  const bits = bitLength(n);
  if (bits > MAX_RSA_MODULUS_BITS) {
    throw recipientError(`the modulus is larger than ${MAX_RSA_MODULUS_BITS} bits`, "use a smaller RSA key");
  }
  if (bits === 0 || (n[n.length - 1]! & 1) === 0)
    throw recipientError("the modulus is invalid", "the key is damaged");
}

function b64url(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");
}

export class SshRsaRecipient implements Recipient {
  /** The SSH wire encoding of the key (what the tag is computed from). */
  readonly wireKey: Uint8Array;
  readonly tag: string;
  /** Modulus length in bits. */
  readonly bits: number;
  private readonly key: KeyObject;

  /** `n` and `e` are unsigned big-endian magnitudes (leading zeros allowed). */
  constructor(n: Uint8Array, e: Uint8Array) {
    n = stripZeros(n);
    e = stripZeros(e);
    checkRsaPublicKey(n, e);
    // agessh: `pubKey.Size() < 2048/8`, i.e. the modulus in bytes.
    if (n.length < MIN_RSA_MODULUS_BYTES) {
      throw recipientError(
        `the key is too small (${bitLength(n)} bits)`,
        "age refuses RSA keys under 2048 bits; use an ssh-ed25519 key or an RSA key of 2048 bits or more",
      );
    }
    this.bits = bitLength(n);
    this.wireKey = sshRsaWireKey(n, e);
    this.tag = sshTag(this.wireKey);
    this.key = createPublicKey({ key: { kty: "RSA", n: b64url(n), e: b64url(e) }, format: "jwk" });
  }

  /** The authorized_keys form, "ssh-rsa AAAA..." (no comment). */
  toString(): string {
    return `${SSH_RSA_STANZA} ${Buffer.from(this.wireKey).toString("base64")}`;
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const body = publicEncrypt(
      { key: this.key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256", oaepLabel: OAEP_LABEL },
      fileKey,
    );
    return [{ type: SSH_RSA_STANZA, args: [this.tag], body }];
  }
}

function stanzaError(message: string): NixsealError {
  return new NixsealError("AGE_STANZA", `invalid ssh-rsa recipient stanza: ${message}`, {
    hint: "the file is damaged or was not written by a conforming age implementation",
  });
}

/** Checks the shape of an ssh-rsa stanza, for every ssh-rsa stanza whatever its tag (as agessh). */
export function checkSshRsaStanza(s: Stanza): void {
  if (s.args.length !== 1) throw stanzaError("wrong number of arguments");
}

/** The modulus and exponent of an RSA KeyObject (public or private), as big-endian magnitudes. */
export function rsaPublicNumbers(key: KeyObject): { n: Uint8Array; e: Uint8Array } {
  const jwk = (key.type === "private" ? createPublicKey(key) : key).export({ format: "jwk" });
  if (typeof jwk.n !== "string" || typeof jwk.e !== "string") {
    throw new NixsealError("AGE_IDENTITY", "not an RSA key", { hint: "use an ssh-ed25519 or ssh-rsa key" });
  }
  return { n: Buffer.from(jwk.n, "base64url"), e: Buffer.from(jwk.e, "base64url") };
}

export interface SshRsaIdentityOptions {
  /** For error messages, e.g. "ssh-rsa key /home/u/.ssh/id_rsa". */
  description?: string;
}

/** An ssh-rsa identity as it crosses to a worker thread (SshRsaIdentity.transfer). */
export interface SshRsaTransfer {
  kind: typeof SSH_RSA_STANZA;
  key: KeyObject;
  description: string;
}

export class SshRsaIdentity implements Identity {
  readonly description: string;
  readonly tag: string;
  readonly wireKey: Uint8Array;
  /** Modulus length in bits. */
  readonly bits: number;
  private readonly key: KeyObject;
  private readonly modulusBytes: number;
  private readonly n: Uint8Array;
  private readonly e: Uint8Array;

  /** `privateKey` is an RSA private KeyObject (node:crypto keeps the key material). */
  constructor(privateKey: KeyObject, options: SshRsaIdentityOptions = {}) {
    if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "rsa") {
      throw new NixsealError("AGE_IDENTITY", "an ssh-rsa identity needs an RSA private key", {
        hint: "use an ssh-ed25519 or ssh-rsa key",
      });
    }
    this.description = options.description ?? "ssh-rsa key";
    this.key = privateKey;
    const { n, e } = rsaPublicNumbers(privateKey);
    this.n = stripZeros(n);
    this.e = stripZeros(e);
    this.bits = bitLength(this.n);
    this.modulusBytes = this.n.length;
    // Identities do not enforce the 2048-bit minimum (agessh does not either): refusing to
    // decrypt with a small key protects nothing.
    this.wireKey = sshRsaWireKey(this.n, this.e);
    this.tag = sshTag(this.wireKey);
  }

  recipient(): SshRsaRecipient {
    return new SshRsaRecipient(this.n, this.e);
  }

  /**
   * This identity for another thread of this process (postMessage clones the KeyObject inside
   * node:crypto: no copy of the key in the JS heap); fromTransfer makes it there again.
   */
  transfer(): SshRsaTransfer {
    return { kind: SSH_RSA_STANZA, key: this.key, description: this.description };
  }

  static fromTransfer(t: SshRsaTransfer): SshRsaIdentity {
    return new SshRsaIdentity(t.key, { description: t.description });
  }

  /**
   * The private key as PKCS#1 DER (RFC 8017 appendix A.1.2), for the PGP key sops-nix makes of
   * an RSA host key (src/sops/ssh-to-pgp.ts). The caller wipes it.
   */
  exportPkcs1(): Buffer {
    return this.key.export({ format: "der", type: "pkcs1" });
  }

  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | null {
    for (const s of stanzas) {
      if (s.type !== SSH_RSA_STANZA) continue;
      checkSshRsaStanza(s);
      // Another key's stanza: skipped before any private-key work.
      if (s.args[0] !== this.tag) continue;
      if (s.body.length !== this.modulusBytes) throw stanzaError("the body length is not the key's size");
      let fileKey: Buffer;
      try {
        fileKey = privateDecrypt(
          {
            key: this.key,
            padding: constants.RSA_PKCS1_OAEP_PADDING,
            oaepHash: "sha256",
            oaepLabel: OAEP_LABEL,
          },
          s.body,
        );
      } catch {
        // agessh: a stanza with our tag that does not decrypt is an error, not "not for us".
        throw new NixsealError("AGE_STANZA", "the ssh-rsa stanza for this key does not decrypt", {
          hint: "the file is damaged, or was encrypted to a different key with the same 4-byte tag",
        });
      }
      return fileKey;
    }
    return null;
  }
}

/**
 * The X25519 recipient type: `age1...` recipients, `AGE-SECRET-KEY-1...` identities.
 * age spec: "The X25519 recipient type".
 */
import { type KeyObject, randomBytes } from "node:crypto";
import { concatBytes, decodeBase64NoPad, encodeBase64NoPad, NixsealError, wipe } from "../common/index.js";
import { decodeBech32, encodeBech32 } from "./bech32.js";
import {
  hkdfSha256,
  openZeroNonce,
  sealZeroNonce,
  x25519,
  x25519Ephemeral,
  x25519PrivateKey,
  x25519PublicBytes,
  x25519PublicKey,
} from "./primitives.js";
import { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";

const INFO = "age-encryption.org/v1/X25519";
export const X25519_STANZA = "X25519";

function stanzaError(message: string): NixsealError {
  return new NixsealError("AGE_STANZA", `invalid X25519 recipient stanza: ${message}`, {
    hint: "the file is damaged or was not written by a conforming age implementation",
  });
}

export class X25519Recipient implements Recipient {
  readonly publicKey: Uint8Array;
  private readonly key: KeyObject;

  constructor(publicKey: Uint8Array) {
    if (publicKey.length !== 32)
      throw new NixsealError("AGE_RECIPIENT", "X25519 public key must be 32 bytes");
    this.publicKey = publicKey;
    this.key = x25519PublicKey(publicKey);
  }

  static parse(s: string): X25519Recipient {
    const d = decodeBech32(s);
    if (d === null || d.hrp !== "age" || d.data.length !== 32 || s !== s.toLowerCase()) {
      // Only the type is named: the caller says where the string is (file and line).
      throw new NixsealError("AGE_RECIPIENT", `invalid X25519 recipient (age1..., ${s.length} characters)`, {
        hint: "an age recipient looks like age1... (62 characters); check for a typo",
      });
    }
    return new X25519Recipient(d.data);
  }

  toString(): string {
    return encodeBech32("age", this.publicKey);
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const eph = x25519Ephemeral();
    const shared = x25519(eph.privateKey, this.key);
    const wrapKey = hkdfSha256(shared, concatBytes(eph.publicBytes, this.publicKey), INFO);
    const body = sealZeroNonce(wrapKey, fileKey);
    wipe(shared, wrapKey);
    return [{ type: X25519_STANZA, args: [encodeBase64NoPad(eph.publicBytes)], body }];
  }
}

/** An X25519 identity as it crosses to a worker thread (X25519Identity.transfer). */
export interface X25519Transfer {
  kind: typeof X25519_STANZA;
  key: KeyObject;
  description: string;
}

export class X25519Identity implements Identity {
  readonly description: string;
  private readonly key: KeyObject;
  private readonly publicKey: Uint8Array;

  /**
   * `secret` is the 32-byte scalar; it is copied into a KeyObject and the caller may wipe it.
   * Or the X25519 private KeyObject itself (fromTransfer).
   */
  constructor(secret: Uint8Array | KeyObject, description = "X25519 identity") {
    if (secret instanceof Uint8Array) {
      if (secret.length !== 32) throw new NixsealError("AGE_IDENTITY", "X25519 secret key must be 32 bytes");
      this.key = x25519PrivateKey(secret);
    } else {
      if (secret.type !== "private" || secret.asymmetricKeyType !== "x25519")
        throw new NixsealError("AGE_IDENTITY", "an X25519 identity needs an X25519 private key");
      this.key = secret;
    }
    this.publicKey = x25519PublicBytes(this.key);
    this.description = description;
  }

  static generate(): X25519Identity {
    const secret = randomBytes(32);
    const id = new X25519Identity(secret);
    wipe(secret);
    return id;
  }

  /** Parses `AGE-SECRET-KEY-1...`; the error never repeats the key. */
  static parse(s: string, description?: string): X25519Identity {
    const d = decodeBech32(s);
    if (d === null || d.hrp !== "age-secret-key-" || d.data.length !== 32 || s !== s.toUpperCase()) {
      throw new NixsealError("AGE_IDENTITY", "malformed age secret key (AGE-SECRET-KEY-1...)", {
        hint: "the key is damaged or truncated; check the identity file",
      });
    }
    try {
      return new X25519Identity(d.data, description);
    } finally {
      wipe(d.data);
    }
  }

  /** The identity string, for writing a new key file. Only age-keygen should call this. */
  encode(): string {
    const der = this.key.export({ format: "der", type: "pkcs8" });
    const secret = der.subarray(der.length - 32);
    const s = encodeBech32("AGE-SECRET-KEY-", secret, true);
    der.fill(0);
    return s;
  }

  recipient(): X25519Recipient {
    return new X25519Recipient(this.publicKey);
  }

  /**
   * This identity for another thread of this process (postMessage clones the KeyObject inside
   * node:crypto: no copy of the key in the JS heap); fromTransfer makes it there again.
   */
  transfer(): X25519Transfer {
    return { kind: X25519_STANZA, key: this.key, description: this.description };
  }

  static fromTransfer(t: X25519Transfer): X25519Identity {
    return new X25519Identity(t.key, t.description);
  }

  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | null {
    for (const s of stanzas) {
      if (s.type !== X25519_STANZA) continue;
      if (s.args.length !== 1) throw stanzaError("wrong number of arguments");
      const share = decodeBase64NoPad(s.args[0]!);
      if (share === null || share.length !== 32) throw stanzaError("invalid ephemeral share");
      // age spec: check the body length before decrypting (partitioning oracle attacks).
      if (s.body.length !== FILE_KEY_SIZE + 16) throw stanzaError("invalid body length");
      let shared: Uint8Array;
      try {
        shared = x25519(this.key, x25519PublicKey(share));
      } catch {
        // OpenSSL refuses an all-zero shared secret (low-order share): age spec says abort.
        throw stanzaError("low-order ephemeral share");
      }
      const wrapKey = hkdfSha256(shared, concatBytes(share, this.publicKey), INFO);
      const fileKey = openZeroNonce(wrapKey, s.body);
      wipe(shared, wrapKey);
      if (fileKey !== null) return fileKey;
    }
    return null;
  }
}

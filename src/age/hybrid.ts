/**
 * The post-quantum hybrid recipient type: `age1pq1...` recipients, `AGE-SECRET-KEY-PQ-1...`
 * identities, `mlkem768x25519` stanzas (HPKE with the MLKEM768-X25519 KEM, see hpke.ts).
 * age spec: "The MLKEM768-X25519 (i.e. X-Wing) hybrid post-quantum recipient type".
 */
import { createSecretKey, type KeyObject, randomBytes } from "node:crypto";
import { asBuffer, decodeBase64NoPad, encodeBase64NoPad, NixsealError, wipe } from "../common/index.js";
import { decodeBech32, encodeBech32 } from "./bech32.js";
import {
  hpkeOpenBase,
  hpkeSealBase,
  loadMlKem,
  XWING_ENC_SIZE,
  XWING_PUBLIC_KEY_SIZE,
  XWING_SEED_SIZE,
  XWingPrivateKey,
  XWingPublicKey,
} from "./hpke.js";
import { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";

/** age spec: the HPKE info string. */
const INFO = "age-encryption.org/mlkem768x25519";
export const HYBRID_STANZA = "mlkem768x25519";
export { loadMlKem };

const RECIPIENT_HRP = "age1pq";
const IDENTITY_HRP = "AGE-SECRET-KEY-PQ-";
/** ChaCha20-Poly1305 tag. */
const TAG_SIZE = 16;

function stanzaError(message: string): NixsealError {
  return new NixsealError("AGE_STANZA", `invalid mlkem768x25519 recipient stanza: ${message}`, {
    hint: "the file is damaged or was not written by a conforming age implementation",
  });
}

export class HybridRecipient implements Recipient {
  /** age labels: a post-quantum recipient is never mixed with classic ones (it would defeat it). */
  readonly labels: readonly string[] = ["postquantum"];
  private readonly key: XWingPublicKey;

  /** `publicKey` is the 1216-byte MLKEM768-X25519 encapsulation key; throws AGE_RECIPIENT. */
  constructor(publicKey: Uint8Array) {
    this.key = new XWingPublicKey(publicKey);
  }

  /** Parses `age1pq1...` (lowercase Bech32, as age writes it). */
  static parse(s: string): HybridRecipient {
    const d = decodeBech32(s);
    if (d === null || d.hrp !== RECIPIENT_HRP || s !== s.toLowerCase()) {
      throw new NixsealError("AGE_RECIPIENT", `invalid post-quantum recipient (${s.length} characters)`, {
        hint: s.startsWith("age1pq1")
          ? "the key is damaged or truncated (it is 1959 characters long); copy it again in full"
          : "a post-quantum age recipient starts with age1pq1",
      });
    }
    if (d.data.length !== XWING_PUBLIC_KEY_SIZE) {
      throw new NixsealError(
        "AGE_RECIPIENT",
        `invalid post-quantum recipient: ${d.data.length} bytes, not 1216`,
        {
          hint: "the key is damaged or truncated; copy it again in full",
        },
      );
    }
    return new HybridRecipient(d.data);
  }

  /** The raw 1216-byte encapsulation key. */
  get publicKey(): Uint8Array {
    return this.key.bytes;
  }

  toString(): string {
    return encodeBech32(RECIPIENT_HRP, this.key.bytes);
  }

  /** age spec: HPKE SealBase of the file key, enc as the argument, ciphertext as the body. */
  async wrapFileKey(fileKey: Uint8Array): Promise<Stanza[]> {
    await loadMlKem();
    const { enc, ciphertext } = hpkeSealBase(this.key, INFO, fileKey);
    return [{ type: HYBRID_STANZA, args: [encodeBase64NoPad(enc)], body: ciphertext }];
  }
}

export class HybridIdentity implements Identity {
  readonly description: string;
  /** The 32-byte seed, kept out of the JS heap for encode(). */
  private readonly seed: KeyObject;
  /** Expanded on first use (ML-KEM is loaded lazily, and parsing should stay cheap). */
  private expanded: XWingPrivateKey | null = null;
  private destroyed = false;

  /** `seed` is the 32-byte identity; it is copied and the caller may wipe it. */
  constructor(seed: Uint8Array, description = "post-quantum identity") {
    if (seed.length !== XWING_SEED_SIZE) {
      throw new NixsealError("AGE_IDENTITY", "post-quantum secret key must be 32 bytes");
    }
    // createSecretKey copies the bytes into native memory; no JS-heap copy is left behind.
    this.seed = createSecretKey(asBuffer(seed));
    this.description = description;
  }

  /** The expanded key; ML-KEM must be loaded (loadMlKem). */
  private get key(): XWingPrivateKey {
    if (this.destroyed) {
      throw new NixsealError("INTERNAL", "post-quantum identity used after it was destroyed", {
        hint: "this is a bug in nixseal; please report it",
      });
    }
    if (this.expanded === null) {
      const seed = this.seed.export();
      try {
        this.expanded = new XWingPrivateKey(seed);
      } finally {
        seed.fill(0);
      }
    }
    return this.expanded;
  }

  static generate(description?: string): HybridIdentity {
    const seed = randomBytes(XWING_SEED_SIZE);
    try {
      return new HybridIdentity(seed, description);
    } finally {
      wipe(seed);
    }
  }

  /** Parses `AGE-SECRET-KEY-PQ-1...` (uppercase, as age writes it); the error never repeats the key. */
  static parse(s: string, description?: string): HybridIdentity {
    const d = decodeBech32(s);
    if (
      d === null ||
      d.hrp !== IDENTITY_HRP.toLowerCase() ||
      d.data.length !== XWING_SEED_SIZE ||
      s !== s.toUpperCase()
    ) {
      if (d !== null) wipe(d.data);
      const lower = s.startsWith("age-secret-key-pq-1");
      throw new NixsealError(
        "AGE_IDENTITY",
        "malformed post-quantum age secret key (AGE-SECRET-KEY-PQ-1...)",
        {
          hint: lower
            ? "age secret keys are written in uppercase; restore the key file from a good copy"
            : "the key is damaged or truncated; check the identity file",
        },
      );
    }
    try {
      return new HybridIdentity(d.data, description);
    } finally {
      wipe(d.data);
    }
  }

  /** The identity string, for writing a new key file. Only key generation should call this. */
  encode(): string {
    const seed = this.seed.export();
    try {
      return encodeBech32(IDENTITY_HRP, seed, true);
    } finally {
      seed.fill(0);
    }
  }

  /**
   * Zeroes the expanded ML-KEM decapsulation key this identity keeps in memory (the seed itself
   * lives in a KeyObject, outside the JS heap). The identity cannot unwrap afterwards.
   */
  destroy(): void {
    this.expanded?.destroy();
    this.destroyed = true;
  }

  /** The recipient of this identity. Needs ML-KEM: `await loadMlKem()` first. */
  recipient(): HybridRecipient {
    return new HybridRecipient(this.key.publicKey.bytes);
  }

  /**
   * age spec: ignore stanzas of other types; reject a mlkem768x25519 stanza with other than one
   * argument, a non-canonical or wrong-size enc, or a body that is not exactly 32 bytes.
   */
  async unwrapFileKey(stanzas: readonly Stanza[]): Promise<Uint8Array | null> {
    if (stanzas.some((s) => s.type === HYBRID_STANZA)) await loadMlKem();
    for (const s of stanzas) {
      if (s.type !== HYBRID_STANZA) continue;
      if (s.args.length !== 1) throw stanzaError("wrong number of arguments");
      const enc = decodeBase64NoPad(s.args[0]!);
      if (enc === null) throw stanzaError("enc is not canonical base64");
      if (enc.length !== XWING_ENC_SIZE) throw stanzaError("enc is not 1120 bytes");
      // age spec: check the body length before decrypting (partitioning oracle attacks).
      if (s.body.length !== FILE_KEY_SIZE + TAG_SIZE) throw stanzaError("invalid body length");
      const fileKey = hpkeOpenBase(this.key, enc, INFO, s.body);
      if (fileKey !== null) return fileKey;
    }
    return null;
  }
}

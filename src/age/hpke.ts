/**
 * HPKE (RFC 9180) base mode, single-shot, for the one suite age uses: KEM MLKEM768-X25519
 * (a.k.a. X-Wing, draft-ietf-hpke-pq-03), KDF HKDF-SHA256, AEAD ChaCha20Poly1305.
 * age spec: "The MLKEM768-X25519 (i.e. X-Wing) hybrid post-quantum recipient type".
 *
 * Where each primitive comes from: ML-KEM-768 from @noble/post-quantum (Node 20 has none);
 * everything else from node:crypto: SHAKE256 (seed expansion), SHA3-256 (combiner), X25519,
 * HMAC-SHA256 (HKDF), ChaCha20-Poly1305. noble's `ml_kem768_x25519` is the same KEM (the tests
 * check both agree), but its pure-JS X25519 and per-call seed expansion make it 3-4x slower
 * (measured: encapsulate 2.4 ms vs 0.7 ms, decapsulate 2.6 ms vs 0.6 ms), and here the
 * all-zero X25519 secret (a low-order share, which age rejects) is told apart from other errors.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  type KeyObject,
  randomBytes,
} from "node:crypto";
import { asBuffer, concatBytes, NixsealError, wipe } from "../common/index.js";
import {
  x25519,
  x25519Ephemeral,
  x25519PrivateKey,
  x25519PublicBytes,
  x25519PublicKey,
} from "./primitives.js";

// --- ML-KEM-768, loaded on first use ----------------------------------------------------------

type MlKem768 = typeof import("@noble/post-quantum/ml-kem.js")["ml_kem768"];
let mlKem: MlKem768 | undefined;

/**
 * Loads ML-KEM-768 (@noble/post-quantum). Importing it costs ~15-20 ms of start-up, which every
 * command without post-quantum keys would otherwise pay: wrap and unwrap load it themselves;
 * callers of the synchronous HybridIdentity.recipient() await this first.
 */
export async function loadMlKem(): Promise<void> {
  mlKem ??= (await import("@noble/post-quantum/ml-kem.js")).ml_kem768;
}

function kem(): MlKem768 {
  if (mlKem === undefined) {
    throw new NixsealError("INTERNAL", "ML-KEM-768 used before loadMlKem()", { hint: BUG });
  }
  return mlKem;
}

// --- The MLKEM768-X25519 KEM (draft-ietf-hpke-pq-03, draft-connolly-cfrg-xwing-kem) ----------

const MLKEM_PUBLIC_KEY_SIZE = 1184;
const MLKEM_CIPHERTEXT_SIZE = 1088;
const X25519_SIZE = 32;
/** Npk: ML-KEM-768 encapsulation key || X25519 public key. */
export const XWING_PUBLIC_KEY_SIZE = MLKEM_PUBLIC_KEY_SIZE + X25519_SIZE;
/** Nenc: ML-KEM-768 ciphertext || X25519 ephemeral public key. */
export const XWING_ENC_SIZE = MLKEM_CIPHERTEXT_SIZE + X25519_SIZE;
/** Nsk: the private key is a 32-byte seed. */
export const XWING_SEED_SIZE = 32;
const XWING_KEM_ID = 0x647a;
/** The X-Wing combiner label `\.//^\`. */
const XWING_LABEL = Buffer.from("5c2e2f2f5e5c", "hex");

const BUG = "this is a bug in nixseal; please report it";

/** age spec: an all-zero X25519 shared secret must be rejected (CCTV: hybrid_low_order). */
function lowOrderShare(): NixsealError {
  return new NixsealError("AGE_STANZA", "invalid mlkem768x25519 recipient stanza: low-order X25519 share", {
    hint: "the file is damaged or was crafted to attack the key; it cannot be decrypted",
  });
}

function malformedRecipient(why: string): NixsealError {
  return new NixsealError("AGE_RECIPIENT", `invalid post-quantum recipient: ${why}`, {
    hint: "an age post-quantum recipient looks like age1pq1... (1959 characters); copy it again in full",
  });
}

/**
 * FIPS 203 §7.2 encapsulation key check: every 12-bit coefficient of the first 1152 bytes is
 * below q = 3329 (the "modulus check"). The Go reference rejects such keys when parsing them.
 */
export function isValidMlkemPublicKey(ek: Uint8Array): boolean {
  if (ek.length !== MLKEM_PUBLIC_KEY_SIZE) return false;
  for (let i = 0; i < 1152; i += 3) {
    const b0 = ek[i]!;
    const b1 = ek[i + 1]!;
    const b2 = ek[i + 2]!;
    if ((b0 | ((b1 & 0x0f) << 8)) >= 3329 || ((b1 >> 4) | (b2 << 4)) >= 3329) return false;
  }
  return true;
}

/** A parsed MLKEM768-X25519 public key. */
export class XWingPublicKey {
  readonly bytes: Uint8Array;
  private readonly mlkem: Uint8Array;
  private readonly x25519Bytes: Uint8Array;
  private readonly x25519Key: KeyObject;

  /** Throws AGE_RECIPIENT on a malformed key. */
  constructor(bytes: Uint8Array) {
    if (bytes.length !== XWING_PUBLIC_KEY_SIZE)
      throw malformedRecipient(`the key is ${bytes.length} bytes, not 1216`);
    const copy = Uint8Array.from(bytes);
    this.mlkem = copy.subarray(0, MLKEM_PUBLIC_KEY_SIZE);
    if (!isValidMlkemPublicKey(this.mlkem))
      throw malformedRecipient("the ML-KEM-768 key fails the modulus check");
    this.x25519Bytes = copy.subarray(MLKEM_PUBLIC_KEY_SIZE);
    this.x25519Key = x25519PublicKey(this.x25519Bytes);
    this.bytes = copy;
  }

  /**
   * Encap(pk): returns enc and the 32-byte shared secret (the caller wipes it). Throws
   * AGE_RECIPIENT if the X25519 half is a low-order point (as the Go reference does).
   */
  encapsulate(): { enc: Uint8Array; sharedSecret: Uint8Array } {
    // m is the preimage of the ML-KEM shared secret: drawn here from node's CSPRNG and wiped.
    const m = randomBytes(32);
    const { cipherText: ctM, sharedSecret: ssM } = kem().encapsulate(this.mlkem, m);
    wipe(m);
    const eph = x25519Ephemeral();
    let ssX: Uint8Array;
    try {
      ssX = x25519(eph.privateKey, this.x25519Key);
    } catch {
      wipe(ssM);
      throw malformedRecipient("its X25519 key is a low-order point");
    }
    const sharedSecret = combine(ssM, ssX, eph.publicBytes, this.x25519Bytes);
    wipe(ssM, ssX);
    return { enc: concatBytes(ctM, eph.publicBytes), sharedSecret };
  }
}

/** An MLKEM768-X25519 private key, expanded once from its seed and kept for repeated use. */
export class XWingPrivateKey {
  readonly publicKey: XWingPublicKey;
  /** The expanded ML-KEM-768 decapsulation key (dk, 2400 bytes). */
  private readonly mlkemDk: Uint8Array;
  private readonly x25519Key: KeyObject;
  private readonly x25519Bytes: Uint8Array;
  private destroyed = false;

  /** draft-connolly-cfrg-xwing-kem expandDecapsulationKey: SHAKE256(seed, 96) = d || z || skX. */
  constructor(seed: Uint8Array) {
    if (seed.length !== XWING_SEED_SIZE)
      throw new NixsealError("INTERNAL", "MLKEM768-X25519 seed must be 32 bytes", { hint: BUG });
    const expanded = createHash("shake256", { outputLength: 96 }).update(seed).digest();
    try {
      const { publicKey, secretKey } = kem().keygen(expanded.subarray(0, 64));
      this.mlkemDk = secretKey;
      this.x25519Key = x25519PrivateKey(expanded.subarray(64, 96));
      this.x25519Bytes = x25519PublicBytes(this.x25519Key);
      this.publicKey = new XWingPublicKey(concatBytes(publicKey, this.x25519Bytes));
    } finally {
      wipe(expanded);
    }
  }

  /**
   * Decap(enc, sk). ML-KEM rejects implicitly (a wrong enc gives a wrong secret, found out by the
   * AEAD), so the only failure is the all-zero X25519 secret: AGE_STANZA.
   */
  decapsulate(enc: Uint8Array): Uint8Array {
    if (enc.length !== XWING_ENC_SIZE)
      throw new NixsealError("INTERNAL", "MLKEM768-X25519 enc must be 1120 bytes", { hint: BUG });
    if (this.destroyed) {
      throw new NixsealError("INTERNAL", "post-quantum identity used after it was destroyed", { hint: BUG });
    }
    const ctX = enc.subarray(MLKEM_CIPHERTEXT_SIZE);
    const ssM = kem().decapsulate(enc.subarray(0, MLKEM_CIPHERTEXT_SIZE), this.mlkemDk);
    let ssX: Uint8Array;
    try {
      ssX = x25519(this.x25519Key, x25519PublicKey(ctX));
    } catch {
      wipe(ssM);
      throw lowOrderShare();
    }
    const sharedSecret = combine(ssM, ssX, ctX, this.x25519Bytes);
    wipe(ssM, ssX);
    return sharedSecret;
  }

  /** Zeroes the expanded decapsulation key; the key is unusable afterwards. */
  destroy(): void {
    wipe(this.mlkemDk);
    this.destroyed = true;
  }
}

/** X-Wing combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || label). */
function combine(ssM: Uint8Array, ssX: Uint8Array, ctX: Uint8Array, pkX: Uint8Array): Uint8Array {
  return createHash("sha3-256").update(ssM).update(ssX).update(ctX).update(pkX).update(XWING_LABEL).digest();
}

// --- HPKE key schedule and single-shot seal/open (RFC 9180 §5.1, §6.1) ----------------------

const KDF_HKDF_SHA256 = 0x0001;
const AEAD_CHACHA20POLY1305 = 0x0003;
const MODE_BASE = 0x00;
/** suite_id = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2) */
const SUITE_ID = Buffer.concat([
  Buffer.from("HPKE", "latin1"),
  Buffer.of(XWING_KEM_ID >> 8, XWING_KEM_ID & 0xff, 0, KDF_HKDF_SHA256, 0, AEAD_CHACHA20POLY1305),
]);
const HPKE_V1 = Buffer.from("HPKE-v1", "latin1");
const NK = 32;
const NN = 12;
const NT = 16;
const ZERO_SALT = Buffer.alloc(32);

/** LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm). */
function labeledExtract(salt: Uint8Array, label: string, ikm: Uint8Array): Buffer {
  return createHmac("sha256", salt.length === 0 ? ZERO_SALT : asBuffer(salt))
    .update(HPKE_V1)
    .update(SUITE_ID)
    .update(label, "latin1")
    .update(ikm)
    .digest();
}

/** LabeledExpand(prk, label, info, L) for L <= 32: a single HKDF-Expand block. */
function labeledExpand(prk: Uint8Array, label: string, info: Uint8Array, length: number): Buffer {
  const t1 = createHmac("sha256", asBuffer(prk))
    .update(Buffer.of(length >> 8, length & 0xff))
    .update(HPKE_V1)
    .update(SUITE_ID)
    .update(label, "latin1")
    .update(info)
    .update(Buffer.of(1))
    .digest();
  if (length === t1.length) return t1;
  const out = Buffer.from(t1.subarray(0, length));
  t1.fill(0);
  return out;
}

/** key_schedule_context for mode_base with no PSK; it only depends on info, so it is cached. */
const contextCache = new Map<string, Buffer>();
function keyScheduleContext(info: string): Buffer {
  let ctx = contextCache.get(info);
  if (ctx === undefined) {
    const pskIdHash = labeledExtract(new Uint8Array(0), "psk_id_hash", new Uint8Array(0));
    const infoHash = labeledExtract(new Uint8Array(0), "info_hash", Buffer.from(info, "latin1"));
    ctx = Buffer.concat([Buffer.of(MODE_BASE), pskIdHash, infoHash]);
    contextCache.set(info, ctx);
  }
  return ctx;
}

/** KeySchedule(mode_base, shared_secret, info, psk="", psk_id=""): the AEAD key and base nonce. */
function keySchedule(sharedSecret: Uint8Array, info: string): { key: Buffer; nonce: Buffer } {
  const ctx = keyScheduleContext(info);
  const secret = labeledExtract(sharedSecret, "secret", new Uint8Array(0));
  const key = labeledExpand(secret, "key", ctx, NK);
  const nonce = labeledExpand(secret, "base_nonce", ctx, NN);
  secret.fill(0);
  return { key, nonce };
}

export interface HpkeSealed {
  /** The encapsulated key (1120 bytes). */
  enc: Uint8Array;
  /** The AEAD ciphertext and tag. */
  ciphertext: Uint8Array;
}

/**
 * SealBase(pkR, info, aad="", pt) for one message (sequence number 0, so the nonce is the
 * base nonce). Throws AGE_RECIPIENT if the recipient's X25519 key is a low-order point.
 */
export function hpkeSealBase(pk: XWingPublicKey, info: string, plaintext: Uint8Array): HpkeSealed {
  const { enc, sharedSecret } = pk.encapsulate();
  const { key, nonce } = keySchedule(sharedSecret, info);
  wipe(sharedSecret);
  const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: NT });
  const ciphertext = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  wipe(key);
  return { enc, ciphertext };
}

/**
 * OpenBase(enc, skR, info, aad="", ct) for one message. Returns null if the AEAD does not
 * authenticate (wrong key: ML-KEM's implicit rejection only shows up here). Throws AGE_STANZA
 * on an all-zero X25519 secret.
 */
export function hpkeOpenBase(
  sk: XWingPrivateKey,
  enc: Uint8Array,
  info: string,
  ciphertext: Uint8Array,
): Uint8Array | null {
  if (ciphertext.length < NT) return null;
  const sharedSecret = sk.decapsulate(enc);
  const { key, nonce } = keySchedule(sharedSecret, info);
  wipe(sharedSecret);
  const ct = asBuffer(ciphertext);
  const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: NT });
  d.setAuthTag(ct.subarray(ct.length - NT));
  const out = d.update(ct.subarray(0, ct.length - NT));
  try {
    d.final();
    return out;
  } catch {
    out.fill(0);
    return null;
  } finally {
    wipe(key);
  }
}

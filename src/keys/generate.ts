/**
 * New key pairs as the files their tools write, for `nixseal gen`: an age identity file (as
 * age-keygen writes it), an OpenSSH ed25519 key (src/ssh/), a WireGuard key (as `wg genkey` and
 * `wg pubkey`). Secret parts are bytes the caller writes out and wipes.
 */
import { randomBytes } from "node:crypto";
import { x25519PrivateKey, x25519PublicBytes } from "../age/index.js";
import { generateSshEd25519Key } from "../ssh/index.js";
import { generateIdentity } from "./key-types.js";

export interface NewKeyPair {
  /** The private key file's content (secret). */
  secret: Uint8Array;
  /** The public key file's content, one line. */
  public: string;
}

/** An age X25519 identity file ("# created", "# public key", the key) and its recipient line. */
export async function newAgeKeyPair(now: Date = new Date()): Promise<NewKeyPair> {
  const { identity, recipient } = await generateIdentity(false);
  const created = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const secret = Buffer.from(`# created: ${created}\n# public key: ${recipient}\n${identity}\n`, "utf8");
  return { secret, public: `${recipient}\n` };
}

/** An OpenSSH ed25519 private key file (unencrypted) and its public key line. */
export function newSshEd25519KeyPair(comment: string): NewKeyPair {
  const key = generateSshEd25519Key(comment);
  return { secret: key.privateKeyFile, public: key.publicKeyLine };
}

/**
 * A WireGuard key as `wg genkey` prints it (32 random bytes clamped for X25519, base64, a
 * newline) and its public key as `wg pubkey` prints it (the X25519 public key, base64).
 */
export function newWireGuardKeyPair(): NewKeyPair {
  const scalar = randomBytes(32);
  // wg genkey (curve25519_clamp_secret): clear the low 3 bits, clear bit 255, set bit 254.
  scalar[0]! &= 248;
  scalar[31]! &= 127;
  scalar[31]! |= 64;
  const publicKey = x25519PublicBytes(x25519PrivateKey(scalar));
  const secret = Buffer.from(`${scalar.toString("base64")}\n`, "latin1");
  scalar.fill(0);
  return { secret, public: `${Buffer.from(publicKey).toString("base64")}\n` };
}

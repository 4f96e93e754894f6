/**
 * The encryption of an OpenSSH key's private section (OpenSSH PROTOCOL.key): bcrypt-pbkdf turns
 * the passphrase into key and IV, then the cipher the envelope names decrypts the section.
 * chacha20-poly1305@openssh.com per OpenSSH PROTOCOL.chacha20poly1305.
 */
import { createDecipheriv } from "node:crypto";
import { createRequire } from "node:module";
import { asBuffer, constantTimeEqual } from "../common/index.js";

export interface CipherSpec {
  /** node:crypto name, or "chacha20-poly1305@openssh.com", done with @noble/ciphers. */
  node: string;
  keyLen: number;
  ivLen: number;
  blockSize: number;
  authLen: number;
}

/** OpenSSH cipher.c's table, for the ciphers a key file may use. */
export const OPENSSH_CIPHERS: Record<string, CipherSpec> = {
  "aes128-ctr": { node: "aes-128-ctr", keyLen: 16, ivLen: 16, blockSize: 16, authLen: 0 },
  "aes192-ctr": { node: "aes-192-ctr", keyLen: 24, ivLen: 16, blockSize: 16, authLen: 0 },
  "aes256-ctr": { node: "aes-256-ctr", keyLen: 32, ivLen: 16, blockSize: 16, authLen: 0 },
  "aes128-cbc": { node: "aes-128-cbc", keyLen: 16, ivLen: 16, blockSize: 16, authLen: 0 },
  "aes192-cbc": { node: "aes-192-cbc", keyLen: 24, ivLen: 16, blockSize: 16, authLen: 0 },
  "aes256-cbc": { node: "aes-256-cbc", keyLen: 32, ivLen: 16, blockSize: 16, authLen: 0 },
  "3des-cbc": { node: "des-ede3-cbc", keyLen: 24, ivLen: 8, blockSize: 8, authLen: 0 },
  "aes128-gcm@openssh.com": { node: "aes-128-gcm", keyLen: 16, ivLen: 12, blockSize: 16, authLen: 16 },
  "aes256-gcm@openssh.com": { node: "aes-256-gcm", keyLen: 32, ivLen: 12, blockSize: 16, authLen: 16 },
  "chacha20-poly1305@openssh.com": {
    node: "chacha20-poly1305@openssh.com",
    keyLen: 64,
    ivLen: 0,
    blockSize: 8,
    authLen: 16,
  },
};

type ChaChaModule = typeof import("@noble/ciphers/chacha.js");
type Poly1305Module = typeof import("@noble/ciphers/_poly1305.js");
let noble: { chacha20orig: ChaChaModule["chacha20orig"]; poly1305: Poly1305Module["poly1305"] } | undefined;

/**
 * ChaCha20 and Poly1305 from @noble/ciphers, loaded on first use: only a key file encrypted with
 * chacha20-poly1305@openssh.com needs them. node:crypto's "chacha20" is the IETF variant (32-bit
 * counter, 96-bit nonce), not the original one OpenSSH uses (64-bit counter, 64-bit nonce), and
 * node:crypto has Poly1305 only inside the IETF AEAD, whose MAC input differs from OpenSSH's.
 */
async function loadChaChaPoly(): Promise<NonNullable<typeof noble>> {
  if (noble === undefined) {
    const [{ chacha20orig }, { poly1305 }] = await Promise.all([
      import("@noble/ciphers/chacha.js"),
      import("@noble/ciphers/_poly1305.js"),
    ]);
    noble = { chacha20orig, poly1305 };
  }
  return noble;
}

/**
 * chacha20-poly1305@openssh.com as sshkey.c uses it for key files: sequence number 0 as the
 * nonce, no length field (so the second key, the header key, is unused), the Poly1305 key is the
 * first 32 bytes of the main key's stream at counter 0, the tag is over the ciphertext, and the
 * payload is the stream from counter 1. Returns null if the tag does not verify.
 */
async function openChaChaPolyOpenSsh(
  key: Uint8Array,
  ciphertext: Uint8Array,
  tag: Uint8Array,
): Promise<Buffer | null> {
  const { chacha20orig, poly1305 } = await loadChaChaPoly();
  const mainKey = key.subarray(0, 32);
  const nonce = new Uint8Array(8);
  const polyKey = chacha20orig(mainKey, nonce, new Uint8Array(32), undefined, 0);
  const expected = poly1305(ciphertext, polyKey);
  polyKey.fill(0);
  if (!constantTimeEqual(expected, tag)) return null;
  const plain = Buffer.alloc(ciphertext.length);
  chacha20orig(mainKey, nonce, ciphertext, plain, 1);
  return plain;
}

/** Decrypts the private section; null when authentication fails (AEAD ciphers). */
export async function decryptSection(
  spec: CipherSpec,
  keyIv: Uint8Array,
  encrypted: Uint8Array,
  tag: Uint8Array,
): Promise<Buffer | null> {
  const key = keyIv.subarray(0, spec.keyLen);
  const iv = keyIv.subarray(spec.keyLen, spec.keyLen + spec.ivLen);
  if (spec.node === "chacha20-poly1305@openssh.com") return openChaChaPolyOpenSsh(key, encrypted, tag);
  if (spec.authLen > 0) {
    const d = createDecipheriv(spec.node as "aes-256-gcm", asBuffer(key), asBuffer(iv), {
      authTagLength: 16,
    });
    d.setAuthTag(asBuffer(tag));
    const out = d.update(encrypted);
    try {
      d.final();
    } catch {
      out.fill(0);
      return null;
    }
    return out;
  }
  const d = createDecipheriv(spec.node, asBuffer(key), asBuffer(iv));
  d.setAutoPadding(false);
  return Buffer.concat([d.update(encrypted), d.final()]);
}

type BcryptPbkdf = {
  pbkdf(
    pass: Uint8Array,
    passlen: number,
    salt: Uint8Array,
    saltlen: number,
    key: Uint8Array,
    keylen: number,
    rounds: number,
  ): number;
};
let bcryptModule: BcryptPbkdf | undefined;

/** bcrypt-pbkdf (OpenBSD), loaded on first use: most runs never decrypt an OpenSSH key. */
export function bcryptPbkdf(
  passphrase: Uint8Array,
  salt: Uint8Array,
  keyLen: number,
  rounds: number,
): Uint8Array | null {
  bcryptModule ??= createRequire(import.meta.url)("bcrypt-pbkdf") as BcryptPbkdf;
  const out = new Uint8Array(keyLen);
  // Like OpenSSH's, it refuses an empty passphrase (ssh-keygen never encrypts with one).
  if (bcryptModule.pbkdf(passphrase, passphrase.length, salt, salt.length, out, keyLen, rounds) !== 0)
    return null;
  return out;
}

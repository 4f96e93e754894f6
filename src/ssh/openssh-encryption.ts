/**
 * The encryption of an OpenSSH key's private section (OpenSSH PROTOCOL.key): bcrypt-pbkdf turns
 * the passphrase into key and IV, then the cipher the envelope names decrypts the section.
 * chacha20-poly1305@openssh.com per OpenSSH PROTOCOL.chacha20poly1305.
 */
import { createDecipheriv } from "node:crypto";
import { createRequire } from "node:module";
import { asBuffer, constantTimeEqual } from "../common/index.js";

export interface CipherSpec {
  /** node:crypto name, or "chacha20-poly1305@openssh.com" handled here. */
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

const P1305 = (1n << 130n) - 5n;

function leBigInt(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

/**
 * Poly1305 (RFC 8439 section 2.5). node:crypto has no standalone Poly1305, only inside the IETF
 * AEAD, whose MAC input layout differs from OpenSSH's. Key files are small, so BigInt is enough.
 */
export function poly1305(key: Uint8Array, message: Uint8Array): Uint8Array {
  const r = leBigInt(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  const s = leBigInt(key.subarray(16, 32));
  let acc = 0n;
  for (let i = 0; i < message.length; i += 16) {
    const block = message.subarray(i, Math.min(i + 16, message.length));
    acc = ((acc + leBigInt(block) + (1n << BigInt(8 * block.length))) * r) % P1305;
  }
  acc = (acc + s) & ((1n << 128n) - 1n);
  const tag = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    tag[i] = Number(acc & 0xffn);
    acc >>= 8n;
  }
  return tag;
}

/** OpenSSH's original-ChaCha20 with a 64-bit counter and 64-bit nonce, on OpenSSL's IETF layout. */
function chacha20(key: Uint8Array, counter: number, data: Uint8Array): Buffer {
  // OpenSSL's IV: 32-bit little-endian block counter then a 96-bit nonce. OpenSSH's layout is a
  // 64-bit counter then a 64-bit nonce (the sequence number, 0 for key files); with a small
  // counter and a zero nonce both are the same 16 bytes.
  const iv = Buffer.alloc(16);
  iv.writeUInt32LE(counter, 0);
  const c = createDecipheriv("chacha20", asBuffer(key), iv);
  return Buffer.concat([c.update(data), c.final()]);
}

/**
 * chacha20-poly1305@openssh.com with sequence number 0 and no length field, as sshkey.c uses it
 * for key files: Poly1305 key = first 32 bytes of the ChaCha20 stream (main key, counter 0), tag
 * over the ciphertext, payload with counter 1. Returns null if the tag does not verify.
 */
function openChaChaPolyOpenSsh(key: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): Buffer | null {
  const mainKey = key.subarray(0, 32);
  const polyKey = chacha20(mainKey, 0, new Uint8Array(32));
  const expected = poly1305(polyKey, ciphertext);
  polyKey.fill(0);
  if (!constantTimeEqual(expected, tag)) return null;
  return chacha20(mainKey, 1, ciphertext);
}

/** Decrypts the private section; null when authentication fails (AEAD ciphers). */
export function decryptSection(
  spec: CipherSpec,
  keyIv: Uint8Array,
  encrypted: Uint8Array,
  tag: Uint8Array,
): Buffer | null {
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

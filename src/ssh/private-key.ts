/**
 * SSH private key files as age identities: the OpenSSH format ("openssh-key-v1", plain or
 * passphrase-protected with bcrypt-pbkdf and any cipher ssh-keygen offers) and PEM (PKCS#1,
 * also with legacy Proc-Type/DEK-Info encryption, and PKCS#8, plain or encrypted).
 *
 * A passphrase-protected key is lazy, as age's agessh.EncryptedSSHIdentity: its public key is
 * known without the passphrase (OpenSSH keeps it in clear; for PEM the caller may give the .pub
 * file), and the passphrase is asked only when a stanza is for this key, at most once per
 * identity object; the decrypted key is kept for the next files.
 *
 * Formats: OpenSSH PROTOCOL.key (openssh-key-v1), RFC 4716 is not a private key format;
 * PEM per RFC 7468, PKCS#1 (RFC 8017), PKCS#8 (RFC 5958); chacha20-poly1305@openssh.com per
 * OpenSSH PROTOCOL.chacha20poly1305.
 */
import { createDecipheriv, createPrivateKey, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import type { X25519Identity } from "../age/index.js";
import { asBuffer, constantTimeEqual, NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import { SSH_ED25519_STANZA, SshEd25519Identity } from "./ed25519.js";
import { EncryptedSshIdentity } from "./encrypted-identity.js";
import { formatError, unsupportedFormat, wrongPassphrase } from "./key-file-errors.js";
import {
  ed25519Identity,
  identityFromKeyObject,
  rsaIdentity,
  type SshKeyIdentity,
  sameKey,
} from "./key-identity.js";
import { type PemBlock, parsePem } from "./pem.js";
import {
  decodeSshPublicKeyBlob,
  decodeSshPublicKeyLine,
  isKnownUnsupportedSshType,
  type SshKeyType,
  type SshPublicKeyData,
  unsupportedSshKeyType,
} from "./public-key.js";
import { SSH_RSA_STANZA } from "./rsa.js";
import { rsaKeyFromParts } from "./rsa-der.js";
import { SshWireReader } from "./wire.js";

/** A key file larger than this is not a key (the largest, RSA 16384, is about 12 KiB). */
export const MAX_SSH_KEY_FILE_SIZE = 64 * 1024;
/**
 * bcrypt-pbkdf rounds beyond this are refused: the pure-JS bcrypt takes ~18 ms a round, so a
 * hostile file could otherwise stall us for days. ssh-keygen's default is 16, -a 100 is common.
 */
export const MAX_BCRYPT_ROUNDS = 5000;

const OPENSSH_MAGIC = Buffer.from("openssh-key-v1\0", "latin1");

export interface SshPrivateKeyOptions {
  /** The key's path, named in descriptions and errors. */
  file: string;
  /**
   * Asks for the passphrase of an encrypted key; called at most once per identity, only when a
   * stanza is for this key. Ownership of the returned bytes passes to the identity, which wipes
   * them after use: return a fresh buffer on each call.
   */
  passphrase?: () => Promise<Uint8Array>;
  /**
   * The public key of an encrypted PEM key (the contents of FILE.pub), so that the passphrase is
   * asked only for files encrypted to it. Without it, any ssh stanza of a type the key may have
   * asks for it. Not needed for OpenSSH-format keys, which carry their public key in clear.
   */
  publicKey?: string | Uint8Array;
}

// --- OpenSSH: ciphers --------------------------------------------------------------------------

interface CipherSpec {
  /** node:crypto name, or "chacha20-poly1305@openssh.com" handled here. */
  node: string;
  keyLen: number;
  ivLen: number;
  blockSize: number;
  authLen: number;
}

/** OpenSSH cipher.c's table, for the ciphers a key file may use. */
const CIPHERS: Record<string, CipherSpec> = {
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
function decryptSection(
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
function bcryptPbkdf(
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

// --- OpenSSH: the format -----------------------------------------------------------------------

interface OpenSshKey {
  cipherName: string;
  spec: CipherSpec | null;
  salt: Uint8Array;
  rounds: number;
  publicKey: SshPublicKeyData;
  encrypted: Uint8Array;
  tag: Uint8Array;
}

function parseOpenSshEnvelope(blob: Uint8Array, file: string): OpenSshKey {
  const fail = (message: string) => formatError(file, message);
  if (blob.length < OPENSSH_MAGIC.length || !OPENSSH_MAGIC.equals(blob.subarray(0, OPENSSH_MAGIC.length))) {
    throw fail('not an "openssh-key-v1" key');
  }
  const r = new SshWireReader(blob.subarray(OPENSSH_MAGIC.length), fail);
  const cipherName = r.readText("cipher name");
  const kdfName = r.readText("kdf name");
  const kdfOptions = r.readString("kdf options");
  const nkeys = r.readUint32("key count");
  if (nkeys !== 1) throw fail(`holds ${nkeys} keys; only files with one key are supported`);
  const publicBlob = r.readString("public key");
  const encrypted = r.readString("private section");

  let spec: CipherSpec | null = null;
  let salt: Uint8Array = new Uint8Array(0);
  let rounds = 0;
  if (cipherName === "none") {
    if (kdfName !== "none" || kdfOptions.length !== 0) throw fail("unencrypted but with a kdf");
  } else {
    spec = CIPHERS[cipherName] ?? null;
    if (spec === null) {
      throw unsupportedFormat(
        file,
        `the cipher "${cipherName.slice(0, 40)}"`,
        "re-encrypt the key with a current cipher: ssh-keygen -p -f FILE",
      );
    }
    if (kdfName !== "bcrypt") {
      throw unsupportedFormat(
        file,
        `the kdf "${kdfName.slice(0, 40)}"`,
        "re-encrypt the key: ssh-keygen -p -f FILE",
      );
    }
    const k = new SshWireReader(kdfOptions, fail);
    salt = Uint8Array.from(k.readString("bcrypt salt"));
    rounds = k.readUint32("bcrypt rounds");
    k.expectEnd("the kdf options");
    if (salt.length === 0 || rounds === 0) throw fail("invalid bcrypt parameters");
    if (rounds > MAX_BCRYPT_ROUNDS) {
      throw unsupportedFormat(
        file,
        `a bcrypt work factor of ${rounds} rounds (more than ${MAX_BCRYPT_ROUNDS})`,
        "re-encrypt the key with fewer rounds: ssh-keygen -p -a 100 -f FILE",
      );
    }
  }
  const blockSize = spec?.blockSize ?? 8;
  if (encrypted.length === 0 || encrypted.length % blockSize !== 0) {
    throw fail("the private section is not a whole number of cipher blocks");
  }
  // sshkey.c: the AEAD tag follows the private section, outside its length.
  const tag = r.readBytes(spec?.authLen ?? 0, "authentication tag");
  const publicKey = decodeSshPublicKeyBlob(publicBlob, fail, (type) =>
    unsupportedSshKeyType(type, "KEY_UNSUPPORTED", file),
  );
  return { cipherName, spec, salt, rounds, publicKey, encrypted, tag };
}

/** Parses the decrypted private section into an identity, checking it against the public key. */
function parseOpenSshPrivateSection(plain: Uint8Array, key: OpenSshKey, file: string): SshKeyIdentity {
  const fail = (message: string) => formatError(file, message);
  const isEncrypted = key.spec !== null;
  const r = new SshWireReader(plain, fail);
  const check1 = r.readUint32("check value");
  const check2 = r.readUint32("check value");
  // sshkey.c: two equal random check values; with the wrong passphrase they differ.
  if (check1 !== check2) throw isEncrypted ? wrongPassphrase(file) : fail("the check values differ");
  const type = r.readText("key type");
  if (type !== key.publicKey.type)
    throw fail(`the private key is ${type.slice(0, 40)} but the public key is ${key.publicKey.type}`);
  let identity: SshKeyIdentity;
  if (key.publicKey.type === SSH_ED25519_STANZA) {
    const pub = r.readString("Ed25519 public key");
    const priv = r.readString("Ed25519 private key");
    // RFC 8032 private key as OpenSSH stores it: seed || public key.
    if (pub.length !== 32 || priv.length !== 64) throw fail("invalid Ed25519 key lengths");
    if (!constantTimeEqual(priv.subarray(32), pub) || !constantTimeEqual(pub, key.publicKey.publicKey)) {
      throw fail("the private and public halves do not match");
    }
    identity = ed25519Identity(priv.subarray(0, 32), file, isEncrypted);
  } else {
    // sshkey.c (ssh_rsa_deserialize_private): n, e, d, iqmp, p, q.
    const n = r.readMpint("RSA modulus");
    const e = r.readMpint("RSA exponent");
    const d = r.readMpint("RSA private exponent");
    const iqmp = r.readMpint("RSA CRT coefficient");
    const p = r.readMpint("RSA prime p");
    const q = r.readMpint("RSA prime q");
    // Both sides come from readMpint, so they have no leading zeros.
    if (!Buffer.from(n).equals(key.publicKey.n) || !Buffer.from(e).equals(key.publicKey.e)) {
      throw fail("the private and public halves do not match");
    }
    identity = rsaIdentity(rsaKeyFromParts(n, e, d, iqmp, p, q, file), file, isEncrypted);
  }
  r.readString("comment");
  // sshkey.c: deterministic padding 1, 2, 3, ... up to the block size.
  const padding = r.readBytes(r.remaining, "padding");
  for (let i = 0; i < padding.length; i++) {
    // The check values matched, so the passphrase was right: this is damage, not a wrong one.
    if (padding[i] !== i + 1) throw fail("invalid padding");
  }
  if (!sameKey(identity, key.publicKey)) throw fail("the private and public halves do not match");
  return identity;
}

// --- entry points ---------------------------------------------------------------------------

const PRIVATE_KEY_LABELS = /-----BEGIN (OPENSSH|RSA|EC|DSA|ENCRYPTED|SSH2 ENCRYPTED)? ?PRIVATE KEY-----/;

/** Does this file look like an ssh/PEM private key (rather than an age identity file)? */
export function looksLikeSshPrivateKey(data: Uint8Array): boolean {
  const head = Buffer.from(data.buffer, data.byteOffset, Math.min(data.byteLength, 4096)).toString("latin1");
  return PRIVATE_KEY_LABELS.test(head);
}

function parseOpenSsh(block: PemBlock, options: SshPrivateKeyOptions): SshKeyIdentity {
  const { file } = options;
  const blob = Buffer.from(block.body, "base64");
  const key = parseOpenSshEnvelope(blob, file);
  if (key.spec === null) {
    try {
      return parseOpenSshPrivateSection(key.encrypted, key, file);
    } finally {
      blob.fill(0);
    }
  }
  const spec = key.spec;
  return new EncryptedSshIdentity({
    file,
    known: key.publicKey,
    candidateTypes: [key.publicKey.type],
    passphrase: options.passphrase,
    decryptWith: (passphrase) => {
      const keyIv = bcryptPbkdf(passphrase, key.salt, spec.keyLen + spec.ivLen, key.rounds);
      if (keyIv === null) throw wrongPassphrase(file);
      let plain: Buffer | null = null;
      try {
        plain = decryptSection(spec, keyIv, key.encrypted, key.tag);
        if (plain === null) throw wrongPassphrase(file);
        return parseOpenSshPrivateSection(plain, key, file);
      } finally {
        wipe(keyIv, plain);
      }
    },
  });
}

function parsePemPublicKey(options: SshPrivateKeyOptions): SshPublicKeyData | null {
  const { file, publicKey } = options;
  if (publicKey === undefined) return null;
  const text = typeof publicKey === "string" ? publicKey : Buffer.from(publicKey).toString("utf8");
  const line = text.split(/\r?\n/).find((l) => l.trim() !== "" && !l.trimStart().startsWith("#"));
  if (line === undefined) throw formatError(file, "the public key given for it is empty");
  const type = line.trim().split(/\s/)[0] ?? "";
  if (isKnownUnsupportedSshType(type)) throw unsupportedSshKeyType(type, "KEY_UNSUPPORTED", file);
  try {
    return decodeSshPublicKeyLine(line).key;
  } catch (e) {
    rethrowUnlessNixseal(e);
    const code = e.code === "AGE_RECIPIENT" ? "KEY_FORMAT" : e.code;
    throw new NixsealError(code, `${file}: the public key given for it: ${e.message}`, {
      file,
      hint: e.hint,
    });
  }
}

function parsePemKey(block: PemBlock, options: SshPrivateKeyOptions): SshKeyIdentity {
  const { file } = options;
  const legacyEncrypted =
    block.label === "RSA PRIVATE KEY" && (block.headers.get("Proc-Type") ?? "").includes("ENCRYPTED");
  if (block.label === "ENCRYPTED PRIVATE KEY" || legacyEncrypted) {
    const known = parsePemPublicKey(options);
    const candidateTypes: SshKeyType[] = legacyEncrypted
      ? [SSH_RSA_STANZA]
      : [SSH_ED25519_STANZA, SSH_RSA_STANZA];
    if (known !== null && !candidateTypes.includes(known.type)) {
      throw formatError(file, `the public key given for it is ${known.type}, but the file holds an RSA key`);
    }
    return new EncryptedSshIdentity({
      file,
      known,
      candidateTypes,
      passphrase: options.passphrase,
      decryptWith: (passphrase) => {
        let key: KeyObject;
        try {
          key = createPrivateKey({ key: block.text, format: "pem", passphrase: asBuffer(passphrase) });
        } catch {
          // OpenSSL cannot tell a wrong passphrase from a damaged file here.
          throw wrongPassphrase(file);
        }
        return identityFromKeyObject(key, file, true);
      },
    });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: block.text, format: "pem" });
  } catch (cause) {
    throw new NixsealError("KEY_FORMAT", `malformed ssh private key ${file}: the PEM key does not parse`, {
      file,
      hint: "the key file is damaged or truncated; restore it or generate a new key with ssh-keygen",
      cause,
    });
  }
  return identityFromKeyObject(key, file, false);
}

/**
 * Parses an ssh private key file as an age identity (ssh-ed25519 or ssh-rsa). Construction is
 * synchronous and never asks for a passphrase; an encrypted key is decrypted on first use.
 */
export function parseSshPrivateKey(data: Uint8Array, options: SshPrivateKeyOptions): SshKeyIdentity {
  const { file } = options;
  if (data.length > MAX_SSH_KEY_FILE_SIZE) {
    throw formatError(
      file,
      `larger than ${MAX_SSH_KEY_FILE_SIZE / 1024} KiB, not a key file`,
      "check the path",
    );
  }
  const block = parsePem(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("latin1"), file);
  switch (block.label) {
    case "OPENSSH PRIVATE KEY":
      return parseOpenSsh(block, options);
    case "RSA PRIVATE KEY":
    case "PRIVATE KEY":
    case "ENCRYPTED PRIVATE KEY":
      return parsePemKey(block, options);
    case "EC PRIVATE KEY":
      throw unsupportedFormat(
        file,
        "an ECDSA key",
        "age supports only ssh-ed25519 and ssh-rsa keys; use ssh-keygen -t ed25519",
      );
    case "DSA PRIVATE KEY":
      throw unsupportedFormat(
        file,
        "a DSA key",
        "age supports only ssh-ed25519 and ssh-rsa keys; use ssh-keygen -t ed25519",
      );
    case "SSH2 ENCRYPTED PRIVATE KEY":
      throw unsupportedFormat(
        file,
        "the ssh.com (SSH2) key format",
        "convert it with ssh-keygen -i, or make a new key",
      );
    default:
      throw formatError(
        file,
        `not an ssh private key (a PEM "${block.label.slice(0, 40)}" block)`,
        "check the path",
      );
  }
}

/**
 * ssh-to-age for a private key file: an ssh-ed25519 key (decrypted with the passphrase if it
 * is protected) as the plain age X25519 identity sops-nix derives from a host key.
 */
export async function sshPrivateKeyToAgeIdentity(
  data: Uint8Array,
  options: SshPrivateKeyOptions,
): Promise<X25519Identity> {
  const id = await parseSshPrivateKey(data, options).unlock();
  if (!(id instanceof SshEd25519Identity)) {
    throw new NixsealError(
      "KEY_UNSUPPORTED",
      `${options.file}: only ssh-ed25519 keys convert to age X25519 keys`,
      {
        file: options.file,
        hint: "use the ssh-rsa key itself as the identity, or an ssh-ed25519 key",
      },
    );
  }
  return id.toX25519Identity(`age identity from ssh-ed25519 key ${options.file}`);
}

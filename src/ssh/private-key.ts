/**
 * SSH private key files as age identities: which format a file is in, and the identity it gives.
 * The OpenSSH format ("openssh-key-v1", plain or passphrase-protected with bcrypt-pbkdf and any
 * cipher ssh-keygen offers): openssh-envelope.ts, openssh-encryption.ts and
 * openssh-private-section.ts. PEM (pem.ts): PKCS#1, also with legacy Proc-Type/DEK-Info
 * encryption, and PKCS#8, plain or encrypted, which node:crypto decodes.
 *
 * Construction never asks for a passphrase: a passphrase-protected key gives the lazy identity of
 * encrypted-identity.ts, which asks only when a stanza is for this key.
 *
 * Formats: OpenSSH PROTOCOL.key (openssh-key-v1), RFC 4716 is not a private key format;
 * PEM per RFC 7468, PKCS#1 (RFC 8017), PKCS#8 (RFC 5958).
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import type { X25519Identity } from "../age/index.js";
import { asBuffer, NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import { SSH_ED25519_STANZA, SshEd25519Identity } from "./ed25519.js";
import { EncryptedSshIdentity } from "./encrypted-identity.js";
import { formatError, unsupportedFormat, wrongPassphrase } from "./key-file-errors.js";
import { identityFromKeyObject, type SshKeyIdentity } from "./key-identity.js";
import { bcryptPbkdf, decryptSection } from "./openssh-encryption.js";
import { parseOpenSshEnvelope } from "./openssh-envelope.js";
import { parseOpenSshPrivateSection } from "./openssh-private-section.js";
import { type PemBlock, parsePem } from "./pem.js";
import {
  decodeSshPublicKeyLine,
  isKnownUnsupportedSshType,
  type SshKeyType,
  type SshPublicKeyData,
  unsupportedSshKeyType,
} from "./public-key.js";
import { SSH_RSA_STANZA } from "./rsa.js";

/** A key file larger than this is not a key (the largest, RSA 16384, is about 12 KiB). */
export const MAX_SSH_KEY_FILE_SIZE = 64 * 1024;

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
    decryptWith: async (passphrase) => {
      const keyIv = bcryptPbkdf(passphrase, key.salt, spec.keyLen + spec.ivLen, key.rounds);
      if (keyIv === null) throw wrongPassphrase(file);
      let plain: Buffer | null = null;
      try {
        plain = await decryptSection(spec, keyIv, key.encrypted, key.tag);
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
      decryptWith: async (passphrase) => {
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

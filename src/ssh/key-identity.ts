/**
 * The identity an ssh private key file gives (SshKeyIdentity), and that identity for a decrypted
 * key: the ssh-ed25519 or ssh-rsa identity of ed25519.ts and rsa.ts with the file's facts added.
 */
import type { KeyObject } from "node:crypto";
import type { Identity, Recipient } from "../age/index.js";
import { constantTimeEqual } from "../common/index.js";
import { SSH_ED25519_STANZA, SshEd25519Identity } from "./ed25519.js";
import { formatError, unsupportedFormat } from "./key-file-errors.js";
import { type SshKeyType, type SshPublicKeyData, sshPublicKeyWire } from "./public-key.js";
import { SSH_RSA_STANZA, SshRsaIdentity } from "./rsa.js";

/** An identity from an ssh key file. */
export interface SshKeyIdentity extends Identity {
  /** The key's ssh type, or null while unknown (an encrypted PEM key given without its .pub). */
  readonly keyType: SshKeyType | null;
  /** True if the file is passphrase-protected. */
  readonly encrypted: boolean;
  /**
   * The age recipient of this key, or null while unknown. May throw AGE_RECIPIENT for an RSA key
   * under 2048 bits, which age decrypts with but refuses to encrypt to.
   */
  recipient(): Recipient | null;
  /** The decrypted identity, asking for the passphrase now if needed (still at most once). */
  unlock(): Promise<SshKeyIdentity>;
}

export function describe(type: SshKeyType | null, file: string, encrypted: boolean): string {
  return `${type ?? "ssh"} key ${file}${encrypted ? " (passphrase-protected)" : ""}`;
}

/** A decrypted key as an identity; `recipient()` is the age one. */
export function ed25519Identity(seed: Uint8Array, file: string, encrypted: boolean): SshKeyIdentity {
  const id = new SshEd25519Identity(seed, { description: describe(SSH_ED25519_STANZA, file, encrypted) });
  const extra = { keyType: SSH_ED25519_STANZA as SshKeyType, encrypted, unlock: async () => result };
  const result: SshEd25519Identity & SshKeyIdentity = Object.assign(id, extra);
  return result;
}

export function rsaIdentity(key: KeyObject, file: string, encrypted: boolean): SshKeyIdentity {
  const id = new SshRsaIdentity(key, { description: describe(SSH_RSA_STANZA, file, encrypted) });
  const extra = { keyType: SSH_RSA_STANZA as SshKeyType, encrypted, unlock: async () => result };
  const result: SshRsaIdentity & SshKeyIdentity = Object.assign(id, extra);
  return result;
}

/** The public numbers of a decrypted identity, to compare with the public key given in clear. */
export function sameKey(id: SshKeyIdentity, pub: SshPublicKeyData): boolean {
  if (id instanceof SshEd25519Identity)
    return pub.type === SSH_ED25519_STANZA && constantTimeEqual(id.publicKey, pub.publicKey);
  if (id instanceof SshRsaIdentity) {
    return pub.type === SSH_RSA_STANZA && Buffer.from(id.wireKey).equals(sshPublicKeyWire(pub));
  }
  return false;
}

/** An identity from a node:crypto private key (PEM input). */
export function identityFromKeyObject(key: KeyObject, file: string, encrypted: boolean): SshKeyIdentity {
  const type = key.asymmetricKeyType;
  if (type === "rsa") return rsaIdentity(key, file, encrypted);
  if (type === "ed25519") {
    // OpenSSL exports an Ed25519 key as the 48-byte PKCS#8 form ending in the 32-byte seed.
    const der = key.export({ format: "der", type: "pkcs8" });
    try {
      if (der.length !== 48) throw formatError(file, "unexpected Ed25519 PKCS#8 encoding");
      return ed25519Identity(der.subarray(16), file, encrypted);
    } finally {
      der.fill(0);
    }
  }
  const name = type === "ec" ? "an ECDSA key" : type === "dsa" ? "a DSA key" : `a ${type ?? "unknown"} key`;
  throw unsupportedFormat(
    file,
    name,
    "age supports only ssh-ed25519 and ssh-rsa keys; use ssh-keygen -t ed25519",
  );
}

/**
 * SSH public keys as age recipients: authorized_keys-style lines such as
 * "ssh-ed25519 AAAAC3Nza... user@host". Only ssh-ed25519 and ssh-rsa are age recipient types.
 * Wire format: RFC 4253 section 6.6 (ssh-rsa), RFC 8709 (ssh-ed25519).
 */
import { createHash } from "node:crypto";
import type { Recipient, X25519Recipient } from "../age/index.js";
import { NixsealError } from "../common/index.js";
import {
  SSH_ED25519_STANZA,
  SshEd25519Recipient,
  sshEd25519ToAgeRecipient,
  sshEd25519WireKey,
  sshTag,
} from "./ed25519.js";
import { SSH_RSA_STANZA, SshRsaRecipient, sshRsaWireKey } from "./rsa.js";
import { SshWireReader, type WireErrorFactory } from "./wire.js";

export type SshKeyType = typeof SSH_ED25519_STANZA | typeof SSH_RSA_STANZA;

/** The numbers of a supported SSH public key, decoded from its wire form. */
export type SshPublicKeyData =
  | { type: typeof SSH_ED25519_STANZA; publicKey: Uint8Array }
  | { type: typeof SSH_RSA_STANZA; n: Uint8Array; e: Uint8Array };

export const SSH_TYPES_HINT = "age supports only ssh-ed25519 and ssh-rsa keys";

/** ssh key types that exist but are not age recipient types (ssh -Q key lists them). */
export function isKnownUnsupportedSshType(type: string): boolean {
  return (
    type.startsWith("ecdsa-sha2-") ||
    type.startsWith("sk-") ||
    type === "ssh-dss" ||
    type.endsWith("-cert-v01@openssh.com") ||
    type.startsWith("x509v3-") ||
    type.startsWith("rsa-sha2-")
  );
}

/** The error for a known ssh key type that age cannot use; `file` names the key file, if any. */
export function unsupportedSshKeyType(
  type: string,
  code: "AGE_RECIPIENT" | "KEY_UNSUPPORTED",
  file?: string,
): NixsealError {
  const shown = type.length > 60 ? `${type.slice(0, 60)}...` : type;
  const prefix = file === undefined ? "" : `${file}: `;
  const hint = type.startsWith("sk-")
    ? `${SSH_TYPES_HINT}; security-key (FIDO) ssh keys need an age plugin such as age-plugin-fido2-hmac`
    : `${SSH_TYPES_HINT}; generate one with ssh-keygen -t ed25519`;
  return new NixsealError(code, `${prefix}unsupported ssh key type ${shown}`, { hint, file });
}

/**
 * Decodes an SSH public key blob (string type, then the key's fields). Unsupported but known
 * types raise `unsupported(type)`; anything else malformed raises `fail(message)`.
 */
export function decodeSshPublicKeyBlob(
  blob: Uint8Array,
  fail: WireErrorFactory,
  unsupported: (type: string) => NixsealError,
): SshPublicKeyData {
  const r = new SshWireReader(blob, fail);
  const type = r.readText("key type");
  if (type === SSH_ED25519_STANZA) {
    const publicKey = r.readString("Ed25519 public key");
    if (publicKey.length !== 32) throw fail("the Ed25519 public key is not 32 bytes");
    r.expectEnd("the public key");
    return { type, publicKey: Uint8Array.from(publicKey) };
  }
  if (type === SSH_RSA_STANZA) {
    // RFC 4253 section 6.6: e before n.
    const e = Uint8Array.from(r.readMpint("RSA exponent"));
    const n = Uint8Array.from(r.readMpint("RSA modulus"));
    r.expectEnd("the public key");
    return { type, n, e };
  }
  if (isKnownUnsupportedSshType(type)) throw unsupported(type);
  throw fail(`unknown key type "${type.slice(0, 60)}"`);
}

/** The canonical wire encoding of a decoded key (what ssh-keygen and age hash). */
export function sshPublicKeyWire(key: SshPublicKeyData): Uint8Array {
  return key.type === SSH_ED25519_STANZA ? sshEd25519WireKey(key.publicKey) : sshRsaWireKey(key.n, key.e);
}

/** The age recipient tag of a key (no size policy: usable for identities of small RSA keys). */
export function sshPublicKeyTag(key: SshPublicKeyData): string {
  return sshTag(sshPublicKeyWire(key));
}

/** The age recipient of a decoded key; RSA keys under 2048 bits are refused as age does. */
export function sshRecipientOf(key: SshPublicKeyData): SshEd25519Recipient | SshRsaRecipient {
  return key.type === SSH_ED25519_STANZA
    ? new SshEd25519Recipient(key.publicKey)
    : new SshRsaRecipient(key.n, key.e);
}

/** The fingerprint `ssh-keygen -l` prints: "SHA256:" and unpadded base64 of SHA-256(wire key). */
export function sshFingerprint(wireKey: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(wireKey).digest("base64").replace(/=+$/, "")}`;
}

export interface SshPublicKey {
  type: SshKeyType;
  /** The canonical SSH wire encoding of the key. */
  wireKey: Uint8Array;
  /** The comment after the key ("" if none), for display only. */
  comment: string;
  /** "SHA256:...", as `ssh-keygen -l` prints it. */
  fingerprint: string;
  /** Key size in bits (256 for Ed25519). */
  bits: number;
  recipient: SshEd25519Recipient | SshRsaRecipient;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Does this line look like an ssh public key ("ssh-...", "ecdsa-...", "sk-...")? */
export function looksLikeSshPublicKey(line: string): boolean {
  return /^(ssh-|ecdsa-|sk-)/.test(line.trimStart());
}

function shownLine(text: string): string {
  return text.length > 50 ? `${text.slice(0, 50)}...` : text;
}

/**
 * Decodes an authorized_keys-style line, "TYPE BASE64 [COMMENT]", strictly: the type inside the
 * blob must be the one in the text, and nothing may follow the key's fields. No size policy
 * (see parseSshPublicKeyLine for the recipient).
 */
export function decodeSshPublicKeyLine(line: string): { key: SshPublicKeyData; comment: string } {
  const text = line.trim();
  const shown = shownLine(text);
  const bad = (
    message: string,
    hint = "an ssh public key line looks like: ssh-ed25519 AAAAC3Nza... comment",
  ) => new NixsealError("AGE_RECIPIENT", `malformed ssh public key "${shown}": ${message}`, { hint });
  const m = /^(\S+)\s+(\S+)(?:\s+(.*))?$/s.exec(text);
  const type = m?.[1] ?? text.split(/\s/)[0] ?? "";
  if (type !== SSH_ED25519_STANZA && type !== SSH_RSA_STANZA) {
    if (isKnownUnsupportedSshType(type)) throw unsupportedSshKeyType(type, "AGE_RECIPIENT");
    throw bad(`unknown key type "${type.slice(0, 40)}"`, SSH_TYPES_HINT);
  }
  if (m === null) throw bad("expected a key type and a base64 key");
  const b64 = m[2]!;
  if (!BASE64.test(b64) || b64.length % 4 !== 0) throw bad("the key is not valid base64");
  const key = decodeSshPublicKeyBlob(
    Buffer.from(b64, "base64"),
    (message) => bad(message, "the key is damaged; copy it again from the .pub file"),
    (t) => unsupportedSshKeyType(t, "AGE_RECIPIENT"),
  );
  if (key.type !== type) {
    throw bad(
      `the line says ${type} but the key inside is ${key.type}`,
      "the line was edited; copy it again",
    );
  }
  return { key, comment: (m[3] ?? "").trim() };
}

/** Parses an authorized_keys-style line into its recipient, comment and fingerprint. */
export function parseSshPublicKeyLine(line: string): SshPublicKey {
  const { key, comment } = decodeSshPublicKeyLine(line);
  let recipient: SshEd25519Recipient | SshRsaRecipient;
  try {
    recipient = sshRecipientOf(key);
  } catch (e) {
    if (e instanceof NixsealError) {
      throw new NixsealError(e.code, `"${shownLine(line.trim())}": ${e.message}`, { hint: e.hint });
    }
    throw e;
  }
  return {
    type: key.type,
    wireKey: recipient.wireKey,
    comment,
    fingerprint: sshFingerprint(recipient.wireKey),
    bits: recipient instanceof SshRsaRecipient ? recipient.bits : 256,
    recipient,
  };
}

/** Parses an authorized_keys-style line ("ssh-ed25519 AAAA... comment") as an age recipient. */
export function parseSshPublicKey(line: string): Recipient {
  return parseSshPublicKeyLine(line).recipient;
}

/**
 * ssh-to-age: an "ssh-ed25519 AAAA..." line as the plain age X25519 recipient (`age1...`) that
 * sops-nix users put in .sops.yaml for a host's ssh key.
 */
export function sshPublicKeyToAgeRecipient(line: string): X25519Recipient {
  const { key } = decodeSshPublicKeyLine(line);
  if (key.type !== SSH_ED25519_STANZA) {
    throw new NixsealError("AGE_RECIPIENT", `cannot convert an ${key.type} key to an age X25519 recipient`, {
      hint: "only ssh-ed25519 keys convert to age1... keys; use the ssh-rsa key itself as the recipient",
    });
  }
  return sshEd25519ToAgeRecipient(key.publicKey);
}

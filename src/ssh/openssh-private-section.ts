/**
 * The private section of an OpenSSH key file once decrypted (OpenSSH PROTOCOL.key): check
 * values, the key's fields, comment and padding, checked against the public key in clear.
 */
import { constantTimeEqual } from "../common/index.js";
import { SSH_ED25519_STANZA } from "./ed25519.js";
import { formatError, wrongPassphrase } from "./key-file-errors.js";
import { ed25519Identity, rsaIdentity, type SshKeyIdentity, sameKey } from "./key-identity.js";
import type { OpenSshKey } from "./openssh-envelope.js";
import { rsaKeyFromParts } from "./rsa-der.js";
import { SshWireReader } from "./wire.js";

/** Parses the decrypted private section into an identity, checking it against the public key. */
export function parseOpenSshPrivateSection(plain: Uint8Array, key: OpenSshKey, file: string): SshKeyIdentity {
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

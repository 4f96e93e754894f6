/**
 * New OpenSSH ed25519 key files, unencrypted, as `ssh-keygen -t ed25519 -N ''` writes them
 * (OpenSSH PROTOCOL.key, "openssh-key-v1"): what src/ssh/openssh-envelope.ts and
 * src/ssh/openssh-private-section.ts read back.
 */
import { randomBytes } from "node:crypto";
import { asBuffer, NixsealError } from "../common/index.js";
import { ed25519PublicFromSeed, SSH_ED25519_STANZA, sshEd25519WireKey } from "./ed25519.js";
import { SshWireWriter } from "./wire.js";

const MAGIC = Buffer.from("openssh-key-v1\0", "latin1");
/** The block size of cipher "none" (sshkey.c pads the private section to it). */
const BLOCK = 8;

export interface NewSshKey {
  /** The private key file ("-----BEGIN OPENSSH PRIVATE KEY-----" ...), secret: the caller wipes it. */
  privateKeyFile: Uint8Array;
  /** "ssh-ed25519 AAAA... [comment]\n", as the .pub file ssh-keygen writes. */
  publicKeyLine: string;
}

/** A fresh ed25519 key pair as key files. The comment must be one line of printable text. */
export function generateSshEd25519Key(comment: string): NewSshKey {
  if (comment.length > 1024 || !/^[\x20-\x7e]*$/.test(comment)) {
    throw new NixsealError("USAGE", "an ssh key comment must be at most 1024 printable ASCII characters", {
      hint: "e.g. --comment root@host",
    });
  }
  const seed = randomBytes(32);
  const publicKey = ed25519PublicFromSeed(seed);
  const wireKey = sshEd25519WireKey(publicKey);
  const secretKey = Buffer.concat([seed, publicKey]);
  // sshkey.c: two equal random check values open the section (a wrong passphrase shows as unequal).
  const check = randomBytes(4).readUInt32BE(0);
  const section = new SshWireWriter()
    .uint32(check)
    .uint32(check)
    .string(SSH_ED25519_STANZA)
    .string(publicKey)
    .string(secretKey)
    .string(comment)
    .finish();
  const padLength = (BLOCK - (section.length % BLOCK)) % BLOCK;
  const padded = Buffer.alloc(section.length + padLength);
  padded.set(section);
  for (let i = 0; i < padLength; i++) padded[section.length + i] = i + 1;
  const blob = asBuffer(
    new SshWireWriter()
      .bytes(MAGIC)
      .string("none")
      .string("none")
      .string("")
      .uint32(1)
      .string(wireKey)
      .string(padded)
      .finish(),
  );
  const b64 = blob.toString("base64");
  const lines: string[] = ["-----BEGIN OPENSSH PRIVATE KEY-----"];
  // ssh-keygen wraps the base64 at 70 characters.
  for (let i = 0; i < b64.length; i += 70) lines.push(b64.slice(i, i + 70));
  lines.push("-----END OPENSSH PRIVATE KEY-----", "");
  const privateKeyFile = Buffer.from(lines.join("\n"), "latin1");
  for (const b of [seed, secretKey, section, padded, blob]) b.fill(0);
  const pub = `${SSH_ED25519_STANZA} ${Buffer.from(wireKey).toString("base64")}`;
  return { privateKeyFile, publicKeyLine: comment === "" ? `${pub}\n` : `${pub} ${comment}\n` };
}

/**
 * The envelope of an OpenSSH key file (OpenSSH PROTOCOL.key, "openssh-key-v1"): cipher and kdf
 * names, the kdf's parameters, the public key in clear and the (possibly encrypted) private
 * section with its AEAD tag, each checked here: a bad file is refused before any passphrase is
 * asked.
 */
import { formatError, unsupportedFormat } from "./key-file-errors.js";
import { type CipherSpec, OPENSSH_CIPHERS } from "./openssh-encryption.js";
import { decodeSshPublicKeyBlob, type SshPublicKeyData, unsupportedSshKeyType } from "./public-key.js";
import { SshWireReader } from "./wire.js";

/**
 * bcrypt-pbkdf rounds beyond this are refused: the pure-JS bcrypt takes ~18 ms a round, so a
 * hostile file could otherwise stall us for days. ssh-keygen's default is 16, -a 100 is common.
 */
export const MAX_BCRYPT_ROUNDS = 5000;

const OPENSSH_MAGIC = Buffer.from("openssh-key-v1\0", "latin1");

export interface OpenSshKey {
  cipherName: string;
  spec: CipherSpec | null;
  salt: Uint8Array;
  rounds: number;
  publicKey: SshPublicKeyData;
  encrypted: Uint8Array;
  tag: Uint8Array;
}

export function parseOpenSshEnvelope(blob: Uint8Array, file: string): OpenSshKey {
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
    spec = OPENSSH_CIPHERS[cipherName] ?? null;
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

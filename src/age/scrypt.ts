/**
 * The scrypt recipient type: passphrase encryption. age spec: "The scrypt recipient type".
 */
import { randomBytes, scryptSync } from "node:crypto";
import { concatBytes, decodeBase64NoPad, encodeBase64NoPad, NixsealError, wipe } from "../common/index.js";
import { openZeroNonce, sealZeroNonce } from "./primitives.js";
import { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";

const SALT_LABEL = "age-encryption.org/v1/scrypt";
export const SCRYPT_STANZA = "scrypt";
/** age 1.x's default work factor for encryption (~1 s here). */
export const DEFAULT_LOG_N = 18;
/** age's default upper limit when decrypting: refuse files that would take minutes and GiBs. */
export const DEFAULT_MAX_LOG_N = 22;

function stanzaError(message: string): NixsealError {
  return new NixsealError("AGE_STANZA", `invalid scrypt recipient stanza: ${message}`, {
    hint: "the file is damaged or was not written by a conforming age implementation",
  });
}

function deriveWrapKey(passphrase: Uint8Array, salt: Uint8Array, logN: number): Uint8Array {
  const N = 2 ** logN;
  // scrypt needs 128·N·r bytes; raise Node's 32 MiB default accordingly.
  return scryptSync(passphrase, concatBytes(Buffer.from(SALT_LABEL, "latin1"), salt), 32, {
    N,
    r: 8,
    p: 1,
    maxmem: 128 * N * 8 + 16 * 1024 * 1024,
  });
}

export class ScryptRecipient implements Recipient {
  private readonly passphrase: Uint8Array;
  private readonly logN: number;
  /** A unique label: age spec says an scrypt stanza must be alone, so it mixes with nothing. */
  readonly labels: readonly string[];

  /** The passphrase is copied; wipe yours when done, and call wipe() on this when done. */
  constructor(passphrase: Uint8Array, logN = DEFAULT_LOG_N) {
    if (passphrase.length === 0) {
      throw new NixsealError("AGE_PASSPHRASE", "the passphrase is empty", { hint: "type a passphrase" });
    }
    this.passphrase = Uint8Array.from(passphrase);
    this.logN = logN;
    this.labels = [`scrypt-${randomBytes(8).toString("hex")}`];
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const salt = randomBytes(16);
    const key = deriveWrapKey(this.passphrase, salt, this.logN);
    const body = sealZeroNonce(key, fileKey);
    wipe(key);
    return [{ type: SCRYPT_STANZA, args: [encodeBase64NoPad(salt), String(this.logN)], body }];
  }

  wipe(): void {
    wipe(this.passphrase);
  }
}

export class ScryptIdentity implements Identity {
  readonly description = "passphrase";
  private readonly passphrase: Uint8Array;
  private readonly maxLogN: number;

  constructor(passphrase: Uint8Array, maxLogN = DEFAULT_MAX_LOG_N) {
    this.passphrase = Uint8Array.from(passphrase);
    this.maxLogN = maxLogN;
  }

  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | null {
    for (const s of stanzas) {
      if (s.type !== SCRYPT_STANZA) continue;
      // age spec: an scrypt stanza must be the only stanza (also checked by the caller).
      if (stanzas.length !== 1) throw stanzaError("an scrypt stanza must be the only one");
      if (s.args.length !== 2) throw stanzaError("wrong number of arguments");
      const salt = decodeBase64NoPad(s.args[0]!);
      if (salt === null || salt.length !== 16) throw stanzaError("invalid salt");
      // age spec: `^[1-9][0-9]*$`, decimal, no leading zeros or signs.
      if (!/^[1-9][0-9]*$/.test(s.args[1]!)) throw stanzaError("invalid work factor");
      const logN = Number(s.args[1]);
      if (logN > this.maxLogN) {
        throw new NixsealError(
          "AGE_STANZA",
          `scrypt work factor too large: 2^${s.args[1]!.slice(0, 6)} (limit 2^${this.maxLogN})`,
          { hint: "the file asks for more memory and time than is safe to spend; it may be hostile" },
        );
      }
      if (s.body.length !== FILE_KEY_SIZE + 16) throw stanzaError("invalid body length");
      const key = deriveWrapKey(this.passphrase, salt, logN);
      const fileKey = openZeroNonce(key, s.body);
      wipe(key);
      // A wrong passphrase is "no match" (age spec / CCTV): the caller reports it as such.
      return fileKey;
    }
    return null;
  }

  wipe(): void {
    wipe(this.passphrase);
  }
}

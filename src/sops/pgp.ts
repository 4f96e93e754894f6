/**
 * The `pgp` entries of a sops key group (sops pgp/keysource.go MasterKey: `fp`, the key's
 * fingerprint, and `enc`, the data key as an ASCII-armored OpenPGP message), and what opens them:
 * a PGP identity, an age `Identity` that opens no age stanza but unwraps pgp entries (through
 * the real gpg, src/sops/gpg.ts). Passing it among the age identities keeps one list of "the
 * keys of this host or user" everywhere identities travel.
 */
import type { Identity } from "../age/index.js";
import { NixsealError } from "../common/index.js";
import { SopsBranch, type SopsValue } from "./tree.js";

/** An armored data key is a few hundred bytes; sops' own with a 16384-bit key stays under 8 KiB. */
export const MAX_PGP_ENC_SIZE = 64 * 1024;

export interface PgpKeyEntry {
  /** The fingerprint as sops wrote it (upper-case hex, 40 digits for v4 keys). */
  fp: string;
  /** The data key (or Shamir share) encrypted to `fp`, ASCII-armored. */
  enc: string;
}

export interface PgpIdentity extends Identity {
  readonly pgp: true;
  /**
   * The data key from the first of `entries` this identity opens, or null if none is for it.
   * Throws a NixsealError when it cannot try (gpg missing or failing for a reason of its own).
   */
  unwrapPgp(entries: readonly PgpKeyEntry[]): Promise<Uint8Array | null>;
}

export function isPgpIdentity(i: Identity): i is PgpIdentity {
  return (i as { pgp?: unknown }).pgp === true && typeof (i as PgpIdentity).unwrapPgp === "function";
}

const FINGERPRINT = /^[0-9A-Fa-f]{16,64}$/;

function bad(message: string): NixsealError {
  return new NixsealError("SOPS_METADATA", message, {
    hint: "the sops metadata was edited by hand or damaged; restore the file from version control",
  });
}

/** The pgp entries of a key group, read strictly (a fingerprint of hex digits, an armored enc). */
export function pgpEntries(list: readonly SopsValue[] | undefined, where: string): PgpKeyEntry[] {
  const out: PgpKeyEntry[] = [];
  for (const e of list ?? []) {
    if (!(e instanceof SopsBranch)) throw bad(`${where}.pgp has an entry that is not a mapping`);
    const fp = e.get("fp");
    const enc = e.get("enc");
    if (typeof fp !== "string" || !FINGERPRINT.test(fp)) {
      throw bad(`${where}.pgp has an entry whose fp is not a key fingerprint`);
    }
    if (
      typeof enc !== "string" ||
      enc.length > MAX_PGP_ENC_SIZE ||
      !enc.includes("-----BEGIN PGP MESSAGE-----")
    ) {
      throw bad(`${where}.pgp entry ${fp.toUpperCase()} has no armored PGP message in enc`);
    }
    out.push({ fp: fp.toUpperCase(), enc });
  }
  return out;
}

/**
 * The sops MAC (sops.go Tree.Encrypt/Decrypt, cmd/sops/common): SHA-512 over the plaintext bytes
 * of every non-comment, non-null leaf in document order (only the encrypted ones with
 * `mac_only_encrypted`), written as 128 upper-case hex digits and stored encrypted with the
 * `lastmodified` timestamp (Go RFC 3339) as additional data.
 */
import { createHash, type Hash, timingSafeEqual } from "node:crypto";
import { NixsealError } from "../common/index.js";
import type { SopsLeaf } from "./tree.js";
import { macBytes, type ValueCipher } from "./value-cipher.js";

/** sops.go MACOnlyEncryptedInitialization: sha256("sops"), so both MAC modes never collide. */
export const MAC_ONLY_ENCRYPTED_INIT = createHash("sha256").update("sops").digest();

/** Characters of string values hashed together (see MacAccumulator.add). */
const BATCH_CHARS = 1 << 20;

export class MacAccumulator {
  private readonly hash: Hash = createHash("sha512");
  /** String values not hashed yet, in order, and their length in characters. */
  private batch: string[] = [];
  private batchChars = 0;

  constructor(macOnlyEncrypted: boolean) {
    if (macOnlyEncrypted) this.hash.update(MAC_ONLY_ENCRYPTED_INIT);
  }

  add(leaf: SopsLeaf): void {
    if (leaf === null) return;
    if (typeof leaf === "string") {
      // Hashed by the megabyte, joined: one update per value costs ~1 µs, most of a 10 000-value
      // file's MAC. The joined text is a transient string like the values it is made of (a
      // string cannot be wiped); its UTF-8 bytes are what macBytes gives each value, unless a
      // lone surrogate at a value's end would pair with one at the next's start: such a value
      // is hashed alone.
      const first = leaf.charCodeAt(0);
      const last = leaf.charCodeAt(leaf.length - 1);
      if ((first >= 0xdc00 && first <= 0xdfff) || (last >= 0xd800 && last <= 0xdbff)) {
        this.flush();
        this.hash.update(leaf, "utf8");
        return;
      }
      this.batch.push(leaf);
      this.batchChars += leaf.length;
      if (this.batchChars >= BATCH_CHARS) this.flush();
      return;
    }
    this.flush();
    const b = macBytes(leaf);
    this.hash.update(b);
    b.fill(0);
  }

  private flush(): void {
    if (this.batch.length === 0) return;
    this.hash.update(this.batch.join(""), "utf8");
    this.batch = [];
    this.batchChars = 0;
  }

  /** `fmt.Sprintf("%X", hash.Sum(nil))`. */
  hex(): string {
    this.flush();
    return this.hash.digest("hex").toUpperCase();
  }
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Go `time.Parse(time.RFC3339, s).Format(time.RFC3339)`: what sops uses as the MAC's additional
 * data. Fractional seconds are dropped and a zero offset is written `Z`.
 */
export function goRfc3339(s: string): string {
  const m = RFC3339.exec(s);
  if (m === null) {
    throw new NixsealError("SOPS_METADATA", "sops.lastmodified is not an RFC 3339 timestamp", {
      hint: "the metadata was edited by hand or damaged; restore the file from version control",
    });
  }
  const [, y, mo, d, h, mi, sec, , off] = m;
  if (
    Number(mo) < 1 ||
    Number(mo) > 12 ||
    Number(d) < 1 ||
    Number(d) > 31 ||
    Number(h) > 23 ||
    Number(mi) > 59 ||
    Number(sec) > 59
  ) {
    throw new NixsealError("SOPS_METADATA", "sops.lastmodified is not a valid date and time", {
      hint: "the metadata was edited by hand or damaged; restore the file from version control",
    });
  }
  const zone = off === "Z" || off === "+00:00" || off === "-00:00" ? "Z" : off!;
  return `${y}-${mo}-${d}T${h}:${mi}:${sec}${zone}`;
}

/** `time.Now().UTC().Format(time.RFC3339)`. */
export function nowRfc3339(now: Date = new Date()): string {
  return `${now.toISOString().slice(0, 19)}Z`;
}

export function encryptMac(mac: string, cipher: ValueCipher, lastModified: string): string {
  return cipher.encryptOne(mac, goRfc3339(lastModified));
}

/** Decrypts the stored MAC; a tampered MAC or lastmodified fails authentication here. */
export function decryptMac(stored: string, cipher: ValueCipher, lastModified: string): string {
  if (stored === "") {
    throw new NixsealError("SOPS_MAC", "the file has no MAC (sops.mac is empty)", {
      hint: "the file was damaged; if you trust it, decrypt with --ignore-mac",
    });
  }
  let v: unknown;
  try {
    v = cipher.decrypt(stored, goRfc3339(lastModified));
  } catch (e) {
    if (e instanceof NixsealError && e.code === "SOPS_DECRYPT") {
      throw new NixsealError(
        "SOPS_MAC",
        "the stored MAC does not decrypt: sops.mac or sops.lastmodified was changed",
        {
          hint: "the file was tampered with or damaged; restore it from version control (or --ignore-mac if you trust it)",
        },
      );
    }
    throw e;
  }
  if (typeof v !== "string") {
    throw new NixsealError("SOPS_MAC", "the stored MAC is not a string", { hint: "the file was damaged" });
  }
  return v;
}

/**
 * Whether the stored MAC is the computed one, in constant time (sops compares the hex strings):
 * how far two MACs agree must not show in how long the comparison takes. Only the length can
 * differ visibly, and the computed one always has 128 characters.
 */
export function sameMac(stored: string, computed: string): boolean {
  const a = Buffer.from(stored, "utf8");
  const b = Buffer.from(computed, "utf8");
  return a.length === b.length && timingSafeEqual(a, b);
}

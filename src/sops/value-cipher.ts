/**
 * The sops value cipher (sops aes/cipher.go): every leaf is
 * `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]`, AES-256-GCM under the file's data key
 * with the key path (`a:b:c:`) as additional data. Plus which leaves get encrypted
 * (sops.go `shouldBeEncrypted`).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { isCanonicalPaddedBase64, NixsealError, wipe } from "../common/index.js";
import { compileGoRegexp, type GoRegexp } from "./go-regexp.js";
import { SopsComment, type SopsLeaf, SopsTime } from "./tree.js";

/** sops aes/cipher.go: `nonceSize = 32` (decryption accepts whatever IV length is stored). */
const NONCE_SIZE = 32;
const TAG_SIZE = 16;
/** One options object for every value's decipher (Node only reads it). */
const DECIPHER_OPTIONS = { authTagLength: TAG_SIZE } as const;
export const DATA_KEY_SIZE = 32;

export type ValueType = "str" | "int" | "float" | "bool" | "time" | "comment" | "bytes";

/** sops aes/cipher.go `encre` (anchored at the start only, as sops's). */
const ENC_RE = /^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]/s;
/**
 * Padded standard base64: a multiple of 4 characters, `=` only as the last one or two (the
 * same strings as /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, which
 * costs more per value).
 */
const STD_B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function isEncryptedValue(s: string): boolean {
  return s.startsWith("ENC[AES256_GCM,");
}

function decodeStdBase64(s: string, what: string): Buffer {
  if (s.length % 4 !== 0 || !STD_B64.test(s)) {
    throw new NixsealError("SOPS_DECRYPT", `an encrypted value has a malformed ${what} (not base64)`, {
      hint: "the file was edited by hand or damaged; restore it from version control",
    });
  }
  return Buffer.from(s, "base64");
}

interface ParsedValue {
  data: Buffer;
  iv: Buffer;
  tag: Buffer;
  type: string;
}

/**
 * A value as sops writes it: non-empty parts of the base64 alphabet with up to two `=` after
 * (a multiple of 4 long: checked after, cheaper than in the pattern, which then is the same set
 * as decodeStdBase64's), a 16-byte tag, a lower-case type, nothing after the `]`. For such a
 * string ENC_RE's groups are these (base64 holds no `,`, `:` or `]`).
 */
const WELL_FORMED =
  /^ENC\[AES256_GCM,data:([A-Za-z0-9+/]+={0,2}),iv:([A-Za-z0-9+/]+={0,2}),tag:([A-Za-z0-9+/]{22}==),type:([a-z]+)\]$/;

/**
 * The parts of `s` when it is WELL_FORMED, else null: the caller then takes parseEncryptedValue,
 * whose errors are the ones users see. Node decodes each part in place: the data into `scratch`
 * (and an IV of another length than sops's 32 bytes after it), a 32-byte IV into `iv32`, the tag
 * into `tag16`; `used`: the bytes of `scratch` taken. `scratch` must hold `s.length` bytes. The
 * buffers are the caller's, rewritten by the next value.
 */
function decodeWellFormed(
  s: string,
  scratch: Buffer,
  iv32: Buffer,
  tag16: Buffer,
  wantCanonical = true,
): (ParsedValue & { used: number; canonical: boolean }) | null {
  const m = WELL_FORMED.exec(s);
  if (m === null || m[1]!.length % 4 !== 0 || m[2]!.length % 4 !== 0) return null;
  const canonical = wantCanonical && canonicalParts(m);
  const dataLen = scratch.write(m[1]!, 0, "base64");
  const ivText = m[2]!;
  let iv = iv32;
  let used = dataLen;
  // 43 characters and one `=`: exactly 32 bytes.
  if (ivText.length === 44 && ivText.charCodeAt(43) === 0x3d && ivText.charCodeAt(42) !== 0x3d) {
    iv32.write(ivText, 0, "base64");
  } else {
    used += scratch.write(ivText, dataLen, "base64");
    iv = scratch.subarray(dataLen, used);
  }
  tag16.write(m[3]!, 0, "base64");
  return { data: scratch.subarray(0, dataLen), iv, tag: tag16, type: m[4]!, used, canonical };
}

/**
 * Whether the parts of a WELL_FORMED match are what ValueCipher.encrypt writes for their bytes:
 * each as Node encodes it (only the stash asks).
 */
function canonicalParts(m: RegExpExecArray): boolean {
  return isCanonicalPaddedBase64(m[1]!) && isCanonicalPaddedBase64(m[2]!) && isCanonicalPaddedBase64(m[3]!);
}

/** Whether `s` is WELL_FORMED with canonical parts: encrypt() would write it as it is. */
function isCanonicalText(s: string): boolean {
  const m = WELL_FORMED.exec(s);
  return m !== null && canonicalParts(m);
}

export function parseEncryptedValue(s: string): ParsedValue {
  const m = ENC_RE.exec(s);
  if (m === null) {
    throw new NixsealError("SOPS_DECRYPT", "a value is not in sops's ENC[AES256_GCM,...] format", {
      hint: "the file was edited by hand or damaged (or the value was never encrypted)",
    });
  }
  const tag = decodeStdBase64(m[3]!, "tag");
  const iv = decodeStdBase64(m[2]!, "iv");
  if (tag.length !== TAG_SIZE || iv.length === 0) {
    throw new NixsealError("SOPS_DECRYPT", "an encrypted value has a bad iv or tag length", {
      hint: "the file was edited by hand or damaged; restore it from version control",
    });
  }
  return { data: decodeStdBase64(m[1]!, "data"), iv, tag, type: m[4]! };
}

/**
 * Go's `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest digits that round-trip, never an
 * exponent. JS's Number#toString gives the same digits but may use exponent notation.
 */
export function formatGoFloat(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Number.POSITIVE_INFINITY) return "+Inf";
  if (n === Number.NEGATIVE_INFINITY) return "-Inf";
  if (Object.is(n, -0)) return "-0";
  const s = String(n);
  const e = s.indexOf("e");
  if (e < 0) return s;
  const neg = s.startsWith("-");
  const mant = s.slice(neg ? 1 : 0, e);
  const exp = Number(s.slice(e + 1));
  const dot = mant.indexOf(".");
  const digits = dot < 0 ? mant : mant.slice(0, dot) + mant.slice(dot + 1);
  const intLen = (dot < 0 ? mant.length : dot) + exp;
  let out: string;
  if (intLen <= 0) out = `0.${"0".repeat(-intLen)}${digits}`;
  else if (intLen >= digits.length) out = digits + "0".repeat(intLen - digits.length);
  else out = `${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
  return neg ? `-${out}` : out;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

export function isInt64(n: bigint): boolean {
  return n >= INT64_MIN && n <= INT64_MAX;
}

/** sops.go ToBytes / cipher.Encrypt: the plaintext bytes of a leaf and its type tag. */
export function leafPlaintext(v: SopsLeaf | SopsComment): { type: ValueType; bytes: Buffer } {
  if (typeof v === "string") return { type: "str", bytes: Buffer.from(v, "utf8") };
  if (typeof v === "bigint") return { type: "int", bytes: Buffer.from(v.toString(), "latin1") };
  if (typeof v === "number") return { type: "float", bytes: Buffer.from(formatGoFloat(v), "latin1") };
  if (typeof v === "boolean") return { type: "bool", bytes: Buffer.from(v ? "True" : "False", "latin1") };
  if (v instanceof SopsComment) return { type: "comment", bytes: Buffer.from(v.value, "utf8") };
  if (v instanceof SopsTime) return { type: "time", bytes: Buffer.from(v.text, "utf8") };
  if (v instanceof Uint8Array) return { type: "str", bytes: Buffer.from(v) }; // Go: []byte walks as string
  throw new NixsealError("INTERNAL", "a null leaf has no plaintext");
}

/** The bytes sops's MAC hashes for a leaf (sops.go ToBytes). */
export function macBytes(v: SopsLeaf): Buffer {
  return leafPlaintext(v).bytes;
}

/** Go strconv.ParseBool. */
function parseGoBool(s: string): boolean | null {
  if (s === "1" || s === "t" || s === "T" || s === "TRUE" || s === "true" || s === "True") return true;
  if (s === "0" || s === "f" || s === "F" || s === "FALSE" || s === "false" || s === "False") return false;
  return null;
}

/** Go strconv.Atoi on 64-bit: optional sign, decimal digits, int64 range. */
function parseGoInt(s: string): bigint | null {
  if (!/^[+-]?[0-9]+$/.test(s)) return null;
  const n = BigInt(s);
  return isInt64(n) ? n : null;
}

/** Go strconv.ParseFloat(s, 64) for the forms Go writes and common decimal input. */
function parseGoFloat(s: string): number | null {
  if (s === "NaN") return Number.NaN;
  if (s === "+Inf" || s === "Inf" || s === "+Infinity" || s === "Infinity") return Number.POSITIVE_INFINITY;
  if (s === "-Inf" || s === "-Infinity") return Number.NEGATIVE_INFINITY;
  if (!/^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(s)) return null;
  return Number(s);
}

function badPlaintext(type: string): NixsealError {
  return new NixsealError("SOPS_DECRYPT", `a decrypted value is not a valid ${type}`, {
    hint: "the file was written by a broken tool; decrypt it with --ignore-mac is no help here, re-create the value",
  });
}

/** Turns decrypted bytes back into a leaf of the stored type (sops aes/cipher.go Decrypt). */
export function leafFromPlaintext(type: string, bytes: Buffer): SopsLeaf | SopsComment {
  const text = bytes.toString("utf8");
  switch (type) {
    case "str":
      return text;
    case "int": {
      const n = parseGoInt(text);
      if (n === null) throw badPlaintext("int");
      return n;
    }
    case "float": {
      const n = parseGoFloat(text);
      if (n === null) throw badPlaintext("float");
      return n;
    }
    case "bool": {
      const b = parseGoBool(text);
      if (b === null) throw badPlaintext("bool");
      return b;
    }
    case "time":
      return new SopsTime(text);
    case "comment":
      return new SopsComment(text);
    case "bytes":
      return Uint8Array.from(bytes);
    default:
      throw new NixsealError(
        "SOPS_DECRYPT",
        `an encrypted value has an unknown type "${type.slice(0, 20)}"`,
        {
          hint: "the file was written by a newer or broken tool",
        },
      );
  }
}

/**
 * What the stash keeps of a decrypted value: its IV, and its `ENC[...]` string when that is
 * exactly what encrypt() writes for the same value (each base64 part canonical).
 */
interface Stashed {
  iv: Buffer | null;
  text: string | null;
}

/** A stashed value: its type and key (valueKey), and what was stored for it. */
interface ByValue extends Stashed {
  type: ValueType;
  key: ValueKey;
}

/** The same key: Object.is (NaN is NaN; -0 is never a key, see valueKey). */
function sameKey(a: ValueKey, b: ValueKey): boolean {
  return Object.is(a, b);
}

/** A leaf's stash key within its type and path: the value itself, or null (not stashed by value). */
type ValueKey = string | bigint | number | boolean;

/** The type encrypt() writes for a leaf (leafPlaintext's, without making the bytes). */
function leafType(v: SopsLeaf | SopsComment): ValueType {
  if (typeof v === "string" || v instanceof Uint8Array) return "str";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "float";
  if (typeof v === "boolean") return "bool";
  if (v instanceof SopsComment) return "comment";
  return "time";
}

/**
 * The key a leaf is stashed under: the value itself (for text, the tree's own string: no copy of
 * it is made), or null for bytes (stashed by hash) and -0 (a Map does not tell it from 0).
 */
function valueKey(v: SopsLeaf | SopsComment): ValueKey | null {
  if (typeof v === "string" || typeof v === "bigint" || typeof v === "boolean") return v;
  if (typeof v === "number") return Object.is(v, -0) ? null : v;
  if (v instanceof SopsComment) return v.value;
  if (v instanceof SopsTime) return v.text;
  return null;
}

/**
 * Whether encrypting `leaf` again would encrypt exactly `bytes`, the plaintext it was decrypted
 * from (else its stored ciphertext is not what encrypt() would make: "1.50" reads as 1.5 and is
 * written "1.5"). Text round-trips unless decoding replaced invalid UTF-8 (with U+FFFD).
 */
function roundTrips(leaf: SopsLeaf | SopsComment, key: ValueKey, bytes: Buffer): boolean {
  if (typeof key === "string") return !key.includes("\uFFFD");
  return leafPlaintext(leaf).bytes.equals(bytes);
}

/**
 * AES-256-GCM over the leaves of one file, under its data key. Remembers the IV of every value
 * it decrypts, by type, path and value, and reuses it when the same value is encrypted again at
 * the same path: unchanged values keep byte-identical ciphertext, so git diffs show only what
 * changed (sops aes/cipher.go `stash`). The stash holds the tree's own values (no copy of a
 * plaintext is made for it); byte values (the binary store's) are stashed by a hash instead.
 *
 * An unchanged value is not even encrypted again: AES-GCM under the same key, IV and additional
 * data gives the same ciphertext and tag for the same plaintext, and the stored ones were just
 * verified by decrypting them, so encrypt() returns the stored string as it is (when it is the
 * canonical form encrypt() would write; else it encrypts with the stashed IV). A `set` or `edit`
 * of one value among 10 000 then encrypts one value, not 10 000, and hashes none.
 *
 * Strings in sops's own form (nearly every value) are stashed only when the stash is first
 * looked at: decrypt() keeps their text, additional data and value in three arrays. A write that
 * splices a few values into the file as read (encryptOne) then sorts out only the ones at its
 * paths, and a read that is never written back pays for no stash at all.
 */
export class ValueCipher {
  private readonly key: Buffer;
  /**
   * Path (additional data) → the value stored there, or, for a path several values share (list
   * items, sops's comments), value → the value stored. Almost every path holds one value, so
   * there is no Map per path.
   */
  private readonly byValue = new Map<string, ByValue | Map<ValueKey, ByValue>>();
  /** Byte values, by a hash of type, path and plaintext (not the plaintext). */
  private readonly byHash = new Map<string, Stashed>();
  /** Ciphertext parts and additional data of the value being decrypted (nothing secret). */
  private scratch = Buffer.allocUnsafe(1024);
  /** sops's 32-byte IV and the tag of the value being decrypted (no view per value). */
  private readonly iv32 = Buffer.alloc(NONCE_SIZE);
  private readonly tag16 = Buffer.alloc(TAG_SIZE);
  /**
   * Decrypted strings not stashed yet (see settle), in the order they were decrypted: the
   * `ENC[...]` text, the additional data and the value (the tree's own strings).
   */
  private deferred: { texts: string[]; aads: string[]; values: string[] } | null = null;

  /** Whether decrypted values are remembered at all; if only some, their additional data. */
  private readonly remember: boolean;
  private readonly only: ReadonlySet<string> | null;

  /**
   * `remember`: true, every value decrypted is remembered for the stash; false, decrypt only
   * (nixseal decrypt); a set of additional data texts, only the values there (a write that
   * splices just those values into the file as read needs no other). Without every value
   * remembered, the document cannot keep unchanged ciphertexts when written back whole.
   */
  constructor(dataKey: Uint8Array, remember: boolean | ReadonlySet<string> = true) {
    if (dataKey.length !== DATA_KEY_SIZE) {
      throw new NixsealError("SOPS_METADATA", "the sops data key is not 32 bytes", {
        hint: "the key wrapped in the sops metadata is damaged",
      });
    }
    this.key = Buffer.from(dataKey);
    this.remember = remember !== false;
    this.only = typeof remember === "boolean" ? null : remember;
  }

  /** Whether the value decrypted at `aad` is remembered. */
  private remembers(aad: string): boolean {
    return this.remember && (this.only === null || this.only.has(aad));
  }

  private hashKey(type: string, aad: string, bytes: Buffer): string {
    return createHash("sha256").update(`${type}\0${aad}\0`).update(bytes).digest("base64");
  }

  private stashed(v: SopsLeaf | SopsComment, key: ValueKey, aad: string): Stashed | undefined {
    if (this.deferred !== null) this.settle();
    const at = this.byValue.get(aad);
    const found = at instanceof Map ? at.get(key) : at;
    return found !== undefined && found.type === leafType(v) && sameKey(found.key, key) ? found : undefined;
  }

  private stash(s: ByValue, aad: string): void {
    const at = this.byValue.get(aad);
    if (at === undefined || (!(at instanceof Map) && sameKey(at.key, s.key))) this.byValue.set(aad, s);
    else if (at instanceof Map) at.set(s.key, s);
    else
      this.byValue.set(
        aad,
        new Map([
          [at.key, at],
          [s.key, s],
        ]),
      );
  }

  /**
   * Stashes the deferred strings (all, or those at the additional data `only`) as decrypt()
   * would have: a stored text that is not the canonical form keeps its IV instead, and a value
   * that decoding changed (invalid UTF-8) is not stashed.
   */
  private settle(only?: string): void {
    const d = this.deferred;
    if (d === null) return;
    if (only === undefined) this.deferred = null;
    for (let i = 0; i < d.texts.length; i++) {
      const aad = d.aads[i]!;
      if (only !== undefined && aad !== only) continue;
      const s = d.texts[i]!;
      const value = d.values[i]!;
      if (this.scratch.length < s.length) this.scratch = Buffer.allocUnsafe(s.length * 2);
      // Well-formed when it was decrypted (only such strings are deferred).
      const p = decodeWellFormed(s, this.scratch, this.iv32, this.tag16)!;
      if (roundTrips(value, value, p.data)) {
        this.stash(
          {
            type: "str",
            key: value,
            iv: p.canonical ? null : Buffer.from(p.iv),
            text: p.canonical ? s : null,
          },
          aad,
        );
      }
    }
    if (only === undefined) return;
    // The others stay deferred.
    let kept = 0;
    for (let i = 0; i < d.aads.length; i++) {
      if (d.aads[i] === only) continue;
      d.texts[kept] = d.texts[i]!;
      d.aads[kept] = d.aads[i]!;
      d.values[kept] = d.values[i]!;
      kept++;
    }
    d.texts.length = d.aads.length = d.values.length = kept;
  }

  /** Encrypts a leaf; an empty string or empty comment stays empty (sops: not encrypted). */
  encrypt(v: SopsLeaf | SopsComment, aad: string): string {
    if (v === "" || (v instanceof SopsComment && v.value === "")) return "";
    const key = valueKey(v);
    let stashed = key === null ? undefined : this.stashed(v, key, aad);
    if (stashed?.text) return stashed.text;
    const { type, bytes } = leafPlaintext(v);
    if ((type === "str" || type === "comment") && bytes.length === 0) return "";
    if (key === null) stashed = this.byHash.get(this.hashKey(type, aad, bytes));
    const iv = stashed?.iv ?? randomBytes(NONCE_SIZE);
    const c = createCipheriv("aes-256-gcm", this.key, iv, { authTagLength: TAG_SIZE });
    c.setAAD(Buffer.from(aad, "utf8"));
    const data = Buffer.concat([c.update(bytes), c.final()]);
    const tag = c.getAuthTag();
    bytes.fill(0);
    return `ENC[AES256_GCM,data:${data.toString("base64")},iv:${iv.toString("base64")},tag:${tag.toString("base64")},type:${type}]`;
  }

  /**
   * encrypt() of a value written alone (a spliced value, the MAC): only the deferred strings at
   * its additional data are stashed first, not all of them.
   */
  encryptOne(v: SopsLeaf | SopsComment, aad: string): string {
    this.settle(aad);
    const d = this.deferred;
    this.deferred = null;
    try {
      return this.encrypt(v, aad);
    } finally {
      this.deferred = d;
    }
  }

  /** Room in the scratch buffer for `s` decoded and `aad` encoded after it. */
  private scratchFor(s: string, aad: string): Buffer {
    const need = s.length + aad.length * 3;
    if (this.scratch.length < need)
      this.scratch = Buffer.allocUnsafe(Math.max(need, this.scratch.length * 2));
    return this.scratch;
  }

  /** The plaintext of a decoded value, or null when it does not authenticate. */
  private open(p: ParsedValue, aad: string, scratch: Buffer, aadAt: number): Buffer | null {
    const aadBytes = scratch.subarray(aadAt, aadAt + scratch.write(aad, aadAt, "utf8"));
    try {
      const d = createDecipheriv("aes-256-gcm", this.key, p.iv, DECIPHER_OPTIONS);
      d.setAAD(aadBytes);
      d.setAuthTag(p.tag);
      const bytes = d.update(p.data);
      d.final(); // GCM: no more output, only the tag check
      return bytes;
    } catch {
      return null;
    }
  }

  /**
   * Decrypts one `ENC[...]` string; "" decrypts to "" (sops). With `rawStrings`, a `str` value
   * comes back as bytes (the binary store's payload need not be UTF-8).
   */
  decrypt(s: string, aad: string, rawStrings = false): SopsLeaf | SopsComment {
    if (s === "") return rawStrings ? new Uint8Array(0) : "";
    // The common case decodes into one scratch buffer (no buffer per part, one regular
    // expression); anything else takes parseEncryptedValue and its errors.
    const scratch = this.scratchFor(s, aad);
    // Whether the text is the canonical form is asked only for a value stashed now (below).
    const fast = decodeWellFormed(s, scratch, this.iv32, this.tag16, false);
    const p = fast ?? parseEncryptedValue(s);
    const bytes = this.open(p, aad, scratch, fast === null ? 0 : fast.used);
    if (bytes === null) {
      throw new NixsealError(
        "SOPS_DECRYPT",
        `the value at "${aad.slice(0, -1) || "(top level)"}" does not decrypt (authentication failed)`,
        {
          hint: "the value was tampered with, moved to another key, or encrypted with another data key",
        },
      );
    }
    const leaf = rawStrings && p.type === "str" ? Uint8Array.from(bytes) : leafFromPlaintext(p.type, bytes);
    if (fast !== null && typeof leaf === "string") {
      this.noteDecrypted(s, aad, leaf);
    } else if (p.type !== "bytes" && this.remembers(aad)) {
      // A fast path's iv is one of this cipher's buffers, rewritten by the next value.
      const canonical = fast !== null && isCanonicalText(s);
      const iv = canonical ? null : fast === null ? p.iv : Buffer.from(p.iv);
      const text = canonical ? s : null;
      const key = valueKey(leaf);
      if (key === null) this.byHash.set(this.hashKey(p.type, aad, bytes), { iv, text });
      else if (roundTrips(leaf, key, bytes)) this.stash({ type: p.type as ValueType, key, iv, text }, aad);
    }
    wipe(bytes);
    return leaf;
  }

  /**
   * Notes a string value decrypted from `s` (in sops's own form) at `aad`, to stash when first
   * needed (settle).
   */
  private noteDecrypted(s: string, aad: string, value: string): void {
    if (!this.remembers(aad)) return;
    this.deferred ??= { texts: [], aads: [], values: [] };
    this.deferred.texts.push(s);
    this.deferred.aads.push(aad);
    this.deferred.values.push(value);
  }

  /** Zeroes the data key copy. */
  wipe(): void {
    this.key.fill(0);
    this.deferred = null;
    this.byValue.clear();
    this.byHash.clear();
  }
}

/**
 * Which leaves are encrypted (sops.go `shouldBeEncrypted`, stores.go `ToInternal`): at most one
 * rule; none means `unencrypted_suffix: _unencrypted`. Regexes are Go RE2 matched unanchored.
 */
export interface EncryptionRules {
  unencryptedSuffix?: string;
  encryptedSuffix?: string;
  unencryptedRegex?: string;
  encryptedRegex?: string;
  unencryptedCommentRegex?: string;
  encryptedCommentRegex?: string;
}

export const DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted";

/** A Go regexp (see go-regexp.ts) stored in a file's metadata. */
export function goRegExp(src: string, where: string): GoRegexp {
  return compileGoRegexp(src, where, "SOPS_METADATA");
}

/**
 * A key-name regex that remembers its answer per key: every leaf tests again each key above it,
 * so a document asks about the same few names thousands of times.
 */
function rememberingKeys(re: GoRegexp): GoRegexp {
  const answers = new Map<string, boolean>();
  return {
    test(key: string): boolean {
      let answer = answers.get(key);
      if (answer === undefined) {
        answer = re.test(key);
        answers.set(key, answer);
      }
      return answer;
    },
  };
}

/** The number of rules set; sops refuses more than one. */
export function countRules(r: EncryptionRules): number {
  return [
    r.unencryptedSuffix,
    r.encryptedSuffix,
    r.unencryptedRegex,
    r.encryptedRegex,
    r.unencryptedCommentRegex,
    r.encryptedCommentRegex,
  ].filter((x) => x !== undefined && x !== "").length;
}

export class EncryptionSelector {
  private readonly r: EncryptionRules;
  private readonly unencRe: GoRegexp | null;
  private readonly encRe: GoRegexp | null;
  private readonly unencCommentRe: GoRegexp | null;
  private readonly encCommentRe: GoRegexp | null;

  constructor(rules: EncryptionRules) {
    if (countRules(rules) > 1) {
      throw new NixsealError(
        "SOPS_METADATA",
        "more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, encrypted_comment_regex, unencrypted_comment_regex is set",
        { hint: "sops allows only one of these per file" },
      );
    }
    this.r = countRules(rules) === 0 ? { unencryptedSuffix: DEFAULT_UNENCRYPTED_SUFFIX } : rules;
    const re = (s: string | undefined, w: string) => (s ? goRegExp(s, w) : null);
    const keyRe = (s: string | undefined, w: string) => (s ? rememberingKeys(goRegExp(s, w)) : null);
    this.unencRe = keyRe(this.r.unencryptedRegex, "unencrypted_regex");
    this.encRe = keyRe(this.r.encryptedRegex, "encrypted_regex");
    this.unencCommentRe = re(this.r.unencryptedCommentRegex, "unencrypted_comment_regex");
    this.encCommentRe = re(this.r.encryptedCommentRegex, "encrypted_comment_regex");
  }

  get rules(): EncryptionRules {
    return this.r;
  }

  /** sops.go shouldBeEncrypted, step by step. */
  shouldEncrypt(
    path: readonly string[],
    comments: readonly (readonly string[])[],
    isComment: boolean,
  ): boolean {
    // Plain loops: this runs for every value and comment of a file.
    let encrypted = true;
    const { unencryptedSuffix: us, encryptedSuffix: es } = this.r;
    if (us) {
      for (let i = 0; i < path.length && encrypted; i++) if (path[i]!.endsWith(us)) encrypted = false;
    }
    if (es) {
      encrypted = false;
      for (let i = 0; i < path.length && !encrypted; i++) if (path[i]!.endsWith(es)) encrypted = true;
    }
    if (this.unencRe) {
      const re = this.unencRe;
      let hit = false;
      for (let i = 0; i < path.length && !hit; i++) hit = re.test(path[i]!);
      if (hit) encrypted = false;
    }
    if (this.encRe) {
      const re = this.encRe;
      encrypted = false;
      for (let i = 0; i < path.length && !encrypted; i++) encrypted = re.test(path[i]!);
    }
    if (this.unencCommentRe) {
      const re = this.unencCommentRe;
      if (comments.some((cs) => cs.some((c) => re.test(c)))) encrypted = false;
    }
    if (this.encCommentRe) {
      const re = this.encCommentRe;
      const lastStack = comments.length - 1;
      const lastLine = (comments[lastStack]?.length ?? 0) - 1;
      encrypted = false;
      outer: for (let i = 0; i < comments.length; i++) {
        const cs = comments[i]!;
        for (let j = 0; j < cs.length; j++) {
          // sops: the comment line that matches is itself not encrypted.
          if (isComment && i === lastStack && j === lastLine) continue;
          if (re.test(cs[j]!)) {
            encrypted = true;
            break outer;
          }
        }
      }
    }
    return encrypted;
  }
}

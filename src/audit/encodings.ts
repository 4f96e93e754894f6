/**
 * The byte patterns a secret value can take once it has leaked: the value itself and the forms
 * tools put it in on the way to a store path (base64 in a header or a Kubernetes manifest, hex,
 * URL-encoding in a connection string, a JSON or Nix string, a .drv's ATerm string, a shell
 * word). Each pattern is tagged with its encoding so a report can say how the value was found.
 *
 * Every pattern is a substring of the encoded value *wherever the value sits in a longer
 * encoded stream*: for base64 that is the stable inner part (the characters computed from the
 * value's bits only), one per alignment of the value in the stream, so a secret is found whether
 * it is encoded alone (padded or not) or as part of a larger encoded blob (`user:password`).
 *
 * The value is first trimmed of ASCII white space at both ends: a file read with
 * `builtins.readFile` usually ends in a newline that `lib.fileContents` or `lib.trim` drops, and
 * every encoding of the trimmed value is a substring of the encoding of the untrimmed one.
 */

export type EncodingName =
  | "raw"
  | "base64"
  | "base64url"
  | "hex"
  | "HEX"
  | "url"
  | "url-lower"
  | "url-form"
  | "url-component"
  | "url-plus"
  | "url-php"
  | "url-path"
  | "json"
  | "json-ascii"
  | "nix-string"
  | "drv-string"
  | "shell-single"
  | "shell-single-alt"
  | "shell-double";

/** Every encoding, in the order patterns are made (for documentation and tests). */
export const ENCODINGS: readonly EncodingName[] = [
  "raw",
  "base64",
  "base64url",
  "hex",
  "HEX",
  "url",
  "url-lower",
  "url-form",
  "url-component",
  "url-plus",
  "url-php",
  "url-path",
  "json",
  "json-ascii",
  "nix-string",
  "drv-string",
  "shell-single",
  "shell-single-alt",
  "shell-double",
];

export interface EncodedPattern {
  /** The encodings that give these bytes, the first being the simplest. */
  encodings: EncodingName[];
  /** For base64/base64url: the value's offset modulo 3 in the encoded stream; else 0. */
  alignment: number;
  bytes: Uint8Array;
}

export interface PatternOptions {
  /** Values shorter than this (after trimming) are skipped. Default 8. */
  minLength?: number;
  /** Values with fewer distinct bytes than this are skipped. Default 4 (at most minLength). */
  minDistinct?: number;
}

export const DEFAULT_MIN_LENGTH = 8;
export const DEFAULT_MIN_DISTINCT = 4;

export type SkipReason =
  | { kind: "empty" }
  | { kind: "too-short"; length: number; minLength: number }
  | { kind: "common"; word: string }
  | { kind: "low-entropy"; distinct: number; minDistinct: number };

export type ValuePatterns = { skipped: SkipReason } | { skipped: null; patterns: EncodedPattern[] };

/** A human sentence for a skip reason (never contains the value, except a listed common word). */
export function describeSkip(r: SkipReason): string {
  switch (r.kind) {
    case "empty":
      return "empty (or only white space)";
    case "too-short":
      return `too short (${r.length} byte${r.length === 1 ? "" : "s"} < --min-length ${r.minLength})`;
    case "common":
      // The word is from the public list below, so naming it reveals nothing.
      return `a common word ("${r.word}") that would match everywhere`;
    case "low-entropy":
      return `too little variety (${r.distinct} distinct byte${r.distinct === 1 ? "" : "s"} < ${r.minDistinct})`;
  }
}

/**
 * Values that are not worth looking for: they occur in every store, so a match means nothing.
 * Compared case-insensitively with the trimmed value. Only values of at least the minimum length
 * matter here; shorter ones are skipped as too short anyway.
 */
const COMMON_VALUES = new Set([
  "password",
  "password1",
  "password123",
  "passw0rd",
  "changeme",
  "changeit",
  "secret",
  "secrets",
  "12345678",
  "123456789",
  "1234567890",
  "0123456789",
  "87654321",
  "abcdefgh",
  "qwertyui",
  "qwertyuiop",
  "letmein!",
  "iloveyou",
  "football",
  "baseball",
  "sunshine",
  "princess",
  "trustno1",
  "superman",
  "welcome1",
  "administrator",
  "localhost",
  "127.0.0.1",
  "0.0.0.0",
  "example.com",
  "example.org",
  "postgres",
  "postgresql",
  "undefined",
  "disabled",
  "enabled",
  "nixos",
]);

const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c]);

/** The value without ASCII white space at either end (a view, not a copy). */
export function trimValue(value: Uint8Array): Uint8Array {
  let start = 0;
  let end = value.length;
  while (start < end && WHITESPACE.has(value[start]!)) start++;
  while (end > start && WHITESPACE.has(value[end - 1]!)) end--;
  return value.subarray(start, end);
}

function isCommon(value: Uint8Array): string | null {
  if (value.length > 32) return null;
  let s = "";
  for (const b of value) {
    if (b >= 0x80) return null;
    s += String.fromCharCode(b >= 0x41 && b <= 0x5a ? b + 32 : b);
  }
  return COMMON_VALUES.has(s) ? s : null;
}

function distinctBytes(value: Uint8Array, enough: number): number {
  const seen = new Uint8Array(256);
  let n = 0;
  for (const b of value) {
    if (seen[b] === 0) {
      seen[b] = 1;
      if (++n >= enough) return n;
    }
  }
  return n;
}

/** Why a value is not looked for, or null when it is. */
export function skipReason(value: Uint8Array, options: PatternOptions = {}): SkipReason | null {
  const minLength = options.minLength ?? DEFAULT_MIN_LENGTH;
  const minDistinct = Math.min(options.minDistinct ?? DEFAULT_MIN_DISTINCT, minLength);
  const v = trimValue(value);
  if (v.length === 0) return { kind: "empty" };
  if (v.length < minLength) return { kind: "too-short", length: v.length, minLength };
  const word = isCommon(v);
  if (word !== null) return { kind: "common", word };
  const distinct = distinctBytes(v, minDistinct);
  if (distinct < minDistinct) return { kind: "low-entropy", distinct, minDistinct };
  return null;
}

// ---- the encodings ----------------------------------------------------------------------------

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/**
 * The base64 characters that depend on the value's bits only, when the value starts at offset
 * `alignment` (mod 3) of the encoded stream. Character k of the stream covers bits [6k, 6k+6);
 * the value occupies bits [8a, 8(a+n)); so the stable characters are k = ceil(8a/6) ..
 * floor(8(a+n)/6) - 1. Padding ('=') is never part of it, so padded and unpadded encodings match.
 */
export function base64Stable(value: Uint8Array, alignment: number, alphabet = B64): Uint8Array {
  const n = value.length;
  const first = Math.ceil((8 * alignment) / 6);
  const end = Math.floor((8 * (alignment + n)) / 6);
  const out = new Uint8Array(Math.max(0, end - first));
  // Bit b of the stream (MSB first) belongs to the value when 8a <= b < 8(a+n).
  for (let k = first; k < end; k++) {
    let sextet = 0;
    for (let j = 0; j < 6; j++) {
      const bit = 6 * k + j - 8 * alignment;
      const byte = value[bit >> 3]!;
      sextet = (sextet << 1) | ((byte >> (7 - (bit & 7))) & 1);
    }
    out[k - first] = alphabet.charCodeAt(sextet);
  }
  return out;
}

function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function hexOf(value: Uint8Array, upper: boolean): Uint8Array {
  const digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  const out = new Uint8Array(value.length * 2);
  for (let i = 0; i < value.length; i++) {
    out[2 * i] = digits.charCodeAt(value[i]! >> 4);
    out[2 * i + 1] = digits.charCodeAt(value[i]! & 15);
  }
  return out;
}

const isAlnum = (b: number) =>
  (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);

/**
 * Percent-encoding. `keep` says which bytes stay as they are; `plusForSpace`: the
 * application/x-www-form-urlencoded form (space as '+').
 */
function percentEncode(
  value: Uint8Array,
  keep: (b: number) => boolean,
  upper: boolean,
  plusForSpace: boolean,
): Uint8Array {
  const digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  const out: number[] = [];
  for (const b of value) {
    if (keep(b)) out.push(b);
    else if (plusForSpace && b === 0x20) out.push(0x2b);
    else out.push(0x25, digits.charCodeAt(b >> 4), digits.charCodeAt(b & 15));
  }
  return Uint8Array.from(out);
}

// The encoders below all write upper-case hex; `url-lower` is the one lower-case form.
// RFC 3986 unreserved: ALPHA DIGIT - . _ ~ (Python's quote(s, safe=""), PHP's rawurlencode;
// with '+' for a space: Python's quote_plus, Go's url.QueryEscape).
const unreserved = (b: number) => isAlnum(b) || b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
// WHATWG urlencoded serializer: ALPHA DIGIT * - . _ (URLSearchParams, Java's URLEncoder)
const formSafe = (b: number) => isAlnum(b) || b === 0x2a || b === 0x2d || b === 0x2e || b === 0x5f;
// PHP's urlencode: ALPHA DIGIT - _ . (so '~' and '*' are escaped too), '+' for a space
const phpSafe = (b: number) => isAlnum(b) || b === 0x2d || b === 0x2e || b === 0x5f;
// Python's quote(s) with its default safe="/": unreserved and '/'
const pathSafe = (b: number) => unreserved(b) || b === 0x2f;
// ECMAScript encodeURIComponent: ALPHA DIGIT - _ . ! ~ * ' ( )
const componentSafe = (b: number) =>
  unreserved(b) || b === 0x21 || b === 0x2a || b === 0x27 || b === 0x28 || b === 0x29;

/** Strict UTF-8 decoding, or null (a string escape of invalid UTF-8 is not well defined). */
function utf8OrNull(value: Uint8Array): string | null {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(value);
  } catch {
    return null;
  }
}

function u4(c: number): string {
  return `\\u${c.toString(16).padStart(4, "0")}`;
}

/** The body of a JSON string (JSON.stringify, Nix's builtins.toJSON); `asciiOnly`: Python's default. */
function jsonBody(s: string, asciiOnly: boolean): string {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20) out += u4(c);
    else if (asciiOnly && c > 0x7e) {
      if (c > 0xffff) {
        const v = c - 0x10000;
        out += u4(0xd800 + (v >> 10)) + u4(0xdc00 + (v & 0x3ff));
      } else out += u4(c);
    } else out += ch;
  }
  return out;
}

/** A Nix "..." string literal's body: \ " and ${ escaped, \n \r \t as escapes. */
function nixStringBody(s: string): string {
  return s
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/\$\{/g, "\\${")
    .replace(/\n/g, "\\n")
    .replace(/\r/g, "\\r")
    .replace(/\t/g, "\\t");
}

/**
 * A string in a .drv file (Nix's ATerm printer, derivations.cc printString): \ and " escaped,
 * newline, carriage return and tab as \n \r \t; every other byte as it is. Byte-wise, so any value.
 */
function drvStringBody(value: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (const b of value) {
    if (b === 0x22 || b === 0x5c) out.push(0x5c, b);
    else if (b === 0x0a) out.push(0x5c, 0x6e);
    else if (b === 0x0d) out.push(0x5c, 0x72);
    else if (b === 0x09) out.push(0x5c, 0x74);
    else out.push(b);
  }
  return Uint8Array.from(out);
}

/** Inside '...': each ' closes, is escaped, and reopens (`'\''`, Nix's lib.escapeShellArg). */
function replaceByte(value: Uint8Array, byte: number, replacement: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (const b of value) {
    if (b === byte) for (const r of replacement) out.push(r);
    else out.push(b);
  }
  return Uint8Array.from(out);
}

/** Inside "...": \ " $ and ` are escaped with a backslash (POSIX sh 2.2.3). */
function shellDoubleBody(value: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (const b of value) {
    if (b === 0x5c || b === 0x22 || b === 0x24 || b === 0x60) out.push(0x5c);
    out.push(b);
  }
  return Uint8Array.from(out);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const utf8Encoder = new TextEncoder();

/**
 * One encoding of a (trimmed) value, or null when it has none (the string escapes of bytes that
 * are not UTF-8). For base64 and base64url, `alignment` is the value's offset modulo 3.
 */
export function encodeAs(v: Uint8Array, encoding: EncodingName, alignment = 0): Uint8Array | null {
  switch (encoding) {
    case "raw":
      return Uint8Array.from(v);
    case "base64":
      return base64Stable(v, alignment, B64);
    case "base64url":
      return base64Stable(v, alignment, B64URL);
    case "hex":
      return hexOf(v, false);
    case "HEX":
      return hexOf(v, true);
    case "url":
      return percentEncode(v, unreserved, true, false);
    case "url-lower":
      return percentEncode(v, unreserved, false, false);
    case "url-form":
      return percentEncode(v, formSafe, true, true);
    case "url-component":
      return percentEncode(v, componentSafe, true, false);
    case "url-plus":
      return percentEncode(v, unreserved, true, true);
    case "url-php":
      return percentEncode(v, phpSafe, true, true);
    case "url-path":
      return percentEncode(v, pathSafe, true, false);
    case "json":
    case "json-ascii":
    case "nix-string": {
      const text = utf8OrNull(v);
      if (text === null) return null;
      if (encoding === "nix-string") return utf8Encoder.encode(nixStringBody(text));
      return utf8Encoder.encode(jsonBody(text, encoding === "json-ascii"));
    }
    case "drv-string":
      return drvStringBody(v);
    case "shell-single":
      return replaceByte(v, 0x27, ascii("'\\''"));
    case "shell-single-alt":
      return replaceByte(v, 0x27, ascii(`'"'"'`));
    case "shell-double":
      return shellDoubleBody(v);
  }
}

/**
 * The patterns to look for for one value, or why it is skipped. An encoding that gives the same
 * bytes as an earlier one adds no pattern: one that changes nothing is left out, and one that
 * gives the same as another encoding (JSON and Nix escapes of a value that needs the same
 * escapes in both) adds its name to that pattern.
 */
export function patternsFor(value: Uint8Array, options: PatternOptions = {}): ValuePatterns {
  const skip = skipReason(value, options);
  if (skip !== null) return { skipped: skip };
  const v = trimValue(value);
  const out: EncodedPattern[] = [];
  for (const encoding of ENCODINGS) {
    const alignments = encoding === "base64" || encoding === "base64url" ? [0, 1, 2] : [0];
    for (const alignment of alignments) {
      const bytes = encodeAs(v, encoding, alignment);
      if (bytes === null || bytes.length === 0) continue;
      const same = out.find((p) => equalBytes(p.bytes, bytes));
      if (same) {
        // An encoding that leaves the value as it is is not worth naming: "raw" says it.
        if (same !== out[0] && !same.encodings.includes(encoding)) same.encodings.push(encoding);
        continue;
      }
      out.push({ encodings: [encoding], alignment, bytes });
    }
  }
  return { skipped: null, patterns: out };
}

/** How a match is named in reports: "raw", "base64", "json/nix-string/drv-string". */
export function encodingLabel(p: EncodedPattern): string {
  return p.encodings.join("/");
}

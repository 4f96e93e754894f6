/**
 * The age v1 header: parsing with every canonicality check the spec asks for, and encoding.
 * age spec: "Header".
 */
import { decodeBase64NoPad, encodeBase64NoPad, NixsealError } from "../common/index.js";
import type { Stanza } from "./types.js";

export const VERSION_LINE = "age-encryption.org/v1";
const INTRO = Buffer.from(`${VERSION_LINE}\n`, "latin1");
const STANZA_PREFIX = "-> ";
const MAC_PREFIX = "--- ";
/** age spec: body lines are wrapped at 64 columns. */
const COLUMNS = 64;
/** A hostile file must not make us buffer forever while looking for the end of the header. */
export const MAX_HEADER_SIZE = 16 * 1024 * 1024;

export interface Header {
  stanzas: Stanza[];
  /** The 32-byte header MAC. */
  mac: Uint8Array;
  /** The header bytes the MAC covers: from the start up to and including "---". */
  macInput: Uint8Array;
  /** Total header length in bytes, including the MAC line and its newline. */
  length: number;
}

function headerError(message: string): NixsealError {
  return new NixsealError("AGE_HEADER", `invalid age header: ${message}`, {
    hint: "the file is damaged or is not an age file",
  });
}

/** age spec: an argument is one or more VCHAR (0x21-0x7E). */
function isArgument(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** Does this buffer start like an age binary file? (Cheap check, no parsing.) */
export function looksLikeAgeBinary(start: Uint8Array): boolean {
  const n = Math.min(start.length, INTRO.length);
  return Buffer.from(start.buffer, start.byteOffset, n).equals(INTRO.subarray(0, n));
}

/** A stanza read from a buffer: the stanza and where it ends, or why there is none (yet). */
export type StanzaRead =
  | { stanza: Stanza; end: number }
  /** The buffer ends before the stanza does: read more and try again. */
  | { incomplete: true }
  /** Not a valid stanza, whatever follows: why, in a few words. */
  | { invalid: string };

const ARROW = Buffer.from(STANZA_PREFIX, "latin1");

/** `buf` holds ARROW at `pos` (byte by byte: Buffer#compare with ranges allocates views). */
function startsWithArrow(buf: Buffer, pos: number): boolean {
  for (let i = 0; i < ARROW.length; i++) if (buf[pos + i] !== ARROW[i]) return false;
  return true;
}

/** A stanza not read (incomplete when `why` is null): the body lines decoded so far are wiped. */
function failStanza(parts: readonly Uint8Array[], why: string | null): StanzaRead {
  for (const part of parts) part.fill(0);
  return why === null ? { incomplete: true } : { invalid: why };
}

/**
 * Reads one stanza at `pos`, strictly as the age header grammar says: `-> type args...`, then
 * the base64 body in full 64-column lines and one shorter (possibly empty) line. Used for the
 * header and for the plugin protocol, whose stanzas are the same (age-plugin spec). A first line
 * longer than `maxLine` is invalid. The body is decoded into fresh bytes: it may be a secret
 * (a plugin sends file keys this way), and the caller wipes it.
 */
export function readStanza(data: Uint8Array, pos: number, maxLine: number): StanzaRead {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const nl = buf.indexOf(0x0a, pos);
  if (nl < 0) return buf.length - pos > maxLine ? { invalid: "a line is too long" } : { incomplete: true };
  if (nl - pos > maxLine) return { invalid: "a line is too long" };
  if (nl - pos < ARROW.length || !startsWithArrow(buf, pos)) {
    return { invalid: "a line is not a stanza (does not start with '-> ')" };
  }
  const args = buf.toString("latin1", pos + ARROW.length, nl).split(" ");
  if (!args.every(isArgument)) return { invalid: "a stanza has malformed arguments" };
  const type = args.shift()!;
  const parts: Uint8Array[] = [];
  let p = nl + 1;
  for (;;) {
    const end = buf.indexOf(0x0a, p);
    if (end < 0) return failStanza(parts, buf.length - p > COLUMNS ? "a stanza body line is too long" : null);
    if (end - p > COLUMNS) return failStanza(parts, "a stanza body line is too long");
    const bytes = decodeBase64NoPad(buf.toString("latin1", p, end));
    if (bytes === null) return failStanza(parts, "a stanza body is not canonical base64 in 64-column lines");
    parts.push(bytes);
    const full = end - p === COLUMNS;
    p = end + 1;
    if (!full) break;
  }
  let body: Uint8Array;
  if (parts.length === 1) body = parts[0]!;
  else {
    body = Buffer.concat(parts);
    for (const part of parts) part.fill(0);
  }
  return { stanza: { type, args, body }, end: p };
}

/**
 * Parses a header at the start of `data`. Returns null when `data` ends before the header does
 * (the caller reads more and calls again); throws AGE_HEADER when the header is invalid.
 */
export function parseHeader(data: Uint8Array): Header | null {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const firstEnd = buf.indexOf(0x0a);
  if (firstEnd < 0) {
    if (buf.length > MAX_HEADER_SIZE) throw headerError("a line is too long");
    // Fail early on data that cannot become an age header.
    const n = Math.min(buf.length, INTRO.length);
    if (!buf.subarray(0, n).equals(INTRO.subarray(0, n)))
      throw headerError("not an age file (bad version line)");
    return null;
  }
  const first = buf.toString("latin1", 0, firstEnd);
  if (first !== VERSION_LINE) {
    if (first.startsWith("age-encryption.org/")) {
      throw new NixsealError("AGE_HEADER", `unsupported age format version "${first.slice(19, 40)}"`, {
        hint: "this file was written by a newer age; upgrade nixseal",
      });
    }
    throw headerError("not an age file (bad version line)");
  }

  const stanzas: Stanza[] = [];
  let pos = firstEnd + 1;
  for (;;) {
    // "---" starts the MAC line, which ends the header; every other line starts a stanza.
    if (buf.length - pos >= 3 && buf[pos] === 0x2d && buf[pos + 1] === 0x2d && buf[pos + 2] === 0x2d) {
      const end = buf.indexOf(0x0a, pos);
      if (end < 0) {
        if (buf.length - pos > MAX_HEADER_SIZE) throw headerError("a line is too long");
        return null;
      }
      const line = buf.toString("latin1", pos, end);
      if (!line.startsWith(MAC_PREFIX)) throw headerError("malformed header MAC");
      const mac = decodeBase64NoPad(line.slice(MAC_PREFIX.length));
      if (mac === null || mac.length !== 32) throw headerError("malformed header MAC");
      const macInput = new Uint8Array(data.buffer, data.byteOffset, pos + 3);
      return { stanzas, mac, macInput, length: end + 1 };
    }
    const r = readStanza(buf, pos, MAX_HEADER_SIZE);
    if ("incomplete" in r) return null;
    if ("invalid" in r) throw headerError(r.invalid);
    stanzas.push(r.stanza);
    pos = r.end;
  }
}

/**
 * Writes one stanza: `-> type args...`, then the base64 body in 64-column lines, the last one
 * shorter (possibly empty). Throws INTERNAL for an argument the grammar does not allow.
 */
export function encodeStanza(s: Stanza): string {
  if (!isArgument(s.type) || !s.args.every(isArgument)) {
    throw new NixsealError("INTERNAL", `stanza "${s.type.slice(0, 40)}" has an invalid argument`);
  }
  let out = `${STANZA_PREFIX}${[s.type, ...s.args].join(" ")}\n`;
  const b64 = encodeBase64NoPad(s.body);
  for (let i = 0; i < b64.length; i += COLUMNS) out += `${b64.slice(i, i + COLUMNS)}\n`;
  // age spec: the last line is always shorter than 64 columns, so add an empty one if needed.
  if (b64.length % COLUMNS === 0) out += "\n";
  return out;
}

/** The bytes the header MAC covers, for a header we write. */
export function encodeHeaderWithoutMac(stanzas: readonly Stanza[]): Uint8Array {
  let out = `${VERSION_LINE}\n`;
  for (const s of stanzas) out += encodeStanza(s);
  out += "---";
  return Buffer.from(out, "latin1");
}

export function encodeMacLine(mac: Uint8Array): Uint8Array {
  return Buffer.from(` ${encodeBase64NoPad(mac)}\n`, "latin1");
}

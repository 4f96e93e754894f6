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

/**
 * Parses a header at the start of `data`. Returns null when `data` ends before the header does
 * (the caller reads more and calls again); throws AGE_HEADER when the header is invalid.
 */
export function parseHeader(data: Uint8Array): Header | null {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  // Reads one LF-terminated line, or null if there is no LF yet.
  const nextLine = (): string | null => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) {
      if (buf.length - pos > MAX_HEADER_SIZE) throw headerError("header line too long");
      return null;
    }
    const line = buf.toString("latin1", pos, end);
    pos = end + 1;
    return line;
  };

  const first = nextLine();
  if (first === null) {
    // Fail early on data that cannot become an age header.
    const n = Math.min(buf.length, INTRO.length);
    if (!buf.subarray(0, n).equals(INTRO.subarray(0, n)))
      throw headerError("not an age file (bad version line)");
    return null;
  }
  if (first !== VERSION_LINE) {
    if (first.startsWith("age-encryption.org/")) {
      throw new NixsealError("AGE_HEADER", `unsupported age format version "${first.slice(19, 40)}"`, {
        hint: "this file was written by a newer age; upgrade nixseal",
      });
    }
    throw headerError("not an age file (bad version line)");
  }

  const stanzas: Stanza[] = [];
  for (;;) {
    const lineStart = pos;
    const line = nextLine();
    if (line === null) return null;
    if (line.startsWith(MAC_PREFIX)) {
      const macB64 = line.slice(MAC_PREFIX.length);
      const mac = decodeBase64NoPad(macB64);
      if (mac === null || mac.length !== 32) throw headerError("malformed header MAC");
      const macInput = new Uint8Array(data.buffer, data.byteOffset, lineStart + 3);
      return { stanzas, mac, macInput, length: pos };
    }
    if (!line.startsWith(STANZA_PREFIX)) {
      if (line === "---") throw headerError("malformed header MAC");
      throw headerError("malformed recipient stanza line");
    }
    const args = line.slice(STANZA_PREFIX.length).split(" ");
    for (const a of args) if (!isArgument(a)) throw headerError("malformed recipient stanza arguments");
    const type = args.shift()!;
    // Body: full 64-column lines, then one shorter (possibly empty) line.
    const parts: Uint8Array[] = [];
    for (;;) {
      const bodyLine = nextLine();
      if (bodyLine === null) return null;
      if (bodyLine.length > COLUMNS) throw headerError("stanza body line too long");
      const bytes = decodeBase64NoPad(bodyLine);
      if (bytes === null) throw headerError("stanza body is not canonical base64");
      parts.push(bytes);
      if (bodyLine.length < COLUMNS) break;
    }
    stanzas.push({ type, args, body: Buffer.concat(parts) });
  }
}

function encodeStanza(s: Stanza): string {
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
  for (const s of stanzas) {
    if (!isArgument(s.type) || !s.args.every(isArgument)) {
      throw new NixsealError("INTERNAL", `stanza "${s.type}" has an invalid argument`);
    }
    out += encodeStanza(s);
  }
  out += "---";
  return Buffer.from(out, "latin1");
}

export function encodeMacLine(mac: Uint8Array): Uint8Array {
  return Buffer.from(` ${encodeBase64NoPad(mac)}\n`, "latin1");
}

/**
 * ASCII armor: strict PEM (RFC 7468, Figure 3) with the label "AGE ENCRYPTED FILE".
 * age spec: "ASCII armor" — reject every non-canonical encoding except whitespace around the
 * block; LF and CRLF line endings are both accepted. Push-based so large files stream.
 */
import { NixsealError } from "../common/index.js";

export const ARMOR_HEADER = "-----BEGIN AGE ENCRYPTED FILE-----";
export const ARMOR_FOOTER = "-----END AGE ENCRYPTED FILE-----";
const COLUMNS = 64;
const BYTES_PER_LINE = 48;
/** As age: at most this much whitespace around the block. */
const MAX_WHITESPACE = 1024;
const STRICT_B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function armorError(message: string): NixsealError {
  return new NixsealError("AGE_ARMOR", `invalid armor: ${message}`, {
    hint: "the armored file was damaged (e.g. re-wrapped or edited); restore it from a good copy",
  });
}

/** Go's bytes.TrimSpace set, which age uses for whitespace around the block. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0x85 || c === 0xa0;
}
function isBlank(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (!isSpace(s.charCodeAt(i))) return false;
  return true;
}

/**
 * Should this input go to the armor decoder? age itself checks for the exact header after
 * whitespace; we also send anything that starts with a PEM-like dash line or carries the armor
 * header further down, so that a damaged armor gets an armor error, not "not an age file".
 */
export function looksArmored(start: Uint8Array): boolean {
  const s = Buffer.from(start.buffer, start.byteOffset, Math.min(start.length, MAX_WHITESPACE + 64)).toString(
    "latin1",
  );
  let i = 0;
  while (i < s.length && isSpace(s.charCodeAt(i))) i++;
  return s.startsWith("-----", i) || s.includes(ARMOR_HEADER);
}

type State = "leading" | "body" | "trailing" | "done";

export class ArmorDecoder {
  private state: State = "leading";
  private partial = "";
  private whitespace = 0;
  /** Set when the last body line was short: the next line must be the footer. */
  private expectFooter = false;

  push(data: Uint8Array, out: Buffer[]): void {
    const text = this.partial + Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("latin1");
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      this.line(text.slice(start, nl), true, out);
      start = nl + 1;
    }
    this.partial = text.slice(start);
    if (this.partial.length > MAX_WHITESPACE + COLUMNS + 2) {
      if (this.state === "trailing") throw armorError("too much trailing data");
      throw armorError("line too long");
    }
  }

  private line(raw: string, terminated: boolean, out: Buffer[]): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    switch (this.state) {
      case "leading":
        if (isBlank(line)) {
          this.whitespace += raw.length + 1;
          if (this.whitespace > MAX_WHITESPACE) throw armorError("too much leading whitespace");
          return;
        }
        if (line !== ARMOR_HEADER) throw armorError("first line is not the armor header");
        this.state = "body";
        return;
      case "body": {
        if (line === ARMOR_FOOTER) {
          this.state = "trailing";
          this.whitespace = 0;
          return;
        }
        if (this.expectFooter) throw armorError("missing or invalid closing line");
        if (line.length === 0) throw armorError("empty line in armored data");
        if (line.length > COLUMNS) throw armorError("line longer than 64 columns");
        if (line.length % 4 !== 0 || !STRICT_B64.test(line)) throw armorError("invalid base64");
        const bytes = Buffer.from(line, "base64");
        // Strict: canonical encoding only (unused bits zero, padding exactly right).
        if (bytes.toString("base64") !== line) throw armorError("non-canonical base64");
        if (bytes.length < BYTES_PER_LINE) this.expectFooter = true;
        out.push(bytes);
        return;
      }
      case "trailing":
        if (!isBlank(line)) throw armorError("trailing data after the armored file");
        this.whitespace += raw.length + (terminated ? 1 : 0);
        if (this.whitespace >= MAX_WHITESPACE) throw armorError("too much trailing whitespace");
        return;
      case "done":
        return;
    }
  }

  finish(out: Buffer[]): void {
    if (this.partial.length > 0) {
      this.line(this.partial, false, out);
      this.partial = "";
    }
    if (this.state === "leading") throw armorError("no armor header");
    if (this.state === "body") throw armorError("missing closing line");
    this.state = "done";
  }
}

/** Encodes binary age data as armor, streaming: 48 bytes per 64-column line. */
export class ArmorEncoder {
  private started = false;
  private carry = Buffer.alloc(0);

  push(data: Uint8Array, out: Buffer[]): void {
    if (!this.started) {
      out.push(Buffer.from(`${ARMOR_HEADER}\n`, "latin1"));
      this.started = true;
    }
    const buf = this.carry.length
      ? Buffer.concat([this.carry, Buffer.from(data.buffer, data.byteOffset, data.byteLength)])
      : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const whole = buf.length - (buf.length % BYTES_PER_LINE);
    if (whole > 0) {
      const b64 = buf.toString("base64", 0, whole);
      let text = "";
      for (let i = 0; i < b64.length; i += COLUMNS) text += `${b64.slice(i, i + COLUMNS)}\n`;
      out.push(Buffer.from(text, "latin1"));
    }
    this.carry = Buffer.from(buf.subarray(whole));
  }

  finish(out: Buffer[]): void {
    if (!this.started) this.push(new Uint8Array(0), out);
    let text = "";
    if (this.carry.length > 0) text += `${this.carry.toString("base64")}\n`;
    text += `${ARMOR_FOOTER}\n`;
    out.push(Buffer.from(text, "latin1"));
    this.carry = Buffer.alloc(0);
  }
}

/**
 * The SSH wire encoding of keys: uint32, string and mpint, big-endian.
 * RFC 4251 section 5 ("Data Type Representations Used in the SSH Protocols").
 * Every read is bounded by the data that is left, so a hostile length cannot make us allocate
 * or read past the end.
 */
import type { NixsealError } from "../common/index.js";

/** Builds the error a malformed input raises; the caller decides the code and names the file. */
export type WireErrorFactory = (message: string) => NixsealError;

export class SshWireReader {
  private readonly data: Uint8Array;
  private readonly view: DataView;
  private pos = 0;
  private readonly fail: WireErrorFactory;

  constructor(data: Uint8Array, fail: WireErrorFactory) {
    this.data = data;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.fail = fail;
  }

  get remaining(): number {
    return this.data.length - this.pos;
  }

  atEnd(): boolean {
    return this.pos === this.data.length;
  }

  /** Fails unless every byte was consumed (trailing data is a format error). */
  expectEnd(what: string): void {
    if (!this.atEnd()) throw this.fail(`trailing data after ${what}`);
  }

  readUint32(what = "uint32"): number {
    if (this.remaining < 4) throw this.fail(`truncated ${what}`);
    const v = this.view.getUint32(this.pos, false);
    this.pos += 4;
    return v;
  }

  /** `n` raw bytes, as a view into the input (no copy). */
  readBytes(n: number, what = "data"): Uint8Array {
    if (n > this.remaining) throw this.fail(`truncated ${what}`);
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** RFC 4251 "string": uint32 length then that many bytes (a view, no copy). */
  readString(what = "string"): Uint8Array {
    const n = this.readUint32(`${what} length`);
    if (n > this.remaining) throw this.fail(`${what} is longer than the data that is left`);
    return this.readBytes(n, what);
  }

  /** A string holding text (key type names, cipher names, comments). */
  readText(what = "string"): string {
    return Buffer.from(this.readString(what)).toString("utf8");
  }

  /**
   * RFC 4251 "mpint", as an unsigned big-endian magnitude without leading zeros (a view).
   * Negative numbers are refused: no key field is negative.
   */
  readMpint(what = "mpint"): Uint8Array {
    let b = this.readString(what);
    if (b.length > 0 && (b[0]! & 0x80) !== 0) throw this.fail(`${what} is negative`);
    let i = 0;
    while (i < b.length && b[i] === 0) i++;
    b = b.subarray(i);
    return b;
  }
}

/** Accumulates wire-encoded fields. */
export class SshWireWriter {
  private readonly parts: Uint8Array[] = [];

  uint32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }

  bytes(b: Uint8Array): this {
    this.parts.push(b);
    return this;
  }

  string(s: Uint8Array | string): this {
    const b = typeof s === "string" ? Buffer.from(s, "utf8") : s;
    return this.uint32(b.length).bytes(b);
  }

  /** An unsigned magnitude (big-endian, leading zeros allowed) as a canonical positive mpint. */
  mpint(magnitude: Uint8Array): this {
    return this.bytes(encodeSshMpint(magnitude));
  }

  finish(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

/** RFC 4251 "string" of raw bytes. */
export function encodeSshString(b: Uint8Array | string): Uint8Array {
  return new SshWireWriter().string(b).finish();
}

/**
 * RFC 4251 "mpint" of a non-negative number given as its big-endian magnitude: leading zeros
 * stripped, one zero byte prepended when the top bit is set, zero as the empty string.
 */
export function encodeSshMpint(magnitude: Uint8Array): Uint8Array {
  let i = 0;
  while (i < magnitude.length && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  const pad = m.length > 0 && (m[0]! & 0x80) !== 0 ? 1 : 0;
  const out = Buffer.alloc(4 + pad + m.length);
  out.writeUInt32BE(pad + m.length);
  out.set(m, 4 + pad);
  return out;
}

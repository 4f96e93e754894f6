/**
 * The STREAM payload: ChaCha20-Poly1305 over 64 KiB chunks with a counter nonce whose last byte
 * flags the final chunk. age spec: "Payload".
 *
 * Both directions are push-based and I/O-agnostic: feed bytes in, get chunks out, call finish().
 * Memory stays bounded by one read buffer plus one chunk, whatever the file size.
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { NixsealError } from "../common/index.js";

export const CHUNK_SIZE = 64 * 1024;
export const TAG_SIZE = 16;
export const ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
/** age spec: the counter is 11 bytes; we refuse to go anywhere near wrapping it. */
export const MAX_CHUNKS = 2 ** 48;

function nonceFor(counter: number, last: boolean, nonce: Buffer): Buffer {
  // 11-byte big-endian counter || last-chunk flag. Counters stay below 2^48 (writeUIntBE limit).
  nonce.fill(0, 0, 5);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/**
 * Opens one encrypted chunk (ciphertext || tag) at position `counter`; null if it does not
 * authenticate. Shared by the sequential decryptor and the parallel one (stream-parallel.ts).
 */
export function openChunkAt(
  key: Uint8Array,
  counter: number,
  last: boolean,
  chunk: Buffer,
  nonce: Buffer,
): Buffer | null {
  const d = createDecipheriv("chacha20-poly1305", key, nonceFor(counter, last, nonce), {
    authTagLength: TAG_SIZE,
  });
  d.setAuthTag(chunk.subarray(chunk.length - TAG_SIZE));
  const out = d.update(chunk.subarray(0, chunk.length - TAG_SIZE));
  try {
    d.final();
  } catch {
    out.fill(0);
    return null;
  }
  return out;
}

/** Seals one plaintext chunk at position `counter`: appends its ciphertext, then its tag. */
export function sealChunkAt(
  key: Uint8Array,
  counter: number,
  last: boolean,
  plain: Buffer,
  nonce: Buffer,
  out: Buffer[],
): void {
  const c = createCipheriv("chacha20-poly1305", key, nonceFor(counter, last, nonce), {
    authTagLength: TAG_SIZE,
  });
  // Chunk and tag are pushed separately: a Buffer.concat per chunk halves throughput.
  out.push(c.update(plain));
  c.final();
  out.push(c.getAuthTag());
}

function payloadError(message: string, hint: string): NixsealError {
  return new NixsealError("AGE_PAYLOAD", message, { hint });
}

/** A short final chunk that fails is as often a cut-off file as a modified one. */
function finalChunkError(): NixsealError {
  return payloadError(
    "payload authentication failed: the file was truncated, modified or corrupted",
    "restore the file from a good copy (git history, backup)",
  );
}

const ONLY_CHUNK_NONCE = Buffer.alloc(12);

/**
 * A payload that is one chunk shorter than a full one (`sealed`: ciphertext and tag, at least
 * TAG_SIZE bytes; a secret's whole payload), which can only be the first and final chunk, opened
 * as PayloadDecryptor would open it, with the same error, without its buffering and copies. The
 * caller wipes the key and the plaintext.
 */
export function openOnlyChunk(payloadKey: Uint8Array, sealed: Buffer): Buffer {
  const plain = openChunkAt(payloadKey, 0, true, sealed, ONLY_CHUNK_NONCE);
  if (plain === null) throw finalChunkError();
  return plain;
}

export class PayloadDecryptor {
  protected readonly key: Buffer;
  private readonly nonce = Buffer.alloc(12);
  protected counter = 0;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  protected sawLast = false;
  private finished = false;

  constructor(payloadKey: Uint8Array) {
    this.key = Buffer.from(payloadKey);
  }

  private openChunk(chunk: Buffer, last: boolean): Buffer | null {
    if (this.counter >= MAX_CHUNKS) throw payloadError("payload too large", "the file is damaged");
    return openChunkAt(this.key, this.counter, last, chunk, this.nonce);
  }

  protected trailingData(): NixsealError {
    return payloadError(
      "trailing data after the end of the encrypted payload",
      "the file was modified or two files were concatenated; restore it from a good copy",
    );
  }

  /**
   * Decrypts a full-size chunk as age does: as a middle chunk first, then as a full-size final
   * chunk. After a final chunk, any further byte is an error.
   */
  private openFullChunk(chunk: Buffer, out: Buffer[]): void {
    if (this.sawLast) throw this.trailingData();
    let plain = this.openChunk(chunk, false);
    if (plain === null) {
      plain = this.openChunk(chunk, true);
      if (plain === null) throw this.authError();
      this.sawLast = true;
    }
    this.counter++;
    out.push(plain);
  }

  protected authError(): NixsealError {
    return payloadError(
      "payload authentication failed: the file was modified or is corrupted",
      "restore the file from a good copy (git history, backup)",
    );
  }

  /** Decrypts every complete chunk; a short chunk waits for finish(). */
  push(data: Uint8Array, out: Buffer[]): void {
    if (data.length === 0) return;
    if (this.sawLast) throw this.trailingData();
    let buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (this.pendingLength > 0) {
      // Only the straddling chunk is copied; a big read is sliced without copies below.
      const need = ENCRYPTED_CHUNK_SIZE - this.pendingLength;
      if (buf.length < need) {
        this.pending.push(Buffer.from(buf));
        this.pendingLength += buf.length;
        return;
      }
      const head = Buffer.concat([...this.pending, buf.subarray(0, need)]);
      buf = buf.subarray(need);
      this.pending = [];
      this.pendingLength = 0;
      this.openFullChunk(head, out);
    }
    const off = this.openFullChunks(buf, out);
    if (off < buf.length) {
      if (this.sawLast) throw this.trailingData();
      // Keep a copy: the caller may reuse its read buffer.
      this.pending.push(Buffer.from(buf.subarray(off)));
      this.pendingLength += buf.length - off;
    }
  }

  /** Decrypts every whole chunk at the start of `buf`; returns how many bytes they took. */
  protected openFullChunks(buf: Buffer, out: Buffer[]): number {
    let off = 0;
    while (buf.length - off >= ENCRYPTED_CHUNK_SIZE) {
      this.openFullChunk(buf.subarray(off, off + ENCRYPTED_CHUNK_SIZE), out);
      off += ENCRYPTED_CHUNK_SIZE;
    }
    return off;
  }

  /** Decrypts the short final chunk; throws if the payload is truncated or the chunk invalid. */
  finish(out: Buffer[]): void {
    if (this.finished) return;
    this.finished = true;
    const last = Buffer.concat(this.pending);
    this.pending = [];
    try {
      if (last.length === 0) {
        if (this.sawLast) return;
        throw payloadError(
          this.counter === 0 ? "payload is missing: the file is truncated" : "payload is truncated",
          "the file was cut short; restore it from a good copy",
        );
      }
      // age spec: the last chunk may be empty only if it is the only chunk.
      if (last.length === TAG_SIZE && this.counter > 0) {
        throw payloadError(
          "payload has an empty final chunk",
          "the file was not written by a conforming age",
        );
      }
      if (last.length < TAG_SIZE) throw payloadError("payload is truncated", "the file was cut short");
      const plain = this.openChunk(last, true);
      if (plain === null) throw finalChunkError();
      this.counter++;
      out.push(plain);
    } finally {
      this.key.fill(0);
    }
  }

  /** Wipes key material when abandoning a decryption midway. */
  destroy(): void {
    this.key.fill(0);
  }
}

export class PayloadEncryptor {
  protected readonly key: Buffer;
  private readonly nonce = Buffer.alloc(12);
  protected counter = 0;
  /**
   * The held-back plaintext: grown as it fills, up to one chunk, so that encrypting a few bytes
   * (a password) does not allocate, zero and wipe a whole 64 KiB chunk.
   */
  private chunk = Buffer.alloc(0);
  private chunkLength = 0;

  constructor(payloadKey: Uint8Array) {
    this.key = Buffer.from(payloadKey);
  }

  private seal(plain: Buffer, last: boolean, out: Buffer[]): void {
    if (this.counter >= MAX_CHUNKS) throw payloadError("payload too large", "split the file");
    sealChunkAt(this.key, this.counter, last, plain, this.nonce, out);
    this.counter++;
  }

  /** Room for `length` held-back bytes: a larger buffer, the old one copied and wiped. */
  private reserve(length: number): void {
    if (length <= this.chunk.length) return;
    const bigger = Buffer.alloc(Math.min(CHUNK_SIZE, Math.max(length, 2 * this.chunk.length)));
    this.chunk.copy(bigger, 0, 0, this.chunkLength);
    this.chunk.fill(0);
    this.chunk = bigger;
  }

  /** Encrypts every full chunk; the final chunk is held back until finish(). */
  push(data: Uint8Array, out: Buffer[]): void {
    let buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (this.chunkLength > 0) {
      const n = Math.min(CHUNK_SIZE - this.chunkLength, buf.length);
      this.reserve(this.chunkLength + n);
      buf.copy(this.chunk, this.chunkLength, 0, n);
      this.chunkLength += n;
      buf = buf.subarray(n);
      if (this.chunkLength === CHUNK_SIZE && buf.length > 0) {
        this.seal(this.chunk, false, out);
        this.chunkLength = 0;
      }
    }
    const off = this.sealFullChunks(buf, out);
    if (off < buf.length) {
      if (this.chunkLength === CHUNK_SIZE) {
        this.seal(this.chunk, false, out);
        this.chunkLength = 0;
      }
      this.reserve(this.chunkLength + buf.length - off);
      buf.copy(this.chunk, this.chunkLength, off);
      this.chunkLength += buf.length - off;
    }
  }

  /** Full chunks straight from the input, as long as more data follows them; returns bytes taken. */
  protected sealFullChunks(buf: Buffer, out: Buffer[]): number {
    let off = 0;
    while (buf.length - off > CHUNK_SIZE) {
      this.seal(buf.subarray(off, off + CHUNK_SIZE), false, out);
      off += CHUNK_SIZE;
    }
    return off;
  }

  finish(out: Buffer[]): void {
    try {
      this.seal(this.chunk.subarray(0, this.chunkLength), true, out);
    } finally {
      this.destroy();
    }
  }

  /** Wipes the key and the held-back plaintext (also when abandoning an encryption midway). */
  destroy(): void {
    this.chunk.fill(0);
    this.key.fill(0);
  }
}

/**
 * Encryption and decryption of whole age files: header, MAC, payload, armor.
 * Two faces: push-based `AgeDecryptor`/`AgeEncryptor` for streams of any size with bounded
 * memory, and `encrypt`/`decrypt` for small in-memory files (secrets), which is the fast path.
 * age spec: "Encrypted file format", "Header MAC", "Payload".
 */
import { randomBytes } from "node:crypto";
import { asBuffer, constantTimeEqual, NixsealError, wipe } from "../common/index.js";
import { ArmorDecoder, ArmorEncoder, looksArmored } from "./armor.js";
import {
  encodeHeaderWithoutMac,
  encodeMacLine,
  type Header,
  looksLikeAgeBinary,
  MAX_HEADER_SIZE,
  parseHeader,
} from "./format.js";
import { hkdfSha256, hmacSha256, randomFileKey } from "./primitives.js";
import { ENCRYPTED_CHUNK_SIZE, openOnlyChunk, PayloadDecryptor, TAG_SIZE } from "./stream.js";
import { PARALLEL_THRESHOLD, ParallelPayloadDecryptor, ParallelPayloadEncryptor } from "./stream-parallel.js";
import { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";

const NONCE_SIZE = 16;
/** "age-encryption.org/v1\n" */
const VERSION_INTRO_SIZE = 22;
/** How many bytes to look at before deciding whether the input is armored. */
export const DETECT_SIZE = 1024 + 64;

/** Enough input to tell armor from binary: a non-space byte plus a header's length, or DETECT_SIZE. */
function canDetectArmor(pending: Buffer): boolean {
  if (pending.length >= DETECT_SIZE) return true;
  for (let i = 0; i < pending.length; i++) {
    const c = pending[i]!;
    if (!(c === 0x20 || (c >= 0x09 && c <= 0x0d))) return pending.length - i >= 40;
  }
  return false;
}

const NO_SALT = new Uint8Array(0);

function headerMac(fileKey: Uint8Array, macInput: Uint8Array): Uint8Array {
  const key = hkdfSha256(fileKey, NO_SALT, "header");
  const mac = hmacSha256(key, macInput);
  wipe(key);
  return mac;
}

function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Uint8Array {
  return hkdfSha256(fileKey, nonce, "payload");
}

/** Describes the recipients of a header for a "no identity matched" error, without secrets. */
export function describeStanzas(stanzas: readonly Stanza[]): string {
  const counts = new Map<string, number>();
  for (const s of stanzas) counts.set(s.type, (counts.get(s.type) ?? 0) + 1);
  return [...counts].map(([t, n]) => (n > 1 ? `${n}× ${t}` : t)).join(", ");
}

/**
 * Finds the file key of a header (age's DecryptHeader): tries each identity in order, then
 * verifies the header MAC. The caller wipes the key. age spec: an scrypt stanza must be the
 * only stanza.
 */
export async function decryptHeader(header: Header, identities: readonly Identity[]): Promise<Uint8Array> {
  return findFileKey(header, identities);
}

/**
 * decryptHeader without a promise when every identity tried answers at once (X25519, ssh keys,
 * scrypt): a host's thousands of small files then cost no microtask, no async frame per file.
 * An identity that answers with a promise (a plugin, a key to unlock) is awaited from there on.
 */
function findFileKey(header: Header, identities: readonly Identity[]): Uint8Array | Promise<Uint8Array> {
  const { stanzas } = header;
  if (stanzas.length === 0) {
    throw new NixsealError("AGE_HEADER", "invalid age header: no recipient stanzas", {
      hint: "the file is damaged",
    });
  }
  if (stanzas.some((s) => s.type === "scrypt") && stanzas.length !== 1) {
    throw new NixsealError("AGE_HEADER", "invalid age header: an scrypt stanza must be the only one", {
      hint: "the file is damaged or was not written by a conforming age implementation",
    });
  }
  if (identities.length === 0) {
    throw new NixsealError("AGE_NO_MATCH", "no identities given", { hint: "pass an identity file with -i" });
  }
  for (let i = 0; i < identities.length; i++) {
    const fileKey = identities[i]!.unwrapFileKey(stanzas);
    if (isPromise(fileKey)) return findFileKeyFrom(header, identities, i, fileKey);
    if (fileKey !== null) return checkedFileKey(header, fileKey);
  }
  throw noIdentityMatched(header, identities);
}

/** findFileKey from identity `i` on, whose answer is `pending`. */
async function findFileKeyFrom(
  header: Header,
  identities: readonly Identity[],
  i: number,
  pending: Promise<Uint8Array | null>,
): Promise<Uint8Array> {
  let fileKey = await pending;
  for (;;) {
    if (fileKey !== null) return checkedFileKey(header, fileKey);
    if (++i >= identities.length) throw noIdentityMatched(header, identities);
    fileKey = await identities[i]!.unwrapFileKey(header.stanzas);
  }
}

/** A promise (any thenable) rather than a value at hand. */
function isPromise<T>(x: T | Promise<T>): x is Promise<T> {
  return typeof x === "object" && x !== null && typeof (x as { then?: unknown }).then === "function";
}

/** An unwrapped file key, checked (its size, the header MAC); wiped if it fails. */
function checkedFileKey(header: Header, fileKey: Uint8Array): Uint8Array {
  if (fileKey.length !== FILE_KEY_SIZE) {
    wipe(fileKey);
    throw new NixsealError("AGE_STANZA", "invalid recipient stanza: unwrapped file key has the wrong size", {
      hint: "the file is damaged or was not written by a conforming age implementation",
    });
  }
  const mac = headerMac(fileKey, header.macInput);
  const ok = constantTimeEqual(mac, header.mac);
  wipe(mac);
  if (!ok) {
    wipe(fileKey);
    throw new NixsealError("AGE_HMAC", "header MAC does not verify: the header was modified", {
      hint: "the file was tampered with or damaged; restore it from a good copy",
    });
  }
  return fileKey;
}

/** No identity opened any stanza. */
function noIdentityMatched(header: Header, identities: readonly Identity[]): NixsealError {
  const { stanzas } = header;
  if (stanzas[0]!.type === "scrypt") {
    return new NixsealError("AGE_NO_MATCH", "incorrect passphrase", {
      hint: "type the passphrase the file was encrypted with",
    });
  }
  const types = describeStanzas(stanzas);
  return new NixsealError("AGE_NO_MATCH", `no identity matched any of the recipients (${types})`, {
    hint: `tried: ${identities
      .map((i) => i.description)
      .filter((d) => d !== "")
      .join("; ")}; use an identity the file was encrypted to`,
  });
}

/** Checks the labels of recipients: they can only be mixed if their label sets are equal. */
function checkLabels(recipients: readonly Recipient[]): void {
  const key = (r: Recipient) => [...(r.labels ?? [])].sort().join("\0");
  const first = recipients[0] ? key(recipients[0]) : "";
  for (const r of recipients) {
    if (key(r) !== first) {
      throw new NixsealError(
        "AGE_RECIPIENT",
        "incompatible recipients: these recipient types can't be mixed",
        {
          hint: "post-quantum recipients can't be mixed with classic ones, and a passphrase must be alone",
        },
      );
    }
  }
}

/**
 * A binary header for `fileKey`: every recipient's stanzas, in order, then the MAC under the
 * file key. With a new file key this starts a new file; with the key of an existing file it is
 * a new header for that file's nonce and payload, which stay valid as they are (a rekey).
 */
export async function encryptHeader(
  fileKey: Uint8Array,
  recipients: readonly Recipient[],
): Promise<Uint8Array> {
  const stanzas: Stanza[] = [];
  for (const r of recipients) stanzas.push(...(await r.wrapFileKey(fileKey)));
  // After wrapping: plugins only tell their labels when they wrap.
  checkLabels(recipients);
  const macInput = encodeHeaderWithoutMac(stanzas);
  const mac = headerMac(fileKey, macInput);
  return Buffer.concat([macInput, encodeMacLine(mac)]);
}

/** Wraps a new file key for every recipient; returns the header bytes and the payload key. */
async function makeHeader(
  recipients: readonly Recipient[],
): Promise<{ header: Uint8Array; key: Uint8Array; nonce: Uint8Array }> {
  if (recipients.length === 0) {
    throw new NixsealError("AGE_RECIPIENT", "no recipients", {
      hint: "pass at least one recipient with -r or -R",
    });
  }
  const fileKey = randomFileKey();
  try {
    const header = await encryptHeader(fileKey, recipients);
    const nonce = randomBytes(NONCE_SIZE);
    return { header, key: payloadKey(fileKey, nonce), nonce };
  } finally {
    wipe(fileKey);
  }
}

/**
 * Streaming decryption: push() ciphertext (binary or armored), collect plaintext chunks.
 * Nothing is released before the header MAC verifies; each chunk only after it authenticates.
 */
export class AgeDecryptor {
  private readonly identities: readonly Identity[];
  private armor: ArmorDecoder | null | undefined;
  private headerBuf: Buffer[] = [];
  private headerLength = 0;
  /** Sequential for small payloads; large ones use worker threads (stream-parallel.ts). */
  private payload: ParallelPayloadDecryptor | null = null;
  private nonce: Buffer | null = null;
  private readonly binary: Buffer[] = [];
  /** The header, once parsed (e.g. to report recipients). */
  header: Header | null = null;

  constructor(identities: readonly Identity[]) {
    this.identities = identities;
  }

  /** Feeds input; plaintext ready for release is appended to `out`. */
  async push(data: Uint8Array, out: Buffer[]): Promise<void> {
    if (this.armor === undefined) {
      // Decide once, on the first bytes, whether the input is armored.
      const pending = Buffer.concat([...this.headerBuf, data]);
      if (!canDetectArmor(pending)) {
        this.headerBuf = [pending];
        this.headerLength = pending.length;
        return;
      }
      this.armor = looksArmored(pending) ? new ArmorDecoder() : null;
      this.headerBuf = [];
      this.headerLength = 0;
      data = pending;
    }
    let binary: Uint8Array[];
    if (this.armor) {
      this.binary.length = 0;
      this.armor.push(data, this.binary);
      binary = this.binary;
    } else {
      binary = [data];
    }
    for (const b of binary) await this.pushBinary(b, out);
  }

  private async pushBinary(data: Uint8Array, out: Buffer[]): Promise<void> {
    if (this.payload) {
      this.payload.push(data, out);
      return;
    }
    this.headerBuf.push(Buffer.from(data));
    this.headerLength += data.length;
    const all = this.headerBuf.length === 1 ? this.headerBuf[0]! : Buffer.concat(this.headerBuf);
    this.headerBuf = [all];
    if (this.header === null) {
      if (all.length >= 22 && all.subarray(0, 22).toString("latin1") === "age-encryption.org/v1\r") {
        throw new NixsealError("AGE_HEADER", "invalid age header: the version line ends in CRLF", {
          hint: "the file's line endings were converted (Windows redirection or git autocrlf); mark *.age as binary",
        });
      }
      const header = parseHeader(all);
      if (header === null) {
        if (all.length > MAX_HEADER_SIZE) throw new NixsealError("AGE_HEADER", "age header too large");
        return;
      }
      this.header = header;
    }
    if (all.length < this.header.length + NONCE_SIZE) return;
    this.nonce = all.subarray(this.header.length, this.header.length + NONCE_SIZE);
    const fileKey = await decryptHeader(this.header, this.identities);
    const key = payloadKey(fileKey, this.nonce);
    wipe(fileKey);
    this.payload = new ParallelPayloadDecryptor(key);
    wipe(key);
    const rest = all.subarray(this.header.length + NONCE_SIZE);
    this.headerBuf = [];
    this.payload.push(rest, out);
  }

  async finish(out: Buffer[]): Promise<void> {
    if (this.armor === undefined) {
      const pending = Buffer.concat(this.headerBuf);
      this.headerBuf = [];
      this.armor = looksArmored(pending) ? new ArmorDecoder() : null;
      if (pending.length > 0) await this.push(pending, out);
    }
    if (this.armor) {
      this.binary.length = 0;
      this.armor.finish(this.binary);
      for (const b of this.binary) await this.pushBinary(b, out);
    }
    if (!this.payload) {
      if (this.header === null) {
        const all = Buffer.concat(this.headerBuf);
        if (all.length === 0) {
          throw new NixsealError("AGE_HEADER", "the input is empty, not an age file", {
            hint: "check the file name; an encrypted file is never empty",
          });
        }
        throw new NixsealError("AGE_HEADER", "invalid age header: the file is truncated", {
          hint: "the file was cut short; restore it from a good copy",
        });
      }
      throw new NixsealError("AGE_HEADER", "the file is truncated: the payload nonce is missing", {
        hint: "the file was cut short; restore it from a good copy",
      });
    }
    this.payload.finish(out);
  }

  destroy(): void {
    this.payload?.destroy();
  }
}

export interface EncryptOptions {
  armor?: boolean;
}

/** Streaming encryption: call start() once, push() plaintext, finish(). */
export class AgeEncryptor {
  private readonly recipients: readonly Recipient[];
  /** Sequential for small payloads; large ones use worker threads (stream-parallel.ts). */
  private payload: ParallelPayloadEncryptor | null = null;
  private readonly armor: ArmorEncoder | null;
  private readonly binary: Buffer[] = [];

  constructor(recipients: readonly Recipient[], options: EncryptOptions = {}) {
    this.recipients = recipients;
    this.armor = options.armor ? new ArmorEncoder() : null;
  }

  /** Builds the header (runs the recipients, e.g. plugins); errors surface before any output. */
  async start(out: Buffer[]): Promise<void> {
    const { header, key, nonce } = await makeHeader(this.recipients);
    this.payload = new ParallelPayloadEncryptor(key);
    wipe(key);
    this.emit([Buffer.from(header), Buffer.from(nonce)], out);
  }

  private emit(binary: Buffer[], out: Buffer[]): void {
    if (!this.armor) {
      for (const b of binary) out.push(b);
      return;
    }
    for (const b of binary) this.armor.push(b, out);
  }

  push(data: Uint8Array, out: Buffer[]): void {
    if (!this.payload) throw new NixsealError("INTERNAL", "AgeEncryptor.push before start");
    this.binary.length = 0;
    this.payload.push(data, this.binary);
    this.emit(this.binary, out);
  }

  finish(out: Buffer[]): void {
    if (!this.payload) throw new NixsealError("INTERNAL", "AgeEncryptor.finish before start");
    this.binary.length = 0;
    this.payload.finish(this.binary);
    this.emit(this.binary, out);
    this.armor?.finish(out);
  }

  /** Wipes key material (and stops worker threads) when abandoning an encryption midway. */
  destroy(): void {
    this.payload?.destroy();
  }
}

/** Encrypts a small in-memory plaintext. */
export async function encrypt(
  plaintext: Uint8Array,
  recipients: readonly Recipient[],
  options: EncryptOptions = {},
): Promise<Uint8Array> {
  const enc = new AgeEncryptor(recipients, options);
  const out: Buffer[] = [];
  await enc.start(out);
  enc.push(plaintext, out);
  enc.finish(out);
  return Buffer.concat(out);
}

/**
 * Decrypts a small in-memory age file (binary or armored). The returned buffer holds plaintext:
 * the caller wipes it when done.
 */
export async function decrypt(file: Uint8Array, identities: readonly Identity[]): Promise<Uint8Array> {
  // Awaited only when it is a promise: an await of a plain value costs a microtask too.
  let fast = decryptBinaryInMemory(file, identities);
  if (isPromise(fast)) fast = await fast;
  if (fast !== null) return fast;
  const dec = new AgeDecryptor(identities);
  const out: Buffer[] = [];
  try {
    await dec.push(file, out);
    await dec.finish(out);
  } catch (e) {
    for (const b of out) b.fill(0);
    dec.destroy();
    throw e;
  }
  if (out.length === 1) return out[0]!;
  const plain = Buffer.concat(out);
  for (const b of out) b.fill(0);
  return plain;
}

/**
 * The fast path for what nixseal decrypts most: small binary files already in memory (secrets).
 * Same checks and errors as the streaming path, without its buffering. Returns null for input
 * the streaming path must handle (armor, an incomplete header, large payloads that go parallel).
 */
function decryptBinaryInMemory(
  file: Uint8Array,
  identities: readonly Identity[],
): Uint8Array | null | Promise<Uint8Array> {
  if (file.length > PARALLEL_THRESHOLD || !looksLikeAgeBinary(file) || file.length < VERSION_INTRO_SIZE)
    return null;
  const header = parseHeader(file);
  if (header === null || file.length < header.length + NONCE_SIZE) return null;
  const fileKey = findFileKey(header, identities);
  if (isPromise(fileKey)) return fileKey.then((k) => openInMemory(k, file, header.length));
  return openInMemory(fileKey, file, header.length);
}

/** The payload after a header of `headerLength` bytes, opened with the file key (then wiped). */
function openInMemory(fileKey: Uint8Array, file: Uint8Array, headerLength: number): Uint8Array {
  let out: Buffer[];
  try {
    out = openPayload(fileKey, file.subarray(headerLength));
  } finally {
    wipe(fileKey);
  }
  if (out.length === 1) return out[0]!;
  const plain = Buffer.concat(out);
  for (const b of out) b.fill(0);
  return plain;
}

/**
 * Decrypts a whole payload held in memory: the nonce, then every STREAM chunk, which must all
 * authenticate (and nothing may follow the last). Returns the plaintext chunks; the caller
 * wipes them. age spec: "Payload".
 */
function openPayload(fileKey: Uint8Array, payload: Uint8Array): Buffer[] {
  if (payload.length < NONCE_SIZE) {
    throw new NixsealError("AGE_HEADER", "the file is truncated: the payload nonce is missing", {
      hint: "the file was cut short; restore it from a good copy",
    });
  }
  const key = payloadKey(fileKey, payload.subarray(0, NONCE_SIZE));
  const sealed = payload.length - NONCE_SIZE;
  if (sealed >= TAG_SIZE && sealed < ENCRYPTED_CHUNK_SIZE) {
    // One chunk, so the first and final one (a secret): opened directly, without the stream.
    try {
      return [openOnlyChunk(key, asBuffer(payload).subarray(NONCE_SIZE))];
    } finally {
      wipe(key);
    }
  }
  const dec = new PayloadDecryptor(key);
  wipe(key);
  const out: Buffer[] = [];
  try {
    dec.push(payload.subarray(NONCE_SIZE), out);
    dec.finish(out);
  } catch (e) {
    for (const b of out) b.fill(0);
    dec.destroy();
    throw e;
  }
  return out;
}

/**
 * Checks that a file's payload (`payload` of extractHeader: nonce and chunks) decrypts and
 * authenticates to its end under `fileKey`, keeping no plaintext. Throws as decrypt() does.
 */
export function verifyPayload(fileKey: Uint8Array, payload: Uint8Array): void {
  for (const b of openPayload(fileKey, payload)) b.fill(0);
}

/**
 * An identity that "unwraps" a file key already known (age's injected file key identity): with
 * decryptHeader, it checks the key's size and the header MAC of a file whose key was found
 * another way, e.g. by a plugin for a whole batch of files.
 */
export function fileKeyIdentity(fileKey: Uint8Array): Identity {
  return { description: "", unwrapFileKey: () => Uint8Array.from(fileKey) };
}

/** A whole file as binary age: armor removed (throws AGE_ARMOR if the armor is bad). */
function unarmor(file: Uint8Array): { binary: Uint8Array; armored: boolean } {
  if (!looksArmored(file)) return { binary: file, armored: false };
  const parts: Buffer[] = [];
  const dec = new ArmorDecoder();
  dec.push(file, parts);
  dec.finish(parts);
  return { binary: Buffer.concat(parts), armored: true };
}

/** The complete header at the start of a binary file; throws AGE_HEADER if it is not there. */
function completeHeader(binary: Uint8Array): Header {
  const h = parseHeader(binary);
  if (h === null) {
    throw new NixsealError("AGE_HEADER", "invalid age header: the file is truncated", {
      hint: "the file was cut short; restore it from a good copy",
    });
  }
  return h;
}

/** Parses just the header of an age file (binary or armored), e.g. to list its recipients. */
export function readHeader(file: Uint8Array): Header {
  return completeHeader(unarmor(file).binary);
}

/** An age file split at the end of its header, as extractHeader splits it. */
export interface ExtractedHeader {
  header: Header;
  /** The whole file as binary age (armor removed). */
  binary: Uint8Array;
  /** Whether the file was armored. */
  armored: boolean;
  /** What follows the header, as it is in the file: the payload nonce and the encrypted chunks. */
  payload: Uint8Array;
}

/**
 * Splits a whole age file (binary or armored) into its header and its payload, as age's
 * ExtractHeader does, without any key. Throws AGE_HEADER or AGE_ARMOR.
 */
export function extractHeader(file: Uint8Array): ExtractedHeader {
  if (file.length === 0) {
    throw new NixsealError("AGE_HEADER", "the file is empty, not an age file", {
      hint: "an encrypted file is never empty; restore it from git",
    });
  }
  const { binary, armored } = unarmor(file);
  const header = completeHeader(binary);
  return { header, binary, armored, payload: binary.subarray(header.length) };
}

/**
 * The push stream between `nixseal push` (the deployer) and `nixseal receive` (the host), over
 * ssh's stdin and stdout. Each direction starts with MAGIC, then frames: one type byte, a 32-bit
 * big-endian length, the payload. JSON frames carry metadata, data frames one key's content.
 *
 *   deployer: MAGIC  H{version, nonce, destDirs, files: [[destDir, name]...], dryRun}
 *   host:     MAGIC  S{version, keys: {key: meta + digest}, problems}
 *   deployer: A{keys: [meta + send], ...}  D<content> per key sent  E<SHA-256 of every byte before E>
 *   host:     R{result}
 *
 * The host changes nothing before E has arrived and its checksum matches: a stream cut anywhere
 * (or altered) leaves the host's keys as they were. A dry run ends after S.
 */
import { createHash, createHmac, type Hash } from "node:crypto";
import type { Readable, Writable } from "node:stream";
import { type Json, NixsealError } from "../common/index.js";
import type { KeyMeta } from "./plan.js";

export const PROTOCOL_VERSION = 1;
export const MAGIC = Buffer.from("NIXSEAL-PUSH 1\n", "latin1");

export const FRAME = {
  hello: 0x48, // H
  state: 0x53, // S
  apply: 0x41, // A
  data: 0x44, // D
  end: 0x45, // E
  result: 0x52, // R
} as const;

/** The largest JSON frame (metadata of every key of a host). */
export const MAX_JSON_FRAME = 16 * 1024 * 1024;
/** The largest key (a key is decrypted and held in memory on both sides). */
export const MAX_KEY_SIZE = 64 * 1024 * 1024;

/**
 * The digest the host answers for a key it holds, and the deployer computes for the key it would
 * send: HMAC-SHA256 keyed with the deployer's fresh nonce (the host learns nothing it did not have,
 * an eavesdropper nothing it can replay) over the content and everything that decides the file.
 * Each field is length-prefixed, so no two different keys give the same input.
 */
export function keyDigest(
  nonce: Uint8Array,
  meta: Pick<KeyMeta, "destDir" | "name" | "owner" | "group" | "mode">,
  content: Uint8Array,
): string {
  const h = createHmac("sha256", nonce);
  for (const field of [meta.destDir, meta.name, meta.owner, meta.group, meta.mode.toString(8)]) {
    const b = Buffer.from(field, "utf8");
    h.update(u32(b.length));
    h.update(b);
  }
  h.update(u32(content.length));
  h.update(content);
  return h.digest("hex");
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** Writes frames to a stream, counting the bytes and hashing them for the end frame. */
export class FrameWriter {
  bytes = 0;
  private readonly hash: Hash = createHash("sha256");
  constructor(private readonly out: Writable) {}

  private write(b: Uint8Array): Promise<void> {
    this.bytes += b.length;
    this.hash.update(b);
    return new Promise((resolve, reject) => {
      this.out.write(b, (e) => (e ? reject(e) : resolve()));
    });
  }

  async magic(): Promise<void> {
    await this.write(MAGIC);
  }

  async frame(type: number, payload: Uint8Array): Promise<void> {
    const head = Buffer.alloc(5);
    head[0] = type;
    head.writeUInt32BE(payload.length, 1);
    await this.write(head);
    if (payload.length > 0) await this.write(payload);
  }

  json(type: number, value: Json): Promise<void> {
    return this.frame(type, Buffer.from(JSON.stringify(value), "utf8"));
  }

  /** The end frame: the SHA-256 of everything written before it. */
  end(): Promise<void> {
    return this.frame(FRAME.end, this.hash.copy().digest());
  }
}

/** Reads frames from a stream; the SHA-256 of everything read so far is at hand for the end frame. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failed: Error | null = null;
  private wake: (() => void) | null = null;
  private readonly hash: Hash = createHash("sha256");

  constructor(
    input: Readable,
    /** Who sends: named in errors ("the host", "the deployer"). */
    private readonly peer: string,
  ) {
    input.on("data", (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.length;
      this.wake?.();
    });
    input.on("end", () => {
      this.ended = true;
      this.wake?.();
    });
    input.on("error", (e) => {
      this.failed = e;
      this.wake?.();
    });
  }

  private async need(n: number): Promise<boolean> {
    while (this.buffered < n) {
      if (this.failed) throw this.failed;
      if (this.ended) return false;
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = null;
    }
    return true;
  }

  /** Takes n buffered bytes (need(n) was true). */
  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
      // What a chunk held of a key is not left behind in the buffers we drop.
      c.fill(0, 0, k);
    }
    this.buffered -= n;
    this.hash.update(out);
    return out;
  }

  private cut(what: string): NixsealError {
    return new NixsealError("PUSH", `the stream from ${this.peer} ended before ${what}`, {
      hint: "the connection was cut; nothing was changed: push again",
    });
  }

  async magic(): Promise<void> {
    if (!(await this.need(MAGIC.length))) throw this.cut("it started");
    const m = this.take(MAGIC.length);
    if (!m.equals(MAGIC)) {
      throw new NixsealError("PUSH", `${this.peer} does not speak nixseal's push protocol`, {
        hint: "check that the remote command is nixseal receive of a compatible version, and that the login prints nothing on stdout",
      });
    }
  }

  /** The SHA-256 of every byte read before the last frame (what its end frame must carry). */
  digestBeforeFrame: Buffer = Buffer.alloc(0);

  /** The next frame, or null at a clean end of stream. */
  async frame(maxSize: number): Promise<{ type: number; payload: Buffer } | null> {
    if (!(await this.need(1))) return null;
    this.digestBeforeFrame = this.hash.copy().digest();
    if (!(await this.need(5))) throw this.cut("a frame's header was complete");
    const head = this.take(5);
    const type = head[0]!;
    const len = head.readUInt32BE(1);
    if (len > maxSize) {
      throw new NixsealError("PUSH", `${this.peer} sent a frame of ${len} bytes (at most ${maxSize} here)`, {
        hint: "keys are at most 64 MiB each",
      });
    }
    if (!(await this.need(len))) throw this.cut("a frame was complete");
    return { type, payload: this.take(len) };
  }

  /** The next frame, which must be of `type`. */
  async expect(type: number, maxSize: number, what: string): Promise<Buffer> {
    const f = await this.frame(maxSize);
    if (f === null) throw this.cut(what);
    if (f.type !== type) {
      throw new NixsealError(
        "PUSH",
        `${this.peer} sent frame ${JSON.stringify(String.fromCharCode(f.type))} where ${what} belongs`,
        {
          hint: "the two sides disagree on the protocol: use the same nixseal version on both",
        },
      );
    }
    return f.payload;
  }

  async json(type: number, what: string): Promise<unknown> {
    const payload = await this.expect(type, MAX_JSON_FRAME, what);
    try {
      return JSON.parse(payload.toString("utf8"));
    } catch {
      throw new NixsealError("PUSH", `${this.peer} sent ${what} that is not JSON`, {
        hint: "use the same nixseal version on both sides",
      });
    }
  }
}

/** What a push did on a host, key by key: what the host's answer and the deployer's report both carry. */
export interface KeyOutcome {
  added: string[];
  changed: string[];
  removed: string[];
  kept: string[];
  restarted: string[];
  reloaded: string[];
  started: string[];
  stopped: string[];
  /** Keys with persist "credential" sealed now; keys whose sealed file was removed. */
  sealed: string[];
  unsealed: string[];
  problems: NixsealError[];
}

export function noKeyOutcome(): KeyOutcome {
  return {
    added: [],
    changed: [],
    removed: [],
    kept: [],
    restarted: [],
    reloaded: [],
    started: [],
    stopped: [],
    sealed: [],
    unsealed: [],
    problems: [],
  };
}

/**
 * Many byte patterns, one pass: every occurrence of any pattern in a stream of chunks, with its
 * byte offset, including occurrences that straddle chunk boundaries.
 *
 * Two levels. The filter looks at one 4-byte window every 4 bytes: when every pattern is at
 * least 7 bytes long, any occurrence starting at p covers exactly one window starting at an
 * aligned q in [p, p+3], entirely inside the occurrence. So each pattern is indexed by its four
 * windows at offsets 0..3, and the stream is read as aligned 32-bit words (a Uint32Array over
 * the read buffer: one load per 4 bytes). A word is looked up in a bitset of hashed windows
 * (~1-2% of random words pass); the few that pass are looked up exactly and verified byte by
 * byte. With a pattern shorter than 7 bytes (a --min-length below 7), windows of min(4, shortest)
 * bytes are checked at every byte instead: slower, still one pass.
 *
 * This beats an Aho-Corasick automaton in JavaScript here: 1000 secrets × ~10 encodings of ~40
 * bytes make ~400 000 trie states; a dense transition table of them does not fit in cache, and a
 * sparse one costs a lookup per byte. The filter reads a quarter of the words and keeps 128-512
 * KiB hot (measured in bench/audit.ts).
 *
 * The patterns are necessarily in memory while the matcher lives (that is what it compares
 * with); `dispose()` zeroes them.
 */

/** The window width of the fast path and its stride. */
const WORD = 4;
/** The shortest pattern the fast path supports: WORD + stride - 1. */
const FAST_MIN_LENGTH = 2 * WORD - 1;

export type MatchSink = (patternId: number, offset: number) => void;

/** Native-endian 32-bit value of 4 bytes, as a Uint32Array over the same memory reads them. */
const scratch = new Uint8Array(4);
const scratchWord = new Int32Array(scratch.buffer);
function nativeWord(bytes: Uint8Array, at: number): number {
  scratch[0] = bytes[at]!;
  scratch[1] = bytes[at + 1]!;
  scratch[2] = bytes[at + 2]!;
  scratch[3] = bytes[at + 3]!;
  return scratchWord[0]!;
}

/** The value the slow path computes for w bytes (w <= 4), little-endian, as an int32. */
function rollingWord(bytes: Uint8Array, at: number, w: number): number {
  let v = 0;
  for (let j = w - 1; j >= 0; j--) v = (v << 8) | bytes[at + j]!;
  return v | 0;
}

const GOLDEN = 0x9e3779b1 | 0;

export class Matcher {
  readonly patterns: readonly Uint8Array[];
  readonly minLength: number;
  readonly maxLength: number;
  /** true: aligned 4-byte words every 4 bytes; false: `window`-byte windows at every byte. */
  readonly fast: boolean;
  readonly window: number;
  readonly stride: number;
  private readonly bits: number;
  private readonly bitset: Int32Array;
  /** window value -> flat list of (patternId, offset of the window in the pattern) pairs. */
  private readonly candidates = new Map<number, Int32Array>();

  constructor(patterns: readonly Uint8Array[]) {
    if (patterns.length === 0) throw new RangeError("a matcher needs at least one pattern");
    this.patterns = patterns;
    let min = Number.POSITIVE_INFINITY;
    let max = 0;
    for (const p of patterns) {
      if (p.length === 0) throw new RangeError("empty pattern");
      min = Math.min(min, p.length);
      max = Math.max(max, p.length);
    }
    this.minLength = min;
    this.maxLength = max;
    this.fast = min >= FAST_MIN_LENGTH;
    this.window = this.fast ? WORD : Math.min(WORD, min);
    this.stride = this.fast ? WORD : 1;
    const entries = patterns.length * this.stride;
    // ~64 bits per entry: few false positives, and the bitset stays in L2 for thousands of patterns.
    this.bits = Math.max(16, Math.min(26, Math.ceil(Math.log2(entries * 64))));
    this.bitset = new Int32Array(1 << (this.bits - 5));
    const lists = new Map<number, number[]>();
    patterns.forEach((p, id) => {
      for (let k = 0; k < this.stride; k++) {
        const v = this.fast ? nativeWord(p, k) : rollingWord(p, k, this.window);
        const h = Math.imul(v, GOLDEN) >>> (32 - this.bits);
        this.bitset[h >>> 5]! |= 1 << (h & 31);
        const list = lists.get(v);
        if (list === undefined) lists.set(v, [id, k]);
        else list.push(id, k);
      }
    });
    for (const [v, list] of lists) this.candidates.set(v, Int32Array.from(list));
  }

  /** A scanner for one stream (a file); scanners are independent and reusable after reset(). */
  scanner(onMatch: MatchSink, chunkSize = 1 << 20): Scanner {
    return new Scanner(this, onMatch, chunkSize);
  }

  /** Every match in one buffer (for small inputs: file names, link targets, tests). */
  matchAll(data: Uint8Array): { patternId: number; offset: number }[] {
    const out: { patternId: number; offset: number }[] = [];
    const s = this.scanner((patternId, offset) => out.push({ patternId, offset }), Math.max(64, data.length));
    s.push(data);
    s.finish();
    return out;
  }

  /** Zeroes the patterns (and the index built from them). */
  dispose(): void {
    for (const p of this.patterns) p.fill(0);
    this.bitset.fill(0);
    for (const list of this.candidates.values()) list.fill(0);
    this.candidates.clear();
  }

  /** @internal Scans buf[from..] at window starts up to `last` (inclusive); returns the next start. */
  scanRange(
    buf: Uint8Array,
    words: Uint32Array | Int32Array,
    from: number,
    last: number,
    len: number,
    base: number,
    onMatch: MatchSink,
  ): number {
    const bitset = this.bitset;
    const shift = 32 - this.bits;
    let q = from;
    if (this.fast) {
      for (; q <= last; q += WORD) {
        const v = words[q >>> 2]! | 0;
        const h = Math.imul(v, GOLDEN) >>> shift;
        if ((bitset[h >>> 5]! & (1 << (h & 31))) === 0) continue;
        this.verify(buf, v, q, len, base, onMatch);
      }
      return q;
    }
    const w = this.window;
    const mask = w === 4 ? -1 : (1 << (8 * w)) - 1;
    if (q > last) return q;
    let v = rollingWord(buf, q, w - 1) << 8;
    for (; q <= last; q++) {
      v = ((v >>> 8) | (buf[q + w - 1]! << (8 * (w - 1)))) & mask;
      const h = Math.imul(v, GOLDEN) >>> shift;
      if ((bitset[h >>> 5]! & (1 << (h & 31))) === 0) continue;
      this.verify(buf, v | 0, q, len, base, onMatch);
    }
    return q;
  }

  private verify(buf: Uint8Array, v: number, q: number, len: number, base: number, onMatch: MatchSink): void {
    const list = this.candidates.get(v);
    if (list === undefined) return;
    const patterns = this.patterns;
    for (let i = 0; i < list.length; i += 2) {
      const p = patterns[list[i]!]!;
      const start = q - list[i + 1]!;
      const n = p.length;
      if (start < 0 || start + n > len) continue;
      let j = 0;
      while (j < n && buf[start + j] === p[j]) j++;
      if (j === n) onMatch(list[i]!, base + start);
    }
  }
}

/**
 * The state of one stream: a read buffer that keeps the tail of the previous chunk, so an
 * occurrence that straddles two reads is verified in one piece. Read into `space()`, then
 * `commit(n)`; at the end `finish()`. Memory: chunkSize + the longest pattern + a few bytes.
 */
export class Scanner {
  private readonly matcher: Matcher;
  private readonly onMatch: MatchSink;
  private readonly buf: Uint8Array;
  private readonly words: Uint32Array;
  /** Stream offset of buf[0]. */
  private base = 0;
  /** Valid bytes in buf. */
  private len = 0;
  /** Buffer index of the next window start to check. */
  private next = 0;
  private finished = false;
  /** The highest buffer index written since the last wipe (small files touch little of it). */
  private dirty = 0;

  constructor(matcher: Matcher, onMatch: MatchSink, chunkSize: number) {
    this.matcher = matcher;
    this.onMatch = onMatch;
    // Room for a full chunk after the kept tail (maxLength + stride), in whole words.
    const capacity = (Math.ceil((chunkSize + matcher.maxLength + 2 * WORD) / WORD) + 1) * WORD;
    const ab = new ArrayBuffer(capacity);
    this.buf = new Uint8Array(ab);
    this.words = new Uint32Array(ab);
  }

  /** Starts a new stream with the same buffer. */
  reset(): void {
    this.base = 0;
    this.len = 0;
    this.next = 0;
    this.finished = false;
  }

  /** Bytes of the stream consumed so far. */
  get position(): number {
    return this.base + this.len;
  }

  /** Where the next bytes go (fill a prefix of it, then commit). */
  space(): Uint8Array {
    return this.buf.subarray(this.len);
  }

  commit(n: number): void {
    if (this.finished) throw new Error("scanner finished");
    if (n < 0 || this.len + n > this.buf.length) throw new RangeError("commit beyond the buffer");
    this.len += n;
    if (this.len > this.dirty) this.dirty = this.len;
    // Only windows whose longest possible occurrence lies in the buffer: the rest wait for more data.
    const last = this.len - this.matcher.maxLength;
    if (last >= this.next) {
      this.next = this.matcher.scanRange(
        this.buf,
        this.words,
        this.next,
        last,
        this.len,
        this.base,
        this.onMatch,
      );
    }
    this.compact();
  }

  /** Copies `data` in (in as many commits as needed). */
  push(data: Uint8Array): void {
    let at = 0;
    while (at < data.length) {
      const space = this.space();
      const n = Math.min(space.length, data.length - at);
      space.set(data.subarray(at, at + n));
      this.commit(n);
      at += n;
    }
  }

  /** End of stream: checks the remaining windows. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    const last = this.len - this.matcher.window;
    if (last >= this.next) {
      this.next = this.matcher.scanRange(
        this.buf,
        this.words,
        this.next,
        last,
        this.len,
        this.base,
        this.onMatch,
      );
    }
  }

  /** Zeroes the buffer (it held file contents). */
  wipe(): void {
    this.buf.fill(0, 0, this.dirty);
    this.dirty = 0;
  }

  private compact(): void {
    // Window starts >= next may belong to occurrences starting up to stride-1 bytes earlier.
    const keep = Math.max(0, this.next - (this.matcher.stride - 1));
    const shift = keep - (keep % WORD); // keep the buffer word-aligned with the window starts
    if (shift === 0) return;
    this.buf.copyWithin(0, shift, this.len);
    this.base += shift;
    this.len -= shift;
    this.next -= shift;
  }
}

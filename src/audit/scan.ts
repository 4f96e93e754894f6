/**
 * Walking paths and scanning every file once with a Matcher: a small pool of concurrent reads
 * (each with its own fixed-size buffer, so memory is bounded whatever the file sizes), symlinks
 * never followed inside a tree (their target text is scanned, the target itself only if it is in
 * a scanned tree), sockets, FIFOs and devices skipped and counted, hard links scanned once.
 * File and directory names and symlink targets are scanned too: a secret can end up in a store
 * path's name (`writeText "${secret}" ...`).
 *
 * Reads happen on libuv's thread pool while the main thread matches (0.5-1 GB/s per core, several
 * times ripgrep's throughput with the same patterns: bench/audit.ts). Once a scan has read
 * THREADS_AFTER_BYTES, the files still to come go to scanning threads (src/audit/scan-pool.ts),
 * one per core, and the main thread only walks: the walk lstat()s each such file first, so hard
 * links are still scanned once, and the worker checks that it opened that same file.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError } from "../common/index.js";
import type { Matcher, Scanner } from "./matcher.js";
import { ScanPool } from "./scan-pool.js";

export type HitPlace = "content" | "name" | "link-target";

export interface Hit {
  patternId: number;
  /** The file (or directory, or symlink) the match is in. */
  file: string;
  /** Byte offset in the file's contents, its name, or its link target. */
  offset: number;
  place: HitPlace;
}

export interface ScanStats {
  files: number;
  bytes: number;
  directories: number;
  symlinks: number;
  /** Sockets, FIFOs, block and character devices: skipped. */
  special: number;
  /** Files that were hard links to a file already scanned (their matches are reported again). */
  hardLinks: number;
  /** Matches beyond the per-file limit, counted but not listed. */
  unlistedHits: number;
}

export interface ScanOptions {
  /** Files read at the same time (default 4). */
  concurrency?: number;
  /** Scanning threads for a large scan (default: the cores available to this process; 1: none). */
  threads?: number;
  /** Bytes scanned on the main thread before the threads start (default THREADS_AFTER_BYTES). */
  threadsAfterBytes?: number;
  /** Read size per file (default 1 MiB): memory is about concurrency × chunkSize. */
  chunkSize?: number;
  /** Matches listed per file; more are only counted (default 100). */
  maxHitsPerFile?: number;
  /** Called now and then while scanning (the CLI draws a progress bar with it). */
  onProgress?: (stats: Readonly<ScanStats>, current: string) => void;
}

export interface ScanResult {
  hits: Hit[];
  problems: NixsealError[];
  stats: ScanStats;
}

const DEFAULT_CONCURRENCY = 4;
/** A scan smaller than this never pays for starting threads (~30-40 ms and a Matcher each). */
export const THREADS_AFTER_BYTES = 64 << 20;
const DEFAULT_CHUNK = 1 << 20;
const DEFAULT_MAX_HITS = 100;

/**
 * A file's content matches: the first maxHitsPerFile, and how many more there were (only
 * counted, so a file full of one secret costs no memory per match).
 */
type Found = { list: { patternId: number; offset: number }[]; extra: number };

interface Shared {
  promise: Promise<Found | null>;
  resolve(found: Found | null): void;
}

function sharedResult(): Shared {
  let resolve!: (found: Found | null) => void;
  const promise = new Promise<Found | null>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

interface Slot {
  scanner: Scanner;
  hits: { patternId: number; offset: number }[];
  extra: number;
}

/** Scans `paths` (files or directories). Problems are collected, never thrown. */
export async function scanPaths(
  paths: readonly string[],
  matcher: Matcher,
  options: ScanOptions = {},
): Promise<ScanResult> {
  const concurrency = Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY);
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  const maxHits = options.maxHitsPerFile ?? DEFAULT_MAX_HITS;
  const stats: ScanStats = {
    files: 0,
    bytes: 0,
    directories: 0,
    symlinks: 0,
    special: 0,
    hardLinks: 0,
    unlistedHits: 0,
  };
  const hits: Hit[] = [];
  const problems: NixsealError[] = [];
  const perFile = new Map<string, number>();
  const addHit = (h: Hit) => {
    const n = perFile.get(h.file) ?? 0;
    if (n >= maxHits) {
      stats.unlistedHits++;
      return;
    }
    perFile.set(h.file, n + 1);
    hits.push(h);
  };

  // Names and link targets are short: one scanner for all of them.
  const small: { patternId: number; offset: number }[] = [];
  const smallScanner = matcher.scanner((patternId, offset) => small.push({ patternId, offset }), 4096);
  const reportFound = (file: string, found: Found) => {
    for (const m of found.list) addHit({ ...m, file, place: "content" });
    stats.unlistedHits += found.extra;
  };
  const scanText = (file: string, bytes: Uint8Array, place: HitPlace) => {
    if (bytes.length < matcher.minLength) return;
    small.length = 0;
    smallScanner.reset();
    smallScanner.push(bytes);
    smallScanner.finish();
    for (const m of small) addHit({ patternId: m.patternId, file, offset: m.offset, place });
  };

  const free: Slot[] = [];
  for (let i = 0; i < concurrency; i++) {
    const slot: Slot = { scanner: undefined as unknown as Scanner, hits: [], extra: 0 };
    slot.scanner = matcher.scanner((patternId, offset) => {
      if (slot.hits.length < maxHits) slot.hits.push({ patternId, offset });
      else slot.extra++;
    }, chunkSize);
    free.push(slot);
  }
  /** dev:ino of multiply-linked files -> their matches (a promise while the first scan runs). */
  const linked = new Map<string, Promise<Found | null>>();
  let lastProgress = 0;
  const progress = (current: string) => {
    if (!options.onProgress) return;
    const now = Date.now();
    if (now - lastProgress < 100) return;
    lastProgress = now;
    options.onProgress(stats, current);
  };

  /**
   * Hard links are read once: the first name of a multiply-linked file claims its inode and gets
   * the Shared to resolve with its matches (null for a file with one name); a later name waits for
   * those matches, reports them under its own name, and gets "reported".
   */
  const claimInode = async (
    file: string,
    st: { nlink: number; dev: number; ino: number },
  ): Promise<Shared | null | "reported"> => {
    if (st.nlink <= 1) return null;
    const key = `${st.dev}:${st.ino}`;
    const earlier = linked.get(key);
    if (earlier !== undefined) {
      stats.hardLinks++;
      const found = await earlier;
      if (found !== null) reportFound(file, found);
      return "reported";
    }
    const shared = sharedResult();
    linked.set(key, shared.promise);
    return shared;
  };

  const scanFile = async (file: string): Promise<void> => {
    let fh: fs.promises.FileHandle;
    try {
      // O_NONBLOCK: a FIFO swapped in after the walk saw a file must not hang the scan.
      fh = await fs.promises.open(
        file,
        fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
      );
    } catch (e) {
      problems.push(ioError("read", file, e));
      return;
    }
    const slot = free.pop()!;
    // Set when this is the first of several hard links: the others wait for its matches.
    let shared: Shared | null = null;
    try {
      const st = await fh.stat();
      if (!st.isFile()) {
        stats.special++;
        return;
      }
      const claim = await claimInode(file, st);
      if (claim === "reported") return;
      shared = claim;
      slot.hits = [];
      slot.extra = 0;
      slot.scanner.reset();
      let read = 0;
      for (;;) {
        const space = slot.scanner.space();
        const { bytesRead } = await fh.read(space, 0, space.length, null);
        if (bytesRead === 0) break;
        slot.scanner.commit(bytesRead);
        read += bytesRead;
        stats.bytes += bytesRead;
        progress(file);
        // A short read that reaches the size fstat gave is the end: no extra read for EOF
        // (most store files are small). A file still growing is read to its real end.
        if (bytesRead < space.length && read >= st.size) break;
      }
      slot.scanner.finish();
      stats.files++;
      const found: Found = { list: slot.hits, extra: slot.extra };
      reportFound(file, found);
      shared?.resolve(found);
    } catch (e) {
      problems.push(e instanceof NixsealError ? e : ioError("read", file, e));
    } finally {
      shared?.resolve(null); // no-op after a success
      slot.scanner.wipe();
      free.push(slot);
      await fh.close().catch(() => {});
    }
  };

  const threads = options.threads ?? (await import("node:os")).availableParallelism();
  const threadsAfter = options.threadsAfterBytes ?? THREADS_AFTER_BYTES;
  let pool: ScanPool | null = null;

  /** A file for the threads: lstat here (hard links once), the worker reads and matches it. */
  const scanPooled = async (file: string, threaded: ScanPool): Promise<void> => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(file);
    } catch (e) {
      problems.push(ioError("read", file, e));
      return;
    }
    if (!st.isFile()) {
      await visit(file, st);
      return;
    }
    const claim = await claimInode(file, st);
    if (claim === "reported") return;
    let shared = claim;
    try {
      const reply = await threaded.scan(file, st.dev, st.ino);
      if ("hits" in reply) {
        const found: Found = { list: [], extra: reply.extra };
        for (let i = 0; i < reply.hits.length; i += 2) {
          found.list.push({ patternId: reply.hits[i]!, offset: reply.hits[i + 1]! });
        }
        stats.files++;
        stats.bytes += reply.bytes;
        progress(file);
        reportFound(file, found);
        shared?.resolve(found);
      } else if ("special" in reply) {
        stats.special++;
      } else if (reply.error === "thread") {
        // A scanning thread failed: this file is scanned here, as before the threads started.
        if (shared !== null) linked.delete(`${st.dev}:${st.ino}`);
        shared?.resolve(null);
        shared = null;
        await scanFile(file);
      } else if (reply.error === "replaced") {
        problems.push(
          new NixsealError("IO", `cannot read ${file}: it was replaced by another file during the scan`, {
            file,
            hint: "scan again once nothing writes to this tree",
          }),
        );
      } else {
        problems.push(ioError("read", file, Object.assign(new Error(reply.error), { code: reply.error })));
      }
    } finally {
      shared?.resolve(null); // no-op after a success
    }
  };

  const running = new Set<Promise<void>>();
  const startFile = async (file: string) => {
    if (pool === null && threads > 1 && stats.bytes >= threadsAfter) {
      pool = new ScanPool(matcher, threads, chunkSize, maxHits);
    }
    const threaded = pool !== null && !pool.failed ? pool : null;
    const limit = threaded ? Math.max(concurrency, threads * 2) : concurrency;
    while (running.size >= limit) await Promise.race(running);
    const p: Promise<void> = (threaded ? scanPooled(file, threaded) : scanFile(file)).finally(() =>
      running.delete(p),
    );
    running.add(p);
  };

  const seenDirs = new Set<string>();
  const seenTop = new Set<string>();
  /** Directories still to read, as a stack (no recursion: any depth). */
  const dirs: string[] = [];

  const visit = async (file: string, st: fs.Stats | fs.Dirent) => {
    if (st.isSymbolicLink()) {
      stats.symlinks++;
      try {
        scanText(file, await fs.promises.readlink(file, { encoding: "buffer" }), "link-target");
      } catch (e) {
        problems.push(ioError("read the link", file, e));
      }
    } else if (st.isDirectory()) {
      dirs.push(file);
    } else if (st.isFile()) {
      await startFile(file);
    } else if (st.isFIFO() || st.isSocket() || st.isBlockDevice() || st.isCharacterDevice()) {
      stats.special++;
    } else {
      // A file system that gives no type in directory entries: ask.
      try {
        await visit(file, await fs.promises.lstat(file));
      } catch (e) {
        problems.push(ioError("read", file, e));
      }
    }
  };

  try {
    await walk();
    await Promise.all(running);
  } finally {
    await Promise.all(running).catch(() => {});
    await (pool as ScanPool | null)?.stop();
  }
  smallScanner.wipe();
  options.onProgress?.(stats, "");
  hits.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.offset - b.offset));
  return { hits, problems, stats };

  async function walk(): Promise<void> {
    for (const given of paths) {
      const top = path.resolve(given);
      if (seenTop.has(top)) continue;
      seenTop.add(top);
      let st: fs.Stats;
      try {
        // A path given by the user is followed if it is a symlink (./result, /run/current-system).
        st = await fs.promises.stat(top);
      } catch (e) {
        problems.push(ioError("scan", top, e));
        continue;
      }
      scanText(top, Buffer.from(path.basename(top)), "name");
      await visit(top, st);
      while (dirs.length > 0) {
        const dir = dirs.pop()!;
        let dh: fs.Dir;
        try {
          const dst = await fs.promises.stat(dir);
          const key = `${dst.dev}:${dst.ino}`;
          if (seenDirs.has(key)) continue;
          seenDirs.add(key);
          dh = await fs.promises.opendir(dir, { bufferSize: 256 });
        } catch (e) {
          problems.push(ioError("read the directory", dir, e));
          continue;
        }
        stats.directories++;
        progress(dir);
        try {
          for await (const entry of dh) {
            const file = path.join(dir, entry.name);
            scanText(file, Buffer.from(entry.name), "name");
            await visit(file, entry);
          }
        } catch (e) {
          problems.push(ioError("read the directory", dir, e));
        }
      }
    }
  }
}

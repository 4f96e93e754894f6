/**
 * Atomic file replacement (docs/architecture.md, invariant 3): write to a temp file in the target's directory,
 * created with its final mode, fsync, rename over the target, fsync the directory. Until
 * commit() the target is untouched; abort() removes the temp file.
 */
import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError } from "./errors.js";
import { writeAllSync } from "./fd-io.js";
import { nodeFs as fs } from "./node-fs.js";

/** O_EXCL|O_NOFOLLOW: never write through a planted symlink or into someone else's file. */
const TEMP_FLAGS =
  fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/**
 * Random bytes for temp file names, drawn 256 names at a time: one call into OpenSSL's generator
 * costs ~15 µs here, as much as creating the file (rekey makes a temp file per secret). Names
 * are not secrets; O_EXCL and O_NOFOLLOW are what keep a planted file or link out.
 */
let namePool = Buffer.alloc(0);
let namePoolAt = 0;
const NAME_BYTES = 6;

function randomName(): string {
  if (namePoolAt + NAME_BYTES > namePool.length) {
    namePool = randomBytes(NAME_BYTES * 256);
    namePoolAt = 0;
  }
  namePoolAt += NAME_BYTES;
  return namePool.toString("hex", namePoolAt - NAME_BYTES, namePoolAt);
}

/** A new temp file name in the directory of `target`. */
function tempBeside(target: string): { dir: string; tempPath: string } {
  const dir = path.dirname(path.resolve(target));
  return { dir, tempPath: path.join(dir, `.${path.basename(target)}.${randomName()}.tmp`) };
}

/** Temp files not yet committed: removed by abortAllAtomicFiles() on a signal. */
const live = new Set<AtomicFile>();

export class AtomicFile {
  readonly target: string;
  readonly tempPath: string;
  private fd: number;
  private done = false;
  /** Everything written so far is on disk (syncAsync); commitAsync need not fsync again. */
  private synced = false;

  private constructor(target: string, tempPath: string, fd: number) {
    this.target = target;
    this.tempPath = tempPath;
    this.fd = fd;
    live.add(this);
  }

  /** Opens a temp file beside `target`, created with `mode` (never chmod-ed afterwards). */
  static open(target: string, mode: number): AtomicFile {
    const { dir, tempPath } = tempBeside(target);
    let fd: number;
    try {
      fd = fs.openSync(tempPath, TEMP_FLAGS, mode);
    } catch (e) {
      throw ioError("create a file in", dir, e);
    }
    return new AtomicFile(target, tempPath, fd);
  }

  get descriptor(): number {
    return this.fd;
  }

  write(data: Uint8Array | readonly Uint8Array[]): void {
    this.synced = false;
    try {
      writeAllSync(this.fd, data);
    } catch (e) {
      this.abort();
      throw ioError("write", this.target, e);
    }
  }

  /**
   * fsync on libuv's thread pool, without renaming: the content is durable, and a later commit
   * (with nothing written in between) renames without a second fsync. With `close`, the file
   * descriptor is released too (nothing more can be written): many files can wait for their
   * rename without holding one each. rekey writes all its files, syncs them, then renames them.
   */
  async syncAsync(options: { close?: boolean } = {}): Promise<void> {
    try {
      const fd = this.fd;
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
      if (options.close === true) {
        fs.closeSync(fd);
        this.fd = -1;
      }
    } catch (e) {
      this.abort();
      throw ioError("write", this.target, e);
    }
    this.synced = true;
  }

  /**
   * commit() for a file syncAsync() made durable: closes it if still open and renames it over
   * the target, on this thread (a rename is one short system call; handing it to the thread pool
   * costs more). The directory is not fsync-ed: call syncDirectory() once per directory.
   * `beforeRename` may veto the rename by throwing.
   */
  commitSynced(beforeRename?: () => void): void {
    if (this.done) return;
    try {
      if (!this.synced) fs.fsyncSync(this.fd);
      beforeRename?.();
      if (this.fd >= 0) {
        fs.closeSync(this.fd);
        this.fd = -1;
      }
      fs.renameSync(this.tempPath, this.target);
    } catch (e) {
      this.abort();
      if (e instanceof NixsealError) throw e;
      throw ioError("write", this.target, e);
    }
    this.done = true;
    live.delete(this);
  }

  /**
   * Makes the new content visible under the target name, durably. With `syncDirectory: false`
   * the directory is not fsync-ed: the caller calls syncDirectory() once per directory after a
   * batch of commits (one directory fsync instead of one per file).
   */
  commit(options: { syncDirectory?: boolean } = {}): void {
    if (this.done) return;
    try {
      fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = -1;
      fs.renameSync(this.tempPath, this.target);
    } catch (e) {
      this.abort();
      throw ioError("write", this.target, e);
    }
    this.done = true;
    live.delete(this);
    if (options.syncDirectory === false) return;
    try {
      const dfd = fs.openSync(path.dirname(path.resolve(this.target)), "r");
      fs.fsyncSync(dfd);
      fs.closeSync(dfd);
    } catch {
      // Directory fsync is best effort (some filesystems refuse it); the rename already happened.
    }
  }

  /** Like commit(), but fails with EEXIST instead of replacing an existing target. */
  commitNoClobber(): void {
    if (this.done) return;
    try {
      fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = -1;
      fs.linkSync(this.tempPath, this.target);
    } catch (e) {
      this.abort();
      const exists = (e as NodeJS.ErrnoException).code === "EEXIST";
      const err = ioError("create", this.target, e);
      if (exists) {
        throw new NixsealError("IO", `refusing to overwrite existing file ${this.target}`, {
          file: this.target,
          hint: "choose another name, or move the existing file away first",
        });
      }
      throw err;
    }
    this.done = true;
    live.delete(this);
    try {
      fs.unlinkSync(this.tempPath);
    } catch {}
  }

  /** Discards the temp file; the target stays as it was. Safe to call more than once. */
  abort(): void {
    if (this.done) return;
    this.done = true;
    live.delete(this);
    if (this.fd >= 0) {
      try {
        fs.closeSync(this.fd);
      } catch {}
      this.fd = -1;
    }
    try {
      fs.unlinkSync(this.tempPath);
    } catch {}
  }
}

/** fsync of a directory, so that renames in it are durable (best effort, as in commit()). */
export function syncDirectory(dir: string): void {
  try {
    const dfd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {}
}

/** Writes a whole small file atomically. */
export function writeFileAtomic(
  target: string,
  data: Uint8Array | readonly Uint8Array[],
  mode: number,
): void {
  const f = AtomicFile.open(target, mode);
  f.write(data);
  f.commit();
}

/**
 * An output file the user named (`-o FILE`): a character device or a pipe (`-o /dev/null`,
 * `-o /dev/stdout`, a FIFO) is written directly, since renaming over it would replace the device
 * node with a regular file; anything else is replaced atomically with its final mode.
 */
export function writeOutputFile(target: string, data: Uint8Array, mode: number): void {
  let st: Stats | null = null;
  try {
    st = fs.statSync(target);
  } catch {}
  if (st !== null && (st.isCharacterDevice() || st.isFIFO())) {
    const fd = fs.openSync(target, fs.constants.O_WRONLY);
    try {
      writeAllSync(fd, data);
    } finally {
      fs.closeSync(fd);
    }
    return;
  }
  writeFileAtomic(target, data, mode);
}

/** Removes every temp file not yet committed (called from signal handlers). */
export function abortAllAtomicFiles(): void {
  for (const f of [...live]) f.abort();
}

/**
 * Like writeFileAtomic, but never replaces an existing file (O_EXCL semantics via link()):
 * for new keys, where overwriting would destroy the only copy of an identity.
 */
export function writeNewFileAtomic(target: string, data: Uint8Array, mode: number): void {
  const f = AtomicFile.open(target, mode);
  f.write(data);
  f.commitNoClobber();
}

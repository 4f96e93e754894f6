/**
 * Where a decrypted value goes: a file in the new generation, created with its final owner, group
 * and mode (O_EXCL|O_NOFOLLOW, never chmod-ed after; the owner set before a byte is written);
 * and where a value of the active generation is read back from, when the new one can take it
 * from there (re-activation, src/install/steps/decrypt-sources.ts). Used on the main thread and
 * in the decrypt worker (parallel-sources.ts) alike: both create files in the same directory.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError, readAllSync, wipe, writeAllSync } from "../common/index.js";
import type { ManifestEntry } from "./manifest.js";
import { GENERATIONS_DIR_MODE } from "./mount.js";
import { MAX_SECRET_FILE_SIZE } from "./sources.js";

/** Who owns a file, and its mode. */
export interface FileOwner {
  uid: number;
  gid: number;
  mode: number;
}

/** A secret or template ready to be written: the manifest entry with its owner resolved. */
export interface InstallEntry extends FileOwner {
  entry: ManifestEntry;
  /** Its position among the manifest's secrets, then templates (the order of the metadata). */
  slot: number;
}

/** Where new files of one generation go. */
export interface GenerationTarget {
  dir: string;
  /**
   * Who a new file belongs to before any chown (this process's euid, and the directory's group
   * if it is setgid, else the egid): a file that should belong to them needs no fchown.
   */
  created: { uid: number; gid: number };
}

/** The owner a file created in `dir` gets by itself (see GenerationTarget.created). */
export function ownerOfNewFiles(dir: string): { uid: number; gid: number } {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    throw ioError("look at", dir, e);
  }
  return { uid: process.geteuid!(), gid: (st.mode & 0o2000) !== 0 ? st.gid : process.getegid!() };
}

/** The keyed hash of a content (compared between generations; reveals nothing without the key). */
export function contentHash(key: Uint8Array, content: Uint8Array): string {
  return createHmac("sha256", key).update(content).digest("hex");
}

/** True if `content` has the keyed hash `hex` (compared in constant time). */
export function hasContentHash(key: Uint8Array, content: Uint8Array, hex: string): boolean {
  const mac = createHmac("sha256", key).update(content).digest();
  const want = Buffer.from(hex, "hex");
  return want.length === mac.length && timingSafeEqual(mac, want);
}

/**
 * Creates `<target.dir>/<name>` holding `content`: open(2) with O_EXCL|O_NOFOLLOW and the final
 * mode (umask is 0 while installing), fchown before the write (skipped when the file is born
 * with the right owner), write, close. Subdirectories of names like db/password are made 0751,
 * root's; `made` remembers them. `replace`: a file already there (written by a worker that then
 * failed) is removed first.
 */
export function createSecretFile(
  target: GenerationTarget,
  name: string,
  owner: FileOwner,
  content: Uint8Array,
  made: Set<string>,
  replace = false,
): void {
  if (name.includes("/")) ensureParents(target.dir, name, made);
  // Joined as text: dir is absolute and normalised, name a validated relative name (no . or ..
  // segment, no //), so path.join would change nothing, and it costs per file.
  const file = `${target.dir}/${name}`;
  if (replace) {
    try {
      fs.unlinkSync(file);
    } catch {}
  }
  let fd: number;
  try {
    fd = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      owner.mode,
    );
  } catch (e) {
    throw ioError("create", file, e);
  }
  try {
    if (owner.uid !== target.created.uid || owner.gid !== target.created.gid)
      fs.fchownSync(fd, owner.uid, owner.gid);
    writeAllSync(fd, content);
  } catch (e) {
    throw e instanceof NixsealError ? e : ioError("write", file, e);
  } finally {
    fs.closeSync(fd);
  }
}

function ensureParents(dir: string, name: string, made: Set<string>): void {
  const parts = name.split("/");
  let rel = "";
  for (let i = 0; i < parts.length - 1; i++) {
    rel = rel === "" ? parts[i]! : `${rel}/${parts[i]}`;
    if (made.has(rel)) continue;
    const sub = path.join(dir, rel);
    try {
      fs.mkdirSync(sub, { mode: GENERATIONS_DIR_MODE });
    } catch (e) {
      // The other thread may have made it: the generation is this install's own, nobody else writes there.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the directory", sub, e);
    }
    made.add(rel);
  }
}

/**
 * The content of `<dir>/<name>` in the active generation if it is still the file recorded there:
 * a regular file (not followed if a symlink), with the recorded owner, group and mode. null
 * otherwise (missing, replaced, changed hands): then the value is decrypted again. Whether the
 * content is intact is the caller's check (its keyed hash).
 */
export function readRecordedFile(dir: string, name: string, recorded: FileOwner): Buffer | null {
  let fd: number;
  try {
    // Joined as text, as in createSecretFile.
    fd = fs.openSync(
      `${dir}/${name}`,
      fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
    );
  } catch {
    return null;
  }
  try {
    const st = fs.fstatSync(fd);
    if (
      !st.isFile() ||
      st.uid !== recorded.uid ||
      st.gid !== recorded.gid ||
      (st.mode & 0o7777) !== recorded.mode ||
      st.size > MAX_SECRET_FILE_SIZE
    ) {
      return null;
    }
    const buf = readAllSync(fd, st.size);
    if (buf.length !== st.size) {
      buf.fill(0);
      return null;
    }
    return buf;
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Re-activation: hard-links the active generation's file of a secret whose value is unchanged
 * into the new generation (one link(2) instead of a new file: the same inode, so the owner, group
 * and mode recorded with it) and returns its content as read back through the new link (`linked`), after
 * checking it is what was recorded: a regular file (link(2) does not follow a symlink, and the
 * read does not either), the recorded owner, group and mode, and the keyed hash. What is checked
 * is thus exactly what the new generation holds. null, with nothing left in the new generation,
 * when it is not (missing, replaced, altered): the value is then decrypted again. An entry left
 * by the other thread (it failed; see parallel-sources.ts) is replaced. Should link(2) fail, the
 * file is checked in place and, if intact, returned with `linked` false: the caller writes it.
 */
export function linkRecordedFile(
  activeDir: string,
  target: GenerationTarget,
  name: string,
  recorded: FileOwner & { hmac: string },
  key: Uint8Array,
  made: Set<string>,
): { value: Buffer | null; linked: boolean } {
  const from = `${activeDir}/${name}`;
  const to = `${target.dir}/${name}`;
  try {
    if (name.includes("/")) ensureParents(target.dir, name, made);
    try {
      fs.linkSync(from, to);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      fs.unlinkSync(to);
      fs.linkSync(from, to);
    }
  } catch {
    // Not linked (the file is gone, or the filesystem refuses: too many links): checked in
    // place, and if intact the caller writes a copy.
    const value = readRecordedFile(activeDir, name, recorded);
    if (value !== null && hasContentHash(key, value, recorded.hmac)) return { value, linked: false };
    wipe(value);
    return { value: null, linked: false };
  }
  const value = readRecordedFile(target.dir, name, recorded);
  if (value !== null && hasContentHash(key, value, recorded.hmac)) return { value, linked: true };
  wipe(value);
  try {
    fs.unlinkSync(to);
  } catch {}
  return { value: null, linked: false };
}

/** The new generation's files, written from the main thread (the worker writes its own). */
export class GenerationWriter {
  private readonly made = new Set<string>();

  constructor(
    readonly target: GenerationTarget,
    /** Removes the whole generation: the install failed. */
    private readonly onAbort: () => void,
  ) {}

  write(item: InstallEntry, content: Uint8Array, replace = false): void {
    createSecretFile(this.target, item.entry.name, item, content, this.made, replace);
  }

  /** See linkRecordedFile. */
  link(
    activeDir: string,
    name: string,
    recorded: FileOwner & { hmac: string },
    key: Uint8Array,
  ): { value: Buffer | null; linked: boolean } {
    return linkRecordedFile(activeDir, this.target, name, recorded, key, this.made);
  }

  abort(): void {
    this.onAbort();
  }
}

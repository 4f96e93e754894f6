/**
 * Generations: <generationsDir>/<N>, N = 1, 2, 3..., each 0751 holding the files of one install;
 * secretsDir is a symlink to the active one, replaced atomically. Beside them, in a root-only
 * directory (<generationsDir>/.nixseal, 0700), one metadata file per generation (names, owners,
 * modes, units, a keyed hash of each content — never the content) and the per-host hash key.
 * The metadata lets the next install tell what changed, and which units a removed secret had,
 * without reading the old plaintext; and, with the SHA-256 of each encrypted file and of the
 * identity set, which values it may take from the active generation instead of decrypting them.
 */
import { hash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError, writeAllSync } from "../common/index.js";
import { GENERATIONS_DIR_MODE } from "./mount.js";

/** Not a decimal name, so never taken for a generation. */
export const META_DIR_NAME = ".nixseal";
const HMAC_KEY_FILE = "hmac-key";
const HMAC_KEY_SIZE = 32;
/** Metadata of 100 000 secrets is ~20 MiB; anything larger is not ours. */
const MAX_META_SIZE = 64 * 1024 * 1024;
const GENERATION_NAME = /^[1-9][0-9]{0,8}$/;

export interface MetaEntry {
  name: string;
  kind: "secret" | "template";
  uid: number;
  gid: number;
  mode: number;
  /** HMAC-SHA256 of the content under the host's hash key, hex. */
  hmac: string;
  path: string | null;
  restartUnits: string[];
  reloadUnits: string[];
  /** The credential ID of an entry sealed into the credstore (not a file here); null/absent: a file. */
  credential?: string | null;
  /** A secret's source: the encrypted file, its format and key (absent in older metadata). */
  file?: string | null;
  format?: string | null;
  key?: string | null;
  /** SHA-256 (hex) of the encrypted file's bytes (ciphertext, not secret). */
  cipher?: string | null;
  /**
   * The encrypted file was read as a regular file at `file` inside the manifest's storeDir, no
   * symlink followed (sources.ts, readSourceFile); null/absent: not known (read it again).
   */
  storeFile?: boolean | null;
}

export interface GenerationMeta {
  version: 1;
  generation: number;
  /** identitySetHash of the manifest's identities (absent in older metadata). */
  identities?: string | null;
  entries: MetaEntry[];
}

/** A hash of the identities a manifest lists (type, path, name: what it asks for, not key material). */
export function identitySetHash(
  identities: readonly { type: string; path: string; name: string | null }[],
): string {
  return hash("sha256", JSON.stringify(identities.map((i) => [i.type, i.path, i.name])), "hex");
}

function isOptionalString(v: unknown): boolean {
  return v === undefined || v === null || typeof v === "string";
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

function isId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

/** Strict reading of our own file; anything unexpected means "no usable metadata". */
function parseMeta(text: string, generation: number): GenerationMeta | null {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof json !== "object" || json === null) return null;
  const j = json as Record<string, unknown>;
  if (j.version !== 1 || j.generation !== generation || !Array.isArray(j.entries)) return null;
  if (!isOptionalString(j.identities)) return null;
  const entries: MetaEntry[] = [];
  for (const raw of j.entries as unknown[]) {
    if (typeof raw !== "object" || raw === null) return null;
    const e = raw as Record<string, unknown>;
    if (
      typeof e.name !== "string" ||
      (e.kind !== "secret" && e.kind !== "template") ||
      !isId(e.uid) ||
      !isId(e.gid) ||
      !isId(e.mode) ||
      typeof e.hmac !== "string" ||
      !(e.path === null || typeof e.path === "string") ||
      !isStringList(e.restartUnits) ||
      !isStringList(e.reloadUnits) ||
      !isOptionalString(e.credential) ||
      !isOptionalString(e.file) ||
      !isOptionalString(e.format) ||
      !isOptionalString(e.key) ||
      !isOptionalString(e.cipher) ||
      !(e.storeFile === undefined || e.storeFile === null || typeof e.storeFile === "boolean")
    ) {
      return null;
    }
    entries.push({
      name: e.name,
      kind: e.kind,
      uid: e.uid,
      gid: e.gid,
      mode: e.mode,
      hmac: e.hmac,
      path: e.path,
      restartUnits: e.restartUnits,
      reloadUnits: e.reloadUnits,
      credential: (e.credential as string | null | undefined) ?? null,
      file: (e.file as string | null | undefined) ?? null,
      format: (e.format as string | null | undefined) ?? null,
      key: (e.key as string | null | undefined) ?? null,
      cipher: (e.cipher as string | null | undefined) ?? null,
      storeFile: (e.storeFile as boolean | null | undefined) ?? null,
    });
  }
  return { version: 1, generation, identities: (j.identities as string | null | undefined) ?? null, entries };
}

/** Creates a file that must not exist yet, with its final mode, and writes it whole. */
/** Entries per piece of the metadata file (~40 KB of JSON each). */
const META_CHUNK = 100;

/**
 * The metadata as JSON text, in pieces made one at a time (`entries` last; the same JSON value
 * as JSON.stringify(meta)).
 */
function* metaPieces(meta: GenerationMeta): Generator<Uint8Array> {
  const { entries, ...rest } = meta;
  const head = JSON.stringify(rest);
  yield Buffer.from(`${head.slice(0, -1)}${head.length > 2 ? "," : ""}"entries":[`);
  for (let i = 0; i < entries.length; i += META_CHUNK) {
    const piece = JSON.stringify(entries.slice(i, i + META_CHUNK));
    yield Buffer.from(`${i === 0 ? "" : ","}${piece.slice(1, -1)}`);
  }
  yield Buffer.from("]}");
}

/** Creates `file` (O_EXCL, final mode) holding `data`, or each piece of it in turn. */
function createFile(file: string, data: Uint8Array | Iterable<Uint8Array>, mode: number): void {
  const fd = fs.openSync(
    file,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
    mode,
  );
  try {
    if (data instanceof Uint8Array) writeAllSync(fd, data);
    else for (const piece of data) writeAllSync(fd, piece);
  } finally {
    fs.closeSync(fd);
  }
}

/** Replaces `link` by a symlink to `target` atomically (a new link under a temp name, renamed). */
export function replaceSymlink(link: string, target: string): void {
  const temp = path.join(
    path.dirname(link),
    `.${path.basename(link)}.nixseal-${randomBytes(6).toString("hex")}`,
  );
  try {
    fs.symlinkSync(target, temp);
  } catch (e) {
    throw ioError("create a symlink in", path.dirname(link), e);
  }
  try {
    fs.renameSync(temp, link);
  } catch (e) {
    try {
      fs.unlinkSync(temp);
    } catch {}
    throw ioError("replace", link, e);
  }
}

export class Generations {
  readonly dir: string;
  readonly metaDir: string;

  constructor(generationsDir: string) {
    this.dir = generationsDir;
    this.metaDir = path.join(generationsDir, META_DIR_NAME);
  }

  pathOf(n: number): string {
    return path.join(this.dir, String(n));
  }

  private metaFile(n: number): string {
    return path.join(this.metaDir, `${n}.json`);
  }

  /** The generations present (complete or not), ascending. */
  list(): number[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    return names
      .filter((n) => GENERATION_NAME.test(n))
      .map(Number)
      .sort((a, b) => a - b);
  }

  /** The generation `secretsDir` points to, if it is a symlink to one of ours. */
  active(secretsDir: string): number | null {
    let target: string;
    try {
      target = fs.readlinkSync(secretsDir);
    } catch {
      return null;
    }
    const resolved = path.resolve(path.dirname(secretsDir), target);
    if (path.dirname(resolved) !== this.dir) return null;
    const name = path.basename(resolved);
    return GENERATION_NAME.test(name) ? Number(name) : null;
  }

  /** Creates the next generation's directory (0751); returns its number. */
  create(): number {
    const list = this.list();
    let n = (list.length > 0 ? list[list.length - 1]! : 0) + 1;
    for (;;) {
      try {
        fs.mkdirSync(this.pathOf(n), { mode: GENERATIONS_DIR_MODE });
        return n;
      } catch (e) {
        // Another install made it at the same moment: take the next number.
        if ((e as NodeJS.ErrnoException).code !== "EEXIST")
          throw ioError("create the generation", this.pathOf(n), e);
        n++;
      }
    }
  }

  /** Removes a generation's files and metadata (a failed install's, or a pruned one). */
  remove(n: number): void {
    fs.rmSync(this.pathOf(n), { recursive: true, force: true });
    fs.rmSync(this.metaFile(n), { force: true });
  }

  private ensureMetaDir(): void {
    try {
      fs.mkdirSync(this.metaDir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create", this.metaDir, e);
    }
    const st = fs.lstatSync(this.metaDir);
    if (!st.isDirectory() || (st.mode & 0o077) !== 0 || st.uid !== process.geteuid!()) {
      throw new NixsealError("INSTALL", `${this.metaDir} is not a private directory of this user`, {
        file: this.metaDir,
        hint: "remove it; nixseal install recreates it (mode 0700)",
      });
    }
  }

  /**
   * The per-host key of the content hashes; created (0600) when `create` and missing. Without
   * `create` (dry runs), a missing key gives a throwaway one: nothing then compares equal.
   * `fresh`: the key was not there before, so no recorded hash can be checked with it.
   */
  hmacKey(create: boolean): { key: Buffer; fresh: boolean } {
    const file = path.join(this.metaDir, HMAC_KEY_FILE);
    try {
      const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        const key = Buffer.alloc(HMAC_KEY_SIZE);
        if (
          fs.fstatSync(fd).size === HMAC_KEY_SIZE &&
          fs.readSync(fd, key, 0, HMAC_KEY_SIZE, 0) === HMAC_KEY_SIZE
        ) {
          return { key, fresh: false };
        }
      } finally {
        fs.closeSync(fd);
      }
      if (create) fs.rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("read", file, e);
    }
    const key = randomBytes(HMAC_KEY_SIZE);
    if (create) {
      this.ensureMetaDir();
      try {
        createFile(file, key, 0o600);
      } catch (e) {
        throw ioError("create", file, e);
      }
    }
    return { key, fresh: true };
  }

  readMeta(n: number): GenerationMeta | null {
    try {
      const file = this.metaFile(n);
      const st = fs.lstatSync(file);
      if (!st.isFile() || st.size > MAX_META_SIZE) return null;
      return parseMeta(fs.readFileSync(file, "utf8"), n);
    } catch {
      return null;
    }
  }

  /**
   * Written once the generation is complete: its presence marks a usable generation (a file cut
   * short is not JSON, so not usable: parseMeta). Written in pieces of META_CHUNK entries: one
   * JSON.stringify of 10 000 entries (4 MB) took ~70 ms in a fresh process against ~15 ms in
   * pieces, most of it page faults of the ever larger buffers it grows and copies, then the copy
   * to bytes (bench/RESULTS.md).
   */
  writeMeta(meta: GenerationMeta): void {
    this.ensureMetaDir();
    const file = this.metaFile(meta.generation);
    fs.rmSync(file, { force: true });
    try {
      createFile(file, metaPieces(meta), 0o600);
    } catch (e) {
      throw ioError("write", file, e);
    }
  }

  /** The bytes a generation's files take (their blocks), not following symlinks. */
  diskUsage(n: number): number {
    let total = 0;
    const walk = (dir: string): void => {
      for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, d.name);
        total += fs.lstatSync(p).blocks * 512;
        if (d.isDirectory()) walk(p);
      }
    };
    try {
      walk(this.pathOf(n));
    } catch {}
    return total;
  }

  /**
   * Room for a new generation on a size-limited generationsDir (a tmpfs; a ramfs has no limit):
   * when less is free than `active` takes (an identical install needs as much), the
   * generations that pruning after the switch would remove anyway go now, before the new one is
   * written. Only those: `active` and the `keep - 1` newest complete ones before it stay, which
   * after the switch are the `keep` kept behind the new one. Returns what it removed.
   */
  makeRoom(active: number | null, keep: number, secretsDir: string): number[] {
    if (active === null) return [];
    let st: fs.StatsFs;
    try {
      st = fs.statfsSync(this.dir);
    } catch {
      return [];
    }
    if (st.blocks === 0) return []; // ramfs: no size limit
    // At least as much free as the whole filesystem holds: room for the active generation's
    // size for sure, without walking its files.
    const free = st.bavail * st.bsize;
    if (free >= (st.blocks - st.bfree) * st.bsize) return [];
    if (free >= this.diskUsage(active)) return [];
    return this.prune(active, Math.max(keep - 1, 0), secretsDir);
  }

  /**
   * Keeps `active` and the `keep` newest complete generations before it; removes the others
   * (older ones, and incomplete leftovers of interrupted installs: run under the install lock,
   * no other install is writing one). Never the generation `secretsDir` points to at this
   * moment, whatever `active` says. Returns what it removed.
   */
  prune(active: number, keep: number, secretsDir: string): number[] {
    const removed: number[] = [];
    const pointedTo = this.active(secretsDir);
    let kept = 0;
    for (const n of this.list().reverse()) {
      if (n === active || n === pointedTo) continue;
      if (n < active && kept < keep && fs.existsSync(this.metaFile(n))) {
        kept++;
        continue;
      }
      this.remove(n);
      removed.push(n);
    }
    // Metadata whose generation is gone (removed by hand).
    try {
      for (const f of fs.readdirSync(this.metaDir)) {
        const m = /^([1-9][0-9]{0,8})\.json$/.exec(f);
        if (m && !fs.existsSync(this.pathOf(Number(m[1]))))
          fs.rmSync(path.join(this.metaDir, f), { force: true });
      }
    } catch {}
    return removed.sort((a, b) => a - b);
  }
}

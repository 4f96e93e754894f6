/**
 * The encrypted files secrets come from: each opened (read, decrypted) once however many secrets
 * read it, values taken out of it in memory; or, for `--check`, only parsed. age files go through
 * the engine's in-memory decrypt; sops files through src/sops, loaded only when a manifest has one.
 * src/age itself is loaded only when something is decrypted: a re-activation that takes every
 * value from the active generation reads the encrypted files (their hashes) and nothing more.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { ioError, NixsealError, readAllSync, rethrowUnlessNixseal, wipe } from "../common/index.js";
import type { ManifestSecret, SecretFormat } from "./manifest.js";

/** The largest encrypted file a secret may come from (it is decrypted in memory). */
export const MAX_SECRET_FILE_SIZE = 256 * 1024 * 1024;

type AgeModule = typeof import("../age/index.js");
let ageModule: Promise<AgeModule> | null = null;
/** src/age once loaded: a host's thousands of files then do not each wait for the import. */
let ageLoaded: AgeModule | null = null;
function age(): Promise<AgeModule> {
  ageModule ??= import("../age/index.js").then((m) => {
    ageLoaded = m;
    return m;
  });
  return ageModule;
}

/** An age file's plaintext, decrypted in memory (the caller wipes it); errors name the file. */
export async function decryptAgeFile(
  data: Uint8Array,
  file: string,
  identities: readonly Identity[],
): Promise<Uint8Array> {
  const { decrypt } = ageLoaded ?? (await age());
  try {
    return await decrypt(data, identities);
  } catch (e) {
    throw e instanceof NixsealError ? e.withFile(file) : e;
  }
}

type SopsModule = typeof import("../sops/index.js");
let sopsModule: Promise<SopsModule> | null = null;
/** src/sops (and its YAML parser) costs start-up time: only hosts with sops files pay it. */
function sops(): Promise<SopsModule> {
  sopsModule ??= import("../sops/index.js");
  return sopsModule;
}

/** Which secrets share one opened file: the same path read in the same format. */
export function sourceKey(s: Pick<ManifestSecret, "file" | "format">): string {
  return `${s.format}\0${s.file}`;
}

/** Reads an encrypted file: a regular file (symlinks allowed: store paths), size-limited. */
export function readEncryptedFile(file: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw ioError("read", file, e);
  }
  return readOpened(fd, file);
}

/**
 * A store path's first segment: 32 characters of Nix's base-32 (no e, o, t, u), "-", a name of
 * Nix's store-path characters not starting with ".".
 */
const STORE_PATH_NAME = /^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*$/;

/**
 * Whether `file` is a store path of `storeDir` or inside one, by its text alone: the manifest's
 * paths are normalised (no . or .. segment, no //: src/common/validation.ts, pathProblem).
 */
export function isInStore(file: string, storeDir: string | null): boolean {
  if (storeDir === null || file.length <= storeDir.length + 1 || !file.startsWith(storeDir)) return false;
  if (file[storeDir.length] !== "/") return false;
  const end = file.indexOf("/", storeDir.length + 1);
  const name = file.slice(storeDir.length + 1, end === -1 ? undefined : end);
  return STORE_PATH_NAME.test(name) && !file.includes("/../") && !file.endsWith("/..");
}

/** An encrypted file's content, and whether it was read as a store file (see readSourceFile). */
export interface SourceRead {
  data: Buffer;
  /**
   * True if `file` is inside the manifest's store dir (isInStore) and was opened as a regular
   * file at that very path, no symlink followed on the way (opened with O_NOFOLLOW, and its
   * directory's real path is the directory itself). Recorded with the generation: the next install may
   * then take the file's hash from the record instead of reading it again (docs/architecture.md,
   * "Store files are not read again").
   */
  storeFile: boolean;
}

/**
 * readEncryptedFile, and whether the file was a store file read without following a symlink.
 * A symlink (in the store or not) is still followed and read, as by readEncryptedFile; only the
 * record says it was one.
 */
export function readSourceFile(file: string, storeDir: string | null): SourceRead {
  if (!isInStore(file, storeDir)) return { data: readEncryptedFile(file), storeFile: false };
  let fd: number;
  let followed = false;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ELOOP") throw ioError("read", file, e);
    // The last component is a symlink: read where it points, as readEncryptedFile does.
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e2) {
      throw ioError("read", file, e2);
    }
    followed = true;
  }
  return { data: readOpened(fd, file), storeFile: !followed && isRealDir(path.dirname(file)) };
}

/** Directories whose real path is their own (no symlink on the way), as found in this thread. */
const realDirs = new Map<string, boolean>();

/**
 * Whether `dir` has no symlink among its components: realpath(3) gives it back unchanged. Asked
 * once per directory (an activation's files share a few): a directory inside a store path does
 * not change, and its store path is one component of it, checked with it.
 */
function isRealDir(dir: string): boolean {
  let real = realDirs.get(dir);
  if (real === undefined) {
    try {
      real = fs.realpathSync.native(dir) === dir;
    } catch {
      real = false; // not known: read again next time
    }
    realDirs.set(dir, real);
  }
  return real;
}

/** The checks and the read of readEncryptedFile on an opened file; closes it. */
function readOpened(fd: number, file: string): Buffer {
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      throw new NixsealError("IO", `${file} is not a regular file`, {
        file,
        hint: "a secret's file is an encrypted file (age or sops)",
      });
    }
    if (st.size > MAX_SECRET_FILE_SIZE) {
      throw new NixsealError("IO", `${file} is larger than ${MAX_SECRET_FILE_SIZE / 1024 / 1024} MiB`, {
        file,
        hint: "secrets are decrypted in memory; keep large files out of secrets",
      });
    }
    // One read of the size fstat gave: 1000 secrets are 1000 files, and each syscall counts.
    return readAllSync(fd, st.size);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read", file, e);
  } finally {
    fs.closeSync(fd);
  }
}

/** An opened file: values of secrets come out of it until close() wipes what it holds. */
export interface OpenedSource {
  /**
   * The plaintext of one secret. `owned`: the caller wipes it when done; otherwise it is the
   * source's own memory, wiped by close().
   */
  valueOf(secret: Pick<ManifestSecret, "key">): { value: Uint8Array; owned: boolean };
  close(): void;
}

/** Decrypts the content `data` of the encrypted file `file` in memory. */
export async function decryptSource(
  data: Uint8Array,
  file: string,
  format: SecretFormat,
  identities: readonly Identity[],
): Promise<OpenedSource> {
  if (format === "age") {
    const plain = await decryptAgeFile(data, file, identities);
    return {
      valueOf: () => ({ value: plain, owned: false }),
      close: () => wipe(plain),
    };
  }
  const s = await sops();
  const store = s.storeByName(format);
  const doc = await s.decryptDocument(data, store, { identities, file });
  return {
    valueOf(secret) {
      if (secret.key === null) {
        const whole = store.emitPlain(doc.branches);
        // The binary store hands out the document's own bytes: copy, so each secret owns its value.
        return { value: format === "binary" ? Uint8Array.from(whole) : whole, owned: true };
      }
      const v = valueAtKey(doc.branches[0], secret, file);
      return { value: sopsValueBytes(s, v, format, file, secret.key), owned: true };
    },
    close: () => s.closeDocument(doc),
  };
}

type SopsValue = import("../sops/index.js").SopsValue;
type SopsBranchT = import("../sops/index.js").SopsBranch;

/** sops-nix's key paths: "a/b" walks mappings (INI: section/key; dotenv: the variable). */
function valueAtKey(
  root: SopsBranchT | undefined,
  secret: Pick<ManifestSecret, "key">,
  file: string,
): SopsValue {
  const segments = secret.key!.split("/");
  let v: SopsValue | undefined = root;
  for (let i = 0; i < segments.length; i++) {
    const k = segments[i]!;
    const here = segments.slice(0, i + 1).join("/");
    if (v === undefined || v === null || typeof v !== "object" || !("items" in v)) {
      throw new NixsealError("INSTALL", `"${segments.slice(0, i).join("/")}" is not a mapping`, {
        file,
        hint: `check the key "${secret.key}" against the decrypted file (nixseal decrypt ${file})`,
      });
    }
    v = (v as SopsBranchT).get(k);
    if (v === undefined) {
      throw new NixsealError("INSTALL", `has no key "${here}"`, {
        file,
        hint: `add it (nixseal set), or fix the key "${secret.key}" in the NixOS configuration`,
      });
    }
  }
  return v!;
}

/** A value as a file's content: a string as it is, a mapping or list in the file's format. */
function sopsValueBytes(
  s: SopsModule,
  v: SopsValue,
  format: SecretFormat,
  file: string,
  key: string,
): Uint8Array {
  if (typeof v === "string") return Buffer.from(v, "utf8");
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (s.isBranch(v)) {
    return format === "json" ? new s.JsonStore().emitPlain([v]) : new s.YamlStore().emitPlain([v]);
  }
  if (Array.isArray(v)) {
    throw new NixsealError("INSTALL", `the value at "${key}" is a list`, {
      file,
      hint: "point the key at a string or a mapping (a list has no file form nixseal would guess)",
    });
  }
  if (v === null) return Buffer.from("null");
  if (typeof v === "bigint" || typeof v === "boolean") return Buffer.from(String(v));
  if (typeof v === "number") return Buffer.from(s.formatGoFloat(v));
  if (v instanceof s.SopsTime) return Buffer.from(v.text);
  return Buffer.from(String(v));
}

/**
 * `--check`: the file's structure without decrypting: an age header parses; a sops file parses,
 * has its metadata and holds every key asked of it. Problems are returned, one per cause.
 */
export async function checkSource(
  file: string,
  format: SecretFormat,
  secrets: readonly ManifestSecret[],
): Promise<NixsealError[]> {
  const names = secrets.map((x) => `"${x.name}"`).join(", ");
  const tagged = (e: NixsealError) =>
    new NixsealError(
      e.code,
      `secret ${names} from ${file}: ${e.message.startsWith(`${file}: `) ? e.message.slice(file.length + 2) : e.message}`,
      {
        hint: e.hint ?? "check the file",
        file,
      },
    );
  let data: Buffer;
  try {
    data = readEncryptedFile(file);
  } catch (e) {
    if (e instanceof NixsealError) return [tagged(e)];
    throw e;
  }
  try {
    if (format === "age") {
      const header = (await age()).readHeader(data);
      if (header.stanzas.length === 0) {
        return [
          tagged(
            new NixsealError("AGE_HEADER", "the age header has no recipients", {
              hint: "the file is damaged",
            }),
          ),
        ];
      }
      return [];
    }
    const s = await sops();
    const store = s.storeByName(format);
    const { branches, metadata } = store.parseEncrypted(data);
    if (metadata === null) {
      return [
        tagged(
          new NixsealError("SOPS_METADATA", "not a sops file: no sops metadata", {
            hint: `encrypt it with sops or nixseal, or set the secret's format (it is "${format}")`,
          }),
        ),
      ];
    }
    s.parseMetadata(metadata);
    const problems: NixsealError[] = [];
    for (const secret of secrets) {
      if (secret.key === null) continue;
      try {
        valueAtKey(branches[0], secret, file);
      } catch (e) {
        rethrowUnlessNixseal(e);
        problems.push(
          new NixsealError(e.code, `secret "${secret.name}" from ${file}: ${e.message}`, {
            hint: e.hint ?? "",
            file,
          }),
        );
      }
    }
    return problems;
  } catch (e) {
    if (e instanceof NixsealError) return [tagged(e)];
    throw e;
  }
}

/**
 * Pushed keys with `persist = "credential"`: sealed on the host with the real `systemd-creds
 * encrypt` (the value on its stdin), so that `nixseal receive --restore` can bring them back into
 * RAM after a reboot without the deployer (docs/push.md, "After a reboot"). The layout, on disk:
 *
 *   <credstore>/nixseal-keys/                        root 0700
 *   <credstore>/nixseal-keys/<N>/                    generation N, root 0700:
 *   <credstore>/nixseal-keys/<N>/nixseal-key-<key>   each key sealed under the credential name
 *                                                    nixseal-key-<key>, root 0600
 *   <credstore>/nixseal-keys/<N>/keys.json           root 0600: the keys' records (destDir, name,
 *                                                    owner, group, mode, units; no value)
 *   <credstore>/nixseal-keys/current -> <N>          switched by one rename
 *
 * Why generations, as in RAM (src/push/receiver.ts): the one rename of `current` is the commit
 * point, so a crash leaves the old set or the new one, each complete with its records; unchanged
 * sealed files are hard links into the new generation (the same inode: never sealed or written
 * again), and a removed key's sealed file goes with the old generation.
 *
 * The RAM record of a persisted key holds the SHA-256 of its sealed file (ciphertext: nothing
 * secret): a sealed file is reused only when it is the one the key in RAM was sealed into, so a
 * credstore that got out of step with RAM (lost, restored from a backup, a crash between the two
 * switches) is sealed again from RAM by the next push.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  ioError,
  isObject,
  type Json,
  NixsealError,
  Problems,
  rethrowUnlessNixseal,
  syncDirectory,
  writeFileAtomic,
} from "../common/index.js";
import {
  decryptCredentialBytes,
  encryptCredentialBytes,
  readCredentialFile,
  type SystemdCredsOptions,
} from "../creds/index.js";
import { replaceSymlink } from "../install/index.js";
import { CREDENTIAL_PREFIX, readWireKey, type WireKey, wireKey } from "./plan.js";

/** systemd's own directory of encrypted credentials (LoadCredentialEncrypted= searches it). */
export const DEFAULT_KEYS_CREDSTORE = "/etc/credstore.encrypted";
const STORE_DIR = "nixseal-keys";
const RECORD = "keys.json";
const RECORD_VERSION = 1;
const MAX_RECORD = 16 * 1024 * 1024;
const GEN_NAME = /^[1-9][0-9]{0,9}$/;

/** The credential name a key is sealed under. */
export function credentialNameOf(key: string): string {
  return `${CREDENTIAL_PREFIX}${key}`;
}

export function sha256Hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

export interface SealedKey {
  meta: WireKey;
  /** The sealed file in the current generation. */
  file: string;
  /** SHA-256 of the sealed file as it is now (null: missing or unreadable). */
  sha: string | null;
}

/** The credstore's pushed keys as the current generation holds them. */
export interface SealedStore {
  /** <credstore>/nixseal-keys */
  dir: string;
  gen: number | null;
  keys: Map<string, SealedKey>;
  /** Why the current generation could not be read (then it counts as empty), or null. */
  unreadable: string | null;
}

const STORE_HINT =
  "the credential store must be a directory only root can write (nixseal keeps its pushed keys in <credstore>/nixseal-keys, root 0700): fix it on the host";

/** A directory root owns that nobody else can write (lstat: never a symlink); absent: false. */
function checkRootDir(dir: string, privateDir: boolean): boolean {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw ioError("read", dir, e);
  }
  const bad = !st.isDirectory()
    ? st.isSymbolicLink()
      ? "is a symbolic link"
      : "is not a directory"
    : st.uid !== (process.geteuid?.() ?? 0)
      ? "belongs to another user"
      : (st.mode & (privateDir ? 0o077 : 0o022)) !== 0
        ? privateDir
          ? "is open to group or others"
          : "is writable by group or others"
        : null;
  if (bad !== null)
    throw new NixsealError("CREDS_STORE", `credential store ${dir} ${bad}`, { file: dir, hint: STORE_HINT });
  return true;
}

/** Reads the current generation of the pushed keys in `credstore` (nothing is created). */
export function readSealedStore(credstore: string): SealedStore {
  const dir = path.join(credstore, STORE_DIR);
  const store: SealedStore = { dir, gen: null, keys: new Map(), unreadable: null };
  if (!checkRootDir(credstore, false) || !checkRootDir(dir, true)) return store;
  let target: string;
  try {
    target = fs.readlinkSync(path.join(dir, "current"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return store;
    store.unreadable = `${dir}/current is not nixseal's symlink`;
    return store;
  }
  if (!GEN_NAME.test(target)) {
    store.unreadable = `${dir}/current names ${JSON.stringify(target.slice(0, 40))}, not a generation`;
    return store;
  }
  const gdir = path.join(dir, target);
  const record = readRecord(path.join(gdir, RECORD));
  if (typeof record === "string") {
    store.unreadable = record;
    return store;
  }
  store.gen = Number(target);
  for (const meta of record) {
    const file = path.join(gdir, credentialNameOf(meta.key));
    let sha: string | null = null;
    try {
      sha = sha256Hex(readCredentialFile(file));
    } catch {}
    store.keys.set(meta.key, { meta, file, sha });
  }
  return store;
}

/** The records of a generation, or why they cannot be read. */
function readRecord(file: string): WireKey[] | string {
  let json: unknown;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.size > MAX_RECORD || st.uid !== (process.geteuid?.() ?? 0))
        return `${file} is not a record nixseal wrote`;
      json = JSON.parse(fs.readFileSync(fd, "utf8"));
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    return `${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? "not JSON"})`;
  }
  if (
    !isObject(json) ||
    json.version !== RECORD_VERSION ||
    !Array.isArray(json.keys) ||
    Object.keys(json).length !== 2
  )
    return `${file} is not a record of this version of nixseal`;
  const p = new Problems("CREDS_STORE", file);
  const keys = json.keys.map((k, i) => readWireKey(k, `keys[${i}]`, p)).filter((k) => k !== null);
  if (p.list.length > 0) return `${file}: ${p.list[0]!.message}`;
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k.key) || k.persist !== "credential") return `${file} lists key "${k.key}" wrongly`;
    seen.add(k.key);
  }
  return keys.map(({ extra: _, ...meta }) => meta);
}

/** One key of the next generation: a sealed file reused (linked) or a credential sealed now. */
export interface SealEntry {
  meta: WireKey;
  /** The sealed file of the current generation to link, or null. */
  reuse: string | null;
  /** The credential systemd-creds made now (not secret), or null. */
  credential: Buffer | null;
  /** SHA-256 of the sealed file (for the RAM record). */
  sha: string;
}

export interface SealPlan {
  store: SealedStore;
  /** Whether a new generation is needed (else the store stays as it is, byte for byte). */
  changed: boolean;
  entries: SealEntry[];
  /** Keys sealed now, and keys whose sealed file goes. */
  sealed: string[];
  unsealed: string[];
}

/** What the receiver knows of a key it will hold: its metadata, and its content if at hand. */
export interface SealInput {
  meta: WireKey;
  /** SHA-256 of the sealed file the key in RAM was sealed into (its RAM record), or null. */
  heldSealed: string | null;
  /** The value (sent now, or read from RAM); null if it must and can only be reused. */
  content: () => Uint8Array | null;
}

/**
 * Seals what must be sealed, in memory (one systemd-creds process per key sealed now: it has no
 * batch mode), and decides the next generation. Nothing is written. Every problem is collected,
 * named after its key; with any, nothing may change.
 */
export async function planSeals(
  store: SealedStore,
  keys: readonly SealInput[],
  options: SystemdCredsOptions,
): Promise<{ plan: SealPlan; problems: NixsealError[] }> {
  const problems: NixsealError[] = [];
  const entries: SealEntry[] = [];
  const sealed: string[] = [];
  let changed = store.unreadable !== null;
  const wanted = new Set<string>();
  for (const k of keys) {
    if (k.meta.persist !== "credential") continue;
    wanted.add(k.meta.key);
    const have = store.keys.get(k.meta.key);
    if (have !== undefined && have.sha !== null && k.heldSealed === have.sha) {
      entries.push({ meta: k.meta, reuse: have.file, credential: null, sha: have.sha });
      if (JSON.stringify(wireKey(have.meta)) !== JSON.stringify(wireKey(k.meta))) changed = true;
      continue;
    }
    changed = true;
    const content = k.content();
    if (content === null) {
      problems.push(
        new NixsealError("PUSH", `key "${k.meta.key}": its value on the host cannot be read to seal it`, {
          hint: "push again (its file in RAM was changed or removed?)",
        }),
      );
      continue;
    }
    try {
      const credential = await encryptCredentialBytes(credentialNameOf(k.meta.key), content, {
        ...options,
        withKey: "auto",
      });
      entries.push({ meta: k.meta, reuse: null, credential, sha: sha256Hex(credential) });
      sealed.push(k.meta.key);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(
        new NixsealError(e.code, `key "${k.meta.key}": cannot seal it: ${e.message}`, { hint: e.hint }),
      );
    }
  }
  const unsealed = [...store.keys.keys()].filter((k) => !wanted.has(k));
  if (unsealed.length > 0) changed = true;
  return { plan: { store, changed, entries, sealed, unsealed }, problems };
}

export interface StagedSeals {
  plan: SealPlan;
  gen: number;
  gdir: string;
}

/**
 * Writes the next generation beside the current one (sealed files created 0600 with their final
 * mode, unchanged ones hard-linked, then the records), fsynced; `current` is not touched.
 */
export function stageSeals(credstore: string, plan: SealPlan): StagedSeals | null {
  if (!plan.changed) return null;
  const { dir } = plan.store;
  if (!checkRootDir(credstore, false)) {
    fs.mkdirSync(path.dirname(credstore), { recursive: true, mode: 0o755 });
    try {
      fs.mkdirSync(credstore, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the directory", credstore, e);
    }
    checkRootDir(credstore, false);
  }
  if (!checkRootDir(dir, true)) {
    fs.mkdirSync(dir, { mode: 0o700 });
    checkRootDir(dir, true);
  }
  let gen = (plan.store.gen ?? 0) + 1;
  for (const f of fs.readdirSync(dir)) if (GEN_NAME.test(f)) gen = Math.max(gen, Number(f) + 1);
  const gdir = path.join(dir, String(gen));
  fs.mkdirSync(gdir, { mode: 0o700 });
  const staged = { plan, gen, gdir };
  try {
    for (const e of plan.entries) {
      const file = path.join(gdir, credentialNameOf(e.meta.key));
      if (e.reuse !== null) fs.linkSync(e.reuse, file);
      else writeFileAtomic(file, e.credential!, 0o600);
    }
    const record: Json = { version: RECORD_VERSION, keys: plan.entries.map((e) => wireKey(e.meta)) };
    writeFileAtomic(path.join(gdir, RECORD), Buffer.from(JSON.stringify(record)), 0o600);
    syncDirectory(gdir);
    syncDirectory(dir);
  } catch (e) {
    abortSeals(staged);
    throw e instanceof NixsealError ? e : ioError("write the sealed keys into", gdir, e);
  }
  return staged;
}

/** Removes a staged generation that was not switched to. */
export function abortSeals(staged: StagedSeals | null): void {
  if (staged !== null) fs.rmSync(staged.gdir, { recursive: true, force: true });
}

/** The commit point of the credstore: `current` names the new generation (one rename, fsynced). */
export function switchSeals(staged: StagedSeals): void {
  replaceSymlink(path.join(staged.plan.store.dir, "current"), String(staged.gen));
  syncDirectory(staged.plan.store.dir);
}

/** Removes the generations other than the current one (removed keys' sealed files go with them). */
export function pruneSeals(staged: StagedSeals): void {
  const { dir } = staged.plan.store;
  for (const f of fs.readdirSync(dir)) {
    if (f === "current" || f === String(staged.gen)) continue;
    fs.rmSync(path.join(dir, f), { recursive: true, force: true });
  }
  syncDirectory(dir);
}

/** A persisted key unsealed for a restore. The caller wipes `value`. */
export interface UnsealedKey {
  meta: WireKey;
  value: Uint8Array;
  sha: string;
}

/**
 * Unseals every key of the current generation with `systemd-creds decrypt` (a few at a time). A
 * sealed file that does not decrypt (another host, tampered, truncated) is a problem named after
 * its key; the others are returned.
 */
export async function unsealAll(
  store: SealedStore,
  options: SystemdCredsOptions,
): Promise<{ keys: UnsealedKey[]; problems: NixsealError[] }> {
  const problems: NixsealError[] = [];
  if (store.unreadable !== null)
    problems.push(
      new NixsealError("CREDS_STORE", `the pushed keys' records cannot be read: ${store.unreadable}`, {
        hint: "push the keys again (nixseal push): it writes a new generation",
      }),
    );
  const out: (UnsealedKey | null)[] = [];
  const list = [...store.keys.values()];
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const i = next++;
      const k = list[i]!;
      try {
        const credential = readCredentialFile(k.file);
        const value = await decryptCredentialBytes(credentialNameOf(k.meta.key), credential, {
          ...options,
          file: k.file,
        });
        out[i] = { meta: k.meta, value, sha: sha256Hex(credential) };
      } catch (e) {
        rethrowUnlessNixseal(e);
        out[i] = null;
        problems.push(
          new NixsealError(e.code, `key "${k.meta.key}" was not restored: ${e.message}`, {
            hint: `${e.hint ?? "check the file"}; the next nixseal push sends and seals it again`,
            file: e.file,
          }),
        );
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, list.length) }, worker));
  return { keys: out.filter((k) => k !== null), problems };
}

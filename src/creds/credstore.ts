/**
 * A persistent store of encrypted systemd credentials that units load with
 * `LoadCredentialEncrypted=NAME:<dir>/NAME`, kept in step with the secrets by `nixseal install`.
 *
 * Layout (the directory and everything in it belong to root, 0700):
 *
 *     <dir>/NAME                     the credential, as systemd-creds encrypt writes it (0400)
 *     <dir>/.nixseal/NAME.record     "nixseal-credstore-v1 KEY PCRS HMAC SHA256" (0600)
 *     <dir>/.nixseal/hmac-key.cred   the store's HMAC key, itself a credential (0600)
 *
 * A credential is encrypted again only when its secret changed, so units are not restarted
 * needlessly: the record holds HMAC-SHA256 of (name, key type, PCRs, plaintext) under a random
 * per-store key, and the SHA-256 of the credential file it was written with. Neither reveals the
 * plaintext, and the HMAC key is sealed like the credentials (host key and TPM2 when there is
 * one): a plain hash of a password beside its TPM-sealed credential would let whoever copies the
 * disk try passwords offline, which is exactly what the TPM binding is there to prevent.
 * If the HMAC key no longer unseals (the host key or the TPM changed), every credential is
 * encrypted again: they would not unseal either.
 *
 * Writes are atomic (temp file, fsync, rename): the credential first, then its record. A crash in
 * between leaves a record that does not match the file, so the next run encrypts it again.
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  AtomicFile,
  constantTimeEqual,
  ioError,
  NixsealError,
  rethrowUnlessNixseal,
  syncDirectory,
  wipe,
  writeFileAtomic,
} from "../common/index.js";
import {
  type CredentialKey,
  decryptCredential,
  encryptCredential,
  encryptCredentialBytes,
  isCredentialKey,
  type SystemdCredsOptions,
  validateCredentialName,
} from "./systemd-creds.js";

/** The default store: a directory nixseal owns, so that it may remove what it no longer needs. */
export const DEFAULT_CREDSTORE_DIR = "/var/lib/nixseal/credstore";

const META_DIR = ".nixseal";
const KEY_FILE = "hmac-key.cred";
const KEY_NAME = "nixseal-credstore-hmac-key";
const KEY_SIZE = 32;
const RECORD_MAGIC = "nixseal-credstore-v1";
const RECORD_SUFFIX = ".record";
/** Temp files of AtomicFile (".NAME.<12 hex>.tmp") older than this are leftovers of a killed run. */
const STALE_TEMP_AGE_MS = 10 * 60 * 1000;

export type SyncStatus = "unchanged" | "created" | "updated";

export interface Credstore {
  readonly dir: string;
  readonly options: SystemdCredsOptions;
  /**
   * True if the store's HMAC key could not be unsealed and was replaced in this run: every
   * credential is then encrypted again (the host key or the TPM changed). The caller logs it.
   */
  readonly keyRenewed: boolean;
  /** The HMAC key (wiped by closeCredstore). */
  readonly hmacKey: Buffer;
}

export interface SyncOptions {
  /** --tpm2-pcrs= for a TPM2 binding (part of what "changed" means). */
  tpm2Pcrs?: string;
  /** Encrypt even if unchanged (after the host key was replaced by hand). */
  force?: boolean;
}

export interface CredentialItem extends SyncOptions {
  name: string;
  plaintext: Uint8Array;
  withKey: CredentialKey;
}

export interface OpenCredstoreOptions {
  /**
   * Change nothing on disk (a dry run, or a run that already failed): no directory is made and
   * no key written. A store that does not exist counts as empty; a key that is missing or does
   * not unseal is replaced by a throwaway one (so everything counts as changed, as a real run
   * would find it).
   */
  readOnly?: boolean;
  /**
   * Do not unseal the store's key (no systemd-creds runs): for storedCredentials and removeStale
   * only, e.g. to clean up after the last credential was removed. syncCredential refuses such a
   * store.
   */
  withoutKey?: boolean;
}

/**
 * Makes sure `dir` is a private directory of ours: created 0700 if absent (unless `create` is
 * false: then false is returned for an absent one), refused if it is a symlink, belongs to
 * another user, or is open to group or others.
 */
function ensurePrivateDir(dir: string, create = true): boolean {
  if (create) {
    try {
      fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 });
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the directory", dir, e);
    }
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    if (!create && (e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw ioError("read", dir, e);
  }
  const uid = process.geteuid?.() ?? st.uid;
  if (!st.isDirectory()) {
    throw new NixsealError(
      "CREDS_STORE",
      `credential store ${dir} is not a directory${st.isSymbolicLink() ? " (a symbolic link)" : ""}`,
      {
        file: dir,
        hint: "the credential store must be a real directory owned by root with mode 0700; move what is there away",
      },
    );
  }
  if (st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw new NixsealError(
      "CREDS_STORE",
      `credential store ${dir} is not private (owner ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")})`,
      {
        file: dir,
        hint: `it must belong to uid ${uid} with mode 0700: chown ${uid} ${dir} && chmod 0700 ${dir}, after checking who changed it`,
      },
    );
  }
  return true;
}

function metaDir(dir: string): string {
  return path.join(dir, META_DIR);
}

/**
 * Opens (creating if needed) the credential store in `dir` and unseals its HMAC key: one
 * systemd-creds process per run, not per credential. Close it with closeCredstore().
 */
export async function openCredstore(
  dir: string = DEFAULT_CREDSTORE_DIR,
  options: SystemdCredsOptions = {},
  open: OpenCredstoreOptions = {},
): Promise<Credstore> {
  if (!path.isAbsolute(dir)) {
    throw new NixsealError("CREDS_STORE", `credential store ${dir} is not an absolute path`, {
      hint: "give the credential store as an absolute path, such as /var/lib/nixseal/credstore",
    });
  }
  dir = path.normalize(dir);
  const create = open.readOnly !== true;
  const exists = ensurePrivateDir(dir, create) && ensurePrivateDir(metaDir(dir), create);
  if (open.withoutKey) return { dir, options, keyRenewed: false, hmacKey: Buffer.alloc(0) };
  const keyFile = path.join(metaDir(dir), KEY_FILE);
  let hmacKey: Buffer | null = null;
  let keyRenewed = false;
  if (exists && fs.existsSync(keyFile)) {
    try {
      const k = Buffer.from(await decryptCredential(KEY_NAME, keyFile, options));
      if (k.length === KEY_SIZE) hmacKey = k;
      else wipe(k);
    } catch (e) {
      // Another host key or TPM (or none any more): the credentials would not unseal either.
      if (!(e instanceof NixsealError && (e.code === "CREDS_DECRYPT" || e.code === "CREDS_NO_TPM"))) throw e;
    }
    keyRenewed = hmacKey === null;
  }
  if (hmacKey === null && !create) hmacKey = randomBytes(KEY_SIZE);
  if (hmacKey === null) {
    hmacKey = randomBytes(KEY_SIZE);
    try {
      await encryptCredential(KEY_NAME, hmacKey, {
        ...options,
        withKey: "auto",
        output: keyFile,
        mode: 0o600,
      });
    } catch (e) {
      // "auto" refuses a host key on tmpfs without a TPM2; the host key is then all there is
      // (and if it is lost at reboot, the next run renews this key and re-encrypts everything).
      if (!(e instanceof NixsealError && (e.code === "CREDS_UNAVAILABLE" || e.code === "CREDS_NO_TPM")))
        throw e;
      await encryptCredential(KEY_NAME, hmacKey, {
        ...options,
        withKey: "host",
        output: keyFile,
        mode: 0o600,
      });
    }
  }
  return { dir, options, keyRenewed, hmacKey };
}

export function closeCredstore(store: Credstore): void {
  wipe(store.hmacKey);
}

/** Where the credential `name` lives: the path for `LoadCredentialEncrypted=name:PATH`. */
export function credentialPath(store: Credstore | string, name: string): string {
  validateCredentialName(name);
  return path.join(typeof store === "string" ? store : store.dir, name);
}

function recordPath(store: Credstore, name: string): string {
  return path.join(metaDir(store.dir), `${name}${RECORD_SUFFIX}`);
}

function digestOf(
  store: Credstore,
  name: string,
  withKey: CredentialKey,
  pcrs: string,
  plaintext: Uint8Array,
): Buffer {
  const h = createHmac("sha256", store.hmacKey);
  h.update(`${RECORD_MAGIC}\0${name}\0${withKey}\0${pcrs}\0`);
  h.update(plaintext);
  return h.digest();
}

interface CredentialRecord {
  digest: Buffer;
  fileHash: Buffer;
}

/** The record of `name`, or null if absent or not one of ours (then the credential is redone). */
function readRecord(store: Credstore, name: string): CredentialRecord | null {
  let text: string;
  try {
    const fd = fs.openSync(recordPath(store, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      if (fs.fstatSync(fd).size > 1024) return null;
      text = fs.readFileSync(fd, "latin1");
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
  const m = /^nixseal-credstore-v1 (\S+) (\S+) ([0-9a-f]{64}) ([0-9a-f]{64})\n$/.exec(text);
  if (m === null) return null;
  return { digest: Buffer.from(m[3]!, "hex"), fileHash: Buffer.from(m[4]!, "hex") };
}

/** SHA-256 of the credential file now in the store, or null if there is none. */
function currentFileHash(file: string): Buffer | null {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      return createHash("sha256").update(fs.readFileSync(fd)).digest();
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
}

/** A credential encrypted and ready to be written into the store (nothing secret in it). */
export interface PreparedCredential {
  name: string;
  status: "created" | "updated";
  /** The encrypted credential, as systemd-creds wrote it. */
  credential: Buffer;
  /** The record line that goes beside it. */
  record: string;
}

/**
 * What syncCredential would do for `name`, without writing anything: "unchanged" (no process
 * runs), or the credential encrypted again, ready for commitCredential. With `encrypt: false`
 * (dry runs) nothing is encrypted either: only the status is told.
 */
export async function prepareCredential(
  store: Credstore,
  name: string,
  plaintext: Uint8Array,
  withKey: CredentialKey,
  options: SyncOptions & { encrypt?: boolean } = {},
): Promise<PreparedCredential | "unchanged" | "created" | "updated"> {
  validateCredentialName(name);
  if (!isCredentialKey(withKey)) {
    throw new NixsealError(
      "USAGE",
      `credential ${name}: unknown key type "${String(withKey).slice(0, 20)}"`,
      {
        hint: "one of auto, host, tpm2, host+tpm2",
      },
    );
  }
  if (store.hmacKey.length === 0) {
    throw new NixsealError("CREDS_STORE", `credential store ${store.dir} was opened without its key`, {
      hint: "open it with openCredstore() without withoutKey to change credentials",
    });
  }
  const pcrs = options.tpm2Pcrs ?? "";
  const digest = digestOf(store, name, withKey, pcrs, plaintext);
  const file = credentialPath(store, name);
  const existing = currentFileHash(file);
  const record = readRecord(store, name);
  if (
    !options.force &&
    !store.keyRenewed &&
    record !== null &&
    existing !== null &&
    constantTimeEqual(record.digest, digest) &&
    constantTimeEqual(record.fileHash, existing)
  ) {
    return "unchanged";
  }
  const status = existing === null ? "created" : "updated";
  if (options.encrypt === false) return status;
  const credential = await encryptCredentialBytes(name, plaintext, {
    ...store.options,
    withKey,
    tpm2Pcrs: options.tpm2Pcrs,
  });
  const fileHash = createHash("sha256").update(credential).digest("hex");
  return {
    name,
    status,
    credential,
    record: `${RECORD_MAGIC} ${withKey} ${pcrs === "" ? "-" : pcrs} ${digest.toString("hex")} ${fileHash}\n`,
  };
}

/**
 * Writes a prepared credential: the credential first (atomically, 0400), then its record. A
 * crash in between leaves a record that does not match the file: the next run encrypts again.
 */
export function commitCredential(store: Credstore, prepared: PreparedCredential): void {
  const out = AtomicFile.open(credentialPath(store, prepared.name), 0o400);
  out.write(prepared.credential);
  out.commit();
  writeFileAtomic(recordPath(store, prepared.name), Buffer.from(prepared.record, "latin1"), 0o600);
}

/**
 * Makes the store's credential `name` hold `plaintext`, sealed with `withKey`: "unchanged" if it
 * already does (no process runs), else encrypted again ("created" or "updated"). The plaintext
 * goes to systemd-creds through a pipe; the caller still owns it and wipes it.
 */
export async function syncCredential(
  store: Credstore,
  name: string,
  plaintext: Uint8Array,
  withKey: CredentialKey,
  options: SyncOptions = {},
): Promise<SyncStatus> {
  const prepared = await prepareCredential(store, name, plaintext, withKey, options);
  if (typeof prepared === "string") return prepared;
  commitCredential(store, prepared);
  return prepared.status;
}

function duplicatesOf(items: readonly CredentialItem[]): {
  queue: CredentialItem[];
  problems: NixsealError[];
} {
  const problems: NixsealError[] = [];
  const seen = new Set<string>();
  const queue: CredentialItem[] = [];
  for (const item of items) {
    if (seen.has(item.name)) {
      problems.push(
        new NixsealError("CREDS_NAME", `credential ${item.name} is given twice`, {
          hint: "each credential name may be used by one secret only",
        }),
      );
    } else {
      seen.add(item.name);
      queue.push(item);
    }
  }
  return { queue, problems };
}

/** Runs `work` on every item, a few at a time; problems are collected, named after the credential. */
async function eachCredential(
  queue: readonly CredentialItem[],
  concurrency: number | undefined,
  problems: NixsealError[],
  work: (item: CredentialItem) => Promise<void>,
): Promise<void> {
  const n = Math.max(1, concurrency ?? Math.min(8, os.availableParallelism() * 2));
  let next = 0;
  const worker = async () => {
    while (next < queue.length) {
      const item = queue[next++]!;
      try {
        await work(item);
      } catch (e) {
        rethrowUnlessNixseal(e);
        problems.push(
          e.message.includes(item.name)
            ? e
            : new NixsealError(e.code, `credential ${item.name}: ${e.message}`, {
                hint: e.hint,
                file: e.file,
              }),
        );
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, queue.length) }, worker));
}

/**
 * syncCredentials in two steps, for callers that must be all-or-nothing (nixseal install): every
 * credential is compared and, if changed, encrypted, a few systemd-creds processes at a time,
 * but nothing is written. Commit the result with commitCredentials only if there is no problem.
 * With `encrypt: false` (dry runs) only the statuses are found.
 */
export async function prepareCredentials(
  store: Credstore,
  items: readonly CredentialItem[],
  options: { concurrency?: number; encrypt?: boolean } = {},
): Promise<{ results: Map<string, SyncStatus>; prepared: PreparedCredential[]; problems: NixsealError[] }> {
  const results = new Map<string, SyncStatus>();
  const prepared: PreparedCredential[] = [];
  const { queue, problems } = duplicatesOf(items);
  await eachCredential(queue, options.concurrency, problems, async (item) => {
    const p = await prepareCredential(store, item.name, item.plaintext, item.withKey, {
      ...item,
      encrypt: options.encrypt,
    });
    if (typeof p === "string") results.set(item.name, p);
    else {
      results.set(item.name, p.status);
      prepared.push(p);
    }
  });
  return { results, prepared, problems };
}

/**
 * Writes prepared credentials (each atomically, credential then record) and syncs the store's
 * directories. Every problem is collected; a credential whose write failed keeps its old file
 * and record, so it stays consistent and the next run encrypts it again.
 */
export function commitCredentials(
  store: Credstore,
  prepared: readonly PreparedCredential[],
): { written: string[]; problems: NixsealError[] } {
  const written: string[] = [];
  const problems: NixsealError[] = [];
  for (const p of prepared) {
    try {
      commitCredential(store, p);
      written.push(p.name);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(
        e.message.includes(p.name)
          ? e
          : new NixsealError(e.code, `credential ${p.name}: ${e.message}`, { hint: e.hint, file: e.file }),
      );
    }
  }
  syncDirectory(store.dir);
  syncDirectory(metaDir(store.dir));
  return { written, problems };
}

/**
 * syncCredential for many credentials, a few systemd-creds processes at a time. Every problem is
 * collected (named after its credential); the credentials that worked are in place either way.
 */
export async function syncCredentials(
  store: Credstore,
  items: readonly CredentialItem[],
  options: { concurrency?: number } = {},
): Promise<{ results: Map<string, SyncStatus>; problems: NixsealError[] }> {
  const results = new Map<string, SyncStatus>();
  const { queue, problems } = duplicatesOf(items);
  await eachCredential(queue, options.concurrency, problems, async (item) => {
    results.set(item.name, await syncCredential(store, item.name, item.plaintext, item.withKey, item));
  });
  syncDirectory(store.dir);
  syncDirectory(metaDir(store.dir));
  return { results, problems };
}

/** The names of the credentials this store holds (those with a record). */
export function storedCredentials(store: Credstore): string[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(metaDir(store.dir));
  } catch (e) {
    // A store not made yet (a read-only open) holds nothing.
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw ioError("read", metaDir(store.dir), e);
  }
  return entries
    .filter((f) => f.endsWith(RECORD_SUFFIX))
    .map((f) => f.slice(0, -RECORD_SUFFIX.length))
    .filter((n) => {
      try {
        validateCredentialName(n);
        return true;
      } catch {
        return false;
      }
    })
    .sort();
}

function isLeftoverTemp(dir: string, file: string): boolean {
  if (!/^\..+\.[0-9a-f]{12}\.tmp$/.test(file)) return false;
  try {
    return Date.now() - fs.lstatSync(path.join(dir, file)).mtimeMs > STALE_TEMP_AGE_MS;
  } catch {
    return false;
  }
}

/**
 * Removes the credentials of this store that are not in `keep` (and their records), and temp
 * files a killed run left behind. Only credentials with a record are touched: files someone else
 * put in the directory stay. Every problem is collected.
 */
export function removeStale(
  store: Credstore,
  keep: Iterable<string>,
): { removed: string[]; problems: NixsealError[] } {
  const keepSet = new Set(keep);
  const removed: string[] = [];
  const problems: NixsealError[] = [];
  const unlink = (file: string) => {
    try {
      fs.unlinkSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("remove", file, e);
    }
  };
  for (const name of storedCredentials(store)) {
    if (keepSet.has(name)) continue;
    try {
      // The credential first: a record without a credential is harmless, the reverse is not ours.
      unlink(credentialPath(store, name));
      unlink(recordPath(store, name));
      removed.push(name);
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e);
      else throw e;
    }
  }
  for (const dir of [store.dir, metaDir(store.dir)]) {
    for (const f of fs.readdirSync(dir)) {
      if (!isLeftoverTemp(dir, f)) continue;
      try {
        unlink(path.join(dir, f));
      } catch (e) {
        if (e instanceof NixsealError) problems.push(e);
        else throw e;
      }
    }
    syncDirectory(dir);
  }
  return { removed, problems };
}

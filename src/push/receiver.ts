/**
 * `nixseal receive`: the host's side of a push (src/push/protocol.ts). The layout it keeps, all in
 * RAM (docs/architecture.md, invariant 2):
 *
 *   /run/nixseal-keys/                     root 0751, on the tmpfs/ramfs of /run
 *   /run/nixseal-keys/<h>/                 one per destDir; <h> = first 32 hex digits of SHA-256(destDir)
 *   /run/nixseal-keys/<h>/<N>/             generation N: the keys' files, each with its owner and mode
 *   /run/nixseal-keys/<h>/<N>.json         root 0600: the keys' metadata (names, owners, units; no value)
 *   destDir -> /run/nixseal-keys/<h>/<N>   a symlink, replaced atomically (rename) by the next push
 *
 * That is the "link" layout, for a destDir that does not exist before the first push. A destDir
 * that is already a real directory (NixOS mounts a ramfs at /run/keys, mode 0750 group keys) keeps
 * its own mode, group and mount; its generations live inside it (the "inside" layout):
 *
 *   destDir/.nixseal/                      root 0751
 *   destDir/.nixseal/<N>/                  generation N, as above
 *   destDir/.nixseal/current -> <N>        a relative symlink, replaced atomically by the next push
 *   destDir/<name> -> .nixseal/current/<name>   one symlink per key; made before the switch,
 *                                          removed (for removed keys) after it
 *
 * The records stay in /run/nixseal-keys/<h>/<N>.json. A file at destDir/<name> that is not
 * nixseal's symlink is never replaced: the push is refused before anything changes.
 *
 * Why: a new generation is complete before the one rename that makes it current, so a reader of
 * destDir sees the old set or the new one, never a mix; unchanged keys are hard links to the
 * previous generation's files (the same inode, byte-identical); the record of which keys a destDir
 * holds is the one beside the generation its symlink names, so record and files cannot disagree.
 * A generation directory is 0750 and in the keys' group when all its keys share one group (as
 * NixOps' /run/keys, root:keys), else 0751 root's; each file has its own owner, group and mode.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Readable, Writable } from "node:stream";
import {
  booleanField,
  ioError,
  isObject,
  type Json,
  NixsealError,
  Problems,
  pathProblem,
  readAllSync,
  rethrowUnlessNixseal,
  wipe,
  writeFileAtomic,
} from "../common/index.js";
import type { SystemdCredsOptions } from "../creds/index.js";
import {
  createSecretFile,
  InstallLock,
  OwnerResolver,
  ramKindOf,
  replaceSymlink,
  systemctlVerb,
} from "../install/index.js";
import { KEYS_ROOT, readWireKey, type WireKey, wireKey } from "./plan.js";
import {
  FRAME,
  FrameReader,
  FrameWriter,
  type KeyOutcome,
  keyDigest,
  MAX_KEY_SIZE,
  noKeyOutcome,
  PROTOCOL_VERSION,
} from "./protocol.js";
import {
  abortSeals,
  DEFAULT_KEYS_CREDSTORE,
  planSeals,
  pruneSeals,
  readSealedStore,
  type SealPlan,
  type StagedSeals,
  stageSeals,
  switchSeals,
  unsealAll,
} from "./sealed-keys.js";

export interface ReceiveResult extends KeyOutcome {
  ok: boolean;
  dryRun: boolean;
}

export interface ReceiveOptions {
  /** Where the generations live (default /run/nixseal-keys). */
  root?: string;
  /** The credential store of keys with persist "credential" (default /etc/credstore.encrypted). */
  credstore?: string;
  /** How systemd-creds is run (tests: its program, TPM2 device). */
  creds?: SystemdCredsOptions;
  /** Called once the whole stream has arrived and been checked, before anything changes. */
  onCommit?: () => void;
}

/** A key the host holds now. */
interface HeldKey {
  meta: WireKey;
  /** The directory of its destDir's records, and the current generation. */
  hdir: string;
  gen: number;
  /** The directory of the current generation (in hdir, or inside destDir). */
  gdir: string;
  /** SHA-256 of the sealed file it was sealed into (persist "credential"; src/push/sealed-keys.ts). */
  sealed: string | null;
}

/** nixseal's directory inside a destDir that is a real directory ("inside" layout). */
export const INSIDE_DIR = ".nixseal";
const GEN_NAME = /^[1-9][0-9]{0,9}$/;

/** A real directory, root's, not writable by group or others (lstat: never a symlink). */
function isRootDir(p: string): boolean {
  try {
    const st = fs.lstatSync(p);
    return st.isDirectory() && st.uid === 0 && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** The generation `destDir/.nixseal/current` names, if destDir has the inside layout. */
function insideCurrent(destDir: string): number | null {
  if (!isRootDir(destDir) || !isRootDir(`${destDir}/${INSIDE_DIR}`)) return null;
  try {
    const t = fs.readlinkSync(`${destDir}/${INSIDE_DIR}/current`);
    return GEN_NAME.test(t) ? Number(t) : null;
  } catch {
    return null;
  }
}

/** The target of the symlink destDir/<name> in the inside layout. */
function insideLink(name: string): string {
  return `${INSIDE_DIR}/current/${name}`;
}

/** Whether destDir/<name> is nixseal's symlink for that key. */
function isOurLink(destDir: string, name: string): boolean {
  try {
    return fs.readlinkSync(`${destDir}/${name}`) === insideLink(name);
  } catch {
    return false;
  }
}

const HASH_DIR = /^[0-9a-f]{32}$/;
const GEN_JSON = /^([1-9][0-9]{0,9})\.json$/;
const MAX_RECORD = 16 * 1024 * 1024;
/** The most key paths a hello names (a bound on the work it asks for). */
const MAX_HELLO_FILES = 100_000;

export function hashDirOf(root: string, destDir: string): string {
  return `${root}/${createHash("sha256").update(destDir).digest("hex").slice(0, 32)}`;
}

/** The current generation of a hash directory: the one its destDir's symlink names. */
function currentKeys(root: string): { keys: Map<string, HeldKey>; gens: Map<string, number> } {
  const keys = new Map<string, HeldKey>();
  const gens = new Map<string, number>();
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { keys, gens };
    throw ioError("read", root, e);
  }
  for (const h of entries) {
    if (!HASH_DIR.test(h)) continue;
    const hdir = `${root}/${h}`;
    const records = fs
      .readdirSync(hdir)
      .map((f) => GEN_JSON.exec(f))
      .filter((m) => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => b - a);
    for (const gen of records) {
      const record = readRecord(`${hdir}/${gen}.json`);
      if (record === null || hashDirOf(root, record.destDir) !== hdir) continue;
      let target: string | null = null;
      try {
        target = fs.readlinkSync(record.destDir);
      } catch {}
      let gdir: string;
      if (target === `${hdir}/${gen}`) gdir = target;
      else if (target === null && insideCurrent(record.destDir) === gen)
        gdir = `${record.destDir}/${INSIDE_DIR}/${gen}`;
      else continue;
      gens.set(hdir, gen);
      for (const k of record.keys)
        keys.set(k.key, { meta: k, hdir, gen, gdir, sealed: record.sealed.get(k.key) ?? null });
      break;
    }
  }
  return { keys, gens };
}

function readRecord(file: string): { destDir: string; keys: WireKey[]; sealed: Map<string, string> } | null {
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile() || st.size > MAX_RECORD || st.uid !== 0) return null;
    const json = JSON.parse(fs.readFileSync(file, "utf8")) as unknown;
    if (!isObject(json) || typeof json.destDir !== "string" || !Array.isArray(json.keys)) return null;
    const p = new Problems("PUSH", file);
    const keys = json.keys.map((k, i) => readWireKey(k, `keys[${i}]`, p)).filter((k) => k !== null);
    if (p.list.length > 0) return null;
    const sealed = new Map<string, string>();
    if (isObject(json.sealed))
      for (const [k, v] of Object.entries(json.sealed))
        if (typeof v === "string" && /^[0-9a-f]{64}$/.test(v)) sealed.set(k, v);
    return { destDir: json.destDir, keys, sealed };
  } catch {
    return null;
  }
}

/** The content of a held key if its file is as recorded (regular, owner, group, mode), else null. */
function readHeld(k: HeldKey, owners: OwnerResolver): Buffer | null {
  const file = `${k.gdir}/${k.meta.name}`;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fs.fstatSync(fd);
    if (
      !st.isFile() ||
      st.size > MAX_KEY_SIZE ||
      (st.mode & 0o7777) !== k.meta.mode ||
      st.uid !== owners.id("passwd", k.meta.owner) ||
      st.gid !== owners.id("group", k.meta.group)
    )
      return null;
    return readAllSync(fd, st.size);
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Why destDir can hold neither layout, or null. Nothing is changed. Absent (or nixseal's symlink):
 * the link layout. A real directory (a mount point such as NixOS's /run/keys, or not): the inside
 * layout, if it is root's, not writable by others, in RAM, and its .nixseal (if any) is root's.
 */
export function destDirProblem(root: string, destDir: string): string | null {
  const why = pathProblem(destDir);
  if (why !== null) return why;
  const parts = destDir.split("/").slice(1);
  let cur = "";
  for (let i = 0; i < parts.length - 1; i++) {
    cur += `/${parts[i]}`;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch {
      break; // created by the push (root's, 0755)
    }
    if (st.isSymbolicLink()) return `is under the symlink ${cur}`;
    if (!st.isDirectory()) return `is under ${cur}, which is not a directory`;
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(destDir);
  } catch {
    return null;
  }
  if (st.isSymbolicLink()) {
    const target = fs.readlinkSync(destDir);
    const ours = new RegExp(
      `^${hashDirOf(root, destDir).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/[1-9][0-9]*$`,
    );
    return ours.test(target) ? null : "is a symlink nixseal did not make";
  }
  if (!st.isDirectory()) return "is a file, not a directory";
  if (st.uid !== 0) return "is a directory root does not own";
  if ((st.mode & 0o022) !== 0) return "is a directory others than root can write to";
  if (ramKindOf(destDir) === null) return "is a directory on a disk, not on a tmpfs or ramfs";
  let inner: fs.Stats | null = null;
  try {
    inner = fs.lstatSync(`${destDir}/${INSIDE_DIR}`);
  } catch {}
  if (inner !== null && !isRootDir(`${destDir}/${INSIDE_DIR}`))
    return `has a ${INSIDE_DIR} that is not a directory only root can write`;
  return null;
}

const DEST_DIR_HINT =
  "a destDir is either absent (nixseal makes it a symlink into RAM) or a root-owned directory in RAM (such as NixOS's /run/keys): fix it on the host, or choose another destDir";

function problemJson(e: NixsealError): Json {
  return { message: e.message, hint: e.hint ?? "" };
}

/** Runs the host's side of one push: reads from `input`, answers on `output`. */
export async function receive(
  input: Readable,
  output: Writable,
  options: ReceiveOptions = {},
): Promise<ReceiveResult> {
  const root = options.root ?? KEYS_ROOT;
  const reader = new FrameReader(input, "the deployer");
  const writer = new FrameWriter(output);
  await reader.magic();
  const hello = await reader.json(FRAME.hello, "the hello");
  const p = new Problems("PUSH", "push");
  if (
    !isObject(hello) ||
    hello.version !== PROTOCOL_VERSION ||
    typeof hello.nonce !== "string" ||
    !/^[0-9a-f]{64}$/.test(hello.nonce) ||
    typeof hello.dryRun !== "boolean" ||
    !Array.isArray(hello.destDirs) ||
    !hello.destDirs.every((d) => typeof d === "string") ||
    (hello.files !== undefined &&
      (!Array.isArray(hello.files) ||
        hello.files.length > MAX_HELLO_FILES ||
        !hello.files.every(
          (f) =>
            Array.isArray(f) &&
            f.length === 2 &&
            typeof f[0] === "string" &&
            typeof f[1] === "string" &&
            (hello.destDirs as unknown[]).includes(f[0]),
        )))
  ) {
    throw new NixsealError("PUSH", "the deployer's hello is malformed or of another protocol version", {
      hint: "use the same nixseal version on the deployer and the host",
    });
  }
  const nonce = Buffer.from(hello.nonce, "hex");
  const dryRun = hello.dryRun;
  const result: ReceiveResult = { ok: false, dryRun, ...noKeyOutcome() };

  checkRoot(root, p);
  const lock = p.list.length === 0 ? await InstallLock.acquire(root, 60_000) : null;
  try {
    const badDirs = new Set<string>();
    for (const d of hello.destDirs as string[]) {
      const why = destDirProblem(root, d);
      if (why !== null) {
        p.add("", `destDir ${d} ${why}`, DEST_DIR_HINT);
        badDirs.add(d);
      }
    }
    // The keys' paths (so a dry run shows them too): never over a file nixseal did not make.
    for (const [d, name] of (hello.files ?? []) as [string, string][]) {
      if (badDirs.has(d) || pathProblem(`${d}/${name}`) !== null || name.includes("/")) continue;
      const why = keyFileProblem(d, name);
      if (why !== null) p.add("", why.message, why.hint);
    }
    const { keys: held, gens } =
      p.list.length === 0 ? currentKeys(root) : { keys: new Map(), gens: new Map() };
    const owners = new OwnerResolver();
    for (const k of held.values()) {
      owners.want("passwd", k.meta.owner);
      owners.want("group", k.meta.group);
    }
    owners.resolve();
    const state: Json[] = [];
    for (const k of held.values()) {
      const content = readHeld(k, owners);
      state.push({ ...wireKey(k.meta), digest: content === null ? "" : keyDigest(nonce, k.meta, content) });
      wipe(content);
    }
    await writer.magic();
    await writer.json(FRAME.state, {
      version: PROTOCOL_VERSION,
      keys: state,
      problems: p.list.map(problemJson),
    });
    if (p.list.length > 0) {
      result.problems = p.list;
      return result;
    }
    if (dryRun) {
      result.ok = true;
      return result;
    }

    const apply = await reader.json(FRAME.apply, "the list of keys");
    const wanted = readApply(apply, held, hello.destDirs as string[], gens, root);
    const contents = new Map<string, Buffer>();
    try {
      for (const k of wanted) {
        if (!k.send) continue;
        contents.set(
          k.meta.key,
          await reader.expect(FRAME.data, MAX_KEY_SIZE, `the content of key "${k.meta.key}"`),
        );
      }
      const end = await reader.expect(FRAME.end, 32, "the end of the stream");
      if (!end.equals(reader.digestBeforeFrame)) {
        throw new NixsealError("PUSH", "the stream's checksum does not match: it was altered on the way", {
          hint: "nothing was changed; push again",
        });
      }
      options.onCommit?.();
      const seals = await sealsFor(options, wanted, held, contents);
      if (seals.problems.length > 0) result.problems = nothingChanged(seals.problems);
      else
        commit(root, wanted, held, gens, contents, result, {
          seals: seals.plan,
          credstore: credstoreOf(options),
        });
    } finally {
      for (const c of contents.values()) wipe(c);
    }
    result.ok = result.problems.length === 0;
    await writer
      .json(FRAME.result, {
        ok: result.ok,
        added: result.added,
        changed: result.changed,
        removed: result.removed,
        kept: result.kept,
        restarted: result.restarted,
        reloaded: result.reloaded,
        started: result.started,
        stopped: result.stopped,
        sealed: result.sealed,
        unsealed: result.unsealed,
        problems: result.problems.map(problemJson),
      })
      .catch(() => {});
    return result;
  } finally {
    lock?.release();
  }
}

/**
 * `nixseal receive --restore`, at boot: the keys with persist "credential" back into RAM from the
 * credstore, each unsealed with `systemd-creds decrypt` and installed as a push installs it (a
 * new generation, owners and modes at creation, one rename per destDir). The credstore is not
 * changed. A key that cannot be restored (its sealed file does not decrypt: another host,
 * tampered; its owner unknown; its path taken) is a problem named after it; the others are
 * restored. Keys already in RAM that are not persisted stay as they are. No unit is started: the
 * key units are ordered after the restore and start by themselves.
 */
export async function restore(options: ReceiveOptions = {}): Promise<ReceiveResult> {
  const root = options.root ?? KEYS_ROOT;
  const result: ReceiveResult = { ok: false, dryRun: false, ...noKeyOutcome() };
  let store: ReturnType<typeof readSealedStore>;
  try {
    store = readSealedStore(credstoreOf(options));
  } catch (e) {
    rethrowUnlessNixseal(e);
    result.problems = [e];
    return result;
  }
  const { keys: unsealed, problems } = await unsealAll(store, options.creds ?? {});
  const contents = new Map<string, Buffer>();
  try {
    if (unsealed.length === 0) {
      result.problems = problems;
      result.ok = problems.length === 0;
      return result;
    }
    const p = new Problems("PUSH", "restore");
    checkRoot(root, p);
    if (p.list.length > 0) {
      result.problems = [...problems, ...p.list];
      return result;
    }
    const lock = await InstallLock.acquire(root, 60_000);
    try {
      const { keys: held, gens } = currentKeys(root);
      const owners = new OwnerResolver();
      for (const k of unsealed) {
        owners.want("passwd", k.meta.owner);
        owners.want("group", k.meta.group);
      }
      owners.resolve();
      const badDirs = new Map<string, string>();
      for (const d of new Set(unsealed.map((k) => k.meta.destDir))) {
        const why = destDirProblem(root, d);
        if (why !== null) badDirs.set(d, `destDir ${d} ${why}`);
      }
      const wanted: Wanted[] = [];
      const files = new Set<string>();
      const sealedSha = new Map<string, string>();
      for (const k of unsealed) {
        const why =
          badDirs.get(k.meta.destDir) ??
          (owners.id("passwd", k.meta.owner) === undefined ? `unknown user ${k.meta.owner}` : null) ??
          (owners.id("group", k.meta.group) === undefined ? `unknown group ${k.meta.group}` : null) ??
          keyFileProblem(k.meta.destDir, k.meta.name)?.message ??
          null;
        if (why !== null) {
          problems.push(
            new NixsealError("PUSH", `key "${k.meta.key}" was not restored: ${why}`, {
              hint: "fix it on the host; the next nixseal push sends the key again",
            }),
          );
          continue;
        }
        wanted.push({ meta: k.meta, send: true });
        contents.set(k.meta.key, Buffer.from(k.value));
        files.add(`${k.meta.destDir}/${k.meta.name}`);
        sealedSha.set(k.meta.key, k.sha);
      }
      // Keys in RAM that are not restored stay (kept, as by a push that does not name them).
      for (const h of held.values()) {
        if (contents.has(h.meta.key) || files.has(`${h.meta.destDir}/${h.meta.name}`)) continue;
        wanted.push({ meta: h.meta, send: false });
        if (h.sealed !== null) sealedSha.set(h.meta.key, h.sealed);
      }
      if (contents.size > 0)
        commit(root, wanted, held, gens, contents, result, {
          seals: null,
          sealedSha,
          credstore: credstoreOf(options),
          notify: false,
        });
      result.problems = [...problems, ...result.problems];
      result.ok = result.problems.length === 0;
      return result;
    } finally {
      lock.release();
    }
  } finally {
    for (const k of unsealed) wipe(k.value);
    for (const c of contents.values()) wipe(c);
  }
}

/** Nixseal's own directory in RAM, made if absent; anything else is a problem (nothing is done). */
function checkRoot(root: string, p: Problems): void {
  try {
    fs.mkdirSync(root, { mode: 0o751 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") p.list.push(ioError("create the directory", root, e));
  }
  if (p.list.length === 0) {
    const st = fs.lstatSync(root);
    if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0)
      p.add("", `${root} is not a directory only root can write`, "remove what is there; nixseal creates it");
    else if (ramKindOf(root) === null)
      p.add("", `${root} is not on a tmpfs or ramfs`, "keys never reach a disk: /run must be a tmpfs");
  }
}

function credstoreOf(options: ReceiveOptions): string {
  return options.credstore ?? DEFAULT_KEYS_CREDSTORE;
}

function nothingChanged(problems: NixsealError[]): NixsealError[] {
  return problems.map(
    (e) => new NixsealError(e.code, `nothing changed: ${e.message}`, { hint: e.hint, file: e.file }),
  );
}

/**
 * The credstore's part of a push: null when no key is or was persisted (then nothing on disk is
 * read or written), else the keys sealed in memory and the next generation decided.
 */
async function sealsFor(
  options: ReceiveOptions,
  wanted: Wanted[],
  held: Map<string, HeldKey>,
  contents: Map<string, Buffer>,
): Promise<{ plan: SealPlan | null; problems: NixsealError[] }> {
  const credstore = credstoreOf(options);
  const any =
    wanted.some((w) => w.meta.persist === "credential") ||
    [...held.values()].some((h) => h.meta.persist === "credential") ||
    fs.existsSync(`${credstore}/nixseal-keys`);
  if (!any) return { plan: null, problems: [] };
  let store: ReturnType<typeof readSealedStore>;
  try {
    store = readSealedStore(credstore);
  } catch (e) {
    rethrowUnlessNixseal(e);
    return { plan: null, problems: [e] };
  }
  const owners = new OwnerResolver();
  for (const h of held.values()) {
    owners.want("passwd", h.meta.owner);
    owners.want("group", h.meta.group);
  }
  owners.resolve();
  const read: Buffer[] = [];
  try {
    const r = await planSeals(
      store,
      wanted.map((w) => {
        const h = held.get(w.meta.key);
        return {
          meta: w.meta,
          heldSealed: !w.send && h !== undefined ? h.sealed : null,
          content: () => {
            if (w.send) return contents.get(w.meta.key)!;
            if (h === undefined) return null;
            const c = readHeld(h, owners);
            if (c !== null) read.push(c);
            return c;
          },
        };
      }),
      options.creds ?? {},
    );
    return r;
  } finally {
    for (const c of read) wipe(c);
  }
}

const PROTOCOL_HINT = "use the same nixseal version on the deployer and the host";

interface Wanted {
  meta: WireKey;
  send: boolean;
}

function readApply(
  v: unknown,
  held: Map<string, HeldKey>,
  destDirs: string[],
  gens: Map<string, number>,
  root: string,
): Wanted[] {
  const p = new Problems("PUSH", "the key list");
  const out: Wanted[] = [];
  if (!isObject(v) || !Array.isArray(v.keys) || Object.keys(v).length !== 1) {
    throw new NixsealError("PUSH", "the deployer's key list is malformed", {
      hint: "use the same nixseal version on both sides",
    });
  }
  const seen = new Set<string>();
  const files = new Set<string>();
  const allowedDirs = new Set([...destDirs, ...[...held.values()].map((k) => k.meta.destDir)]);
  v.keys.forEach((x, i) => {
    const k = readWireKey(x, `keys[${i}]`, p, {
      send: {
        required: true,
        read: booleanField("send is true or false"),
      },
    });
    if (k === null) return;
    const send = k.extra.get("send") as boolean;
    if (seen.has(k.key)) p.add(`keys[${i}]`, `key "${k.key}" twice`, PROTOCOL_HINT);
    seen.add(k.key);
    const f = `${k.destDir}/${k.name}`;
    if (files.has(f)) p.add(`keys[${i}]`, `${f} twice`, PROTOCOL_HINT);
    files.add(f);
    if (!allowedDirs.has(k.destDir))
      p.add(`keys[${i}]`, `destDir ${k.destDir} was not checked`, PROTOCOL_HINT);
    if (!send) {
      const h = held.get(k.key);
      if (
        h === undefined ||
        h.meta.destDir !== k.destDir ||
        h.meta.name !== k.name ||
        h.meta.owner !== k.owner ||
        h.meta.group !== k.group ||
        h.meta.mode !== k.mode
      )
        p.add(
          `keys[${i}]`,
          `key "${k.key}" is to be kept but the host holds no such key`,
          "push again (another push ran in between?)",
        );
    }
    const { extra: _, ...meta } = k;
    out.push({ meta, send });
  });
  void gens;
  void root;
  p.throwIfAny();
  return out;
}

/** The generation directory's mode and group: 0750 in the keys' one group, else 0751 root's. */
function dirOwnerOf(keys: readonly WireKey[], owners: OwnerResolver): { mode: number; gid: number } {
  const groups = new Set(keys.map((k) => k.group));
  if (groups.size === 1) return { mode: 0o750, gid: owners.id("group", keys[0]!.group) ?? 0 };
  return { mode: 0o751, gid: 0 };
}

function sameMeta(a: WireKey, b: WireKey): boolean {
  return JSON.stringify(wireKey(a)) === JSON.stringify(wireKey(b));
}

/**
 * Why destDir/<name> cannot be a key's path, or null: inside a real directory each key is a
 * symlink destDir/<name>, never made over a file nixseal did not make.
 */
function keyFileProblem(destDir: string, name: string): { message: string; hint: string } | null {
  if (layoutOf(destDir) !== "inside") return null;
  const f = `${destDir}/${name}`;
  if (name === INSIDE_DIR)
    return { message: `${f} is nixseal's own directory`, hint: "give the key another name" };
  if ((fs.existsSync(f) || isSymlink(f)) && !isOurLink(destDir, name))
    return {
      message: `${f} is a file nixseal did not make`,
      hint: "nixseal never replaces it: remove it on the host (e.g. a key another tool such as NixOps left there), or give the key another name or destDir",
    };
  return null;
}

/** The layout a destDir gets now: inside a real directory, else destDir is nixseal's symlink. */
function layoutOf(destDir: string): "inside" | "link" {
  try {
    return fs.lstatSync(destDir).isDirectory() ? "inside" : "link";
  } catch {
    return "link";
  }
}

interface Staged {
  destDir: string;
  hdir: string;
  gen: number;
  layout: "inside" | "link";
  /** The generation's directory. */
  gdir: string;
  /** The key names of the new generation. */
  names: Set<string>;
  /** destDir/<name> links made before the switch (removed if the push fails before it). */
  links: string[];
}

/** Stages every changed destDir's new generation, then switches them, prunes, and notifies units. */
function commit(
  root: string,
  wanted: Wanted[],
  held: Map<string, HeldKey>,
  gens: Map<string, number>,
  contents: Map<string, Buffer>,
  result: ReceiveResult,
  options: {
    seals: SealPlan | null;
    credstore: string;
    /** The sealed files' SHA-256 for the RAM records when seals is null (a restore). */
    sealedSha?: Map<string, string>;
    notify?: boolean;
  },
): void {
  const owners = new OwnerResolver();
  for (const w of wanted) {
    owners.want("passwd", w.meta.owner);
    owners.want("group", w.meta.group);
  }
  owners.resolve();
  const problems = new Problems("PUSH", "push");
  for (const w of wanted) {
    if (owners.id("passwd", w.meta.owner) === undefined)
      problems.add(
        "",
        `key "${w.meta.key}": unknown user ${w.meta.owner}`,
        "create the user on the host first, or fix owner",
      );
    if (owners.id("group", w.meta.group) === undefined)
      problems.add(
        "",
        `key "${w.meta.key}": unknown group ${w.meta.group}`,
        "create the group on the host first, or fix group",
      );
    const why = keyFileProblem(w.meta.destDir, w.meta.name);
    if (why !== null) problems.add("", `key "${w.meta.key}": ${why.message}`, why.hint);
  }
  if (problems.list.length > 0) {
    result.problems = problems.list;
    return;
  }
  const wantedKeys = new Set(wanted.map((w) => w.meta.key));
  const removed = [...held.values()].filter((h) => !wantedKeys.has(h.meta.key));
  for (const w of wanted) {
    const h = held.get(w.meta.key);
    if (h === undefined) result.added.push(w.meta.key);
    else if (w.send) result.changed.push(w.meta.key);
    else result.kept.push(w.meta.key);
  }
  result.removed = removed.map((h) => h.meta.key);

  // The SHA-256 of each persisted key's sealed file, for the RAM records.
  const sealedSha =
    options.sealedSha ?? new Map((options.seals?.entries ?? []).map((e) => [e.meta.key, e.sha]));
  const sealedOf = (key: string): string | null => sealedSha.get(key) ?? null;
  let stagedSeals: StagedSeals | null = null;

  // Which destDirs get a new generation: those whose keys or records differ.
  const byDir = new Map<string, Wanted[]>();
  for (const w of wanted) {
    const list = byDir.get(w.meta.destDir) ?? [];
    list.push(w);
    byDir.set(w.meta.destDir, list);
  }
  const heldDirs = new Set([...held.values()].map((h) => h.meta.destDir));
  const staged: Staged[] = [];
  const emptied: string[] = [];
  for (const d of heldDirs) if (!byDir.has(d)) emptied.push(d);
  try {
    for (const [destDir, list] of byDir) {
      const hdir = hashDirOf(root, destDir);
      const prev = gens.get(hdir);
      const heldHere = [...held.values()].filter((h) => h.meta.destDir === destDir);
      const unchanged =
        prev !== undefined &&
        heldHere.length === list.length &&
        list.every((w) => {
          const h = held.get(w.meta.key);
          return !w.send && h !== undefined && sameMeta(h.meta, w.meta) && h.sealed === sealedOf(w.meta.key);
        });
      if (unchanged) continue;
      const layout = layoutOf(destDir);
      const inside = `${destDir}/${INSIDE_DIR}`;
      fs.mkdirSync(hdir, { recursive: true, mode: 0o751 });
      if (layout === "inside") {
        try {
          fs.mkdirSync(inside, { mode: 0o751 });
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        }
      }
      let gen = (prev ?? 0) + 1;
      for (const f of [...fs.readdirSync(hdir), ...(layout === "inside" ? fs.readdirSync(inside) : [])]) {
        const m = /^([1-9][0-9]{0,9})(\.json)?$/.exec(f);
        if (m) gen = Math.max(gen, Number(m[1]) + 1);
      }
      const gdir = layout === "inside" ? `${inside}/${gen}` : `${hdir}/${gen}`;
      const s: Staged = { destDir, hdir, gen, layout, gdir, names: new Set(), links: [] };
      staged.push(s);
      const { mode, gid } = dirOwnerOf(
        list.map((w) => w.meta),
        owners,
      );
      fs.mkdirSync(gdir, { mode });
      if (gid !== 0) fs.chownSync(gdir, 0, gid);
      const target = { dir: gdir, created: { uid: process.geteuid!(), gid: process.getegid!() } };
      for (const w of list) {
        s.names.add(w.meta.name);
        if (w.send) {
          createSecretFile(
            target,
            w.meta.name,
            {
              uid: owners.id("passwd", w.meta.owner)!,
              gid: owners.id("group", w.meta.group)!,
              mode: w.meta.mode,
            },
            contents.get(w.meta.key)!,
            new Set(),
          );
        } else {
          const h = held.get(w.meta.key)!;
          fs.linkSync(`${h.gdir}/${h.meta.name}`, `${gdir}/${w.meta.name}`);
        }
      }
      const sealed: Record<string, string> = {};
      for (const w of list) {
        const sha = sealedOf(w.meta.key);
        if (sha !== null) sealed[w.meta.key] = sha;
      }
      writeFileAtomic(
        `${hdir}/${gen}.json`,
        Buffer.from(
          JSON.stringify({
            destDir,
            keys: list.map((w) => wireKey(w.meta)),
            ...(Object.keys(sealed).length > 0 ? { sealed } : {}),
          }),
        ),
        0o600,
      );
      // The links of new names, before the switch (dangling until it, if the name is new).
      if (layout === "inside") {
        for (const name of s.names) {
          if (isOurLink(destDir, name)) continue;
          fs.symlinkSync(insideLink(name), `${destDir}/${name}`);
          s.links.push(`${destDir}/${name}`);
        }
      }
    }
    // The credstore's next generation, complete on disk before either switch.
    if (options.seals !== null) stagedSeals = stageSeals(options.credstore, options.seals);
    // Its switch first: a crash from here on leaves the credstore new and RAM old, or both new; a
    // restore after a reboot gets the new set, a push before one finds RAM out of step and seals
    // from RAM again (src/push/sealed-keys.ts).
    if (stagedSeals !== null) switchSeals(stagedSeals);
  } catch (e) {
    // Nothing was switched: remove what was staged, the current generations stay.
    abortSeals(stagedSeals);
    for (const s of staged) {
      for (const l of s.links) fs.rmSync(l, { force: true });
      fs.rmSync(s.gdir, { recursive: true, force: true });
      fs.rmSync(`${s.hdir}/${s.gen}.json`, { force: true });
    }
    const err = e instanceof NixsealError ? e : ioError("write the keys into", root, e);
    result.problems = [
      new NixsealError("PUSH", `nothing changed: ${err.message}`, {
        hint: /ENOSPC|no space/i.test(err.message)
          ? "the RAM filesystem is full: free space on /run (or make it larger) and push again"
          : (err.hint ?? "fix the cause and push again"),
      }),
    ];
    result.added = [];
    result.changed = [];
    result.removed = [];
    result.kept = [];
    return;
  }
  if (stagedSeals !== null) {
    result.sealed = stagedSeals.plan.sealed;
    result.unsealed = stagedSeals.plan.unsealed;
    pruneSeals(stagedSeals);
  }

  // The switch: one rename per destDir.
  for (const s of staged) {
    try {
      if (s.layout === "inside") {
        replaceSymlink(`${s.destDir}/${INSIDE_DIR}/current`, String(s.gen));
      } else {
        if (!fs.existsSync(s.destDir) && !isSymlink(s.destDir))
          fs.mkdirSync(path.dirname(s.destDir), { recursive: true, mode: 0o755 });
        replaceSymlink(s.destDir, s.gdir);
      }
    } catch (e) {
      rethrowUnlessNixseal(e);
      result.problems.push(e);
      continue;
    }
    prune(s.hdir, s.gen);
    if (s.layout === "inside") {
      // Links of names no longer in this destDir, then the older generations.
      for (const h of held.values())
        if (h.meta.destDir === s.destDir && !s.names.has(h.meta.name) && isOurLink(s.destDir, h.meta.name))
          fs.rmSync(`${s.destDir}/${h.meta.name}`, { force: true });
      prune(`${s.destDir}/${INSIDE_DIR}`, s.gen, "current");
    }
  }
  for (const d of emptied) {
    const hdir = hashDirOf(root, d);
    if (layoutOf(d) === "inside") {
      for (const h of held.values())
        if (h.meta.destDir === d && isOurLink(d, h.meta.name))
          fs.rmSync(`${d}/${h.meta.name}`, { force: true });
      if (isRootDir(`${d}/${INSIDE_DIR}`)) fs.rmSync(`${d}/${INSIDE_DIR}`, { recursive: true, force: true });
    } else {
      try {
        if (fs.readlinkSync(d).startsWith(`${hdir}/`)) fs.unlinkSync(d);
      } catch {}
    }
    fs.rmSync(hdir, { recursive: true, force: true });
  }

  // Units: one systemctl call per verb (none for a restore at boot: the key units are ordered
  // after it and start by themselves).
  if (options.notify === false) return;
  const touched = wanted.filter((w) => w.send).map((w) => w.meta);
  const union = (xs: string[][]) => [...new Set(xs.flat())];
  const stop = union(removed.map((h) => (h.meta.keyUnit ? [h.meta.keyUnit] : [])));
  const start = union(
    wanted.filter((w) => !held.has(w.meta.key) && w.meta.keyUnit).map((w) => [w.meta.keyUnit!]),
  );
  const restart = union(touched.map((k) => k.restartUnits));
  const reload = union(touched.map((k) => k.reloadUnits)).filter((u) => !restart.includes(u));
  for (const [verb, units, into] of [
    ["stop", stop, result.stopped],
    ["start", start, result.started],
    ["try-restart", restart, result.restarted],
    ["try-reload-or-restart", reload, result.reloaded],
  ] as const) {
    if (units.length === 0) continue;
    const e = systemctlVerb(verb, units);
    if (e === null) into.push(...units);
    else result.problems.push(new NixsealError("PUSH", e.message, { hint: e.hint }));
  }
}

/** Removes the generations (and records) in `dir` other than `keep` (and `also`). */
function prune(dir: string, keep: number, also?: string): void {
  for (const f of fs.readdirSync(dir)) {
    if (f === String(keep) || f === `${keep}.json` || f === also) continue;
    fs.rmSync(`${dir}/${f}`, { recursive: true, force: true });
  }
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** A fresh nonce for a push (the deployer's). */
export function newNonce(): Buffer {
  return randomBytes(32);
}

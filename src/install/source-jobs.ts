/**
 * One encrypted file and the secrets it holds: a job, done whole by one thread (the main one or
 * the decrypt worker, parallel-sources.ts). The file is read once and its SHA-256 taken (the
 * metadata records it: never any plaintext), or not read at all when it is a store file the
 * active generation recorded at the same path (knownStoreHash); each secret whose file, identities, owner, group and
 * mode are those the active generation recorded takes its value from there, checked against the
 * keyed hash recorded with it: hard-linked into the new generation and read back through the link
 * (sink.ts, linkRecordedFile), or, when nothing is written (a dry run), read in place; the others,
 * and any whose copy there was altered or is missing, are decrypted. A reboot (no active
 * generation) decrypts everything.
 */
import { hash } from "node:crypto";
import type { Identity } from "../age/index.js";
import { type NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import type { ManifestSecret, SecretFormat } from "./manifest.js";
import { type FileOwner, hasContentHash, readRecordedFile } from "./sink.js";
import { decryptAgeFile, decryptSource, isInStore, readSourceFile, sourceKey } from "./sources.js";

/** What the active generation recorded of a secret, when the new one may take its file from there. */
export interface RecordedValue extends FileOwner {
  /** SHA-256 (hex) of the encrypted file the value came from. */
  cipher: string;
  /** The encrypted file's path then (null: not recorded). */
  file: string | null;
  /** It was read as a store file, no symlink followed (sources.ts, readSourceFile). */
  storeFile: boolean;
  /** The keyed hash of the value. */
  hmac: string;
}

export interface JobEntry {
  /** The secret's position in the manifest's secrets. */
  index: number;
  name: string;
  /** sops: the value's key path; null: the whole file. */
  key: string | null;
  /** Its file's owner, group and mode; null: not written (its owner is unknown: reported). */
  owner: FileOwner | null;
  recorded: RecordedValue | null;
  /** To be decrypted because its copy in the active generation was altered or gone (origin "repaired"). */
  repaired: boolean;
}

export interface SourceJob {
  file: string;
  format: SecretFormat;
  entries: JobEntry[];
}

/**
 * The manifest's secrets grouped by the encrypted file (and format) they come from, one group
 * per job, in manifest order: group g is order[start[g]] to order[start[g + 1] - 1], indexes in
 * the secrets. In columns: an array per group would be kept to the end of the install, as many
 * objects for the collector.
 */
export interface SourceGroups {
  order: Int32Array;
  start: Int32Array;
}

/** Groups `secrets` by source (sourceKey): keyed by the file's own string, the format checked. */
export function groupBySource(secrets: readonly ManifestSecret[]): SourceGroups {
  // The file's string as the key (no new string per secret); a file also read in another format
  // (rare) is looked up by its full sourceKey.
  const byFile = new Map<string, number>();
  const byKey = new Map<string, number>();
  const formats: SecretFormat[] = [];
  const groupOf = new Int32Array(secrets.length);
  const sizes: number[] = [];
  for (let i = 0; i < secrets.length; i++) {
    const s = secrets[i]!;
    let g = byFile.get(s.file);
    if (g === undefined) {
      g = sizes.length;
      byFile.set(s.file, g);
      formats.push(s.format);
      sizes.push(0);
    } else if (formats[g] !== s.format) {
      const k = sourceKey(s);
      g = byKey.get(k);
      if (g === undefined) {
        g = sizes.length;
        byKey.set(k, g);
        formats.push(s.format);
        sizes.push(0);
      }
    }
    groupOf[i] = g;
    sizes[g]!++;
  }
  const start = new Int32Array(sizes.length + 1);
  for (let g = 0; g < sizes.length; g++) start[g + 1] = start[g]! + sizes[g]!;
  const next = start.slice(0, sizes.length);
  const order = new Int32Array(secrets.length);
  for (let i = 0; i < secrets.length; i++) order[next[groupOf[i]!]!++] = i;
  return { order, start };
}

/** Where a value came from: the active generation, decrypted, or decrypted because the copy there was altered or gone. */
export type ValueOrigin = "reused" | "decrypted" | "repaired";

export interface JobContext {
  /** The identities, loaded on first need (a promise until then); null if none could be loaded. */
  identities(): readonly Identity[] | null | Promise<readonly Identity[] | null>;
  /** The key of the keyed hashes. */
  hmacKey: Uint8Array;
  /** The active generation's directory, or null (no reuse). */
  activeDir: string | null;
  /** The manifest's storeDir (null: every encrypted file is read). */
  storeDir: string | null;
  /**
   * Links a reused value's file from the active generation into the new one and returns its
   * content read back and checked there (value null: not as recorded, nothing left behind;
   * linked false: checked in place, to be written); null when nothing is written: values are
   * then read in place.
   */
  linkRecorded: ((name: string, recorded: RecordedValue) => { value: Buffer | null; linked: boolean }) | null;
}

/**
 * Receives each value: `linked` true when its file is already in the new generation (a hard link
 * of the active one's), so only its record is left to make.
 */
export type ValueSink = (
  entry: JobEntry,
  value: Uint8Array,
  origin: ValueOrigin,
  cipher: string,
  linked: boolean,
  storeFile: boolean,
) => void;

export interface JobResult {
  /** SHA-256 (hex) of the encrypted file; null if it could not be read. */
  cipher: string | null;
  /** The file was read as a store file (readSourceFile), or its record says so and it was not read. */
  storeFile: boolean;
  /** Why `failed` got no value (the file could not be read or decrypted); null if none failed so. */
  error: NixsealError | null;
  /** True if decrypting was needed and no identity could be loaded (error is then null). */
  noIdentity: boolean;
  failed: JobEntry[];
  /** Problems of single entries: a sops key that is not there, a file that could not be written. */
  entryErrors: [JobEntry, NixsealError][];
}

/** What reuseFromActive leaves for decryptPending. */
export interface Reused {
  result: JobResult;
  /** The encrypted file (null: it could not be read: result.error says why; or, with nothing pending, it was not read). */
  data: Buffer | null;
  /** The entries still without a value, and why they are decrypted. */
  pending: [JobEntry, ValueOrigin][];
}

/**
 * Whether the job's file need not be read: it is in the store (sources.ts, isInStore), and every
 * entry's record names this very path, read then as a store file with the same SHA-256. A store
 * path cannot change while a configuration that installed it is active (docs/architecture.md,
 * "Store files are not read again"), so its hash is the recorded one.
 */
function knownStoreHash(job: SourceJob, ctx: JobContext): string | null {
  if (ctx.activeDir === null || !isInStore(job.file, ctx.storeDir)) return null;
  let cipher: string | null = null;
  for (const e of job.entries) {
    const r = e.recorded;
    if (r === null || !r.storeFile || r.file !== job.file || (cipher !== null && r.cipher !== cipher))
      return null;
    cipher = r.cipher;
  }
  return cipher;
}

/** Reads the job's file; null (and `result` says why) if it cannot be read. */
function readJobFile(job: SourceJob, ctx: JobContext, result: JobResult): Buffer | null {
  try {
    const read = readSourceFile(job.file, ctx.storeDir);
    result.cipher = hash("sha256", read.data, "hex");
    result.storeFile = read.storeFile;
    return read.data;
  } catch (e) {
    rethrowUnlessNixseal(e);
    result.cipher = null;
    result.error = e;
    return null;
  }
}

/**
 * The first half of a job: reads the file (unless its hash is known: knownStoreHash), takes its
 * SHA-256, and hands over (to `each`) the values the active generation holds intact. Never
 * throws for the file's or an entry's problem.
 */
export function reuseFromActive(job: SourceJob, ctx: JobContext, each: ValueSink): Reused {
  const result: JobResult = {
    cipher: null,
    storeFile: false,
    error: null,
    noIdentity: false,
    failed: [],
    entryErrors: [],
  };
  const known = knownStoreHash(job, ctx);
  let data: Buffer | null = null;
  if (known !== null) {
    result.cipher = known;
    result.storeFile = true;
  } else {
    data = readJobFile(job, ctx, result);
    if (data === null) {
      result.failed = job.entries;
      return { result, data: null, pending: [] };
    }
  }
  const cipher = result.cipher!;
  const pending: [JobEntry, ValueOrigin][] = [];
  for (const entry of job.entries) {
    const recorded = entry.recorded;
    if (recorded === null || recorded.cipher !== cipher || ctx.activeDir === null) {
      pending.push([entry, entry.repaired ? "repaired" : "decrypted"]);
      continue;
    }
    // linkRecorded checks the keyed hash itself (and removes a link that fails it).
    const { value, linked } =
      ctx.linkRecorded !== null && entry.owner !== null
        ? ctx.linkRecorded(entry.name, recorded)
        : { value: readRecordedFile(ctx.activeDir, entry.name, recorded), linked: null };
    if (value !== null && (linked !== null || hasContentHash(ctx.hmacKey, value, recorded.hmac))) {
      try {
        deliver(result, each, entry, value, "reused", cipher, linked === true);
      } finally {
        wipe(value);
      }
    } else {
      wipe(value);
      pending.push([entry, "repaired"]);
    }
  }
  if (known !== null && pending.length > 0) {
    // A copy in the active generation was altered or gone: its value is decrypted, so read now.
    data = readJobFile(job, ctx, result);
    if (data === null) {
      result.failed = pending.map(([e]) => e);
      return { result, data: null, pending: [] };
    }
  }
  return { result, data, pending };
}

function deliver(
  result: JobResult,
  each: ValueSink,
  entry: JobEntry,
  value: Uint8Array,
  origin: ValueOrigin,
  cipher: string,
  linked: boolean,
): void {
  try {
    each(entry, value, origin, cipher, linked, result.storeFile);
  } catch (e) {
    rethrowUnlessNixseal(e);
    result.entryErrors.push([entry, e]);
  }
}

/** The second half: decrypts the file for the entries reuseFromActive left (loading the identities then). */
export async function decryptPending(
  job: SourceJob,
  r: Reused,
  ctx: JobContext,
  each: ValueSink,
): Promise<void> {
  const { result, data, pending } = r;
  if (data === null || pending.length === 0) return;
  const cipher = result.cipher!;
  const loaded = ctx.identities();
  const identities = loaded instanceof Promise ? await loaded : loaded;
  if (identities === null) {
    result.noIdentity = true;
    result.failed = pending.map(([e]) => e);
    return;
  }
  // An age file's one value is its plaintext: decryptSource's per-value interface (an object and
  // two functions per file) is for sops files.
  let plain: Uint8Array | null = null;
  let source: Awaited<ReturnType<typeof decryptSource>> | null = null;
  try {
    if (job.format === "age") plain = await decryptAgeFile(data, job.file, identities);
    else source = await decryptSource(data, job.file, job.format, identities);
  } catch (e) {
    rethrowUnlessNixseal(e);
    result.error = e;
    result.failed = pending.map(([entry]) => entry);
    return;
  }
  if (plain !== null) {
    try {
      // An index loop: destructuring each pair in for...of made an iterator per entry.
      for (let k = 0; k < pending.length; k++) {
        const [entry, origin] = pending[k]!;
        deliver(result, each, entry, plain, origin, cipher, false);
      }
    } finally {
      wipe(plain);
    }
    return;
  }
  const opened = source!; // a sops file's, whose values are taken out one by one
  try {
    for (const [entry, origin] of pending) {
      let v: { value: Uint8Array; owned: boolean };
      try {
        v = opened.valueOf({ key: entry.key });
      } catch (e) {
        rethrowUnlessNixseal(e);
        result.entryErrors.push([entry, e]);
        continue;
      }
      try {
        deliver(result, each, entry, v.value, origin, cipher, false);
      } finally {
        if (v.owned) wipe(v.value);
      }
    }
  } finally {
    opened.close();
  }
}

/**
 * Does one job whole: each entry's value goes to `each` (which writes it; the value is wiped
 * after). Never throws for the file's or an entry's problem: the result tells.
 */
export async function runJob(job: SourceJob, ctx: JobContext, each: ValueSink): Promise<JobResult> {
  const r = reuseFromActive(job, ctx, each);
  await decryptPending(job, r, ctx, each);
  return r.result;
}

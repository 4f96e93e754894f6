/**
 * `nixseal rekey`: re-wrap secrets for the recipients the rules name now.
 *
 * - Which files: decided from the header alone (no key needed), by the same comparison `check`
 *   makes: the recipients record, stanza types and count, ssh tags, armor. A file already right
 *   stays byte-identical; --force rewrites every selected file.
 * - All or nothing: every affected file is decrypted (header unwrapped, MAC and the whole payload
 *   verified) before anything is written; if one fails, nothing is written and every failure is
 *   reported.
 * - How: only the header is rewritten. The file key, the payload nonce and the payload bytes are
 *   kept, and a new header (new stanzas, the record, a MAC under the same file key) is put in
 *   front: that is a valid age file, and a rekey costs the same whatever the secrets' size.
 *   (Removing a recipient never revoked anything: they could read the old file, which git keeps.
 *   Rotating the secret with `nixseal edit` makes a new file key.)
 * - Each file is replaced atomically (temp file, fsync, rename). A rekey killed with SIGKILL
 *   leaves every file old or new; its temp files are swept by the next rekey (see the lock below).
 * - Wrapping runs on worker threads when there is enough of it; plugins run once per plugin for
 *   all files (never a process per secret).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import {
  ArmorEncoder,
  decryptHeader,
  describeStanzas,
  FILE_KEY_SIZE,
  fileKeyIdentity,
  type Header,
  type Identity,
  PluginIdentity,
  PluginRecipient,
  type Recipient,
  type Stanza,
  verifyPayload,
} from "../age/index.js";
import {
  AtomicFile,
  ioError,
  NixsealError,
  rethrowUnlessNixseal,
  syncDirectory,
  wipe,
} from "../common/index.js";
import type { KeyContext } from "../keys/index.js";
import { expectationsOf, inspectSecretFile } from "./check.js";
import { RECIPIENTS_RECORD_STANZA } from "./recipients-record.js";
import { buildHeader, type WrapJob, type WrapReply, type WrapSet, wrapWorkerSetup } from "./rekey-worker.js";
import { type Rules, requireSecret, type SecretRule } from "./rules.js";
import { readSecretFile, recipientsFor } from "./secrets.js";

/** Files per message to a worker: large enough to amortise messaging, small enough to balance. */
const BATCH = 32;
/** Below this many stanzas to wrap, worker start-up (~40 ms) costs more than it saves. */
const WORKER_THRESHOLD = 400;
/** Files written (and fsync-ed) at the same time: fsyncs in flight let the disk batch them. */
const WRITES_IN_FLIGHT = 16;

/**
 * Wrapping threads besides the main thread, which reads, decrypts and writes meanwhile. One
 * per core but one, at most 3: measured on 2 cores (1000 secrets × 11 recipients), one worker
 * took a rekey from 1.84 s to 1.69 s and two made it 2.04 s (OpenSSL 3 key generation and
 * X25519 contend across threads, and the main thread needs its core).
 */
function defaultWorkers(): number {
  return Math.max(1, Math.min(os.availableParallelism() - 1, 3));
}

export const LOCK_FILE = ".nixseal-rekey.lock";
/** A temp file of ours older than this has no writer left (secrets are written in milliseconds). */
const STALE_TEMP_AGE_MS = 10 * 60 * 1000;

export interface RekeyProgress {
  phase: "reading" | "decrypting" | "writing";
  done: number;
  total: number;
}

export interface RekeyOptions {
  /** Secrets as the user typed them (names or paths); none: every secret of the rules. */
  names?: readonly string[];
  cwd?: string;
  /** Rewrite every selected file, even those already right. */
  force?: boolean;
  /** Decide and decrypt (so failures show), but write nothing. */
  dryRun?: boolean;
  /** The identities to decrypt with; called at most once, only if a file must be rewritten. */
  identities: () => Promise<Identity[]>;
  ctx: KeyContext;
  onProgress?: (p: RekeyProgress) => void;
  /** Worker threads for wrapping; default: one per core when the work is large enough. */
  workers?: number;
  /** Absolute paths of files to leave alone (sops files secrets.nix lists: see sops-rekey.ts). */
  exclude?: ReadonlySet<string>;
}

export interface RekeyFailure {
  secret: string;
  /** Relative to the rules directory. */
  file: string;
  message: string;
  hint?: string;
}

export interface RekeyResult {
  /** Secrets rewritten (with dryRun: that would be rewritten). */
  rewritten: string[];
  unchanged: string[];
  /** Secrets of the rules that have no file yet (nothing to rekey). */
  missing: string[];
  /**
   * Files that could not be rewritten. A failure found before writing (a file that does not
   * decrypt, a bad header, unusable recipients) means nothing was written at all; a write that
   * fails (disk full, the file changed meanwhile) leaves that file as it was.
   */
  failed: RekeyFailure[];
  dryRun: boolean;
  /** Stale temp files removed (relative paths). */
  swept: string[];
}

/** One file to rewrite, from reading to writing. */
interface Job {
  rule: SecretRule;
  rel: string;
  set: number;
  stat: fs.Stats;
  header: Header;
  /** The payload nonce and the encrypted payload, kept as they are. */
  payload: Uint8Array;
  fileKey: Uint8Array | null;
  newHeader: Uint8Array | null;
}

function relativeName(rules: Rules, file: string): string {
  return path.relative(rules.dir, file).split(path.sep).join("/");
}

function selectRules(rules: Rules, names: readonly string[], cwd: string): SecretRule[] {
  if (names.length === 0) return [...rules.secrets.values()];
  const out = new Map<string, SecretRule>();
  const problems: NixsealError[] = [];
  for (const n of names) {
    try {
      const r = requireSecret(rules, n, cwd);
      out.set(r.name, r);
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e);
      else throw e;
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return [...out.values()];
}

// --- the lock and the sweep -----------------------------------------------------------------

interface LockInfo {
  pid: number;
  host: string;
  started: number;
}

function readLock(file: string): LockInfo | null | "garbage" {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw ioError("read", file, e);
  }
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (typeof v.pid === "number" && typeof v.host === "string" && typeof v.started === "number") {
      return { pid: v.pid, host: v.host, started: v.started };
    }
  } catch {}
  return "garbage";
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, as another user.
    return (e as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/**
 * The rekey lock: a file in the rules directory naming the process that holds it. It keeps two
 * rekeys apart, and tells the next rekey which temp files a killed one left behind (those
 * created after the dead holder took the lock).
 */
class RekeyLock {
  private constructor(readonly file: string) {}

  static acquire(rules: Rules): RekeyLock {
    const file = path.join(rules.dir, LOCK_FILE);
    const info: LockInfo = { pid: process.pid, host: os.hostname(), started: Date.now() };
    try {
      const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      try {
        fs.writeSync(fd, `${JSON.stringify(info)}\n`);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") throw busy(file, readLock(file));
      throw ioError("create the lock file", file, e);
    }
    return new RekeyLock(file);
  }

  release(): void {
    try {
      fs.unlinkSync(this.file);
    } catch {}
  }
}

function busy(file: string, info: LockInfo | null | "garbage"): NixsealError {
  const who = info && info !== "garbage" ? ` (pid ${info.pid} on ${info.host})` : "";
  return new NixsealError("IO", `another nixseal rekey is running${who}`, {
    file,
    hint: `wait for it to finish; if it is gone, remove ${file}`,
  });
}

/** Our temp files: AtomicFile names them ".<target>.<12 hex>.tmp" beside the target. */
const TEMP_NAME = /^\.(.+)\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes temp files that a killed nixseal left beside secret files: those of a dead rekey (the
 * lock names it), and any older than 10 minutes. Only names of our pattern whose target is a
 * secret of the rules are touched. Throws if a live rekey holds the lock.
 */
export function sweepStaleTempFiles(rules: Rules): string[] {
  const lockFile = path.join(rules.dir, LOCK_FILE);
  const lock = readLock(lockFile);
  let deadSince: number | null = null;
  if (lock !== null) {
    let stale: boolean;
    if (lock === "garbage") {
      // A lock without content: its writer died between create and write, or is writing it now.
      let mtime = Date.now();
      try {
        mtime = fs.statSync(lockFile).mtimeMs;
      } catch {}
      stale = Date.now() - mtime > 60_000;
      if (stale) deadSince = mtime;
    } else {
      stale = lock.host === os.hostname() && !processAlive(lock.pid);
      if (stale) deadSince = lock.started;
    }
    if (!stale) throw busy(lockFile, lock);
  }
  const targets = new Map<string, Set<string>>();
  for (const r of rules.secrets.values()) {
    const dir = path.dirname(r.file);
    const names = targets.get(dir) ?? new Set<string>();
    targets.set(dir, names);
    names.add(path.basename(r.file));
  }
  const now = Date.now();
  const swept: string[] = [];
  for (const [dir, names] of targets) {
    let entries: string[];
    try {
      entries = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const entry of entries) {
      const m = TEMP_NAME.exec(entry);
      if (!m || !names.has(m[1]!)) continue;
      const p = path.join(dir, entry);
      try {
        const st = fs.lstatSync(p);
        if (!st.isFile()) continue;
        // 1 s of slack: file times and Date.now() may round differently.
        const ofDeadRekey = deadSince !== null && st.mtimeMs >= deadSince - 1000;
        if (!ofDeadRekey && now - st.mtimeMs < STALE_TEMP_AGE_MS) continue;
        fs.unlinkSync(p);
        swept.push(relativeName(rules, p));
      } catch {}
    }
  }
  if (deadSince !== null) {
    try {
      fs.unlinkSync(lockFile);
    } catch {}
  }
  return swept;
}

// --- decrypting -----------------------------------------------------------------------------

function failureOf(job: Job, e: unknown, tried: string): RekeyFailure {
  rethrowUnlessNixseal(e);
  if (e.code === "AGE_NO_MATCH") {
    const stanzas = job.header.stanzas.filter((s) => s.type !== RECIPIENTS_RECORD_STANZA);
    return {
      secret: job.rule.name,
      file: job.rel,
      message: `no identity can decrypt it (recipients: ${describeStanzas(stanzas)}; tried: ${tried})`,
      hint: "pass an identity the file is encrypted to with -i, or ask someone who can read it to rekey",
    };
  }
  return { secret: job.rule.name, file: job.rel, message: e.message, hint: e.hint };
}

/**
 * Finds every job's file key and verifies header MAC and payload. Identities are tried per file
 * in order; plugin identities last, once per plugin for all files still undecided (one PIN
 * prompt, not one per file). Keys are set on the jobs; failures are returned.
 */
async function unwrapAll(
  jobs: Job[],
  identities: readonly Identity[],
  onKey: (job: Job) => void,
  progress: (done: number) => void,
): Promise<RekeyFailure[]> {
  const plugins = identities.filter((i): i is PluginIdentity => i instanceof PluginIdentity);
  const direct = identities.filter((i) => !(i instanceof PluginIdentity));
  const tried =
    identities
      .map((i) => i.description)
      .filter((d) => d !== "")
      .join("; ") || "no identities";
  const failures: RekeyFailure[] = [];
  const undecided: Job[] = [];
  let done = 0;
  const accept = (job: Job, fileKey: Uint8Array) => {
    try {
      verifyPayload(fileKey, job.payload);
      job.fileKey = fileKey;
      onKey(job);
    } catch (e) {
      wipe(fileKey);
      failures.push(failureOf(job, e, tried));
    }
  };
  for (const job of jobs) {
    if (direct.length === 0) {
      undecided.push(job);
      continue;
    }
    try {
      // Sequential on purpose: a passphrase-protected key asks once, on the first file for it.
      accept(job, await decryptHeader(job.header, direct));
      progress(++done);
    } catch (e) {
      if (e instanceof NixsealError && e.code === "AGE_NO_MATCH" && plugins.length > 0) undecided.push(job);
      else {
        failures.push(failureOf(job, e, tried));
        progress(++done);
      }
    }
  }
  let left = undecided;
  for (const plugin of plugins) {
    if (left.length === 0) break;
    const results = await plugin.unwrapFileKeys(left.map((j) => j.header.stanzas));
    const still: Job[] = [];
    for (const [i, job] of left.entries()) {
      const r = results[i]!;
      if (r.error) {
        failures.push(failureOf(job, r.error, tried));
      } else if (r.fileKey === null) {
        still.push(job);
        continue;
      } else {
        try {
          // Through src/age, which checks the key's size and the header MAC.
          accept(job, await decryptHeader(job.header, [fileKeyIdentity(r.fileKey)]));
        } catch (e) {
          failures.push(failureOf(job, e, tried));
        } finally {
          wipe(r.fileKey);
        }
      }
      progress(++done);
    }
    left = still;
  }
  for (const job of left) {
    failures.push(failureOf(job, new NixsealError("AGE_NO_MATCH", "no identity matched"), tried));
    progress(++done);
  }
  return failures;
}

// --- wrapping -------------------------------------------------------------------------------

/** A recipient set: the recipients of a group of secrets with the same publicKeys. */
interface RecipientSet {
  wrap: WrapSet;
  /** Made on the main thread: plugins run here; also used when no workers run. */
  recipients: Recipient[];
  hasPlugins: boolean;
  rule: SecretRule;
}

function labelsKey(r: Recipient): string {
  return [...(r.labels ?? [])].sort().join(",");
}

function mixedLabels(recipients: readonly Recipient[]): boolean {
  return new Set(recipients.map(labelsKey)).size > 1;
}

/**
 * Stanzas already wrapped for a file (plugins wrap a whole set's file keys in one run) as one
 * recipient, with the labels its recipients share.
 */
function prewrapped(stanzas: Stanza[], labels: readonly string[] | undefined): Recipient {
  return { labels, wrapFileKey: () => stanzas };
}

function mixedLabelsFailure(job: Job): RekeyFailure {
  return {
    secret: job.rule.name,
    file: job.rel,
    message: "its recipients can't be mixed: post-quantum recipients can't be mixed with classic ones",
    hint: `give the secret only age1pq1... recipients, or none, in the rules`,
  };
}

/**
 * Wraps headers on worker threads, batch by batch as file keys become known. Each worker gets
 * at most two batches at a time; the rest waits in `pending`, where the main thread takes jobs
 * to wrap itself whenever it has nothing else to do (so both cores wrap, whoever is free).
 */
class WrapPool {
  private readonly workers: Worker[] = [];
  private readonly inFlight = new Map<number, Job[]>();
  private readonly load: number[];
  private readonly pending: Job[] = [];
  /** Every file key is known: a short last batch may go out. */
  private complete = false;
  private nextBatch = 0;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];

  constructor(sets: WrapSet[], count: number) {
    for (let i = 0; i < count; i++) {
      const w = new Worker(new URL("./rekey-worker.js", import.meta.url), {
        workerData: wrapWorkerSetup(sets),
      });
      w.on("message", (reply: WrapReply) => this.onReply(i, reply));
      w.on("error", (e) => this.fail(e));
      this.workers.push(w);
    }
    this.load = this.workers.map(() => 0);
  }

  add(job: Job): void {
    this.pending.push(job);
    this.dispatch();
  }

  /** Every job has been added. */
  finishAdding(): void {
    this.complete = true;
    this.dispatch();
  }

  /** A job no worker has yet, for the main thread to wrap (the newest: workers take the oldest). */
  take(): Job | undefined {
    return this.pending.pop();
  }

  private dispatch(): void {
    for (;;) {
      if (this.pending.length === 0 || (this.pending.length < BATCH && !this.complete)) return;
      let w = 0;
      for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[w]!) w = i;
      if (this.load[w]! >= 2) return;
      const jobs = this.pending.splice(0, BATCH);
      const keys = new Uint8Array(jobs.length * FILE_KEY_SIZE);
      for (const [i, j] of jobs.entries()) keys.set(j.fileKey!, i * FILE_KEY_SIZE);
      const batch = this.nextBatch++;
      this.inFlight.set(batch, jobs);
      this.load[w]!++;
      const job: WrapJob = { batch, sets: jobs.map((j) => j.set), keys };
      this.workers[w]!.postMessage(job);
      wipe(keys);
    }
  }

  private onReply(worker: number, reply: WrapReply): void {
    this.load[worker]!--;
    const jobs = this.inFlight.get(reply.batch);
    this.inFlight.delete(reply.batch);
    if ("error" in reply) this.fail(new NixsealError("INTERNAL", `wrapping failed: ${reply.error}`));
    else if (jobs) {
      for (const [i, j] of jobs.entries()) j.newHeader = reply.headers[i]!;
    }
    this.dispatch();
    this.wake();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Batches are being wrapped by workers. */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /** Resolves when some batch finished; throws a worker failure. */
  async progress(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.inFlight.size === 0) return;
    await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

// --- writing --------------------------------------------------------------------------------

function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** The new file: new header, then the old nonce and payload, as they were; armored if the rules say so. */
function newFileBytes(job: Job): Buffer {
  const body = [Buffer.from(job.newHeader!), Buffer.from(job.payload)];
  if (!job.rule.armor) return Buffer.concat(body);
  const out: Buffer[] = [];
  const enc = new ArmorEncoder();
  for (const b of body) enc.push(b, out);
  enc.finish(out);
  return Buffer.concat(out);
}

/**
 * Replaces one file atomically, refusing if it changed since it was read (a concurrent edit
 * wins). The directory is fsync-ed once for all files, after the last rename.
 */
async function writeJob(job: Job): Promise<void> {
  const bytes = newFileBytes(job);
  // Keep the file's permission bits (the temp file is created with them, less the umask).
  const f = AtomicFile.open(job.rule.file, job.stat.mode & 0o777);
  f.write(bytes);
  await f.commitAsync(() => {
    let now: fs.Stats;
    try {
      now = fs.lstatSync(job.rule.file);
    } catch (e) {
      throw ioError("read", job.rule.file, e);
    }
    if (!sameFile(now, job.stat)) {
      throw new NixsealError(
        "IO",
        `${job.rule.file} changed while rekey was running; it was left as it is now`,
        {
          file: job.rule.file,
          hint: "run 'nixseal rekey' again",
        },
      );
    }
  });
}

// --- the command ----------------------------------------------------------------------------

export async function rekeyRepository(rules: Rules, options: RekeyOptions): Promise<RekeyResult> {
  const dryRun = options.dryRun === true;
  const progress = (phase: RekeyProgress["phase"], done: number, total: number) =>
    options.onProgress?.({ phase, done, total });
  const selected = selectRules(rules, options.names ?? [], options.cwd ?? process.cwd()).filter(
    (r) => !options.exclude?.has(path.resolve(r.file)),
  );
  const named = (options.names ?? []).length > 0;
  const result: RekeyResult = { rewritten: [], unchanged: [], missing: [], failed: [], dryRun, swept: [] };
  const failed: RekeyFailure[] = [];
  const finish = (): RekeyResult => {
    result.failed = failed.sort((a, b) => a.file.localeCompare(b.file));
    result.rewritten.sort();
    return result;
  };

  const subset: Rules = { ...rules, secrets: new Map(selected.map((r) => [r.name, r])) };
  const expectations = expectationsOf(subset);
  // Before reading anything: a live rekey holding the lock is an error; a dead one's temp
  // files go now (so they never pile up, whatever this run finds to do).
  if (!dryRun) result.swept = sweepStaleTempFiles(rules);

  // 1. Decide, from the headers alone.
  const jobs: Job[] = [];
  const sets = new Map<string, number>();
  const setList: RecipientSet[] = [];
  selected.forEach((rule, i) => {
    progress("reading", i, selected.length);
    const rel = relativeName(rules, rule.file);
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(rule.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("read", rule.file, e);
      if (named) {
        failed.push({
          secret: rule.name,
          file: rel,
          message: "has no file yet",
          hint: `create it with 'nixseal edit ${rule.name}'`,
        });
      } else result.missing.push(rule.name);
      return;
    }
    try {
      const data = readSecretFile(rule);
      const expect = expectations.get(rule.name)!;
      const seen = inspectSecretFile(rule, data, expect);
      const needed =
        options.force === true || seen.mismatches.length > 0 || seen.armorMismatch || seen.unrecorded;
      if (!needed) {
        result.unchanged.push(rule.name);
        return;
      }
      const key = rule.publicKeys.join("\n");
      let set = sets.get(key);
      if (set === undefined) {
        set = setList.length;
        sets.set(key, set);
        setList.push({
          wrap: { strings: rule.publicKeys.map((k) => k.trim()), digest: expect.digest },
          recipients: [],
          hasPlugins: expect.recipients.some((r) => r.expected.kind === "plugin"),
          rule,
        });
      }
      jobs.push({
        rule,
        rel,
        set,
        stat,
        header: seen.header,
        payload: seen.payload,
        fileKey: null,
        newHeader: null,
      });
    } catch (e) {
      rethrowUnlessNixseal(e);
      failed.push({ secret: rule.name, file: rel, message: e.message, hint: e.hint });
    }
  });
  if (jobs.length === 0) return finish();

  // The recipients of every set (validated already by the expectations; plugins are found
  // here, not run yet).
  for (const [index, s] of setList.entries()) {
    s.recipients = recipientsFor(s.rule, rules.file, options.ctx);
    if (!s.hasPlugins && mixedLabels(s.recipients)) {
      failed.push(...jobs.filter((j) => j.set === index).map(mixedLabelsFailure));
    }
  }

  // Nothing is written once a failure is known; the lock is only needed for writing.
  const lock = dryRun || failed.length > 0 ? null : RekeyLock.acquire(rules);
  let pool: WrapPool | null = null;
  const inFlight = new Set<Promise<void>>();
  try {
    const identities = await options.identities();

    // 2. Decrypt everything (and start wrapping what is decrypted, on workers).
    const nativeWraps = jobs.reduce(
      (n, j) => n + (setList[j.set]!.hasPlugins ? 0 : setList[j.set]!.recipients.length),
      0,
    );
    const workerCount =
      lock === null ? 0 : (options.workers ?? (nativeWraps >= WORKER_THRESHOLD ? defaultWorkers() : 0));
    if (workerCount > 0)
      pool = new WrapPool(
        setList.map((s) => s.wrap),
        workerCount,
      );
    const onKey = (job: Job) => {
      if (pool && !setList[job.set]!.hasPlugins) pool.add(job);
    };
    failed.push(...(await unwrapAll(jobs, identities, onKey, (d) => progress("decrypting", d, jobs.length))));
    if (failed.length > 0) return finish();
    if (lock === null) {
      result.rewritten = jobs.map((j) => j.rule.name);
      return finish();
    }
    pool?.finishAdding();

    // 3. Plugin sets: one run per plugin for all files of the set, before anything is written
    //    (a plugin may fail; nothing must be half done because of it).
    for (const [index, s] of setList.entries()) {
      if (!s.hasPlugins) continue;
      const mine = jobs.filter((j) => j.set === index);
      const perFile: Stanza[][] = mine.map(() => []);
      for (const r of s.recipients) {
        if (r instanceof PluginRecipient) {
          const stanzas = await r.wrapFileKeys(mine.map((j) => j.fileKey!));
          for (const [i, st] of stanzas.entries()) perFile[i]!.push(...st);
        } else {
          for (const [i, j] of mine.entries()) perFile[i]!.push(...(await r.wrapFileKey(j.fileKey!)));
        }
      }
      if (mixedLabels(s.recipients)) {
        failed.push(...mine.map(mixedLabelsFailure));
        continue;
      }
      const labels = s.recipients[0]?.labels;
      for (const [i, j] of mine.entries()) {
        j.newHeader = await buildHeader(j.fileKey!, [prewrapped(perFile[i]!, labels)], s.wrap.digest);
      }
    }
    if (failed.length > 0) return finish();

    // 4. Write, as headers become ready; the main thread wraps itself when there are no workers.
    let written = 0;
    const start = (job: Job) => {
      wipe(job.fileKey);
      job.fileKey = null;
      const p: Promise<void> = writeJob(job).then(
        () => {
          result.rewritten.push(job.rule.name);
          progress("writing", ++written, jobs.length);
        },
        (e) => {
          const err = e instanceof NixsealError ? e : ioError("write", job.rule.file, e);
          failed.push({ secret: job.rule.name, file: job.rel, message: err.message, hint: err.hint });
        },
      );
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
    };
    // Files are written in any order, as their headers become ready.
    const waiting = new Set(jobs);
    const wrapHere = async (job: Job) => {
      const s = setList[job.set]!;
      job.newHeader = await buildHeader(job.fileKey!, s.recipients, s.wrap.digest);
    };
    while (waiting.size > 0) {
      for (const job of waiting) {
        if (inFlight.size >= WRITES_IN_FLIGHT) break;
        if (job.newHeader === null) continue;
        waiting.delete(job);
        start(job);
      }
      if (waiting.size === 0 || inFlight.size >= WRITES_IN_FLIGHT) {
        if (inFlight.size > 0) await Promise.race(inFlight);
        continue;
      }
      // A write slot is free and no header is ready: wrap one here, or wait for the workers.
      const mine = pool ? pool.take() : [...waiting].find((j) => j.newHeader === null);
      if (mine) await wrapHere(mine);
      else if (pool?.busy) await Promise.race([pool.progress(), ...inFlight]);
      else throw new NixsealError("INTERNAL", "rekey: a header was never wrapped");
    }
    await Promise.all(inFlight);
    return finish();
  } finally {
    // Never leave with writes under way (their temp files are removed if they fail).
    await Promise.allSettled([...inFlight]);
    // Renames are durable once their directory is synced: once per directory, not per file.
    if (lock !== null)
      for (const dir of new Set(jobs.map((j) => path.dirname(j.rule.file)))) syncDirectory(dir);
    for (const j of jobs) wipe(j.fileKey);
    await pool?.stop();
    lock?.release();
  }
}

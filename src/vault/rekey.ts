/**
 * `nixseal rekey`: re-wrap secrets for the recipients the rules name now.
 *
 * - Which files: decided from the header alone (no key needed), by the same comparison `check`
 *   makes: the recipients record, stanza types and count, ssh tags, armor. A file already right
 *   stays byte-identical: one whose record names the rules' recipients, or one without a record
 *   whose every recipient its stanzas identify (ssh keys). --force rewrites every selected file.
 * - All or nothing: every affected file is decrypted (header unwrapped, MAC and the whole payload
 *   verified) before anything is written; if one fails, nothing is written and every failure is
 *   reported.
 * - How: only the header is rewritten. The file key, the payload nonce and the payload bytes are
 *   kept, and a new header (stanzas, the record, a MAC under the same file key) is put in
 *   front: that is a valid age file, and a rekey costs the same whatever the secrets' size.
 * - Which stanzas: in a file with a version 2 recipients record (recipients-record.ts), the
 *   stanza of each recipient who stays is kept byte for byte (found by its tag, once the file
 *   key is unwrapped and the header MAC verified); only new recipients are wrapped for, and the
 *   stanzas of removed ones are dropped. A kept stanza is the same wrap of the same file key, as
 *   safe as leaving the file unchanged. Files without tags (version 1, agenix, age, rage) and
 *   files with plugin recipients are wrapped anew for everyone, once. --force wraps every stanza
 *   anew (fresh ephemeral keys for everyone).
 *   (Removing a recipient never revoked anything: they could read the old file, which git keeps.
 *   Rotating the secret with `nixseal edit` makes a new file key.)
 * - Each file is replaced atomically (temp file, fsync, rename). Every file is written to its
 *   temp file as its new header is made (some while others are still being decrypted) and
 *   fsync-ed at once on the thread pool; then all are renamed: nothing is renamed unless every
 *   file decrypted and every temp file was written and made durable (a full disk leaves every
 *   file as it was). A rekey killed with SIGKILL leaves every file old or new; its temp files
 *   are swept by the next rekey.
 * - When there is enough work, a worker thread takes whole files (unwrap, verify, new header)
 *   beside the main thread; when an identity can't go to a worker (plugins, passphrases), the
 *   main thread unwraps and the worker only wraps. Plugins run once per plugin for all files
 *   (never a process per secret).
 *
 * This file runs the steps; each part has its own file: rekey-lock.ts (the lock), temp-sweep.ts
 * (a killed run's temp files), rekey-unwrap.ts (decrypting here), rekey-sets.ts (recipient sets
 * and plugin wrapping), rekey-pool.ts and rekey-worker.ts (the per-file work, on worker threads
 * too), rekey-writer.ts (writing and replacing files), rekey-job.ts (what they pass along).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { ioError, NixsealError, rethrowUnlessNixseal, syncDirectory, wipe } from "../common/index.js";
import type { KeyContext } from "../keys/index.js";
import { expectationsOf, inspectSecretFile } from "./check.js";
import { readRecipientsRecord } from "./recipients-record.js";
import type { Job, RekeyFailure } from "./rekey-job.js";
import { RekeyLock } from "./rekey-lock.js";
import { RekeyPool, workersFor } from "./rekey-pool.js";
import { RecipientSets, wrapPluginSets } from "./rekey-sets.js";
import { RekeyIdentities, unwrapAll, unwrapHere, unwrapWithPlugins } from "./rekey-unwrap.js";
import { headerFor, portableIdentities } from "./rekey-worker.js";
import { commitJob, TempWriter } from "./rekey-writer.js";
import { type Rules, relativeName, requireSecret, type SecretRule } from "./rules.js";
import { readSecretFile } from "./secrets.js";
import { sweepStaleTempFiles } from "./temp-sweep.js";

export type { RekeyFailure } from "./rekey-job.js";

/** Files read before the work found so far is extrapolated to all (to start workers early). */
const EXTRAPOLATE_FROM = 32;

export interface RekeyProgress {
  phase: "reading" | "decrypting" | "writing";
  done: number;
  total: number;
}

export interface RekeyOptions {
  /** Secrets as the user typed them (names or paths); none: every secret of the rules. */
  names?: readonly string[];
  cwd?: string;
  /** Rewrite every selected file, even those already right, wrapping every stanza anew. */
  force?: boolean;
  /** Decide and decrypt (so failures show), but write nothing. */
  dryRun?: boolean;
  /** The identities to decrypt with; called at most once, only if a file must be rewritten. */
  identities: () => Promise<Identity[]>;
  ctx: KeyContext;
  onProgress?: (p: RekeyProgress) => void;
  /**
   * Worker threads besides this one (unwrapping and wrapping; only wrapping when an identity
   * can't go to a worker); default: one per core but one, when the work is large enough.
   */
  workers?: number;
  /** Absolute paths of files to leave alone (sops files secrets.nix lists: see sops-rekey.ts). */
  exclude?: ReadonlySet<string>;
}

export interface RekeyResult {
  /** Secrets rewritten (with dryRun: that would be rewritten). */
  rewritten: string[];
  unchanged: string[];
  /** Secrets of the rules that have no file yet (nothing to rekey). */
  missing: string[];
  /**
   * Files that could not be rewritten. A failure found before renaming (a file that does not
   * decrypt, a bad header, unusable recipients, a temp file that could not be written or synced:
   * a full disk, a read-only mount) means no file was replaced at all; a file that changed while
   * rekey ran is left as it is now, and the others are replaced.
   */
  failed: RekeyFailure[];
  dryRun: boolean;
  /** Stale temp files removed (relative paths). */
  swept: string[];
}

/** Whether a header carries a version 2 recipients record (tags to keep stanzas by). */
function hasTags(stanzas: Parameters<typeof readRecipientsRecord>[0]): boolean {
  const r = readRecipientsRecord(stanzas);
  return r.state === "present" && r.tags !== null;
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

  // Workers start as soon as there is enough work for them, so that they boot (~150 ms) while
  // this thread still reads headers: once the files read so far, extrapolated to all, make
  // enough. None for a dry run (it writes nothing) or a small rekey.
  let pool: RekeyPool | null = null;
  let work = 0;
  const counted = (job: Job, recipients: number, read: number) => {
    if (pool !== null || dryRun || options.workers === 0) return;
    // One unwrap, and a stanza to wrap per recipient (one for a file whose stanzas may be kept:
    // one recipient added, the common case).
    work += 1 + (job.keepable ? 1 : recipients);
    const expected = read < EXTRAPOLATE_FROM ? work : Math.floor((work * selected.length) / read);
    const count = options.workers ?? workersFor(expected);
    if (count > 0) pool = new RekeyPool(count);
  };
  let lock: RekeyLock | null = null;
  // Every file is written to a temp file and made durable first (as its header is made, on the
  // thread pool), then all are renamed: nothing is renamed unless every file was written (all
  // or nothing, also for a full disk).
  const writer = new TempWriter();
  const jobs: Job[] = [];
  try {
    // 1. Decide, from the headers alone.
    const sets = new RecipientSets();
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
        // Rewritten: what contradicts the rules, and files without a record whose recipients
        // their stanzas don't prove (once: then the record names them). A file whose every
        // recipient is identified by its stanza is right as it is, record or not (agenix's
        // files of ssh keys).
        const needed =
          options.force === true ||
          seen.mismatches.length > 0 ||
          seen.armorMismatch ||
          (seen.unrecorded && !seen.proven);
        if (!needed) {
          result.unchanged.push(rule.name);
          return;
        }
        const set = sets.indexOf(rule, expect);
        const plugins = sets.list[set]!.hasPlugins;
        const job: Job = {
          rule,
          rel,
          set,
          stat,
          header: seen.header,
          payload: seen.payload,
          fileKey: null,
          keepable: options.force !== true && !plugins && hasTags(seen.header.stanzas),
          newHeader: null,
        };
        jobs.push(job);
        if (!plugins) counted(job, rule.publicKeys.length, i + 1);
      } catch (e) {
        rethrowUnlessNixseal(e);
        failed.push({ secret: rule.name, file: rel, message: e.message, hint: e.hint });
      }
    });
    if (jobs.length === 0) return finish();

    // The recipients of every set (validated already by the expectations; plugins are found
    // here, not run yet).
    failed.push(...sets.makeRecipients(jobs, rules.file, options.ctx));
    const setList = sets.list;
    const hasPlugins = (job: Job) => setList[job.set]!.hasPlugins;

    // Nothing is written once a failure is known; the lock is only needed for writing.
    lock = dryRun || failed.length > 0 ? null : RekeyLock.acquire(rules);
    const failure = (job: Job, e: unknown): RekeyFailure => {
      const err = e instanceof NixsealError ? e : ioError("write", job.rule.file, e);
      return { secret: job.rule.name, file: job.rel, message: err.message, hint: err.hint };
    };
    /** New headers made (here or by workers), not yet written. */
    const ready: Job[] = [];
    /**
     * Writes the new headers made so far to temp files (written ahead, not renamed: a file that
     * fails to decrypt later still means nothing is renamed), while no failure is known.
     */
    const writeAhead = (): void => {
      if (lock === null || failed.length > 0) return;
      for (const job of ready.splice(0)) writer.add(job);
    };
    const headerReady = (job: Job) => {
      wipe(job.fileKey);
      job.fileKey = null;
      ready.push(job);
    };

    const ids = new RekeyIdentities(await options.identities());
    if (lock === null && pool !== null) {
      // A dry run, or a failure known already: nothing is wrapped; files are decrypted here.
      await (pool as RekeyPool).stop();
      pool = null;
    }
    let decided = 0;
    const decidedOne = () => progress("decrypting", ++decided, jobs.length);
    /** Files no direct identity opened, for the plugins. */
    const undecided: Job[] = [];
    // Workers unwrap too when every identity can go to them; else this thread unwraps (in the
    // order the identities were given: a passphrase is asked once, on the first file for it)
    // and workers only wrap.
    const thePool = pool as RekeyPool | null;
    thePool?.setup(
      setList.map((s) => s.wrap),
      portableIdentities(ids.direct),
      (job) => {
        if (job.fileKey === null) decidedOne();
        headerReady(job);
        writeAhead();
      },
      (job, f) => {
        if (ids.waitsForPlugins(f)) undecided.push(job);
        else {
          failed.push(ids.failure(job, f));
          decidedOne();
        }
      },
    );
    /** Files this thread does (besides those it takes from the pool). */
    const mine: Job[] = [];
    /**
     * Until every file of `mine` and of the pool is done, by this thread and the workers
     * together: unwrapped if its key is not known yet, and its new header made (for sets without
     * plugins, when something is to be written).
     */
    const workTogether = async () => {
      let n = 0;
      for (;;) {
        writeAhead();
        const job = mine.pop() ?? thePool?.take();
        if (job === undefined) {
          if (!thePool?.busy) return;
          await thePool.progress();
          continue;
        }
        if (job.fileKey === null) {
          const r = await unwrapHere(job, ids);
          if (r === "plugins") undecided.push(job);
          else {
            if (r !== null) failed.push(r);
            decidedOne();
          }
          if (r !== null) continue;
        }
        if (!hasPlugins(job) && lock !== null && failed.length === 0) {
          const s = setList[job.set]!;
          job.newHeader = await headerFor(
            job.fileKey!,
            s.recipients,
            s.wrap,
            job.keepable ? job.header.stanzas : null,
          );
          headerReady(job);
        }
        // Let the event loop run now and then (a macrotask): workers' replies are handled
        // there, so that workers get their next batch.
        if (++n % 4 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    };
    /** A key found here (or by a plugin): its header made by a worker or by this thread. */
    const onKey = (job: Job) => {
      if (hasPlugins(job)) return;
      if (thePool !== null) thePool.add(job);
      else mine.push(job);
    };

    // 2. Decrypt everything; make the new headers and write them as they are made.
    if (thePool?.unwraps) {
      for (const j of jobs) {
        if (hasPlugins(j)) mine.push(j);
        else thePool.add(j);
      }
      thePool.finishAdding();
      await workTogether();
      failed.push(...(await unwrapWithPlugins(undecided, ids, onKey, decidedOne)));
    } else {
      failed.push(...(await unwrapAll(jobs, ids, onKey, decidedOne)));
      thePool?.finishAdding();
    }
    if (failed.length > 0) return finish();
    if (lock === null) {
      result.rewritten = jobs.map((j) => j.rule.name);
      return finish();
    }

    // 3. Plugin sets: one run per plugin for all files of the set, before anything is written.
    failed.push(...(await wrapPluginSets(jobs, setList)));
    if (failed.length > 0) return finish();
    for (const j of jobs) if (hasPlugins(j)) headerReady(j);

    // 4. The headers still to make (workers and this thread); every file written and durable.
    await workTogether();
    writeAhead();
    await writer.done();
    if (writer.failed.length > 0) {
      failed.push(...writer.failed.map(({ job, error }) => failure(job, error)));
      return finish();
    }
    if (writer.prepared.length !== jobs.length)
      throw new NixsealError("INTERNAL", "rekey: a header was never made");

    // 5. Rename them (each only if it did not change meanwhile), on this thread: a rename is a
    // short system call, and measured here, 1000 renames (and their checks) on the thread pool
    // took longer and more CPU than on this thread.
    for (const { job, file } of writer.prepared) {
      try {
        commitJob(job, file);
        result.rewritten.push(job.rule.name);
        progress("writing", result.rewritten.length, jobs.length);
      } catch (e) {
        failed.push(failure(job, e));
      }
    }
    return finish();
  } finally {
    // Never leave a temp file that was not renamed (a failure found before renaming: all or
    // nothing); abort() is a no-op for a renamed one.
    await writer.stop();
    // Renames are durable once their directory is synced: once per directory, not per file.
    if (result.rewritten.length > 0)
      for (const dir of new Set(writer.prepared.map((p) => path.dirname(p.job.rule.file))))
        syncDirectory(dir);
    for (const j of jobs) wipe(j.fileKey);
    await (pool as RekeyPool | null)?.stop();
    (lock as RekeyLock | null)?.release();
  }
}

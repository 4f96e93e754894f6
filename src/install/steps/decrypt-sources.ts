/**
 * Step 5: every secret's value, each encrypted file read once (source-jobs.ts: one job per file).
 * A secret whose encrypted file (its SHA-256), format, key, identity set, owner, group and mode
 * are those the active generation recorded takes its value from there, checked against the keyed
 * hash recorded with it; only new and changed ones, and any whose copy there was altered or is
 * gone (reported as repaired), are decrypted. Many age files are shared with the decrypt worker
 * (parallel-sources.ts), which writes its files itself. Values a template needs are kept (copies,
 * wiped by the caller) until step 6 renders the templates.
 */
import { NixsealError } from "../../common/index.js";
import type { GenerationMeta, MetaEntry } from "../generations.js";
import type { Manifest, ManifestSecret } from "../manifest.js";
import {
  type DecryptWorker,
  deserializeError,
  jobAt,
  jobCount,
  originOf,
  type PackedJobs,
  packJobs,
  REST_MAIN_JOINS_MIN,
  type WorkerJobResult,
  type WorkerResults,
} from "../parallel-sources.js";
import type { GenerationTarget, InstallEntry } from "../sink.js";
import {
  type JobContext,
  type JobEntry,
  type JobResult,
  type RecordedValue,
  reuseFromActive,
  runJob,
  type SourceGroups,
  type SourceJob,
  type ValueOrigin,
  type ValueSink,
} from "../source-jobs.js";
import type { LazyIdentities } from "./load-identities.js";
import type { InstallProblems } from "./problems.js";
import type { EntryWriter } from "./write-entries.js";

export interface DecryptInput {
  m: Manifest;
  keys: LazyIdentities;
  items: ReadonlyMap<string, InstallEntry>;
  writer: EntryWriter;
  /** The secrets templates use: their values go to `kept`. */
  needed: ReadonlySet<string>;
  kept: Map<string, Uint8Array>;
  problems: InstallProblems;
  hmacKey: Uint8Array;
  /** The key was made now: no recorded hash can be checked, so nothing is reused. */
  keyFresh: boolean;
  /** identitySetHash of the manifest's identities: values are reused only under the same set. */
  identities: string;
  /** The active generation's number and metadata (null: none, e.g. after a reboot). */
  active: { dir: string; meta: GenerationMeta } | null;
  /** m.secrets grouped by source (groupBySource): one job per group. */
  groups: SourceGroups;
  /** Where the worker creates its files (null: nowhere, as for the writer). */
  target: GenerationTarget | null;
  worker: DecryptWorker | null;
}

export interface DecryptOutcome {
  /** Some file had no matching identity (the identities that failed to load may be why). */
  noMatch: boolean;
  /** Secrets that needed decrypting when no identity could be loaded. */
  noIdentity: string[];
  /** How many values were decrypted, and how many taken from the active generation. */
  decrypted: number;
  reused: number;
  /** Secrets whose copy in the active generation was altered or gone: decrypted again. */
  repaired: string[];
  /** Secrets whose value was taken from the active generation: their file there is as recorded. */
  reusedNames: Set<string>;
}

/** A job's result that says nothing went wrong (nothing for the problems at the end). */
function clean(r: JobResult | WorkerJobResult): boolean {
  return r.error === null && !r.noIdentity && r.failed.length === 0 && r.entryErrors.length === 0;
}

/** Where each secret's value came from, by index (0: no value). */
const ORIGIN_CODES: Readonly<Record<ValueOrigin, number>> = { reused: 1, decrypted: 2, repaired: 3 };

/** What the active generation recorded of `s`, if its file may be taken from there. */
function recordedOf(s: ManifestSecret, item: InstallEntry, old: MetaEntry | undefined): RecordedValue | null {
  if (old === undefined || old.kind !== "secret" || old.credential || s.credential !== null) return null;
  if (!old.cipher || old.format !== s.format || (old.key ?? null) !== s.key) return null;
  if (old.uid !== item.uid || old.gid !== item.gid || old.mode !== item.mode) return null;
  return {
    cipher: old.cipher,
    file: old.file ?? null,
    storeFile: old.storeFile === true,
    hmac: old.hmac,
    uid: old.uid,
    gid: old.gid,
    mode: old.mode,
  };
}

export async function decryptSources(input: DecryptInput): Promise<DecryptOutcome> {
  const { m, items, writer, needed, kept, problems } = input;
  const out: DecryptOutcome = {
    noMatch: false,
    noIdentity: [],
    decrypted: 0,
    reused: 0,
    repaired: [],
    reusedNames: new Set(),
  };
  if (m.secrets.length === 0) return out;

  // What may be reused: the same identity set, a key that can check the recorded hashes.
  const active = input.active;
  const before = new Map<string, MetaEntry>();
  if (active !== null && !input.keyFresh && active.meta.identities === input.identities) {
    for (const e of active.meta.entries) before.set(e.name, e);
  }

  // The jobs in columns (parallel-sources.ts, PackedJobs), each made an object only when it is
  // run (jobAt): 10 000 jobs' objects, kept to the end, cost the collector more than the jobs'
  // own work on this thread. Usually they cross to the worker as they are.
  const { order, start } = input.groups;
  const count = start.length - 1;
  const jobs: PackedJobs = {
    files: new Array(count),
    formats: new Array(count),
    firstEntry: start,
    index: order,
    names: new Array(order.length),
    keys: new Array(order.length),
    owners: new Float64Array(order.length * 3),
    recorded: new Array(order.length),
    repaired: new Uint8Array(order.length),
  };
  const mainJobs: number[] = [];
  const workerJobs: number[] = [];
  for (let j = 0; j < count; j++) {
    const first = m.secrets[order[start[j]!]!]!;
    jobs.files[j] = first.file;
    jobs.formats[j] = first.format;
    let mainOnly = first.format !== "age" || input.worker === null;
    for (let e = start[j]!; e < start[j + 1]!; e++) {
      const s = m.secrets[order[e]!]!;
      const item = items.get(s.name);
      // Credentials and the values of templates are needed here, on the main thread.
      if (s.credential !== null || needed.has(s.name)) mainOnly = true;
      jobs.names[e] = s.name;
      jobs.keys[e] = s.key;
      jobs.owners[e * 3] = item === undefined ? -1 : item.uid;
      jobs.owners[e * 3 + 1] = item === undefined ? -1 : item.gid;
      jobs.owners[e * 3 + 2] = item === undefined ? -1 : item.mode;
      jobs.recorded[e] = item === undefined ? null : recordedOf(s, item, before.get(s.name));
    }
    (mainOnly ? mainJobs : workerJobs).push(j);
  }

  const ctx: JobContext = {
    identities: () => input.keys.get(),
    hmacKey: input.hmacKey,
    activeDir: active?.dir ?? null,
    storeDir: m.storeDir,
    linkRecorded:
      writer.files === null || active === null
        ? null
        : (name, recorded) => writer.files!.link(active.dir, name, recorded, input.hmacKey),
  };
  // Per job: what the threads found when something went wrong (a job may be done in two halves,
  // see below); a clean result says nothing for the problems below, and is not kept.
  const results = new Map<number, (JobResult | WorkerJobResult)[]>();
  const keep = (j: number, r: JobResult | WorkerJobResult) => {
    if (clean(r)) return;
    const list = results.get(j);
    if (list === undefined) results.set(j, [r]);
    else list.push(r);
  };
  const origins = new Uint8Array(m.secrets.length); // secret index -> ORIGIN_CODES of its value
  const each =
    (replace: boolean): ValueSink =>
    (entry, value, origin, cipher, linked, storeFile) => {
      const s = m.secrets[entry.index]!;
      if (needed.has(s.name)) kept.set(s.name, Uint8Array.from(value));
      const source = { file: s.file, format: s.format, key: s.key, cipher, storeFile };
      const hmac = origin === "reused" ? entry.recorded!.hmac : null;
      const item = items.get(s.name);
      // A linked file is in the new generation already (only reused values are linked).
      if (linked && item !== undefined) writer.record(item, hmac!, source);
      else writer.write(item, value, source, hmac, replace);
      origins[entry.index] = ORIGIN_CODES[origin];
    };
  const writeNew = each(false);
  const replaceWorkers = each(true);
  const runHere = async (j: number, job: SourceJob, replace: boolean) => {
    keep(j, await runJob(job, ctx, replace ? replaceWorkers : writeNew));
  };

  const worker = input.worker;
  if (worker === null) {
    for (let j = 0; j < count; j++) await runHere(j, jobAt(jobs, j), false);
  } else {
    // The worker's share (parallel-sources.ts, WorkerMode). "rest": values the active generation
    // holds are copied here first, while the worker loads its modules and keys; what is left to
    // decrypt goes to the worker, and this thread takes a part only when there is much of it
    // (else it would load the key formats itself, the very cost the worker hides). "share":
    // both threads do whole jobs.
    let toWorker: PackedJobs;
    let jobOf: readonly number[];
    if (worker.mode === "share" && workerJobs.length === count) {
      // Every job may go: the columns cross as they are.
      toWorker = jobs;
      jobOf = workerJobs;
    } else {
      const given: SourceJob[] = [];
      const of: number[] = [];
      for (const j of workerJobs) {
        const job = jobAt(jobs, j);
        let rest = job;
        if (worker.mode === "rest" && job.entries.some((e) => e.recorded !== null)) {
          const r = reuseFromActive(job, ctx, writeNew);
          keep(j, r.result);
          if (r.pending.length === 0) continue;
          rest = {
            ...job,
            entries: r.pending.map(([e, origin]) => ({
              ...e,
              recorded: null,
              repaired: origin === "repaired",
            })),
          };
        }
        given.push(rest);
        of.push(j);
      }
      toWorker = packJobs(given);
      jobOf = of;
    }
    const given = jobCount(toWorker);
    const counter = new SharedArrayBuffer(4);
    const fromWorker: Promise<WorkerResults | null> =
      given > 0
        ? worker.run({
            jobs: toWorker,
            counter,
            hmacKey: input.hmacKey,
            target: input.target,
            activeDir: ctx.activeDir,
            storeDir: m.storeDir,
          })
        : Promise.resolve(null);
    for (const j of mainJobs) await runHere(j, jobAt(jobs, j), false);
    const done = new Uint8Array(given); // 1: done by one thread or the other
    if (worker.mode === "share" || given >= REST_MAIN_JOINS_MIN) {
      const claim = new Int32Array(counter);
      for (;;) {
        const i = Atomics.add(claim, 0, 1);
        if (i >= given) break;
        await runHere(jobOf[i]!, jobAt(toWorker, i), false);
        done[i] = 1;
      }
    }
    const fromIt = await fromWorker;
    // A value the worker wrote: recorded here as if written here.
    const record = (index: number, hmac: string, origin: ValueOrigin, cipher: string, storeFile: boolean) => {
      const s = m.secrets[index]!;
      const item = items.get(s.name);
      if (item === undefined) return;
      writer.record(item, hmac, { file: s.file, format: s.format, key: s.key, cipher, storeFile });
      origins[index] = ORIGIN_CODES[origin];
    };
    for (const r of fromIt?.withProblems ?? []) {
      if (r.noIdentity) continue; // done again here, where the identities are loaded (or reported)
      keep(jobOf[r.job]!, r);
      done[r.job] = 1;
      for (const [index, hmac, origin] of r.values) record(index, hmac, origin, r.cipher!, r.storeFile);
    }
    // The jobs done without a problem (nothing for the problems below).
    for (let k = 0; fromIt !== null && k < fromIt.job.length; k++) {
      done[fromIt.job[k]!] = 1;
      const cipher = fromIt.cipher[k]!;
      const storeFile = fromIt.storeFile[k] === 1;
      for (let v = fromIt.valueStart[k]!; v < fromIt.valueStart[k + 1]!; v++)
        record(fromIt.valueIndex[v]!, fromIt.hmac[v]!, originOf(fromIt, v), cipher, storeFile);
    }
    // Given to the worker and not done (it failed, or loaded no identity): here, replacing what it wrote.
    for (let i = 0; i < given; i++) if (done[i] === 0) await runHere(jobOf[i]!, jobAt(toWorker, i), true);
  }

  // Problems in the manifest's order of files, whichever thread met them.
  const secretOf = (e: JobEntry | number) => m.secrets[typeof e === "number" ? e : e.index]!;
  for (let j = 0; j < count; j++) {
    const file = jobs.files[j]!;
    for (const r of results.get(j) ?? []) {
      const failed = r.failed.map(secretOf);
      if (r.noIdentity) out.noIdentity.push(...failed.map((s) => s.name));
      if (r.error !== null) {
        const e = r.error instanceof NixsealError ? r.error : deserializeError(r.error);
        if (e.code === "AGE_NO_MATCH" || e.code === "SOPS_NO_KEY") out.noMatch = true;
        problems.about(failed, e, file);
      }
      for (const [entry, err] of r.entryErrors) {
        problems.about([secretOf(entry)], err instanceof NixsealError ? err : deserializeError(err), file);
      }
    }
  }
  for (let index = 0; index < origins.length; index++) {
    const origin = origins[index]!;
    if (origin === 0) continue;
    if (origin === ORIGIN_CODES.reused) {
      out.reused++;
      out.reusedNames.add(m.secrets[index]!.name);
    } else out.decrypted++;
    if (origin === ORIGIN_CODES.repaired) out.repaired.push(m.secrets[index]!.name);
  }
  return out;
}

/**
 * Re-wrapping file keys for `nixseal rekey` on worker threads. Wrapping is the CPU work of a
 * rekey (an X25519 wrap costs ~0.17 ms: 1000 files × 11 recipients is ~1.9 s on one core), and
 * each header is independent, so it spreads over cores. Only recipients that need nothing from
 * the user (X25519, post-quantum, ssh public keys) are wrapped here; plugins run on the main
 * thread, where the terminal is.
 *
 * A file with a version 2 recipients record comes with its old stanzas: the stanzas of
 * recipients who stay are kept and only the others wrapped (headerFor). `headerFor` is also what
 * the main thread runs when a rekey is too small for workers to pay.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { encryptHeader, FILE_KEY_SIZE, type Recipient, type Stanza } from "../age/index.js";
import { wipe } from "../common/index.js";
import { parseRecipientString } from "../keys/index.js";
import { type Keepable, keepableStanzas, RecipientsRecord, recordStanza } from "./recipients-record.js";

/** Marks the workerData of our workers, so that importing this file elsewhere runs nothing. */
const WORKER_KIND = "nixseal-rekey-wrap";

/**
 * A complete binary age header for an existing file key: the stanzas of `recipients`, then the
 * recipients record (recipients-record.ts; version 2 with `normalised`, one string per
 * recipient), then the MAC (src/age does the header).
 */
export function buildHeader(
  fileKey: Uint8Array,
  recipients: readonly Recipient[],
  digest: string,
  normalised: readonly string[] | null,
): Promise<Uint8Array> {
  return encryptHeader(fileKey, [...recipients, new RecipientsRecord(digest, recipients, normalised)]);
}

/**
 * A header that keeps some stanzas of the file as they are: recipient i gets `kept[i]` when it
 * is not null, else a new wrap; then a version 2 record with `tags` (the recipients' tags under
 * this file key) and the MAC. `recipients` must not mix labels (checked when the set was made).
 */
export async function buildKeptHeader(
  fileKey: Uint8Array,
  { kept, tags }: Keepable,
  recipients: readonly Recipient[],
  digest: string,
): Promise<Uint8Array> {
  const stanzas: Stanza[] = [];
  for (const [i, r] of recipients.entries()) {
    const k = kept[i];
    if (k) stanzas.push(k);
    else stanzas.push(...(await r.wrapFileKey(fileKey)));
  }
  stanzas.push(recordStanza(digest, tags));
  return encryptHeader(fileKey, [{ labels: recipients[0]?.labels, wrapFileKey: () => stanzas }]);
}

/**
 * One recipient set: the rules' strings of a secret (no plugins), the record's digest, the
 * normalised strings its tags are made of (null: a set with plugins, version 1 record) and the
 * stanza type of each recipient.
 */
export interface WrapSet {
  strings: string[];
  digest: string;
  normalised: string[] | null;
  types: string[];
}

/**
 * The new header of a file of a set without plugins: with `old` (the stanzas of a file whose
 * stanzas may be kept, rekey.ts), the stanzas of recipients who stay are kept and only the
 * others wrapped; without, or when none stays, every recipient is wrapped.
 */
export async function headerFor(
  fileKey: Uint8Array,
  recipients: readonly Recipient[],
  set: WrapSet,
  old: readonly Stanza[] | null,
): Promise<Uint8Array> {
  const keep =
    old === null || set.normalised === null ? null : keepableStanzas(fileKey, old, set.normalised, set.types);
  if (keep?.kept.some((k) => k !== null)) return buildKeptHeader(fileKey, keep, recipients, set.digest);
  return buildHeader(fileKey, recipients, set.digest, set.normalised);
}

/** Stanzas to post to a worker: each body copied out of the (possibly pooled, larger) buffer it views. */
export function compactStanzas(stanzas: readonly Stanza[]): Stanza[] {
  return stanzas.map((s) => ({ type: s.type, args: [...s.args], body: Uint8Array.from(s.body) }));
}

export interface WrapWorkerSetup {
  kind: typeof WORKER_KIND;
  sets: WrapSet[];
}

/**
 * A batch of files: file i uses set `sets[i]`, the i-th file key in `keys` (FILE_KEY_SIZE each)
 * and, when its stanzas may be kept, its old stanzas `old[i]` (headerFor).
 */
export interface WrapJob {
  batch: number;
  sets: number[];
  keys: Uint8Array;
  old: (Stanza[] | null)[];
}

export type WrapReply = { batch: number; headers: Uint8Array[] } | { batch: number; error: string };

export function wrapWorkerSetup(sets: WrapSet[]): WrapWorkerSetup {
  return { kind: WORKER_KIND, sets };
}

function serveJobs(setup: WrapWorkerSetup): void {
  const parsed = new Map<number, Recipient[]>();
  const recipientsOf = (i: number): Recipient[] => {
    let r = parsed.get(i);
    if (r === undefined) {
      r = setup.sets[i]!.strings.map((s) => parseRecipientString(s, "rules"));
      parsed.set(i, r);
    }
    return r;
  };
  parentPort!.on("message", async (job: WrapJob) => {
    try {
      const headers: Uint8Array[] = [];
      for (let i = 0; i < job.sets.length; i++) {
        const set = job.sets[i]!;
        const key = job.keys.subarray(i * FILE_KEY_SIZE, (i + 1) * FILE_KEY_SIZE);
        headers.push(await headerFor(key, recipientsOf(set), setup.sets[set]!, job.old[i] ?? null));
      }
      wipe(job.keys);
      const reply: WrapReply = { batch: job.batch, headers };
      // Copied, not transferred: headers are small and may sit in Node's shared Buffer pool.
      parentPort!.postMessage(reply);
    } catch (e) {
      wipe(job.keys);
      const reply: WrapReply = { batch: job.batch, error: (e as Error).message };
      parentPort!.postMessage(reply);
    }
  });
}

if (!isMainThread && (workerData as WrapWorkerSetup | null)?.kind === WORKER_KIND) {
  serveJobs(workerData as WrapWorkerSetup);
}

/**
 * The per-file work of `nixseal rekey`, on worker threads and on the main thread alike: a file's
 * key unwrapped with the user's identities (header MAC and the whole payload verified), and its
 * new header built. Each file is independent, so the work spreads over cores (rekey-pool.ts).
 * Only identities that need nothing from the user (X25519, unencrypted ssh-ed25519 and ssh-rsa
 * keys, already in memory) go to workers, as KeyObjects cloned by postMessage; plugins, prompts
 * and the terminal stay on the main thread. Only recipients that need nothing from the user
 * (X25519, post-quantum, ssh public keys) are wrapped for here; plugins run on the main thread.
 *
 * A file with a version 2 recipients record comes with its old stanzas: the stanzas of
 * recipients who stay are kept and only the others wrapped (headerFor).
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import {
  decryptHeader,
  encryptHeader,
  type Header,
  type Identity,
  type Recipient,
  type Stanza,
  verifyPayload,
  X25519Identity,
  type X25519Transfer,
} from "../age/index.js";
import { NixsealError, wipe } from "../common/index.js";
import { parseRecipientString } from "../keys/index.js";
import {
  SshEd25519Identity,
  type SshEd25519Transfer,
  SshRsaIdentity,
  type SshRsaTransfer,
} from "../ssh/index.js";
import { type Keepable, keepableStanzas, RecipientsRecord, recordStanza } from "./recipients-record.js";

/** Marks the workerData of our workers, so that importing this file elsewhere runs nothing. */
const WORKER_KIND = "nixseal-rekey";

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

/**
 * A file's key from its header with `identities` (tried in order), the header MAC and the whole
 * payload verified. Throws src/age's errors (AGE_NO_MATCH when no identity is for the file);
 * nothing of the key is left behind on failure.
 */
export async function unwrapVerified(
  header: Header,
  payload: Uint8Array,
  identities: readonly Identity[],
): Promise<Uint8Array> {
  const fileKey = await decryptHeader(header, identities);
  try {
    verifyPayload(fileKey, payload);
  } catch (e) {
    wipe(fileKey);
    throw e;
  }
  return fileKey;
}

/** Stanzas to post to a worker: each body copied out of the (possibly pooled, larger) buffer it views. */
export function compactStanzas(stanzas: readonly Stanza[]): Stanza[] {
  return stanzas.map((s) => ({ type: s.type, args: [...s.args], body: Uint8Array.from(s.body) }));
}

/** An identity as it crosses to a worker: its KeyObjects, never key bytes in the JS heap. */
export type PortableIdentity = X25519Transfer | SshEd25519Transfer | SshRsaTransfer;

/**
 * The identities in the form workers take, or null when one of them can't go to a worker (a
 * plugin, a passphrase-protected key, anything that may ask the user or run a program): then
 * files are unwrapped on the main thread, identities tried in the order given.
 */
export function portableIdentities(identities: readonly Identity[]): PortableIdentity[] | null {
  const out: PortableIdentity[] = [];
  for (const id of identities) {
    if (id instanceof X25519Identity || id instanceof SshEd25519Identity || id instanceof SshRsaIdentity)
      out.push(id.transfer());
    else return null;
  }
  return out.length > 0 ? out : null;
}

function identityOf(p: PortableIdentity): Identity {
  switch (p.kind) {
    case "X25519":
      return X25519Identity.fromTransfer(p);
    case "ssh-ed25519":
      return SshEd25519Identity.fromTransfer(p);
    case "ssh-rsa":
      return SshRsaIdentity.fromTransfer(p);
  }
}

/**
 * What a worker is told once: the recipient sets, and the identities to unwrap with (null: the
 * main thread unwraps, workers only wrap).
 */
export interface WorkerSetup {
  type: "setup";
  sets: WrapSet[];
  identities: PortableIdentity[] | null;
}

/**
 * One file for a worker. With `key` (known already): only its new header is made. Without:
 * `bytes` holds the header's MAC input, its MAC (32 bytes) and the payload, and the key is
 * unwrapped from `stanzas` and verified first. `stanzas` are the old stanzas, needed to unwrap
 * and, when `keepable`, to keep those of recipients who stay (headerFor).
 */
export interface FileWork {
  set: number;
  key: Uint8Array | null;
  stanzas: Stanza[] | null;
  keepable: boolean;
  bytes: Uint8Array | null;
  macInputLength: number;
  headerLength: number;
}

export interface WorkBatch {
  type: "batch";
  batch: number;
  files: FileWork[];
}

/** A file's outcome: its new header, or why it could not be unwrapped (code, message, hint). */
export type FileOutcome = { header: Uint8Array } | { code: string; message: string; hint?: string };

/** A batch's outcomes in order; `error`: a bug, not a file's problem (the run stops). */
export type WorkReply = { batch: number; files: FileOutcome[] } | { batch: number; error: string };

function serve(): void {
  let setup: WorkerSetup | null = null;
  let identities: Identity[] = [];
  const parsed = new Map<number, Recipient[]>();
  const recipientsOf = (i: number): Recipient[] => {
    let r = parsed.get(i);
    if (r === undefined) {
      r = setup!.sets[i]!.strings.map((s) => parseRecipientString(s, "rules"));
      parsed.set(i, r);
    }
    return r;
  };
  const one = async (f: FileWork): Promise<FileOutcome> => {
    let key = f.key;
    if (key === null) {
      const bytes = f.bytes!;
      const m = f.macInputLength;
      const header: Header = {
        stanzas: f.stanzas!,
        macInput: bytes.subarray(0, m),
        mac: bytes.subarray(m, m + 32),
        length: f.headerLength,
      };
      try {
        key = await unwrapVerified(header, bytes.subarray(m + 32), identities);
      } catch (e) {
        if (!(e instanceof NixsealError)) throw e;
        return { code: e.code, message: e.message, hint: e.hint };
      }
    }
    try {
      const set = setup!.sets[f.set]!;
      return { header: await headerFor(key, recipientsOf(f.set), set, f.keepable ? f.stanzas : null) };
    } finally {
      wipe(key);
    }
  };
  parentPort!.on("message", async (msg: WorkerSetup | WorkBatch) => {
    if (msg.type === "setup") {
      setup = msg;
      identities = (msg.identities ?? []).map(identityOf);
      return;
    }
    let reply: WorkReply;
    try {
      const files: FileOutcome[] = [];
      for (const f of msg.files) files.push(await one(f));
      reply = { batch: msg.batch, files };
    } catch (e) {
      reply = { batch: msg.batch, error: (e as Error).message };
    } finally {
      for (const f of msg.files) wipe(f.key);
    }
    // Copied, not transferred: headers are small and may sit in Node's shared Buffer pool.
    parentPort!.postMessage(reply);
  });
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === WORKER_KIND) serve();

export function workerStart(): { kind: string } {
  return { kind: WORKER_KIND };
}

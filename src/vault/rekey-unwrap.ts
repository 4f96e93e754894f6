/**
 * The decrypting step of `nixseal rekey`: every file's key is found and its whole payload
 * verified before anything is written (all or nothing), through src/age's header API. The same
 * per-file work runs on worker threads (rekey-worker.ts unwrapVerified); their failures are
 * reported here the same way.
 */
import {
  decryptHeader,
  describeStanzas,
  fileKeyIdentity,
  type Identity,
  PluginIdentity,
  verifyPayload,
} from "../age/index.js";
import { rethrowUnlessNixseal, wipe } from "../common/index.js";
import { RECIPIENTS_RECORD_STANZA } from "./recipients-record.js";
import type { Job, RekeyFailure } from "./rekey-job.js";
import { unwrapVerified } from "./rekey-worker.js";

/** Files decrypted between two turns of the event loop. */
const YIELD_EVERY = 16;

/** The identities of a rekey: plugins (tried last, once per plugin for all files) and the rest. */
export class RekeyIdentities {
  readonly plugins: PluginIdentity[];
  readonly direct: Identity[];
  /** What was tried, for "no identity can decrypt it" (descriptions, never key material). */
  readonly tried: string;

  constructor(identities: readonly Identity[]) {
    this.plugins = identities.filter((i): i is PluginIdentity => i instanceof PluginIdentity);
    this.direct = identities.filter((i) => !(i instanceof PluginIdentity));
    this.tried =
      identities
        .map((i) => i.description)
        .filter((d) => d !== "")
        .join("; ") || "no identities";
  }

  /** A job's failure from an error (or a worker's code, message and hint). */
  failure(job: Job, e: { code: string; message: string; hint?: string | undefined }): RekeyFailure {
    if (e.code === "AGE_NO_MATCH") return noMatchFailure(job, this.tried);
    return { secret: job.rule.name, file: job.rel, message: e.message, hint: e.hint };
  }

  /** A file no direct identity opens waits for the plugins, if there are any. */
  waitsForPlugins(e: { code: string }): boolean {
    return e.code === "AGE_NO_MATCH" && this.plugins.length > 0;
  }
}

/** No identity given can decrypt the file: which recipients it has, and what was tried. */
function noMatchFailure(job: Job, tried: string): RekeyFailure {
  const stanzas = job.header.stanzas.filter((s) => s.type !== RECIPIENTS_RECORD_STANZA);
  return {
    secret: job.rule.name,
    file: job.rel,
    message: `no identity can decrypt it (recipients: ${describeStanzas(stanzas)}; tried: ${tried})`,
    hint: "pass an identity the file is encrypted to with -i, or ask someone who can read it to rekey",
  };
}

/**
 * One file with the direct identities, here: sets job.fileKey and returns null, or returns
 * "plugins" (no direct identity opens it; plugins may) or the failure.
 */
export async function unwrapHere(job: Job, ids: RekeyIdentities): Promise<RekeyFailure | "plugins" | null> {
  if (ids.direct.length === 0)
    return ids.plugins.length > 0 ? "plugins" : ids.failure(job, { code: "AGE_NO_MATCH", message: "" });
  try {
    job.fileKey = await unwrapVerified(job.header, job.payload, ids.direct);
    return null;
  } catch (e) {
    rethrowUnlessNixseal(e);
    return ids.waitsForPlugins(e) ? "plugins" : ids.failure(job, e);
  }
}

/**
 * The files no direct identity opened, with the plugin identities: once per plugin for all of
 * them (one PIN prompt, not one per file). Keys are set on the jobs (then `onKey`); failures
 * are returned.
 */
export async function unwrapWithPlugins(
  undecided: readonly Job[],
  ids: RekeyIdentities,
  onKey: (job: Job) => void,
  progress: () => void,
): Promise<RekeyFailure[]> {
  const failures: RekeyFailure[] = [];
  let left = undecided;
  for (const plugin of ids.plugins) {
    if (left.length === 0) break;
    const results = await plugin.unwrapFileKeys(left.map((j) => j.header.stanzas));
    const still: Job[] = [];
    for (const [i, job] of left.entries()) {
      const r = results[i]!;
      if (r.error) {
        rethrowUnlessNixseal(r.error);
        failures.push(ids.failure(job, r.error));
      } else if (r.fileKey === null) {
        still.push(job);
        continue;
      } else {
        try {
          // Through src/age, which checks the key's size and the header MAC.
          const fileKey = await decryptHeader(job.header, [fileKeyIdentity(r.fileKey)]);
          try {
            verifyPayload(fileKey, job.payload);
          } catch (e) {
            wipe(fileKey);
            throw e;
          }
          job.fileKey = fileKey;
          onKey(job);
        } catch (e) {
          rethrowUnlessNixseal(e);
          failures.push(ids.failure(job, e));
        } finally {
          wipe(r.fileKey);
        }
      }
      progress();
    }
    left = still;
  }
  for (const job of left) {
    failures.push(ids.failure(job, { code: "AGE_NO_MATCH", message: "" }));
    progress();
  }
  return failures;
}

/**
 * Finds every job's key here and verifies header MAC and payload. Identities are tried per file
 * in order; plugin identities last. Keys are set on the jobs (then `onKey`); failures are
 * returned.
 */
export async function unwrapAll(
  jobs: Job[],
  ids: RekeyIdentities,
  onKey: (job: Job) => void,
  progress: () => void,
): Promise<RekeyFailure[]> {
  const failures: RekeyFailure[] = [];
  const undecided: Job[] = [];
  for (const [i, job] of jobs.entries()) {
    // Let the event loop run now and then (a macrotask): workers' replies are handled there,
    // and they get their next batch while this loop still decrypts.
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise<void>((resolve) => setImmediate(resolve));
    // Sequential on purpose: a passphrase-protected key asks once, on the first file for it.
    const r = await unwrapHere(job, ids);
    if (r === "plugins") {
      undecided.push(job);
      continue;
    }
    if (r === null) onKey(job);
    else failures.push(r);
    progress();
  }
  failures.push(...(await unwrapWithPlugins(undecided, ids, onKey, progress)));
  return failures;
}

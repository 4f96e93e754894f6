/**
 * The decrypting step of `nixseal rekey`: every file's key is found and its whole payload
 * verified before anything is written (all or nothing), through src/age's header API.
 */
import {
  decryptHeader,
  describeStanzas,
  fileKeyIdentity,
  type Identity,
  PluginIdentity,
  verifyPayload,
} from "../age/index.js";
import { NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import { RECIPIENTS_RECORD_STANZA } from "./recipients-record.js";
import type { Job, RekeyFailure } from "./rekey-job.js";

/** Files decrypted between two turns of the event loop. */
const YIELD_EVERY = 16;

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

function failureOf(job: Job, e: unknown, tried: string): RekeyFailure {
  rethrowUnlessNixseal(e);
  if (e.code === "AGE_NO_MATCH") return noMatchFailure(job, tried);
  return { secret: job.rule.name, file: job.rel, message: e.message, hint: e.hint };
}

/**
 * Finds every job's file key and verifies header MAC and payload. Identities are tried per file
 * in order; plugin identities last, once per plugin for all files still undecided (one PIN
 * prompt, not one per file). Keys are set on the jobs; failures are returned.
 */
export async function unwrapAll(
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
  for (const [i, job] of jobs.entries()) {
    // Let the event loop run now and then (a macrotask): wrapping workers' replies are handled
    // there, and they get their next batch while this loop still decrypts.
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise<void>((resolve) => setImmediate(resolve));
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
    failures.push(noMatchFailure(job, tried));
    progress(++done);
  }
  return failures;
}

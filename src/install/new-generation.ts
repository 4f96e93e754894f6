/**
 * `nixseal install` from the point where the active generation cannot simply stay (see
 * installer.ts): the next generation is made, each value taken from the active one or decrypted,
 * the credentials prepared, and on success the switch, the links, the units and the pruning.
 * Loaded only then: a re-activation with nothing to do never loads the decrypt path, the
 * worker's code or systemctl's.
 */
import * as path from "node:path";
import { NixsealError, wipe } from "../common/index.js";
import type { EarlyWorker } from "./early-worker.js";
import type { GenerationMeta, Generations, MetaEntry } from "./generations.js";
import type { InstallLock } from "./lock.js";
import type { Manifest, ManifestEntry } from "./manifest.js";
import { DecryptWorker } from "./parallel-sources.js";
import type { InstallReport } from "./report.js";
import type { InstallEntry } from "./sink.js";
import { groupBySource } from "./source-jobs.js";
import type { CredentialPlan } from "./steps/credentials.js";
import { decryptSources } from "./steps/decrypt-sources.js";
import { diff } from "./steps/diff.js";
import { linkPaths } from "./steps/link-paths.js";
import { LazyIdentities, noIdentityProblems } from "./steps/load-identities.js";
import { prepareGeneration } from "./steps/prepare-generation.js";
import { previousAsFound } from "./steps/previous-as-found.js";
import type { InstallProblems } from "./steps/problems.js";
import { prune } from "./steps/prune.js";
import { renderTemplates, secretsTemplatesNeed } from "./steps/render-templates.js";
import { appendDryUnits, notifyUnits } from "./steps/restart-units.js";
import { switchGeneration } from "./steps/switch-generation.js";
import { EntryWriter } from "./steps/write-entries.js";
import { PlaceholderScanner } from "./templates.js";

/** What must be released on every way out of an install. */
export interface Held {
  closeCredstore: (() => void) | null;
  /** Copies of credential plaintexts, until systemd-creds has them. */
  plaintexts: Uint8Array[];
  /** One install at a time (lock.ts); a dry run changes nothing and takes none. */
  lock: InstallLock | null;
  /** The decrypt thread, when one pays (parallel-sources.ts). */
  worker: DecryptWorker | null;
  /** The decrypt thread started before the manifest was parsed, until it is used or closed (early-worker.ts). */
  early: EarlyWorker | null;
}

/** What installer.ts found before: the manifest's entries with their owners, the active generation. */
export interface NewGenerationInput {
  m: Manifest;
  dry: boolean;
  held: Held;
  gens: Generations;
  report: InstallReport;
  problems: InstallProblems;
  entries: readonly ManifestEntry[];
  items: ReadonlyMap<string, InstallEntry>;
  /** The active generation's metadata (null: none, or unreadable). */
  previous: GenerationMeta | null;
  /** identitySetHash of the manifest's identities. */
  identities: string;
  credentialsNeeded: boolean;
}

/** One warning for the secrets whose copy in the active generation was altered or gone. */
function repairedWarning(m: Manifest, active: number, names: readonly string[]): NixsealError {
  const shown = names.slice(0, 10).map((n) => `"${n}"`);
  const more = names.length > shown.length ? ` and ${names.length - shown.length} more` : "";
  const one = names.length === 1;
  const which = `${one ? "file of secret" : "files of secrets"} ${shown.join(", ")}${more}`;
  return new NixsealError(
    "INSTALL",
    `the ${which} in generation ${active} ${one ? "was" : "were"} changed or removed since ${one ? "it was" : "they were"} installed; decrypted again`,
    {
      hint: `only nixseal should write under ${m.generationsDir}; check what else did`,
      file: path.join(m.generationsDir, String(active)),
    },
  );
}

/** The credential step when there is nothing for it: src/creds is not even loaded. */
function noCredentials(): CredentialPlan {
  return { store: null, wanted: new Set(), prepared: [], status: new Map(), stale: [] };
}

/** The steps that make a new generation, in order (see installer.ts); problems go to `problems`. */
export async function installNewGeneration(input: NewGenerationInput): Promise<InstallReport> {
  const { m, dry, held, gens, report, problems, entries, items, previous, identities, credentialsNeeded } =
    input;
  const activeN = report.previousGeneration;
  // One job per encrypted file: the worker's choice and the jobs both need the groups.
  const groups = groupBySource(m.secrets);
  // Started before the generation is prepared, so that its start-up overlaps with that.
  const early = held.early;
  held.early = null;
  held.worker = await DecryptWorker.startIfWorthIt(m, previous, identities, groups, early);
  const keys = new LazyIdentities(m);
  const target = prepareGeneration(m, gens, activeN, dry, problems);
  report.mounted = target.mounted;
  report.pruned = target.pruned;
  const writer = new EntryWriter(target.writer, target.key, held.plaintexts, problems);

  // Without templates (most hosts) no placeholder is looked for.
  const scanner = m.templates.length > 0 ? new PlaceholderScanner(m.placeholders) : null;
  const kept = new Map<string, Uint8Array>();
  let outcome: Awaited<ReturnType<typeof decryptSources>>;
  try {
    outcome = await decryptSources({
      m,
      keys,
      items,
      writer,
      needed: scanner === null ? new Set() : secretsTemplatesNeed(m, scanner),
      kept,
      problems,
      hmacKey: target.key,
      keyFresh: target.keyFresh,
      identities,
      active: activeN === null || previous === null ? null : { dir: gens.pathOf(activeN), meta: previous },
      groups,
      target: target.writer?.target ?? null,
      worker: held.worker,
    });
    if (scanner !== null) renderTemplates(m, scanner, items, writer, kept, problems);
  } finally {
    for (const v of kept.values()) wipe(v);
  }
  await held.worker?.close();
  held.worker = null;
  report.decrypted = outcome.decrypted;
  report.reused = outcome.reused;
  report.repaired = outcome.repaired;
  if (outcome.noIdentity.length > 0) problems.add(...noIdentityProblems(m, keys, outcome.noIdentity));
  // A secret no identity opened: the identities that failed to load may be why.
  // Otherwise a missing identity file is skipped silently, as docs/manifest.md says (defaults
  // such as a user's ~/.ssh/id_rsa often do not exist); an unreadable or broken one is a warning.
  if (outcome.noMatch) problems.add(...keys.deferred);
  else report.warnings.push(...keys.deferred.filter((e) => !isMissingFile(e)));
  if (outcome.repaired.length > 0) report.warnings.push(repairedWarning(m, activeN!, outcome.repaired));

  const cred = credentialsNeeded ? await import("./steps/credentials.js") : null;
  const credentials =
    cred === null
      ? noCredentials()
      : await cred.encryptCredentials(
          m,
          entries,
          writer.credentialItems,
          held.plaintexts,
          dry,
          report.credentials,
          problems,
          (close) => {
            held.closeCredstore = close;
          },
        );

  if (problems.any) {
    target.writer?.abort();
    wipe(target.key);
    report.credentials.created = [];
    report.credentials.updated = [];
    return report;
  }

  const meta = writer.meta;
  const changes = diff(
    compareWith(m, gens, report.previousGeneration, previous, meta, target.key, outcome.reusedNames),
    meta,
    credentials.status,
  );
  // sops-nix restarts nothing at boot, when there is no generation before (changeDetection "files").
  if (m.changeDetection === "files" && report.previousGeneration === null) {
    changes.restartUnits = [];
    changes.reloadUnits = [];
  }
  Object.assign(report, changes);
  wipe(target.key);

  if (dry) {
    report.credentials.removed = credentials.stale;
    appendDryUnits(m, changes);
    return report;
  }

  const n = target.generation!;
  if (!switchGeneration(m, gens, n, meta, identities, held.lock!, problems)) {
    target.writer?.abort();
    return report;
  }
  report.generation = n;

  // After the switch: problems here are reported (exit 1), but the new generation stays active:
  // it is complete, and the old one may already be pruned.
  cred?.commitCredentialPlan(credentials, report.credentials, problems);
  report.warnings.push(...linkPaths(m.secretsDir, meta, previous, problems, m.replaceExisting));
  await notifyUnits(m, changes, problems);
  report.pruned = [...report.pruned, ...prune(m, gens, n, problems)].sort((a, b) => a - b);
  return report;
}

function isMissingFile(e: { code: string; cause?: unknown }): boolean {
  return e.code === "IO" && (e.cause as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

/** What the diff compares with: the records, or the active generation's files as found. */
function compareWith(
  m: Manifest,
  gens: Generations,
  active: number | null,
  recorded: GenerationMeta | null,
  now: readonly MetaEntry[],
  key: Uint8Array,
  foundAsRecorded: ReadonlySet<string>,
): GenerationMeta | null {
  if (m.changeDetection !== "files" || active === null) return recorded;
  return previousAsFound(gens.pathOf(active), active, recorded, now, key, foundAsRecorded);
}

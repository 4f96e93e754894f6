/**
 * `nixseal install`: one process takes a manifest to an active generation of secrets.
 *
 * Order of work: paths in the way and owners are checked, identities loaded; generationsDir is
 * made a ramfs and generation N+1 created; every encrypted file is decrypted once, in memory,
 * and each value goes to the sinks (a file in the generation, created with its final owner and
 * mode); templates are rendered. Entries with a `credential` go to the credential store instead
 * (src/creds): compared with what it holds and, if changed, encrypted again by systemd-creds
 * (the plaintext through a pipe), but not written yet. Every problem is collected; if there is
 * any, the new generation is removed, nothing is written to the credential store, and the
 * active generation stays. Otherwise the metadata is written, secretsDir switched atomically,
 * the prepared credentials written (each atomically) and stale ones removed, `path` symlinks
 * made, units of changed secrets appended to the restart/reload lists (or restarted with one
 * systemctl call per verb), and old generations pruned. Nothing here prints: the report goes
 * back to src/cli/install.ts, and holds names only, never a value.
 *
 * Why credentials are written after the switch: the credential store is persistent and has no
 * generations, so it cannot be switched together with the ramfs. Encrypting before the switch
 * finds every problem (no TPM2, too large) while the install can still be called off; writing
 * after it means a failed install never leaves the store holding values of a configuration that
 * is not active. Should a write fail after the switch (a full disk), that credential keeps its
 * old file and record, each pair consistent and decryptable, and the next run encrypts it again.
 */
import * as path from "node:path";
import { rethrowUnlessNixseal, wipe } from "../common/index.js";
import { type Credstore, closeCredstore } from "../creds/index.js";
import { type GenerationMeta, Generations, type MetaEntry } from "./generations.js";
import { InstallLock } from "./lock.js";
import type { Manifest, ManifestEntry } from "./manifest.js";
import { makeDirs } from "./mount.js";
import type { OwnerResolverOptions } from "./owners.js";
import type { InstallReport } from "./report.js";
import type { SecretSink } from "./sink.js";
import { checkPathsFree } from "./steps/check-paths.js";
import { commitCredentialPlan, encryptCredentials } from "./steps/credentials.js";
import { decryptSources } from "./steps/decrypt-sources.js";
import { diff } from "./steps/diff.js";
import { linkPaths } from "./steps/link-paths.js";
import { loadIdentities } from "./steps/load-identities.js";
import { prepareGeneration } from "./steps/prepare-generation.js";
import { previousAsFound } from "./steps/previous-as-found.js";
import { InstallProblems } from "./steps/problems.js";
import { prune } from "./steps/prune.js";
import { renderTemplates, secretsTemplatesNeed } from "./steps/render-templates.js";
import { resolveOwners } from "./steps/resolve-owners.js";
import { appendDryUnits, notifyUnits } from "./steps/restart-units.js";
import { switchGeneration } from "./steps/switch-generation.js";
import { EntryWriter } from "./steps/write-entries.js";
import { PlaceholderScanner } from "./templates.js";

export type { CredentialsReport, InstallReport } from "./report.js";

export interface InstallOptions {
  /** Decrypt and compare, write only the dry restart/reload lists. */
  dryRun?: boolean;
  /** More places each value goes besides the generation (systemd credentials). */
  sinks?: readonly SecretSink[];
  owners?: OwnerResolverOptions;
}

/** Installs the secrets of a manifest (see the file comment). Never throws for a secret's problem. */
export async function install(m: Manifest, options: InstallOptions = {}): Promise<InstallReport> {
  // Files and directories get exactly the mode asked for: open(2)/mkdir(2) with umask 0.
  const umask = process.umask(0);
  const held: Held = { credstore: null, plaintexts: [], lock: null };
  try {
    return await runInstall(m, options, held);
  } finally {
    process.umask(umask);
    for (const p of held.plaintexts) wipe(p);
    if (held.credstore !== null) closeCredstore(held.credstore);
    held.lock?.release();
  }
}

/** What must be released on every way out of an install. */
interface Held {
  credstore: Credstore | null;
  /** Copies of credential plaintexts, until systemd-creds has them. */
  plaintexts: Uint8Array[];
  /** One install at a time (lock.ts); a dry run changes nothing and takes none. */
  lock: InstallLock | null;
}

function emptyReport(m: Manifest, dry: boolean, previousGeneration: number | null): InstallReport {
  return {
    stage: m.stage,
    dryRun: dry,
    generation: null,
    previousGeneration,
    added: [],
    changed: [],
    removed: [],
    unchanged: 0,
    restartUnits: [],
    reloadUnits: [],
    pruned: [],
    mounted: false,
    credentials: { store: null, created: [], updated: [], unchanged: 0, removed: [], keyRenewed: false },
    warnings: [],
    problems: [],
  };
}

/** The steps in order; each adds to the one problems collector, whose list is report.problems. */
async function runInstall(m: Manifest, options: InstallOptions, held: Held): Promise<InstallReport> {
  const dry = options.dryRun === true;
  const gens = new Generations(m.generationsDir);
  if (!dry) {
    try {
      makeDirs(path.dirname(m.generationsDir), 0o755);
      held.lock = await InstallLock.acquire(m.generationsDir);
    } catch (e) {
      rethrowUnlessNixseal(e);
      const failed = emptyReport(m, dry, gens.active(m.secretsDir));
      failed.problems.push(e);
      return failed;
    }
  }
  // Read under the lock: no other install switches or prunes from here on.
  const report = emptyReport(m, dry, gens.active(m.secretsDir));
  const problems = new InstallProblems(report.problems);
  const entries: ManifestEntry[] = [...m.secrets, ...m.templates];

  checkPathsFree(m, entries, problems);
  const items = resolveOwners(m, entries, options.owners, problems);
  const keys = await loadIdentities(m, problems);
  const target = prepareGeneration(m, gens, report.previousGeneration, dry, options.sinks ?? [], problems);
  report.mounted = target.mounted;
  report.pruned = target.pruned;
  const writer = new EntryWriter(target.sinks, target.key, held.plaintexts, problems);

  const scanner = new PlaceholderScanner(m.placeholders);
  const kept = new Map<string, Uint8Array>();
  let noMatch: boolean;
  try {
    noMatch = await decryptSources(
      m,
      keys.identities,
      items,
      writer,
      secretsTemplatesNeed(m, scanner),
      kept,
      problems,
    );
    renderTemplates(m, scanner, items, writer, kept, problems);
  } finally {
    for (const v of kept.values()) wipe(v);
  }
  // A secret no identity opened: the identities that failed to load may be why.
  // Otherwise a missing identity file is skipped silently, as docs/manifest.md says (defaults
  // such as a user's ~/.ssh/id_rsa often do not exist); an unreadable or broken one is a warning.
  if (noMatch) problems.add(...keys.deferred);
  else report.warnings.push(...keys.deferred.filter((e) => !isMissingFile(e)));

  const credentials = await encryptCredentials(
    m,
    entries,
    writer.credentialItems,
    held.plaintexts,
    dry,
    report.credentials,
    problems,
    (store) => {
      held.credstore = store;
    },
  );

  if (problems.any) {
    for (const sink of target.sinks) sink.abort();
    wipe(target.key);
    report.credentials.created = [];
    report.credentials.updated = [];
    return report;
  }

  const previous = report.previousGeneration === null ? null : gens.readMeta(report.previousGeneration);
  const changes = diff(
    compareWith(m, gens, report.previousGeneration, previous, writer.meta, target.key),
    writer.meta,
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
  if (!switchGeneration(m, gens, n, writer.meta, held.lock!, problems)) {
    for (const sink of target.sinks) sink.abort();
    return report;
  }
  report.generation = n;

  // After the switch: problems here are reported (exit 1), but the new generation stays active:
  // it is complete, and the old one may already be pruned.
  commitCredentialPlan(credentials, report.credentials, problems);
  report.warnings.push(...linkPaths(m.secretsDir, writer.meta, previous, problems, m.replaceExisting));
  notifyUnits(m, changes, problems);
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
): GenerationMeta | null {
  if (m.changeDetection !== "files" || active === null) return recorded;
  return previousAsFound(gens.pathOf(active), active, recorded, now, key);
}

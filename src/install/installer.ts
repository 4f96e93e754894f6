/**
 * `nixseal install`: one process takes a manifest to an active generation of secrets.
 *
 * Order of work: paths in the way and owners are checked; generationsDir is made a ramfs and
 * generation N+1 created; every encrypted file is read once, and each secret's value is taken
 * from the active generation when nothing about it changed (the same encrypted file, identities,
 * owner, group and mode, and its copy there intact), else decrypted in memory (the identities are
 * loaded then, on first need; many age files on two threads); each value becomes a file in the
 * generation, created with its final owner and mode; templates are rendered. Entries with a `credential` go to the credential store instead
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
import { NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import { type GenerationMeta, Generations, identitySetHash, type MetaEntry } from "./generations.js";
import { InstallLock } from "./lock.js";
import type { Manifest, ManifestEntry } from "./manifest.js";
import { makeDirs, ramDirSatisfies } from "./mount.js";
import type { OwnerResolverOptions } from "./owners.js";
import { DecryptWorker } from "./parallel-sources.js";
import type { InstallReport } from "./report.js";
import type { InstallEntry } from "./sink.js";
import { checkPathsFree } from "./steps/check-paths.js";
import type { CredentialPlan } from "./steps/credentials.js";
import { decryptSources } from "./steps/decrypt-sources.js";
import { diff } from "./steps/diff.js";
import { verifyActive } from "./steps/keep-active.js";
import { linkPaths } from "./steps/link-paths.js";
import { LazyIdentities, noIdentityProblems } from "./steps/load-identities.js";
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
  owners?: OwnerResolverOptions;
}

/** Installs the secrets of a manifest (see the file comment). Never throws for a secret's problem. */
export async function install(m: Manifest, options: InstallOptions = {}): Promise<InstallReport> {
  // Files and directories get exactly the mode asked for: open(2)/mkdir(2) with umask 0 (the
  // decrypt worker's files too: the umask is the process's).
  const umask = process.umask(0);
  const held: Held = { closeCredstore: null, plaintexts: [], lock: null, worker: null };
  try {
    return await runInstall(m, options, held);
  } finally {
    await held.worker?.close();
    process.umask(umask);
    for (const p of held.plaintexts) wipe(p);
    held.closeCredstore?.();
    held.lock?.release();
  }
}

/** What must be released on every way out of an install. */
interface Held {
  closeCredstore: (() => void) | null;
  /** Copies of credential plaintexts, until systemd-creds has them. */
  plaintexts: Uint8Array[];
  /** One install at a time (lock.ts); a dry run changes nothing and takes none. */
  lock: InstallLock | null;
  /** The decrypt thread, when one pays (parallel-sources.ts). */
  worker: DecryptWorker | null;
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
    decrypted: 0,
    reused: 0,
    repaired: [],
    warnings: [],
    problems: [],
  };
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
  const activeN = report.previousGeneration;
  const previous = activeN === null ? null : gens.readMeta(activeN);
  const identities = identitySetHash(m.identities);
  // Started first, so that its start-up overlaps with the steps up to decrypting.
  held.worker = await DecryptWorker.startIfWorthIt(m, previous, identities);

  checkPathsFree(m, entries, problems);
  const items = resolveOwners(m, entries, options.owners, problems);
  const credentialsNeeded =
    m.stage === "system" && (m.credstoreDir !== null || entries.some((e) => e.credential !== null));
  if (!dry && !problems.any && !credentialsNeeded && activeN !== null && previous !== null) {
    if (keepActive(m, gens, activeN, previous, items, identities, held.lock!, report, problems))
      return report;
  }
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

/**
 * Nothing changed (steps/keep-active.ts): the active generation stays, verified; its `path`
 * links are put in place and generations beyond keepGenerations pruned. Returns false (nothing
 * done) when anything differs.
 */
function keepActive(
  m: Manifest,
  gens: Generations,
  active: number,
  previous: GenerationMeta,
  items: ReadonlyMap<string, InstallEntry>,
  identities: string,
  lock: InstallLock,
  report: InstallReport,
  problems: InstallProblems,
): boolean {
  // The generations dir as the manifest's mount policy wants it (else a new one is mounted).
  if (!ramDirSatisfies(m.generationsDir, m.mount)) return false;
  let meta: MetaEntry[] | null;
  const k = gens.hmacKey(false);
  try {
    if (k.fresh) return false;
    meta = verifyActive({ m, items, activeDir: gens.pathOf(active), previous, identities, key: k.key });
  } finally {
    wipe(k.key);
  }
  if (meta === null) return false;
  try {
    // Still this install's lock: nothing switched or pruned the generation meanwhile.
    lock.verify();
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
    return true;
  }
  // The same entries as recorded: all unchanged, so no unit to restart or reload.
  Object.assign(report, diff(previous, meta, new Map()));
  report.generation = active;
  report.reused = m.secrets.length;
  report.warnings.push(...linkPaths(m.secretsDir, meta, previous, problems, m.replaceExisting));
  // A lowered keepGenerations applies now too (usually there is nothing to remove).
  report.pruned = prune(m, gens, active, problems);
  return true;
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

/**
 * `nixseal install`: one process takes a manifest to an active generation of secrets.
 *
 * Order of work: paths in the way and owners are checked; generationsDir is made a ramfs and
 * generation N+1 created; every encrypted file is read once (an unchanged store file not at
 * all: docs/architecture.md, "Store files are not read again"), and each secret's value is taken
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
 * The keep check and everything before it are here; the steps of a new generation are in
 * new-generation.ts, loaded only when one is made (a re-activation with nothing to do loads no
 * decrypt path, worker code or systemctl runner).
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
import type { EarlyWorker } from "./early-worker.js";
import { type GenerationMeta, Generations, identitySetHash, type MetaEntry } from "./generations.js";
import { InstallLock } from "./lock.js";
import type { Manifest, ManifestEntry } from "./manifest.js";
import { makeDirs, ramDirSatisfies } from "./mount.js";
import type { Held } from "./new-generation.js";
import type { OwnerResolverOptions } from "./owners.js";
import type { InstallReport } from "./report.js";
import type { InstallEntry } from "./sink.js";
import { checkPathsFree } from "./steps/check-paths.js";
import { diff } from "./steps/diff.js";
import { verifyActive } from "./steps/keep-active.js";
import { linkPaths } from "./steps/link-paths.js";
import { InstallProblems } from "./steps/problems.js";
import { prune } from "./steps/prune.js";
import { resolveOwners } from "./steps/resolve-owners.js";

export type { CredentialsReport, InstallReport } from "./report.js";

export interface InstallOptions {
  /** Decrypt and compare, write only the dry restart/reload lists. */
  dryRun?: boolean;
  owners?: OwnerResolverOptions;
  /**
   * The decrypt worker started before the manifest was parsed (early-worker.ts,
   * startEarlyWorker): used if one pays, else closed; closed in any case when install returns.
   */
  earlyWorker?: EarlyWorker | null;
}

/** Installs the secrets of a manifest (see the file comment). Never throws for a secret's problem. */
export async function install(m: Manifest, options: InstallOptions = {}): Promise<InstallReport> {
  // Files and directories get exactly the mode asked for: open(2)/mkdir(2) with umask 0 (the
  // decrypt worker's files too: the umask is the process's).
  const umask = process.umask(0);
  const held: Held = {
    closeCredstore: null,
    plaintexts: [],
    lock: null,
    worker: null,
    early: options.earlyWorker ?? null,
  };
  try {
    return await runInstall(m, options, held);
  } finally {
    await held.early?.close();
    await held.worker?.close();
    process.umask(umask);
    for (const p of held.plaintexts) wipe(p);
    held.closeCredstore?.();
    held.lock?.release();
  }
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
  checkPathsFree(m, entries, problems);
  const items = resolveOwners(m, entries, options.owners, problems);
  const credentialsNeeded =
    m.stage === "system" && (m.credstoreDir !== null || entries.some((e) => e.credential !== null));
  if (!dry && !problems.any && !credentialsNeeded && activeN !== null && previous !== null) {
    if (keepActive(m, gens, activeN, previous, items, identities, held.lock!, report, problems))
      return report;
  }
  // Everything from here on makes a new generation: loaded only now (new-generation.ts).
  const { installNewGeneration } = await import("./new-generation.js");
  return installNewGeneration({
    m,
    dry,
    held,
    gens,
    report,
    problems,
    entries,
    items,
    previous,
    identities,
    credentialsNeeded,
  });
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

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
import * as fs from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { ioError, NixsealError, rethrowUnlessNixseal, wipe, writeAllSync } from "../common/index.js";
import {
  type CredentialItem,
  type Credstore,
  closeCredstore,
  commitCredentials,
  DEFAULT_CREDSTORE_DIR,
  openCredstore,
  type PreparedCredential,
  prepareCredentials,
  removeStale,
  type SyncStatus,
  storedCredentials,
} from "../creds/index.js";
import {
  contentHash,
  type GenerationMeta,
  Generations,
  type MetaEntry,
  replaceSymlink,
} from "./generations.js";
import { loadManifestIdentities } from "./identities.js";
import type { Manifest, ManifestEntry, ManifestSecret } from "./manifest.js";
import { ensureRamDir, makeDirs } from "./mount.js";
import { OwnerResolver, type OwnerResolverOptions } from "./owners.js";
import { prefetchAgeFiles } from "./parallel-sources.js";
import { GenerationDirSink, type InstallEntry, type SecretSink } from "./sink.js";
import { openSource, sourceKey } from "./sources.js";
import { restartWithSystemctl } from "./systemctl.js";
import { PlaceholderScanner } from "./templates.js";

/** The size of a file (following symlinks: store paths), or null if it cannot be stat-ed. */
function fileSize(file: string): number | null {
  try {
    return fs.statSync(file).size;
  } catch {
    return null;
  }
}

export interface InstallOptions {
  /** Decrypt and compare, write only the dry restart/reload lists. */
  dryRun?: boolean;
  /** More places each value goes besides the generation (systemd credentials). */
  sinks?: readonly SecretSink[];
  owners?: OwnerResolverOptions;
}

/** What happened in the credential store (names are credential IDs). */
export interface CredentialsReport {
  /** The store's directory, or null if this install did not touch it. */
  store: string | null;
  created: string[];
  updated: string[];
  unchanged: number;
  removed: string[];
  /** The store's key no longer unsealed (new host key or TPM2): every credential was redone. */
  keyRenewed: boolean;
}

export interface InstallReport {
  stage: Manifest["stage"];
  dryRun: boolean;
  /** The generation now active (null: dry run, or the install failed). */
  generation: number | null;
  /** The generation active before (null: none). */
  previousGeneration: number | null;
  /** Secret and template names, by what happened to them (compared with the previous generation). */
  added: string[];
  changed: string[];
  removed: string[];
  unchanged: number;
  /** Units appended to the restart/reload list files (the dry ones in a dry run). */
  restartUnits: string[];
  reloadUnits: string[];
  /** Generations removed by pruning. */
  pruned: number[];
  /** True if this install mounted the ramfs/tmpfs on generationsDir. */
  mounted: boolean;
  credentials: CredentialsReport;
  /** Problems that did not stop the install (e.g. an identity file missing but not needed). */
  warnings: NixsealError[];
  /** Non-empty means the install failed (exit 1); the previous generation is still active. */
  problems: NixsealError[];
}

function labelOf(e: ManifestEntry): string {
  return `${e.kind} "${e.name}"`;
}

/** A problem about one entry (or several sharing a file): names them, the file, and the cause. */
function problemAbout(entries: readonly ManifestEntry[], e: NixsealError, file?: string): NixsealError {
  const who = entries.map(labelOf).join(", ");
  let message = e.message;
  if (file !== undefined && message.startsWith(`${file}: `)) message = message.slice(file.length + 2);
  const where = file === undefined ? "" : ` from ${file}`;
  return new NixsealError(e.code, `${who}${where}: ${message}`, {
    hint: e.hint ?? "see the message above",
    file: file ?? e.file,
  });
}

function installProblem(
  entry: ManifestEntry | null,
  message: string,
  hint: string,
  file?: string,
): NixsealError {
  return new NixsealError("INSTALL", entry === null ? message : `${labelOf(entry)}: ${message}`, {
    hint,
    file,
  });
}

/** What is at `p`, when it is something install must not replace (not a symlink). */
function inTheWay(p: string): string | null {
  try {
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) return null;
    return st.isDirectory() ? "a directory" : st.isFile() ? "a file" : "something other than a symlink";
  } catch {
    return null;
  }
}

function appendUnits(file: string | null, units: readonly string[]): void {
  if (file === null || units.length === 0) return;
  makeDirs(path.dirname(file), 0o755);
  let fd: number;
  try {
    fd = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW,
      0o644,
    );
  } catch (e) {
    throw ioError("append to", file, e);
  }
  try {
    writeAllSync(fd, Buffer.from(units.map((u) => `${u}\n`).join("")));
  } catch (e) {
    throw ioError("append to", file, e);
  } finally {
    fs.closeSync(fd);
  }
}

function addUnique(list: string[], items: readonly string[]): void {
  for (const x of items) if (!list.includes(x)) list.push(x);
}

/** Installs the secrets of a manifest (see the file comment). Never throws for a secret's problem. */
export async function install(m: Manifest, options: InstallOptions = {}): Promise<InstallReport> {
  // Files and directories get exactly the mode asked for: open(2)/mkdir(2) with umask 0.
  const umask = process.umask(0);
  const held: Held = { credstore: null, plaintexts: [] };
  try {
    return await runInstall(m, options, held);
  } finally {
    process.umask(umask);
    for (const p of held.plaintexts) wipe(p);
    if (held.credstore !== null) closeCredstore(held.credstore);
  }
}

/** What must be released on every way out of an install. */
interface Held {
  credstore: Credstore | null;
  /** Copies of credential plaintexts, until systemd-creds has them. */
  plaintexts: Uint8Array[];
}

async function runInstall(m: Manifest, options: InstallOptions, held: Held): Promise<InstallReport> {
  const dry = options.dryRun === true;
  const gens = new Generations(m.generationsDir);
  const report: InstallReport = {
    stage: m.stage,
    dryRun: dry,
    generation: null,
    previousGeneration: gens.active(m.secretsDir),
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
  const problems = report.problems;
  const entries: ManifestEntry[] = [...m.secrets, ...m.templates];

  // 1. Nothing of the user's is replaced: secretsDir and `path`s are ours only as symlinks.
  const secretsDirInWay = inTheWay(m.secretsDir);
  if (secretsDirInWay !== null) {
    problems.push(
      installProblem(
        null,
        `secretsDir ${m.secretsDir} is ${secretsDirInWay}, not a symlink`,
        "move it away; nixseal makes secretsDir a symlink to the active generation",
        m.secretsDir,
      ),
    );
  }
  for (const e of entries) {
    if (e.path === null) continue;
    const what = inTheWay(e.path);
    if (what !== null) {
      problems.push(
        installProblem(
          e,
          `its path ${e.path} is ${what}, not a symlink`,
          "move it away (nixseal replaces only symlinks there)",
          e.path,
        ),
      );
    }
  }

  // 2. Owners: files first, then one getent per database for the rest.
  const resolver = new OwnerResolver({ useNss: m.stage !== "users", ...options.owners });
  for (const e of entries) {
    resolver.want("passwd", e.owner);
    resolver.want("group", e.group);
  }
  resolver.resolve();
  const items = new Map<string, InstallEntry>();
  for (const e of entries) {
    const uid = resolver.id("passwd", e.owner);
    const gid = resolver.id("group", e.group);
    if (uid === undefined) {
      problems.push(
        installProblem(
          e,
          `unknown user "${e.owner}"`,
          "create the user (users.users.<name>) or fix the owner",
        ),
      );
    }
    if (gid === undefined) {
      problems.push(
        installProblem(
          e,
          `unknown group "${e.group}"`,
          "create the group (users.groups.<name>) or fix the group",
        ),
      );
    }
    if (uid !== undefined && gid !== undefined) items.set(e.name, { entry: e, uid, gid, mode: e.mode });
  }

  // 3. Identities (only when there is something to decrypt).
  let identities: Identity[] = [];
  let identityProblems: NixsealError[] = [];
  if (m.secrets.length > 0) {
    const loaded = await loadManifestIdentities(m.identities);
    identities = loaded.identities;
    identityProblems = loaded.problems;
    if (identities.length === 0) {
      problems.push(...identityProblems);
      problems.push(
        new NixsealError(
          "AGE_NO_MATCH",
          `no identity could be loaded, so none of the ${m.secrets.length} secrets can be decrypted`,
          {
            hint:
              m.identities.length === 0
                ? "list the host's keys in identities (nixseal.identityPaths / nixseal.ageKeyFile)"
                : "check the identity files named above",
          },
        ),
      );
      identityProblems = [];
    }
  }

  // 4. Where values go: a new generation on a ramfs, unless this is a dry run or already failed.
  const sinks: SecretSink[] = [];
  let generation: number | null = null;
  let key: Buffer;
  if (!dry && problems.length === 0) {
    try {
      report.mounted = ensureRamDir(m.generationsDir, m.mount).mounted;
      key = gens.hmacKey(true);
      generation = gens.create();
      const n = generation;
      sinks.push(new GenerationDirSink(gens.pathOf(n), () => gens.remove(n), `generation ${n}`));
      sinks.push(...(options.sinks ?? []));
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(e);
      key = gens.hmacKey(false);
    }
  } else {
    key = gens.hmacKey(false);
  }

  const meta: MetaEntry[] = [];
  const credentialItems: CredentialItem[] = [];
  const emit = (item: InstallEntry | undefined, content: Uint8Array): void => {
    if (item === undefined) return; // its owner problem is reported already
    const credential = item.entry.credential;
    if (credential !== null) {
      // Not a file anywhere: the plaintext goes to systemd-creds, through a pipe, later.
      const copy = Uint8Array.from(content);
      held.plaintexts.push(copy);
      credentialItems.push({
        name: credential.name,
        plaintext: copy,
        withKey: credential.withKey,
        ...(credential.tpm2Pcrs === null ? {} : { tpm2Pcrs: credential.tpm2Pcrs }),
      });
    }
    for (const sink of credential === null ? sinks : []) {
      try {
        sink.write(item, content);
      } catch (e) {
        rethrowUnlessNixseal(e);
        problems.push(problemAbout([item.entry], e));
        return;
      }
    }
    const e = item.entry;
    meta.push({
      name: e.name,
      kind: e.kind,
      uid: item.uid,
      gid: item.gid,
      mode: item.mode,
      hmac: contentHash(key, content),
      path: e.path,
      restartUnits: credential === null ? e.restartUnits : union(e.restartUnits, credential.services),
      reloadUnits: e.reloadUnits,
      credential: credential?.name ?? null,
    });
  };

  // 5. Secrets: each encrypted file opened once; values kept only while a template needs them.
  const scanner = new PlaceholderScanner(m.placeholders);
  const needed = new Set<string>();
  for (const t of m.templates) for (const n of scanner.secretsIn(t.content)) needed.add(n);
  const kept = new Map<string, Uint8Array>();
  const groups = new Map<string, ManifestSecret[]>();
  for (const s of m.secrets) {
    const k = sourceKey(s);
    const g = groups.get(k);
    if (g === undefined) groups.set(k, [s]);
    else g.push(s);
  }
  let noMatch = false;
  // Many small age files: decrypted on both cores first (parallel-sources.ts), taken below.
  const prefetched =
    identities.length > 0
      ? await prefetchAgeFiles(
          [...groups.values()].filter((g) => g[0]!.format === "age").map((g) => g[0]!.file),
          m.identities,
          identities,
          fileSize,
        )
      : null;
  try {
    if (identities.length > 0) {
      for (const group of groups.values()) {
        const { file, format } = group[0]!;
        let source: Awaited<ReturnType<typeof openSource>>;
        try {
          const plain = format === "age" ? (prefetched?.take(file) ?? null) : null;
          source =
            plain !== null
              ? { valueOf: () => ({ value: plain, owned: false }), close: () => wipe(plain) }
              : await openSource(file, format, identities);
        } catch (e) {
          rethrowUnlessNixseal(e);
          if (e.code === "AGE_NO_MATCH" || e.code === "SOPS_NO_KEY") noMatch = true;
          problems.push(problemAbout(group, e, file));
          continue;
        }
        try {
          for (const s of group) {
            let v: { value: Uint8Array; owned: boolean };
            try {
              v = source.valueOf(s);
            } catch (e) {
              rethrowUnlessNixseal(e);
              problems.push(problemAbout([s], e, file));
              continue;
            }
            try {
              emit(items.get(s.name), v.value);
              if (needed.has(s.name)) kept.set(s.name, Uint8Array.from(v.value));
            } finally {
              if (v.owned) wipe(v.value);
            }
          }
        } finally {
          source.close();
        }
      }
    }

    // 6. Templates: every placeholder replaced, or the template fails with its secrets.
    for (const t of m.templates) {
      const r = scanner.render(t.content, kept);
      if ("missing" in r) {
        problems.push(
          installProblem(
            t,
            `uses ${r.missing.map((n) => `secret "${n}"`).join(", ")}, which could not be decrypted`,
            "fix the problems of those secrets (reported above)",
          ),
        );
        continue;
      }
      try {
        emit(items.get(t.name), r.bytes);
      } finally {
        wipe(r.bytes);
      }
    }
  } finally {
    for (const v of kept.values()) wipe(v);
    prefetched?.close();
  }
  // A secret no identity opened: the identities that failed to load may be why.
  if (noMatch) problems.push(...identityProblems);
  else report.warnings.push(...identityProblems);

  // 7. Credentials: compared with the store and, if changed, encrypted (not written yet). Run
  // even when something else failed already (read-only then), so that every problem is found.
  const credentialEntries = entries.filter((e) => e.credential !== null);
  const wanted = new Set(credentialEntries.map((e) => e.credential!.name));
  const storeDir = m.credstoreDir ?? DEFAULT_CREDSTORE_DIR;
  let prepared: PreparedCredential[] = [];
  const credentialStatus = new Map<string, SyncStatus>();
  let stale: string[] = [];
  try {
    if (m.stage === "system" && credentialEntries.length > 0) {
      const readOnly = dry || problems.length > 0;
      held.credstore = await openCredstore(storeDir, {}, { readOnly });
      report.credentials.store = held.credstore.dir;
      report.credentials.keyRenewed = held.credstore.keyRenewed;
      const r = await prepareCredentials(held.credstore, credentialItems, { encrypt: !dry });
      problems.push(...r.problems);
      prepared = r.prepared;
      for (const [name, status] of r.results) {
        credentialStatus.set(name, status);
        if (status === "unchanged") report.credentials.unchanged++;
        else report.credentials[status].push(name);
      }
    } else if (m.stage === "system" && m.credstoreDir !== null && fs.existsSync(storeDir)) {
      // No credential any more: only stale ones to remove, no key needed (nor systemd-creds).
      held.credstore = await openCredstore(storeDir, {}, { readOnly: true, withoutKey: true });
      report.credentials.store = held.credstore.dir;
    }
    if (held.credstore !== null) stale = storedCredentials(held.credstore).filter((n) => !wanted.has(n));
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.push(e);
  } finally {
    for (const p of held.plaintexts) wipe(p);
    held.plaintexts.length = 0;
  }

  if (problems.length > 0) {
    for (const sink of sinks) sink.abort();
    wipe(key);
    report.credentials.created = [];
    report.credentials.updated = [];
    return report;
  }

  // 8. What changed since the active generation.
  const previous = report.previousGeneration === null ? null : gens.readMeta(report.previousGeneration);
  diff(previous, meta, credentialStatus, report);
  wipe(key);

  if (dry) {
    report.credentials.removed = stale;
    appendUnits(m.dryRestartListFile, report.restartUnits);
    appendUnits(m.dryReloadListFile, report.reloadUnits);
    return report;
  }

  // 9. Switch.
  const n = generation!;
  const newMeta: GenerationMeta = { version: 1, generation: n, entries: meta };
  try {
    gens.writeMeta(newMeta);
    makeDirs(path.dirname(m.secretsDir), 0o755);
    replaceSymlink(m.secretsDir, gens.pathOf(n));
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.push(e);
    for (const sink of sinks) sink.abort();
    return report;
  }
  report.generation = n;

  // 10. After the switch: credentials, symlinks, restarts, pruning. Problems here are reported
  // (exit 1), but the new generation stays active: it is complete, and the old one may already
  // be pruned.
  if (held.credstore !== null) {
    const store = held.credstore;
    if (prepared.length > 0) problems.push(...commitCredentials(store, prepared).problems);
    try {
      const r = removeStale(store, wanted);
      report.credentials.removed = r.removed;
      problems.push(...r.problems);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(e);
    }
  }
  linkPaths(m, meta, previous, problems);
  if (m.restartMode === "systemctl") {
    problems.push(...restartWithSystemctl(report.restartUnits, report.reloadUnits));
  } else {
    try {
      appendUnits(m.restartListFile, report.restartUnits);
      appendUnits(m.reloadListFile, report.reloadUnits);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(e);
    }
  }
  try {
    report.pruned = gens.prune(n, m.keepGenerations);
  } catch (e) {
    problems.push(ioError("prune old generations in", m.generationsDir, e));
  }
  return report;
}

function union(a: readonly string[], b: readonly string[]): string[] {
  const out = [...a];
  addUnique(out, b);
  return out;
}

function sameFile(a: MetaEntry, b: MetaEntry): boolean {
  return (
    a.hmac === b.hmac &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.mode === b.mode &&
    (a.credential ?? null) === (b.credential ?? null)
  );
}

/**
 * Whether an entry is the same as before. A file: same content, owner, group and mode. A
 * credential: what the store says (its file was not encrypted again), and it was that same
 * credential before, or there is no record of before (a reboot emptied the ramfs; the store is
 * persistent and its units loaded this very file).
 */
function unchanged(old: MetaEntry | undefined, e: MetaEntry, credentials: Map<string, SyncStatus>): boolean {
  if (e.credential === null || e.credential === undefined) return old !== undefined && sameFile(old, e);
  if (credentials.get(e.credential) !== "unchanged") return false;
  return old === undefined || old.credential === e.credential;
}

function diff(
  previous: GenerationMeta | null,
  now: readonly MetaEntry[],
  credentials: Map<string, SyncStatus>,
  report: InstallReport,
): void {
  const before = new Map((previous?.entries ?? []).map((e) => [e.name, e]));
  const names = new Set<string>();
  for (const e of now) {
    names.add(e.name);
    const old = before.get(e.name);
    if (unchanged(old, e, credentials)) {
      report.unchanged++;
      continue;
    }
    (old === undefined ? report.added : report.changed).push(e.name);
    addUnique(report.restartUnits, e.restartUnits);
    addUnique(report.reloadUnits, e.reloadUnits);
  }
  for (const old of before.values()) {
    if (names.has(old.name)) continue;
    report.removed.push(old.name);
    addUnique(report.restartUnits, old.restartUnits);
    addUnique(report.reloadUnits, old.reloadUnits);
  }
}

/** `path` symlinks to <secretsDir>/<name>; links of removed entries that are still ours go. */
function linkPaths(
  m: Manifest,
  meta: readonly MetaEntry[],
  previous: GenerationMeta | null,
  problems: NixsealError[],
): void {
  const wanted = new Set<string>();
  for (const e of meta) {
    if (e.path === null || e.credential) continue;
    wanted.add(e.path);
    const target = path.join(m.secretsDir, e.name);
    try {
      const what = inTheWay(e.path);
      if (what !== null) {
        problems.push(
          new NixsealError("INSTALL", `${e.kind} "${e.name}": its path ${e.path} is ${what}, not a symlink`, {
            hint: "move it away (nixseal replaces only symlinks there)",
            file: e.path,
          }),
        );
        continue;
      }
      let current: string | null = null;
      try {
        current = fs.readlinkSync(e.path);
      } catch {}
      if (current === target) continue;
      makeDirs(path.dirname(e.path), 0o755);
      replaceSymlink(e.path, target);
    } catch (err) {
      rethrowUnlessNixseal(err);
      problems.push(
        new NixsealError(err.code, `${e.kind} "${e.name}": ${err.message}`, {
          hint: err.hint ?? "",
          file: e.path,
        }),
      );
    }
  }
  for (const old of previous?.entries ?? []) {
    if (old.path === null || wanted.has(old.path)) continue;
    try {
      if (fs.readlinkSync(old.path) === path.join(m.secretsDir, old.name)) fs.unlinkSync(old.path);
    } catch {}
  }
}

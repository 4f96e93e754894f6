/**
 * sops files in a repository: finding them, the age recipients their rule wants (a `.sops.yaml`
 * creation rule, or a secrets.nix entry), drift between the two (from the metadata alone, no key
 * needed), and re-wrapping the same data key for the wanted recipients (sops updatekeys).
 * Values, MAC and lastmodified are never touched by a re-wrap; entries of recipients that stay
 * are kept byte for byte; pgp/kms/... entries are kept with one key group (they wrap the same
 * data key) and refused when groups must be split anew.
 */
import type { Stats } from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { nodeFs as fs, ioError, NixsealError, walkFiles, wipe } from "../common/index.js";
import {
  type AgeKeyEntry,
  type CreationRule,
  type KeyGroup,
  MAX_DOCUMENT_SIZE,
  parseMetadata,
  type SopsBranch,
  type SopsMetadata,
  type SopsStore,
  serializeMetadata,
  storeByName,
  storeNameByExtension,
  unwrapDataKey,
  wrapDataKey,
} from "../sops/index.js";

/** What a sops file's key groups should be. */
export interface SopsExpectation {
  /** Age recipients per key group: trimmed, deduplicated, in the rule's order. */
  groups: string[][];
  /** Shamir threshold the rule asks for (0: the file's own, or all groups). */
  threshold: number;
  /** Where it comes from, for messages (".sops.yaml rule 2", "secrets.nix"). */
  source: string;
  /** Non-age keys the rule names, which nixseal cannot wrap for ("pgp ABC..."). */
  otherKeys: string[];
}

/** Cheap test before a full parse: does the text carry a sops metadata block? */
const METADATA_MARKERS: Record<string, RegExp> = {
  yaml: /^sops:[ \t]*(#.*)?$/m,
  json: /"sops"\s*:\s*\{/,
  dotenv: /^sops_mac=/m,
  ini: /^\[sops\][ \t]*$/m,
};

/** A sops file's parsed content: its documents and metadata (nothing decrypted). */
export interface SopsFileContent {
  file: string;
  store: SopsStore;
  branches: SopsBranch[];
  metadata: SopsMetadata;
}

/**
 * Reads a sops file's metadata if `data` is a sops document of the store its extension names;
 * null if it is not one (no metadata: e.g. an age file or a plain YAML file). A sops file whose
 * metadata is damaged is an error.
 */
export function sopsContentOf(file: string, data: Uint8Array): SopsFileContent | null {
  const name = storeNameByExtension(file);
  if (name === null) return null;
  const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("utf8");
  if (!METADATA_MARKERS[name]!.test(text)) return null;
  const store = storeByName(name);
  const { branches, metadata } = store.parseEncrypted(data);
  if (metadata === null) return null;
  return { file, store, branches, metadata: parseMetadata(metadata) };
}

/**
 * Reads a file that must be a regular file of reasonable size. A symlink is refused unless
 * `followSymlinks` (a path the user typed).
 */
export function readRepositoryFile(file: string, followSymlinks = false): Buffer {
  let st: Stats;
  try {
    st = followSymlinks ? fs.statSync(file) : fs.lstatSync(file);
  } catch (e) {
    throw ioError("read", file, e);
  }
  if (!st.isFile()) {
    throw new NixsealError("IO", `${file} is not a regular file`, {
      hint: "replace it with the sops file",
      file,
    });
  }
  if (st.size > MAX_DOCUMENT_SIZE) {
    throw new NixsealError("SOPS_FORMAT", `${file} is larger than ${MAX_DOCUMENT_SIZE >> 20} MiB`, {
      hint: "sops files this large are not supported",
      file,
    });
  }
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw ioError("read", file, e);
  }
}

const SKIPPED_DIRS = new Set([".git", "node_modules", ".direnv", "result"]);

/**
 * The files under `dir` that have a sops extension and carry sops metadata (cheap marker test;
 * callers parse them). Symlinks are not followed; .git and node_modules are skipped.
 */
export function findSopsFiles(dir: string): string[] {
  const out: string[] = [];
  walkFiles(
    dir,
    (name) => SKIPPED_DIRS.has(name),
    (e, p) => {
      const store = storeNameByExtension(e.name);
      if (!e.isFile() || e.name === ".sops.yaml" || store === null) return;
      try {
        if (fs.statSync(p).size > MAX_DOCUMENT_SIZE) return;
        if (METADATA_MARKERS[store]!.test(fs.readFileSync(p, "utf8"))) out.push(p);
      } catch {
        // Unreadable: not ours to judge here (check reports files it was asked about).
      }
    },
  );
  return out.sort();
}

function dedupe(list: readonly string[]): string[] {
  return [...new Set(list.map((r) => r.trim()))];
}

/** The expectation of a `.sops.yaml` creation rule. A group without an age key is an error. */
export function expectationOfCreationRule(rule: CreationRule, configFile: string): SopsExpectation {
  const otherKeys: string[] = [];
  const groups = rule.keyGroups.map((g, i) => {
    for (const o of g.other) otherKeys.push(`${o.type} ${o.id}`);
    if (g.age.length === 0) {
      const label = rule.keyGroups.length > 1 ? ` (key group ${i + 1})` : "";
      throw new NixsealError(
        "SOPS_UNSUPPORTED",
        `the creation rule in ${configFile}${label} names no age recipient`,
        {
          hint: "nixseal wraps data keys for age keys only: add an age recipient to the rule, or use sops for this file",
          file: configFile,
        },
      );
    }
    return dedupe(g.age);
  });
  if (groups.length === 0) {
    throw new NixsealError("SOPS_CONFIG", `a creation rule in ${configFile} names no keys`, {
      hint: "add age recipients to the rule",
      file: configFile,
    });
  }
  return {
    groups,
    threshold: rule.shamirThreshold,
    source: `${path.basename(configFile)} rule ${rule.index + 1}`,
    otherKeys,
  };
}

/** The expectation of a secrets.nix entry: one key group of its publicKeys. */
export function expectationOfPublicKeys(publicKeys: readonly string[], rulesFile: string): SopsExpectation {
  return { groups: [dedupe(publicKeys)], threshold: 0, source: path.basename(rulesFile), otherKeys: [] };
}

/** How a file's age recipients differ from what its rule wants. */
export interface SopsRecipientsDiff {
  added: string[];
  removed: string[];
  /** Anything to rewrite: recipients, their grouping or order, or the Shamir threshold. */
  changed: boolean;
  /** The threshold the file gets. */
  threshold: number;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Compares the metadata's age recipients with the expectation (no key needed). */
export function diffSopsRecipients(meta: SopsMetadata, want: SopsExpectation): SopsRecipientsDiff {
  const have = meta.keyGroups.map((g) => g.age.map((e) => e.recipient.trim()));
  const flatHave = new Set(have.flat());
  const flatWanted = new Set(want.groups.flat());
  const threshold = Math.min(want.threshold > 0 ? want.threshold : meta.shamirThreshold, want.groups.length);
  let changed = have.length !== want.groups.length || have.some((g, i) => !sameList(g, want.groups[i]!));
  if (want.groups.length > 1 && threshold !== meta.shamirThreshold) changed = true;
  return {
    added: [...flatWanted].filter((r) => !flatHave.has(r)),
    removed: [...flatHave].filter((r) => !flatWanted.has(r)),
    changed,
    threshold,
  };
}

function otherEntries(g: KeyGroup): string[] {
  const out: string[] = [];
  for (const [type, list] of g.other) if (list.length > 0) out.push(`${list.length} ${type}`);
  return out;
}

/**
 * The key groups a file gets: with one group, kept entries stay byte for byte and only new
 * recipients are wrapped; several groups mean a new Shamir split. The data key is unwrapped
 * (with `identities`) only when something must be wrapped.
 */
export async function rewrappedKeyGroups(
  content: SopsFileContent,
  want: SopsExpectation,
  threshold: number,
  identities: () => Promise<readonly Identity[]>,
): Promise<KeyGroup[]> {
  const meta = content.metadata;
  const current = meta.keyGroups;
  let dataKey: Uint8Array | null = null;
  const key = async () => {
    dataKey ??= await unwrapDataKey(meta, await identities(), content.file);
    return dataKey;
  };
  try {
    if (current.length === 1 && want.groups.length === 1) {
      const kept = new Map(current[0]!.age.map((e) => [e.recipient.trim(), e]));
      const toWrap = want.groups[0]!.filter((r) => !kept.has(r));
      const wrapped = new Map<string, AgeKeyEntry>();
      if (toWrap.length > 0) {
        const [g] = await wrapDataKey(await key(), [toWrap]);
        for (const e of g!.age) wrapped.set(e.recipient, e);
      }
      return [{ age: want.groups[0]!.map((r) => kept.get(r) ?? wrapped.get(r)!), other: current[0]!.other }];
    }
    const stranded = current.flatMap((g, i) => otherEntries(g).map((o) => `${o} (group ${i + 1})`));
    if (stranded.length > 0) {
      throw new NixsealError(
        "SOPS_UNSUPPORTED",
        `${content.file}: the key groups must be split anew, and the file has ${stranded.join(", ")} entries nixseal cannot re-wrap`,
        {
          hint: "run sops updatekeys for this file, or remove those keys from the file first",
          file: content.file,
        },
      );
    }
    return await wrapDataKey(await key(), want.groups, threshold);
  } finally {
    if (dataKey !== null) wipe(dataKey);
  }
}

/** The file's new bytes with `groups` as its keys; values, MAC and lastmodified untouched. */
export function withKeyGroups(content: SopsFileContent, groups: KeyGroup[], threshold: number): Uint8Array {
  const updated: SopsMetadata = {
    ...content.metadata,
    keyGroups: groups,
    shamirThreshold: groups.length > 1 ? threshold : 0,
  };
  return content.store.emitEncrypted(content.branches, serializeMetadata(updated));
}

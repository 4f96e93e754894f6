/**
 * Step 8: what changed since the active generation, from its metadata (never its plaintext), and
 * so which units restart or reload: those of every entry added, changed or removed.
 */
import type { SyncStatus } from "../../creds/index.js";
import type { GenerationMeta, MetaEntry } from "../generations.js";

export interface Changes {
  /** Secret and template names, by what happened to them. */
  added: string[];
  changed: string[];
  removed: string[];
  unchanged: number;
  restartUnits: string[];
  reloadUnits: string[];
}

function addUnique(list: string[], items: readonly string[]): void {
  for (const x of items) if (!list.includes(x)) list.push(x);
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
function unchanged(
  old: MetaEntry | undefined,
  e: MetaEntry,
  credentials: ReadonlyMap<string, SyncStatus>,
): boolean {
  if (e.credential === null || e.credential === undefined) return old !== undefined && sameFile(old, e);
  if (credentials.get(e.credential) !== "unchanged") return false;
  return old === undefined || old.credential === e.credential;
}

/** Compares the new entries with the previous generation's (null: none, or no usable metadata). */
export function diff(
  previous: GenerationMeta | null,
  now: readonly MetaEntry[],
  credentials: ReadonlyMap<string, SyncStatus>,
): Changes {
  const out: Changes = {
    added: [],
    changed: [],
    removed: [],
    unchanged: 0,
    restartUnits: [],
    reloadUnits: [],
  };
  const before = new Map((previous?.entries ?? []).map((e) => [e.name, e]));
  const names = new Set<string>();
  for (const e of now) {
    names.add(e.name);
    const old = before.get(e.name);
    if (unchanged(old, e, credentials)) {
      out.unchanged++;
      continue;
    }
    (old === undefined ? out.added : out.changed).push(e.name);
    addUnique(out.restartUnits, e.restartUnits);
    addUnique(out.reloadUnits, e.reloadUnits);
  }
  for (const old of before.values()) {
    if (names.has(old.name)) continue;
    out.removed.push(old.name);
    addUnique(out.restartUnits, old.restartUnits);
    addUnique(out.reloadUnits, old.reloadUnits);
  }
  return out;
}

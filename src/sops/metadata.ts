/**
 * The `sops` metadata block (sops stores/stores.go `metadata`): key groups with the data key
 * wrapped for each master key, lastmodified, the encrypted MAC, the encryption rule, version.
 * age entries are understood; every other key type's entries (pgp, kms, gcp_kms, azure_kv,
 * hc_vault, hckms) are kept as they are, so a file re-written with the same data key keeps them.
 */
import { NixsealError } from "../common/index.js";
import { cloneValue, SopsBranch, type SopsValue } from "./tree.js";
import { countRules, type EncryptionRules, formatGoFloat } from "./value-cipher.js";

/** The sops release whose file format nixseal writes (in `sops.version`). */
export const SOPS_FORMAT_VERSION = "3.13.2";

/** Master key types sops knows; all but age are carried through untouched. */
export const KEY_TYPES = ["age", "azure_kv", "gcp_kms", "hc_vault", "hckms", "kms", "pgp"] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export interface AgeKeyEntry {
  recipient: string;
  /** The data key (or Shamir share) age-encrypted to `recipient`, ASCII-armored. */
  enc: string;
}

export interface KeyGroup {
  age: AgeKeyEntry[];
  /** Entries of the other key types, as read (each a mapping). */
  other: Map<Exclude<KeyType, "age">, SopsValue[]>;
}

export interface SopsMetadata {
  keyGroups: KeyGroup[];
  /** 0: not set (all groups needed). */
  shamirThreshold: number;
  lastModified: string;
  /** The MAC as stored: `ENC[...]`. */
  mac: string;
  rules: EncryptionRules;
  macOnlyEncrypted: boolean;
  version: string;
}

const RULE_FIELDS: [keyof EncryptionRules, string][] = [
  ["encryptedCommentRegex", "encrypted_comment_regex"],
  ["encryptedRegex", "encrypted_regex"],
  ["encryptedSuffix", "encrypted_suffix"],
  ["unencryptedCommentRegex", "unencrypted_comment_regex"],
  ["unencryptedRegex", "unencrypted_regex"],
  ["unencryptedSuffix", "unencrypted_suffix"],
];

function bad(message: string): NixsealError {
  return new NixsealError("SOPS_METADATA", message, {
    hint: "the sops metadata was edited by hand or damaged; restore the file from version control",
  });
}

function optString(b: SopsBranch, key: string, where: string): string | undefined {
  const v = b.get(key);
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatGoFloat(v);
  throw bad(`${where}.${key} is not a string`);
}

function optInt(b: SopsBranch, key: string): number {
  const v = b.get(key);
  if (v === undefined || v === null || v === "") return 0;
  const n =
    typeof v === "bigint" ? Number(v) : typeof v === "number" ? v : typeof v === "string" ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 255) throw bad(`sops.${key} is not a small non-negative integer`);
  return n;
}

function optBool(b: SopsBranch, key: string): boolean {
  const v = b.get(key);
  if (v === undefined || v === null || v === "") return false;
  if (typeof v === "boolean") return v;
  if (v === "true" || v === "True") return true;
  if (v === "false" || v === "False") return false;
  throw bad(`sops.${key} is not a boolean`);
}

/** A key list: `[]`, `null`, absent or a list of mappings. */
function keyList(b: SopsBranch, key: string, where: string): SopsValue[] {
  const v = b.get(key);
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad(`${where}.${key} is not a list`);
  const out: SopsValue[] = [];
  for (const e of v) {
    if (!(e instanceof SopsBranch)) throw bad(`${where}.${key} has an entry that is not a mapping`);
    out.push(e);
  }
  return out;
}

function parseGroup(b: SopsBranch, where: string): KeyGroup {
  const age: AgeKeyEntry[] = [];
  for (const e of keyList(b, "age", where)) {
    const entry = e as SopsBranch;
    const recipient = optString(entry, "recipient", `${where}.age[]`);
    const enc = optString(entry, "enc", `${where}.age[]`);
    if (!recipient || !enc) throw bad(`${where}.age has an entry without recipient or enc`);
    age.push({ recipient, enc });
  }
  const other = new Map<Exclude<KeyType, "age">, SopsValue[]>();
  for (const t of KEY_TYPES) {
    if (t === "age") continue;
    const list = keyList(b, t, where);
    if (list.length > 0)
      other.set(
        t,
        list.map((x) => cloneValue(x)),
      );
  }
  return { age, other };
}

function groupIsEmpty(g: KeyGroup): boolean {
  return g.age.length === 0 && g.other.size === 0;
}

/** Reads the `sops` mapping of an encrypted file (any store; dotenv/INI unflattened first). */
export function parseMetadata(b: SopsBranch): SopsMetadata {
  const lastModified = optString(b, "lastmodified", "sops");
  if (lastModified === undefined) throw bad("sops.lastmodified is missing");
  const mac = optString(b, "mac", "sops") ?? "";
  const rules: EncryptionRules = {};
  for (const [field, key] of RULE_FIELDS) {
    const v = optString(b, key, "sops");
    if (v !== undefined && v !== "") rules[field] = v;
  }
  if (countRules(rules) > 1) throw bad("sops metadata sets more than one encryption rule (suffix/regex)");
  // stores.go internalKeygroups: top-level key lists win over key_groups.
  const top = parseGroup(b, "sops");
  let keyGroups: KeyGroup[];
  if (!groupIsEmpty(top)) {
    keyGroups = [top];
  } else {
    const groups = b.get("key_groups");
    if (groups !== undefined && groups !== null && !Array.isArray(groups))
      throw bad("sops.key_groups is not a list");
    keyGroups = (groups ?? []).map((g, i) => {
      if (!(g instanceof SopsBranch)) throw bad(`sops.key_groups[${i}] is not a mapping`);
      return parseGroup(g, `sops.key_groups[${i}]`);
    });
  }
  if (keyGroups.length === 0 || keyGroups.every(groupIsEmpty)) {
    throw new NixsealError("SOPS_METADATA", "no keys found in the sops metadata", {
      hint: "the file lists no age, pgp or other master key; it cannot be decrypted",
    });
  }
  return {
    keyGroups,
    shamirThreshold: optInt(b, "shamir_threshold"),
    lastModified,
    mac,
    rules,
    macOnlyEncrypted: optBool(b, "mac_only_encrypted"),
    version: optString(b, "version", "sops") ?? "",
  };
}

/** A mapping with its keys sorted, recursively (sops `goToSops` sorts at every level). */
function sortedValue(v: SopsValue): SopsValue {
  if (v instanceof SopsBranch) {
    const items = v.items
      .filter((i) => typeof i.key === "string")
      .map((i) => ({ key: i.key, value: sortedValue(i.value) }));
    items.sort((a, b) =>
      (a.key as string) < (b.key as string) ? -1 : (a.key as string) > (b.key as string) ? 1 : 0,
    );
    return new SopsBranch(items);
  }
  if (Array.isArray(v))
    return v.map((x) =>
      x instanceof Object && !(x instanceof Uint8Array) ? sortedValue(x as SopsValue) : x,
    );
  return v;
}

function groupItems(g: KeyGroup): [string, SopsValue][] {
  const out: [string, SopsValue][] = [];
  if (g.age.length > 0) {
    out.push([
      "age",
      g.age.map(
        (e) =>
          new SopsBranch([
            { key: "enc", value: e.enc },
            { key: "recipient", value: e.recipient },
          ]),
      ),
    ]);
  }
  for (const [t, list] of g.other) if (list.length > 0) out.push([t, list.map((x) => sortedValue(x))]);
  return out;
}

/**
 * The `sops` mapping as sops writes it: keys sorted alphabetically at every level (so `age`,
 * `lastmodified`, `mac`, `pgp`, `unencrypted_suffix`, `version`), empty key types omitted, one
 * group's keys at the top level and several groups under `key_groups`.
 */
export function serializeMetadata(m: SopsMetadata): SopsBranch {
  const items: [string, SopsValue][] = [];
  if (m.keyGroups.length === 1) {
    items.push(...groupItems(m.keyGroups[0]!));
  } else if (m.keyGroups.length > 1) {
    items.push([
      "key_groups",
      m.keyGroups.map((g) => {
        const gi = groupItems(g);
        gi.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
        return new SopsBranch(gi.map(([key, value]) => ({ key, value })));
      }),
    ]);
  }
  items.push(["lastmodified", m.lastModified], ["mac", m.mac]);
  if (m.macOnlyEncrypted) items.push(["mac_only_encrypted", true]);
  if (m.shamirThreshold > 0) items.push(["shamir_threshold", BigInt(m.shamirThreshold)]);
  for (const [field, key] of RULE_FIELDS) {
    const v = m.rules[field];
    if (v) items.push([key, v]);
  }
  items.push(["version", m.version]);
  items.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return new SopsBranch(items.map(([key, value]) => ({ key, value })));
}

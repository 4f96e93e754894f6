/**
 * `.sops.yaml` as sops reads it (sops config/config.go): where it is found, its creation rules,
 * and which rule applies to a file. Also the Go regular expressions those rules use.
 */
import { dirname, join, resolve, sep } from "node:path";
import type { LineCounter, Node } from "yaml";
import { ioError, NixsealError, nodeFs } from "../common/index.js";
import { compileGoRegexp } from "./go-regexp.js";
import { YamlAliases } from "./yaml-aliases.js";
import { yamlLib } from "./yaml-lib.js";

export { compileGoRegexp };

// ---------------------------------------------------------------------------------------------
// Finding .sops.yaml (sops config.LookupConfigFile)

/** The only name sops looks for; `.sops.yml` is noticed only to warn that it is ignored. */
export const SOPS_CONFIG_NAME = ".sops.yaml";
const SOPS_CONFIG_ALTERNATE_NAME = ".sops.yml";
const LOOKUP_MAX_DEPTH = 100; // sops config.maxDepth
/** A `.sops.yaml` larger than this is refused (real ones are a few KiB). */
export const MAX_SOPS_CONFIG_BYTES = 1 << 20;

export interface SopsConfigLocation {
  /** Absolute path of the config to use, or null when none was found. */
  file: string | null;
  /** Set when a `.sops.yml` was seen on the way up: sops ignores that name, and says so. */
  warning: string | null;
}

function exists(path: string): boolean {
  try {
    nodeFs.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the `.sops.yaml` sops would use. With `override` (sops `--config` / `SOPS_CONFIG`; the
 * caller reads the environment) that file is used as given, without searching. Otherwise the
 * search starts in `startDir` and goes up to 100 levels. Note that sops itself starts from the
 * current directory, not from the encrypted file's directory, as sops does: pass
 * `process.cwd()` to behave exactly like sops.
 */
export function findSopsConfig(startDir: string, override?: string): SopsConfigLocation {
  if (override !== undefined && override !== "") return { file: resolve(override), warning: null };
  let dir = resolve(startDir);
  let alternate: string | null = null;
  for (let depth = 0; depth < LOOKUP_MAX_DEPTH; depth++) {
    const candidate = join(dir, SOPS_CONFIG_NAME);
    if (exists(candidate)) {
      const warning =
        alternate === null
          ? null
          : `ignoring ${alternate}: the config file must be called ${SOPS_CONFIG_NAME}; using ${candidate} instead`;
      return { file: candidate, warning };
    }
    if (alternate === null && exists(join(dir, SOPS_CONFIG_ALTERNATE_NAME))) {
      alternate = join(dir, SOPS_CONFIG_ALTERNATE_NAME);
    }
    const parent = dirname(dir);
    if (parent === dir) break; // sops keeps looking at / until depth 100; same result
    dir = parent;
  }
  const warning =
    alternate === null
      ? null
      : `ignoring ${alternate}: the config file must be called ${SOPS_CONFIG_NAME} (rename it, or pass --config)`;
  return { file: null, warning };
}

// ---------------------------------------------------------------------------------------------
// The configuration model

/** Key types sops knows but nixseal cannot wrap a data key for; kept to be reported. */
export type OtherKeyType = "pgp" | "kms" | "gcp_kms" | "azure_keyvault" | "hc_vault" | "hckms";

export interface OtherKey {
  type: OtherKeyType;
  /** What sops shows for it: fingerprint, ARN, resource id, `vaultUrl/keys/name/version`, URI. */
  id: string;
}

/** One key group: every key in it wraps the same data key (or the same Shamir share). */
export interface KeyGroup {
  /** age recipients as written (trimmed, unparsed): `age1…`, `age1pq1…`, plugins, `ssh-…`. */
  age: string[];
  /** Keys of other types, in the order sops lists them. */
  other: OtherKey[];
}

/** The options of one creation rule, as sops' config.Config holds them. */
export interface CreationRule {
  /** 0-based position in `creation_rules`. */
  index: number;
  /** 1-based line of the rule in the file. */
  line: number;
  /** As written; "" matches every file. */
  pathRegex: string;
  /** One group (flat `age:`/`pgp:`… keys) or the `key_groups` list. */
  keyGroups: KeyGroup[];
  /** 0 when unset (sops then uses the number of groups). */
  shamirThreshold: number;
  unencryptedSuffix: string;
  encryptedSuffix: string;
  unencryptedRegex: string;
  encryptedRegex: string;
  unencryptedCommentRegex: string;
  encryptedCommentRegex: string;
  macOnlyEncrypted: boolean;
}

interface ParsedRule {
  rule: CreationRule;
  /** Errors sops raises only when this rule is the one that applies (conflicts, bad keys). */
  problems: NixsealError[];
}

export interface SopsStoresConfig {
  /** `stores.yaml.indent`; 0 = the store's default (4). */
  yamlIndent: number;
  /** `stores.json.indent`; -1 (default) = a tab. */
  jsonIndent: number;
  /** `stores.json_binary.indent`; -1 (default) = a tab. */
  jsonBinaryIndent: number;
}

export interface SopsConfig {
  /** Absolute path of the `.sops.yaml`. */
  file: string;
  /** Directory paths are matched relative to (absolute, as sops' filepath.Abs gives it). */
  dir: string;
  /** False when the file has no (or a null) `creation_rules`: sops then acts as if there were no config. */
  hasCreationRules: boolean;
  rules: readonly ParsedRule[];
  stores: SopsStoresConfig;
  /** Things sops silently ignores that are likely mistakes (unknown keys, unreachable rules). */
  warnings: NixsealError[];
}

// ---------------------------------------------------------------------------------------------
// A small typed view of the YAML document: aliases expanded and `<<` merge keys applied as Go's
// yaml.v3 does, map keys kept in order, no plain JS objects (so `__proto__` is just a key).

type YValue =
  | { kind: "map"; entries: [string, YValue][]; keyLines: Map<string, number>; line: number }
  | { kind: "seq"; items: YValue[]; line: number }
  | { kind: "scalar"; value: unknown; text: string; line: number };

const MAX_NODES = 200_000; // bounds alias expansion ("billion laughs")
const MAX_ALIASED_NODES = 20_000; // nodes copied by aliases: anchors in a config are key lists
const MAX_DEPTH = 64;
const TOO_LARGE = "the document is too large or too deeply nested once aliases are expanded";

class ConfigReader {
  private nodes = 0;
  readonly errors: NixsealError[] = [];
  readonly warnings: NixsealError[] = [];

  constructor(
    readonly file: string,
    private readonly lines: LineCounter,
    private readonly aliases: YamlAliases | null,
  ) {}

  lineOf(offset: number | undefined): number {
    return offset === undefined ? 0 : this.lines.linePos(offset).line;
  }

  error(line: number, message: string, hint: string): NixsealError {
    const where = line > 0 ? `${this.file}:${line}` : this.file;
    return new NixsealError("SOPS_CONFIG", `${where}: ${message}`, { hint, file: this.file });
  }

  convert(node: unknown, depth = 0): YValue {
    if (++this.nodes > MAX_NODES || depth > MAX_DEPTH) {
      throw this.error(0, TOO_LARGE, "simplify it");
    }
    if (yamlLib().isAlias(node)) {
      const target = this.aliases?.target(node);
      if (target === undefined)
        throw this.error(this.lineOf(node.range?.[0]), "unresolved alias", "define the anchor first");
      return this.convert(target, depth + 1);
    }
    const line = this.lineOf((node as Node | null)?.range?.[0]);
    if (yamlLib().isMap(node)) {
      const explicit: [string, YValue][] = [];
      const merged: [string, YValue][] = [];
      const keyLines = new Map<string, number>();
      for (const pair of node.items) {
        const key = yamlLib().isScalar(pair.key) ? String(pair.key.value) : null;
        const value = this.convert(pair.value ?? null, depth + 1);
        if (key === "<<" && yamlLib().isScalar(pair.key) && pair.key.type === "PLAIN") {
          const sources = value.kind === "seq" ? value.items : [value];
          for (const src of sources) {
            if (src.kind !== "map") {
              throw this.error(
                value.line,
                "a << merge key needs a mapping or a list of mappings",
                "fix the merge",
              );
            }
            merged.push(...src.entries);
          }
          continue;
        }
        if (key === null) {
          this.warnings.push(
            this.error(line, "a non-scalar mapping key is ignored", "use plain string keys"),
          );
          continue;
        }
        explicit.push([key, value]);
        keyLines.set(key, this.lineOf((pair.key as Node).range?.[0]));
      }
      const seen = new Set(explicit.map(([k]) => k));
      for (const [k, v] of merged) {
        if (seen.has(k)) continue;
        seen.add(k);
        explicit.push([k, v]);
      }
      return { kind: "map", entries: explicit, keyLines, line };
    }
    if (yamlLib().isSeq(node)) {
      return { kind: "seq", items: node.items.map((item) => this.convert(item, depth + 1)), line };
    }
    if (yamlLib().isScalar(node)) {
      const text = typeof node.value === "string" ? node.value : (node.source ?? String(node.value));
      return { kind: "scalar", value: node.value, text, line };
    }
    return { kind: "scalar", value: null, text: "", line };
  }

  // Typed field readers mirroring yaml.v3 decoding into sops' Go structs. A wrong type makes
  // yaml.Unmarshal fail for the whole file, so these are load errors.

  string(v: YValue | undefined, field: string): string {
    if (v === undefined || (v.kind === "scalar" && v.value === null)) return "";
    if (v.kind === "scalar") return v.text;
    this.errors.push(
      this.error(v.line, `${field} must be a string, not a ${kindName(v)}`, `write ${field}: <text>`),
    );
    return "";
  }

  int(v: YValue | undefined, field: string): number {
    if (v === undefined || (v.kind === "scalar" && v.value === null)) return 0;
    if (v.kind === "scalar" && typeof v.value === "number" && Number.isSafeInteger(v.value)) return v.value;
    this.errors.push(this.error(v.line, `${field} must be an integer`, `write ${field}: 2`));
    return 0;
  }

  bool(v: YValue | undefined, field: string): boolean {
    if (v === undefined || (v.kind === "scalar" && v.value === null)) return false;
    if (v.kind === "scalar") {
      if (typeof v.value === "boolean") return v.value;
      // yaml.v3 accepts YAML 1.1 booleans when decoding into a Go bool.
      if (/^(y|Y|yes|Yes|YES|on|On|ON)$/.test(v.text)) return true;
      if (/^(n|N|no|No|NO|off|Off|OFF)$/.test(v.text)) return false;
    }
    this.errors.push(this.error(v.line, `${field} must be true or false`, `write ${field}: true`));
    return false;
  }

  list(v: YValue | undefined, field: string): YValue[] {
    if (v === undefined || (v.kind === "scalar" && v.value === null)) return [];
    if (v.kind === "seq") return v.items;
    this.errors.push(
      this.error(v.line, `${field} must be a list, not a ${kindName(v)}`, `write ${field} as a YAML list`),
    );
    return [];
  }

  stringList(v: YValue | undefined, field: string): string[] {
    return this.list(v, field).map((item) => this.string(item, `an entry of ${field}`));
  }

  map(v: YValue | undefined, field: string, known: readonly string[], where: string): Map<string, YValue> {
    const out = new Map<string, YValue>();
    if (v === undefined || (v.kind === "scalar" && v.value === null)) return out;
    if (v.kind !== "map") {
      this.errors.push(
        this.error(
          v.line,
          `${field} must be a mapping, not a ${kindName(v)}`,
          `write ${field} as key: value lines`,
        ),
      );
      return out;
    }
    for (const [k, val] of v.entries) {
      if (!known.includes(k)) {
        const guess = closest(k, known);
        this.warnings.push(
          this.error(
            v.keyLines.get(k) || val.line || v.line,
            `unknown key ${JSON.stringify(k)} in ${where}; sops ignores it`,
            guess ? `did you mean ${guess}?` : `known keys: ${known.join(", ")}`,
          ),
        );
        continue;
      }
      out.set(k, val);
    }
    return out;
  }
}

function kindName(v: YValue): string {
  return v.kind === "map"
    ? "mapping"
    : v.kind === "seq"
      ? "list"
      : typeof v.value === "string"
        ? "string"
        : String(typeof v.value);
}

/** The known key closest to a misspelt one (dashes for underscores, case, or 2 edits away). */
function closest(word: string, known: readonly string[]): string | null {
  const norm = (s: string) => s.toLowerCase().replaceAll("-", "_");
  let best: string | null = null;
  let bestDistance = 3;
  for (const k of known) {
    if (norm(k) === norm(word)) return k;
    const d = editDistance(norm(word), k);
    if (d < bestDistance) {
      bestDistance = d;
      best = k;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return 99;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur.push(Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

const TOP_KEYS = ["creation_rules", "destination_rules", "stores"] as const;
/** Not read by sops, but the usual home of YAML anchors for recipients: no warning for it. */
const ANCHOR_KEYS = ["keys"];
const RULE_KEYS = [
  "path_regex",
  "kms",
  "aws_profile",
  "age",
  "pgp",
  "gcp_kms",
  "hckms",
  "azure_keyvault",
  "hc_vault_transit_uri",
  "key_groups",
  "shamir_threshold",
  "unencrypted_suffix",
  "encrypted_suffix",
  "unencrypted_regex",
  "encrypted_regex",
  "unencrypted_comment_regex",
  "encrypted_comment_regex",
  "mac_only_encrypted",
] as const;
const GROUP_KEYS = ["merge", "kms", "gcp_kms", "hckms", "azure_keyvault", "hc_vault", "age", "pgp"] as const;
const ENCRYPTION_OPTIONS = [
  ["unencryptedSuffix", "unencrypted_suffix"],
  ["encryptedSuffix", "encrypted_suffix"],
  ["unencryptedRegex", "unencrypted_regex"],
  ["encryptedRegex", "encrypted_regex"],
  ["unencryptedCommentRegex", "unencrypted_comment_regex"],
  ["encryptedCommentRegex", "encrypted_comment_regex"],
] as const;

/**
 * sops parseKeyField: a flat key field is a comma-separated string, a list of strings, or null.
 * A wrong type is an error only for the rule that applies (the Go field is an interface{}).
 */
function flatKeyField(
  v: YValue | undefined,
  field: string,
  problem: (line: number, m: string, h: string) => void,
): string[] {
  if (v === undefined || (v.kind === "scalar" && v.value === null)) return [];
  if (v.kind === "scalar" && typeof v.value === "string") {
    return v.value
      .split(",")
      .map((k) => k.trim())
      .filter((k) => k !== "");
  }
  if (v.kind === "seq") {
    const out: string[] = [];
    for (const item of v.items) {
      if (item.kind !== "scalar" || typeof item.value !== "string") {
        problem(
          item.line,
          `invalid ${field} key configuration: expected string in list, got ${kindName(item)}`,
          `quote the ${field} entries`,
        );
        continue;
      }
      out.push(item.value);
    }
    return out;
  }
  problem(
    v.line,
    `invalid ${field} key configuration: expected a string or a list of strings, got ${kindName(v)}`,
    `write ${field}: key1,key2 or a YAML list`,
  );
  return [];
}

/**
 * sops age.MasterKeysFromRecipients on one string: "" is no key; otherwise split at commas and
 * trim, and an empty piece is an error ("unknown recipient type").
 */
function ageRecipients(
  value: string,
  line: number,
  problem: (line: number, m: string, h: string) => void,
): string[] {
  if (value === "") return [];
  const out: string[] = [];
  for (const piece of value.split(",")) {
    const r = piece.trim();
    if (r === "") {
      problem(
        line,
        "failed to parse input, unknown recipient type: an empty age recipient (stray comma?)",
        "remove the extra comma",
      );
      continue;
    }
    out.push(r);
  }
  return out;
}

function keyGroupFrom(
  reader: ConfigReader,
  v: YValue,
  where: string,
  problem: (line: number, m: string, h: string) => void,
  depth = 0,
): KeyGroup {
  const m = reader.map(v, where, GROUP_KEYS, where);
  const group: KeyGroup = { age: [], other: [] };
  if (depth > 16) {
    problem(v.line, "merge nested too deeply", "flatten the key group");
    return group;
  }
  reader.list(m.get("merge"), "merge").forEach((sub, i) => {
    const g = keyGroupFrom(reader, sub, `${where} merge[${i}]`, problem, depth + 1);
    group.age.push(...g.age);
    group.other.push(...g.other);
  });
  for (const entry of reader.stringList(m.get("age"), "age"))
    group.age.push(...ageRecipients(entry, v.line, problem));
  const other = (type: OtherKeyType, id: string) => group.other.push({ type, id });
  for (const fp of reader.stringList(m.get("pgp"), "pgp")) other("pgp", fp.replaceAll(" ", ""));
  for (const k of reader.list(m.get("kms"), "kms")) {
    const f = reader.map(k, "a kms entry", ["arn", "role", "context", "aws_profile"], `${where} kms entry`);
    const role = reader.string(f.get("role"), "role");
    other("kms", reader.string(f.get("arn"), "arn") + (role ? `+${role}` : ""));
  }
  for (const k of reader.list(m.get("gcp_kms"), "gcp_kms")) {
    const f = reader.map(k, "a gcp_kms entry", ["resource_id"], `${where} gcp_kms entry`);
    other("gcp_kms", reader.string(f.get("resource_id"), "resource_id"));
  }
  for (const k of reader.list(m.get("hckms"), "hckms")) {
    const f = reader.map(k, "an hckms entry", ["key_id"], `${where} hckms entry`);
    other("hckms", reader.string(f.get("key_id"), "key_id"));
  }
  for (const k of reader.list(m.get("azure_keyvault"), "azure_keyvault")) {
    const f = reader.map(
      k,
      "an azure_keyvault entry",
      ["vaultUrl", "key", "version"],
      `${where} azure_keyvault entry`,
    );
    const id = `${reader.string(f.get("vaultUrl"), "vaultUrl")}/keys/${reader.string(f.get("key"), "key")}`;
    const version = reader.string(f.get("version"), "version");
    other("azure_keyvault", version ? `${id}/${version}` : id);
  }
  for (const uri of reader.stringList(m.get("hc_vault"), "hc_vault")) other("hc_vault", uri);
  // sops deduplicateKeygroup: by key type and its string form, first occurrence kept.
  const seen = new Set<string>();
  group.age = group.age.filter((r) => !seen.has(`age/${r}`) && seen.add(`age/${r}`) !== undefined);
  group.other = group.other.filter(
    (k) => !seen.has(`${k.type}/${k.id}`) && seen.add(`${k.type}/${k.id}`) !== undefined,
  );
  return group;
}

function ruleFrom(reader: ConfigReader, v: YValue, index: number): ParsedRule {
  const where = `creation rule ${index + 1}`;
  const problems: NixsealError[] = [];
  const problem = (line: number, message: string, hint: string) =>
    problems.push(reader.error(line || v.line, `${where}: ${message}`, hint));
  const m = reader.map(v, where, RULE_KEYS, where);
  const rule: CreationRule = {
    index,
    line: v.line,
    pathRegex: reader.string(m.get("path_regex"), "path_regex"),
    keyGroups: [],
    shamirThreshold: reader.int(m.get("shamir_threshold"), "shamir_threshold"),
    unencryptedSuffix: reader.string(m.get("unencrypted_suffix"), "unencrypted_suffix"),
    encryptedSuffix: reader.string(m.get("encrypted_suffix"), "encrypted_suffix"),
    unencryptedRegex: reader.string(m.get("unencrypted_regex"), "unencrypted_regex"),
    encryptedRegex: reader.string(m.get("encrypted_regex"), "encrypted_regex"),
    unencryptedCommentRegex: reader.string(m.get("unencrypted_comment_regex"), "unencrypted_comment_regex"),
    encryptedCommentRegex: reader.string(m.get("encrypted_comment_regex"), "encrypted_comment_regex"),
    macOnlyEncrypted: reader.bool(m.get("mac_only_encrypted"), "mac_only_encrypted"),
  };
  reader.string(m.get("aws_profile"), "aws_profile");
  const hckms = reader.stringList(m.get("hckms"), "hckms");

  const set = ENCRYPTION_OPTIONS.filter(([prop]) => rule[prop] !== "").map(([, key]) => key);
  if (set.length > 1) {
    problem(
      v.line,
      `cannot use more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, encrypted_comment_regex, or unencrypted_comment_regex for the same rule (found ${set.join(", ")})`,
      "keep one of them",
    );
  }

  const groups = reader.list(m.get("key_groups"), "key_groups");
  if (groups.length > 0) {
    rule.keyGroups = groups.map((g, i) => keyGroupFrom(reader, g, `${where} key group ${i + 1}`, problem));
    const flat = ["age", "pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "hckms"].filter(
      (k) => m.has(k),
    );
    if (flat.length > 0) {
      reader.warnings.push(
        reader.error(
          v.line,
          `${where}: ${flat.join(", ")} ignored because key_groups is set (as sops does)`,
          "move the keys into key_groups",
        ),
      );
    }
  } else {
    const group: KeyGroup = { age: [], other: [] };
    for (const entry of flatKeyField(m.get("age"), "age", problem))
      group.age.push(...ageRecipients(entry, v.line, problem));
    const other = (type: OtherKeyType, field: string, yamlKey = field) => {
      for (const entry of flatKeyField(m.get(yamlKey), field, problem)) {
        for (const piece of entry.split(",")) {
          const id = type === "pgp" ? piece.replaceAll(" ", "") : piece.trim();
          if (id !== "") group.other.push({ type, id });
        }
      }
    };
    other("pgp", "pgp");
    other("kms", "kms");
    other("gcp_kms", "gcp_kms");
    for (const id of hckms) if (id.trim() !== "") group.other.push({ type: "hckms", id: id.trim() });
    other("azure_keyvault", "azure_keyvault");
    other("hc_vault", "hc_vault_transit_uri");
    rule.keyGroups = [group];
  }
  return { rule, problems };
}

/** Parses the text of a `.sops.yaml`. `file` is used for messages and to match paths. */
export function parseSopsConfig(text: string, file: string): SopsConfig {
  const absolute = resolve(file);
  if (text.length > MAX_SOPS_CONFIG_BYTES) {
    throw new NixsealError(
      "SOPS_CONFIG",
      `${absolute}: larger than ${MAX_SOPS_CONFIG_BYTES} bytes, refusing to parse it`,
      {
        hint: "a .sops.yaml holds rules, not data: check that this is the right file",
        file: absolute,
      },
    );
  }
  const lines = new (yamlLib().LineCounter)();
  const doc = yamlLib().parseDocument(text, {
    lineCounter: lines,
    uniqueKeys: true,
    merge: false,
    prettyErrors: false,
  });
  const aliases = YamlAliases.of(doc.contents, text);
  const reader = new ConfigReader(absolute, lines, aliases);
  const syntax = [...doc.errors];
  if (syntax.length > 0) {
    throw NixsealError.many(
      syntax.map((e) =>
        reader.error(
          reader.lineOf(e.pos[0]),
          e.code === "DUPLICATE_KEY"
            ? "a key appears twice in the same mapping"
            : `invalid YAML: ${e.message.split("\n")[0]}`,
          e.code === "DUPLICATE_KEY"
            ? "remove one of them (sops refuses duplicate keys)"
            : "fix the YAML syntax",
        ),
      ),
    );
  }
  // Aliases are measured before anything is expanded (yaml-aliases.ts).
  const expansion = aliases?.expansion(doc.contents, {
    maxNodes: MAX_NODES,
    maxAliasedNodes: MAX_ALIASED_NODES,
    maxDepth: MAX_DEPTH,
    aliasIsNode: true,
    keysNest: false,
  });
  if (expansion !== undefined && "refused" in expansion) throw reader.error(0, TOO_LARGE, "simplify it");
  let root: YValue;
  try {
    root = reader.convert(doc.contents);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    if (e instanceof RangeError) throw reader.error(0, "the document is nested too deeply", "simplify it");
    throw e;
  }

  const known = [...TOP_KEYS, ...ANCHOR_KEYS];
  const top = reader.map(root, "the top level", known, "the top level");
  const rulesNode = top.get("creation_rules");
  const hasCreationRules =
    rulesNode !== undefined && !(rulesNode.kind === "scalar" && rulesNode.value === null);
  const rules = reader.list(rulesNode, "creation_rules").map((r, i) => ruleFrom(reader, r, i));

  const storesMap = reader.map(
    top.get("stores"),
    "stores",
    ["yaml", "json", "json_binary", "dotenv", "ini"],
    "stores",
  );
  const indent = (name: string, fallback: number) => {
    const m = reader.map(
      storesMap.get(name),
      `stores.${name}`,
      name === "dotenv" || name === "ini" ? [] : ["indent"],
      `stores.${name}`,
    );
    return m.has("indent") ? reader.int(m.get("indent"), `stores.${name}.indent`) : fallback;
  };
  const stores: SopsStoresConfig = {
    yamlIndent: indent("yaml", 0),
    jsonIndent: indent("json", -1),
    jsonBinaryIndent: indent("json_binary", -1),
  };
  reader.list(top.get("destination_rules"), "destination_rules"); // publish only: shape checked, not used

  const catchAll = rules.findIndex((r) => r.rule.pathRegex === "");
  if (catchAll >= 0 && catchAll < rules.length - 1) {
    reader.warnings.push(
      reader.error(
        rules[catchAll]!.rule.line,
        `creation rule ${catchAll + 1} has no path_regex, so the rules after it are never used`,
        "move the catch-all rule last",
      ),
    );
  }
  if (reader.errors.length > 0) throw NixsealError.many(reader.errors);
  return {
    file: absolute,
    dir: dirname(absolute),
    hasCreationRules,
    rules,
    stores,
    warnings: reader.warnings,
  };
}

/** Reads and parses a `.sops.yaml`. */
export function loadSopsConfig(file: string): SopsConfig {
  const absolute = resolve(file);
  let size: number;
  try {
    size = nodeFs.statSync(absolute).size;
  } catch (e) {
    throw ioError("read", absolute, e);
  }
  if (size > MAX_SOPS_CONFIG_BYTES) return parseSopsConfig("x".repeat(MAX_SOPS_CONFIG_BYTES + 1), absolute);
  let text: string;
  try {
    text = nodeFs.readFileSync(absolute, "utf8");
  } catch (e) {
    throw ioError("read", absolute, e);
  }
  return parseSopsConfig(text, absolute);
}

/**
 * The path sops matches `path_regex` against: the file's absolute path, with the config's
 * directory and a separator stripped when the file is inside it (sops parseCreationRuleForFile).
 */
export function pathForRules(config: SopsConfig, filePath: string): string {
  const absolute = resolve(filePath);
  const prefix = config.dir + sep; // for a config in "/", "//": never stripped, as in sops
  return absolute.startsWith(prefix) ? absolute.slice(prefix.length) : absolute;
}

/**
 * The creation rule sops would apply to `filePath`: the first whose path_regex matches
 * (unanchored) or is empty. Null when none matches, or when the config has no creation_rules
 * (sops then behaves as if there were no config). Like sops, rules are compiled in order up to
 * the match, and the chosen rule's own errors (conflicting options, bad keys) are thrown.
 */
export function ruleFor(config: SopsConfig, filePath: string): CreationRule | null {
  if (!config.hasCreationRules) return null;
  const path = pathForRules(config, filePath);
  for (const { rule, problems } of config.rules) {
    if (rule.pathRegex !== "") {
      const re = compileGoRegexp(
        rule.pathRegex,
        `path_regex of creation rule ${rule.index + 1} in ${config.file}`,
      );
      if (!re.test(path)) continue;
    }
    if (problems.length > 0) throw NixsealError.many(problems);
    return rule;
  }
  return null;
}

/** sops' error when no rule applies, for callers that need one. */
export function noMatchingRuleError(config: SopsConfig, filePath: string): NixsealError {
  return new NixsealError(
    "SOPS_CONFIG",
    `no matching creation rules found in ${config.file} for ${pathForRules(config, filePath)}`,
    {
      hint: "add a creation rule whose path_regex matches this path (relative to the .sops.yaml's directory)",
      file: config.file,
    },
  );
}

/**
 * Every problem of every rule, for `nixseal check`: what sops would report only when a rule is
 * used (bad regexes, conflicting options, bad keys), thresholds that cannot work, and rules with
 * no key at all. Warnings (config.warnings) are not included.
 */
export function validateSopsConfig(config: SopsConfig): NixsealError[] {
  const out: NixsealError[] = [];
  for (const { rule, problems } of config.rules) {
    const where = `${config.file}:${rule.line}: creation rule ${rule.index + 1}`;
    out.push(...problems);
    const regexes: [string, string][] = [
      ["path_regex", rule.pathRegex],
      ["encrypted_regex", rule.encryptedRegex],
      ["unencrypted_regex", rule.unencryptedRegex],
      ["encrypted_comment_regex", rule.encryptedCommentRegex],
      ["unencrypted_comment_regex", rule.unencryptedCommentRegex],
    ];
    for (const [name, source] of regexes) {
      if (source === "") continue;
      try {
        compileGoRegexp(source, `${name} of creation rule ${rule.index + 1} in ${config.file}`);
      } catch (e) {
        if (e instanceof NixsealError) out.push(e);
        else throw e;
      }
    }
    const groups = rule.keyGroups.length;
    if (problems.length === 0 && rule.keyGroups.every((g) => g.age.length === 0 && g.other.length === 0)) {
      out.push(
        new NixsealError("SOPS_CONFIG", `${where} names no keys`, {
          hint: "add age recipients to the rule",
          file: config.file,
        }),
      );
    }
    const t = rule.shamirThreshold;
    if (t < 0 || (groups > 1 && t !== 0 && (t < 2 || t > groups))) {
      out.push(
        new NixsealError(
          "SOPS_CONFIG",
          `${where}: shamir_threshold ${rule.shamirThreshold} does not fit ${groups} key group(s)`,
          {
            hint: `use a threshold between 2 and ${groups}`,
            file: config.file,
          },
        ),
      );
    }
  }
  return out;
}

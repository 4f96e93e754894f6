/**
 * The activation manifest, version 1 (docs/manifest.md): parsed and validated strictly. Every
 * problem is collected and reported in one NixsealError.many (code MANIFEST), each naming its
 * place in the manifest (`secrets[3].mode`), what is wrong and what to do.
 *
 * The field tables below are the schema: a new field (`services`, say) is one more line in
 * ENTRY_FIELDS or SECRET_FIELDS plus its member in the types.
 */
import * as fs from "node:fs";
import {
  booleanField,
  CREDENTIAL_KEYS,
  type CredentialKey,
  DUPLICATE_KEY_HINT,
  duplicateKey,
  enumField,
  type Field,
  type FieldTable,
  integerField,
  ioError,
  isObject,
  type Json,
  NixsealError,
  nullable,
  Problems,
  parseMode,
  pathProblem,
  principalProblem,
  readList,
  readMode,
  readObject,
  readPath,
  readPrincipal,
  readUnits,
  shown,
  stringField,
  typeName,
  unitNameProblem,
  validateCredentialName,
} from "../common/index.js";

export const MANIFEST_VERSION = 1;
/** docs/manifest.md: the manifest file itself is at most 64 MiB. */
export const MAX_MANIFEST_SIZE = 64 * 1024 * 1024;
/** Generations kept besides the active one: more is a typo, not a wish. */
export const MAX_KEEP_GENERATIONS = 1000;

const readKeepGenerationsCount = integerField(
  0,
  MAX_KEEP_GENERATIONS,
  '0 keeps only the active generation; "all" keeps every one (sops-nix\'s keepGenerations = 0)',
);

/** A count of generations, or "all": never prune (what sops-nix does with keepGenerations = 0). */
const readKeepGenerations: Field<number>["read"] = (v, at, p) =>
  v === "all" ? Number.POSITIVE_INFINITY : readKeepGenerationsCount(v, at, p);

export type SecretFormat = "age" | "yaml" | "json" | "dotenv" | "ini" | "binary";
export const SECRET_FORMATS: readonly SecretFormat[] = ["age", "yaml", "json", "dotenv", "ini", "binary"];
export type Stage = "system" | "users";
export type MountPolicy = "ramfs" | "tmpfs-noswap" | "existing";
/**
 * "gpg": a GnuPG home directory (sops-nix's `sops.gnupg.home`) for sops files' pgp entries;
 * "gpg-ssh": an RSA ssh key used as the PGP key sops-nix makes of it (`sops.gnupg.sshKeyPaths`).
 */
export type IdentityType = "ssh" | "age" | "systemd-creds" | "gpg" | "gpg-ssh";
export type RestartMode = "lists" | "systemctl";
/**
 * How changes are found. "records": the active generation's metadata (keyed hashes), and every
 * entry's units at boot. "files": sops-nix's way, the active generation's files as they are
 * (a file changed or removed by hand counts), and no units when there is no active generation.
 */
export type ChangeDetection = "records" | "files";

export interface ManifestIdentity {
  type: IdentityType;
  path: string;
  /** systemd-creds only: the name it was sealed under (null: the file's name). */
  name: string | null;
}

/** A secret or template sealed as a systemd credential in the credstore instead of a file. */
export interface ManifestCredential {
  /** The credential ID: <credstoreDir>/<name>, `LoadCredentialEncrypted=<name>:...`. */
  name: string;
  withKey: CredentialKey;
  /** --tpm2-pcrs= ("7", "0+7"), or null for systemd's default. */
  tpm2Pcrs: string | null;
  /** The units that load it: restarted when it is created, changes or is removed. */
  services: string[];
}

/** What secrets and templates share: where the file goes and who may read it. */
export interface ManifestEntryBase {
  /** A relative path: the file is <generation>/<name>. */
  name: string;
  /** A user name, a decimal uid, or null (the user running nixseal install). */
  owner: string | null;
  group: string | null;
  /** 0..0o777. */
  mode: number;
  /** An absolute path where a symlink to <secretsDir>/<name> is made, or null. */
  path: string | null;
  restartUnits: string[];
  reloadUnits: string[];
  /** Sealed into the credstore instead of written to the generation (null: a file). */
  credential: ManifestCredential | null;
}

export interface ManifestSecret extends ManifestEntryBase {
  kind: "secret";
  /** The encrypted file (age or sops). */
  file: string;
  format: SecretFormat;
  /** sops only: the value's path, "a/b"; null = the whole document. */
  key: string | null;
}

export interface ManifestTemplate extends ManifestEntryBase {
  kind: "template";
  /** Text with placeholders, replaced at install time. */
  content: string;
}

export type ManifestEntry = ManifestSecret | ManifestTemplate;

export interface Manifest {
  version: 1;
  stage: Stage;
  secretsDir: string;
  generationsDir: string;
  /** Older generations kept besides the active one; Infinity for "all" (never prune). */
  keepGenerations: number;
  mount: MountPolicy;
  restartListFile: string | null;
  reloadListFile: string | null;
  dryRestartListFile: string | null;
  dryReloadListFile: string | null;
  /** "lists": the restart/reload list files; "systemctl": one systemctl call per verb. */
  restartMode: RestartMode;
  changeDetection: ChangeDetection;
  /** The credential store; null: absent from the manifest (the default dir, used only if needed). */
  credstoreDir: string | null;
  /**
   * A regular file at an entry's `path` is replaced by the symlink, with a warning, instead of
   * stopping the install: what sops-nix and agenix do, set by the compat modules only.
   */
  replaceExisting: boolean;
  /**
   * The Nix store directory (the modules write `builtins.storeDir`); null: absent. An encrypted
   * file inside one of its store paths, read before as a store file at the same path, is not
   * read again (sources.ts, isInStore; docs/architecture.md, "Store files are not read again").
   */
  storeDir: string | null;
  identities: ManifestIdentity[];
  secrets: ManifestSecret[];
  templates: ManifestTemplate[];
  /** Secret name -> its placeholder string (a Map: names are data, never object keys). */
  placeholders: Map<string, string>;
}

// ---- the rules of values --------------------------------------------------------------------

const NAME_SEGMENT = /^[A-Za-z0-9._@+=-]+$/;
/** Segments of NAME_SEGMENT joined by "/": ASCII, so at most 255 characters is at most 255 bytes. */
const COMMON_NAME = /^[A-Za-z0-9._@+=-]+(?:\/[A-Za-z0-9._@+=-]+)*$/;
const DOT_SEGMENT = /(?:^|\/)\.\.?(?:\/|$)/;
/** The form the modules give placeholders; any such text left in a template must be known. */
export const PLACEHOLDER_PATTERN = /<nixseal:[0-9a-f]{64}:placeholder>/g;
/** Where the schema is told. */
const SCHEMA_HINT = "see docs/manifest.md for the schema";

/** Why a secret/template name is not acceptable, or null. */
export function nameProblem(name: string): string | null {
  // The common case in one test: a short name of allowed segments, none of them . or ..
  if (name.length <= 255 && COMMON_NAME.test(name) && !DOT_SEGMENT.test(name)) return null;
  if (name.length === 0) return "is empty";
  if (Buffer.byteLength(name) > 4096) return "is longer than 4096 bytes";
  if (name.startsWith("/")) return "is absolute (names are relative paths such as db/password)";
  for (const seg of name.split("/")) {
    if (seg === "") return "has an empty segment (// or a trailing /)";
    if (seg === "." || seg === "..") return "has a . or .. segment";
    if (Buffer.byteLength(seg) > 255) return "has a segment longer than 255 bytes";
    if (!NAME_SEGMENT.test(seg))
      return "may only use the characters A-Z a-z 0-9 . _ @ + = - and / between segments";
  }
  return null;
}

// ---- the validator ----------------------------------------------------------------------------

const ENUM_HINT = "fix the value (see docs/manifest.md)";
const readName = stringField(
  nameProblem,
  "names are relative paths of [A-Za-z0-9._@+=-] segments, e.g. db/password",
);
/** A user or group; null: the user running install. */
const readOwner = nullable(readPrincipal);

const PCRS = /^\d{1,2}(\+\d{1,2})*$/;

const CREDENTIAL_FIELDS: FieldTable = {
  name: {
    required: true,
    read: stringField((s) => {
      try {
        validateCredentialName(s);
        return null;
      } catch {
        return "is not a valid credential name";
      }
    }, "credential names use letters, digits and ._@+=- (no / or :), do not start with ., at most 255 characters"),
  },
  withKey: { required: true, read: enumField<CredentialKey>(CREDENTIAL_KEYS, ENUM_HINT) },
  tpm2Pcrs: {
    required: false,
    default: null,
    read: nullable(
      stringField(
        (s) => (PCRS.test(s) ? null : "is not a PCR list"),
        'PCR indexes joined by "+", such as "7" or "0+7"',
      ),
    ),
  },
  services: { required: true, read: (v, at, p) => readUnits(v, at, p) },
};

const readCredential: Field<ManifestCredential | null>["read"] = (v, at, p) => {
  if (v === null) return null;
  const m = readObject(v, at, CREDENTIAL_FIELDS, p, SCHEMA_HINT);
  if (m === null) return undefined;
  return {
    name: m.get("name") as string,
    withKey: m.get("withKey") as CredentialKey,
    tpm2Pcrs: m.get("tpm2Pcrs") as string | null,
    services: m.get("services") as string[],
  };
};

const ENTRY_FIELDS: FieldTable = {
  name: { required: true, read: readName },
  owner: { required: true, read: readOwner },
  group: { required: true, read: readOwner },
  mode: { required: true, read: readMode },
  path: { required: true, read: nullable(readPath) },
  restartUnits: { required: true, read: readUnits },
  reloadUnits: { required: true, read: readUnits },
  credential: { required: false, default: null, read: readCredential },
};

const SECRET_FIELDS: FieldTable = {
  ...ENTRY_FIELDS,
  file: { required: true, read: readPath },
  format: { required: true, read: enumField(SECRET_FORMATS, ENUM_HINT) },
  key: {
    required: true,
    read: nullable(
      stringField(keyProblem, 'a sops key path such as "db/password" (or null for the whole file)'),
    ),
  },
};

function keyProblem(s: string): string | null {
  return s === "" || s.split("/").some((x) => x === "") ? "has an empty segment" : null;
}

/** One secret through its field table, every problem reported (see quickSecret for the common case). */
export function readSecret(x: Json, where: string, p: Problems): ManifestSecret | null {
  const m = readObject(x, where, SECRET_FIELDS, p, SCHEMA_HINT);
  if (m === null) return null;
  return {
    kind: "secret",
    name: m.get("name") as string,
    owner: m.get("owner") as string | null,
    group: m.get("group") as string | null,
    mode: m.get("mode") as number,
    path: m.get("path") as string | null,
    restartUnits: m.get("restartUnits") as string[],
    reloadUnits: m.get("reloadUnits") as string[],
    credential: m.get("credential") as ManifestCredential | null,
    file: m.get("file") as string,
    format: m.get("format") as SecretFormat,
    key: m.get("key") as string | null,
  };
}

/**
 * Strings found valid by the quick reading (owners, groups, units, modes): a host's thousands
 * of secrets repeat a few of them, so each is checked once. Only valid ones are kept; anything
 * else goes through the rules every time.
 */
const validPrincipals = new Set<string>();
const validUnits = new Set<string>();
const validModes = new Map<string, number>();

/** A list of unit names as readUnits reads it, or null if it has any problem (readUnits tells which). */
function quickUnits(v: Json | undefined): string[] | null {
  if (!Array.isArray(v)) return null;
  for (let i = 0; i < v.length; i++) {
    const u = v[i];
    if (typeof u !== "string") return null;
    if (!validUnits.has(u)) {
      if (unitNameProblem(u) !== null) return null;
      validUnits.add(u);
    }
  }
  // A list of 0 or 1 (nearly every secret's) is the parsed array itself: the parsed manifest is
  // not kept, and 20 000 copies of short arrays would be kept to the end for the collector.
  return v.length < 2 ? (v as string[]) : [...new Set(v as string[])];
}

/** An owner or group as readOwner reads it; undefined if it has a problem. */
function quickPrincipal(v: Json | undefined): string | null | undefined {
  if (v === null) return null;
  if (typeof v !== "string") return undefined;
  if (validPrincipals.has(v)) return v;
  if (principalProblem(v) !== null) return undefined;
  validPrincipals.add(v);
  return v;
}

/** A mode as readMode reads it; null if it has a problem. */
function quickMode(v: Json | undefined): number | null {
  if (typeof v !== "string") return null;
  let mode = validModes.get(v);
  if (mode === undefined) {
    const parsed = parseMode(v);
    if (typeof parsed !== "number") return null;
    mode = parsed;
    validModes.set(v, mode);
  }
  return mode;
}

const SECRET_KEYS = new Set(Object.keys(SECRET_FIELDS));

/**
 * The common secret (no credential, nothing wrong) checked in one pass over its fields, with the
 * rules of SECRET_FIELDS but without a place string or a call through the table per field: the
 * table's way costs ten times as much before the JIT warms up, and a host's manifest has
 * thousands of secrets. Returns exactly what readObject would (test/install/manifest.test.ts
 * holds the two together), or null for anything else, which then goes through readObject and
 * is reported there.
 */
export function quickSecret(v: Json): ManifestSecret | null {
  if (!isObject(v)) return null;
  let n = 0;
  for (const k in v) {
    if (!SECRET_KEYS.has(k)) return null;
    n++;
  }
  if (n !== (Object.hasOwn(v, "credential") ? SECRET_KEYS.size : SECRET_KEYS.size - 1)) return null;
  if (v.credential !== undefined && v.credential !== null) return null;
  const { name, file, format, key, mode, path } = v;
  if (typeof name !== "string" || nameProblem(name) !== null) return null;
  if (typeof file !== "string" || pathProblem(file) !== null) return null;
  if (typeof format !== "string" || !(SECRET_FORMATS as readonly string[]).includes(format)) return null;
  if (key !== null && (typeof key !== "string" || keyProblem(key) !== null)) return null;
  if (path !== null && (typeof path !== "string" || pathProblem(path) !== null)) return null;
  const parsedMode = quickMode(mode);
  if (parsedMode === null) return null;
  const owner = quickPrincipal(v.owner);
  const group = quickPrincipal(v.group);
  if (owner === undefined || group === undefined) return null;
  const restartUnits = quickUnits(v.restartUnits);
  const reloadUnits = quickUnits(v.reloadUnits);
  if (restartUnits === null || reloadUnits === null) return null;
  return {
    kind: "secret",
    name,
    owner,
    group,
    mode: parsedMode,
    path,
    restartUnits,
    reloadUnits,
    credential: null,
    file,
    format: format as SecretFormat,
    key,
  };
}

const TEMPLATE_FIELDS: FieldTable = {
  ...ENTRY_FIELDS,
  content: {
    required: true,
    read: (v, at, p) => {
      if (typeof v === "string") return v;
      p.add(at, `must be a string, not ${typeName(v)}`, "a template's content is text with placeholders");
      return undefined;
    },
  },
};

const IDENTITY_FIELDS: FieldTable = {
  type: {
    required: true,
    read: enumField<IdentityType>(["ssh", "age", "systemd-creds", "gpg", "gpg-ssh"], ENUM_HINT),
  },
  path: { required: true, read: readPath },
  name: {
    required: false,
    default: null,
    read: nullable(CREDENTIAL_FIELDS.name!.read as Field<string>["read"]),
  },
};

const TOP_FIELDS = (p: Problems): FieldTable => ({
  version: {
    required: true,
    read: (v, at) => {
      if (v === MANIFEST_VERSION) return v;
      p.add(
        at,
        `manifest version ${typeof v === "number" ? v : typeName(v)} is not supported (this nixseal reads version ${MANIFEST_VERSION})`,
        "upgrade nixseal to the version the NixOS module comes with",
      );
      return undefined;
    },
  },
  stage: { required: false, default: "system", read: enumField<Stage>(["system", "users"], ENUM_HINT) },
  secretsDir: { required: true, read: readPath },
  generationsDir: { required: true, read: readPath },
  keepGenerations: { required: true, read: readKeepGenerations },
  mount: {
    required: false,
    default: "ramfs",
    read: enumField<MountPolicy>(["ramfs", "tmpfs-noswap", "existing"], ENUM_HINT),
  },
  restartListFile: { required: false, default: null, read: nullable(readPath) },
  reloadListFile: { required: false, default: null, read: nullable(readPath) },
  dryRestartListFile: { required: false, default: null, read: nullable(readPath) },
  dryReloadListFile: { required: false, default: null, read: nullable(readPath) },
  restartMode: {
    required: false,
    default: "lists",
    read: enumField<RestartMode>(["lists", "systemctl"], ENUM_HINT),
  },
  changeDetection: {
    required: false,
    default: "records",
    read: enumField<ChangeDetection>(["records", "files"], ENUM_HINT),
  },
  credstoreDir: { required: false, default: null, read: nullable(readPath) },
  replaceExisting: {
    required: false,
    default: false,
    read: booleanField("true only for hosts moving from sops-nix or agenix (the compat modules set it)"),
  },
  storeDir: { required: false, default: null, read: nullable(readPath) },
  identities: {
    required: true,
    read: (v, at) =>
      readList(
        v,
        at,
        p,
        (x, where) => {
          const m = readObject(x, where, IDENTITY_FIELDS, p, SCHEMA_HINT);
          if (m === null) return null;
          const type = m.get("type") as IdentityType;
          const name = m.get("name") as string | null;
          if (name !== null && type !== "systemd-creds") {
            p.add(
              `${where}.name`,
              `is set, but a ${type} identity has no name`,
              "remove it (only systemd-creds identities are sealed under a name)",
            );
            return null;
          }
          return { type, path: m.get("path") as string, name };
        },
        SCHEMA_HINT,
      ),
  },
  secrets: {
    required: true,
    read: (v, at) =>
      readList(
        v,
        at,
        p,
        (x, where): ManifestSecret | null => readSecret(x, where, p),
        SCHEMA_HINT,
        quickSecret,
      ),
  },
  templates: {
    required: true,
    read: (v, at) =>
      readList(
        v,
        at,
        p,
        (x, where): ManifestTemplate | null => {
          const m = readObject(x, where, TEMPLATE_FIELDS, p, SCHEMA_HINT);
          if (m === null) return null;
          return {
            kind: "template",
            name: m.get("name") as string,
            owner: m.get("owner") as string | null,
            group: m.get("group") as string | null,
            mode: m.get("mode") as number,
            path: m.get("path") as string | null,
            restartUnits: m.get("restartUnits") as string[],
            reloadUnits: m.get("reloadUnits") as string[],
            credential: m.get("credential") as ManifestCredential | null,
            content: m.get("content") as string,
          };
        },
        SCHEMA_HINT,
      ),
  },
  placeholders: {
    required: true,
    read: (v, at) => {
      if (!isObject(v)) {
        p.add(
          at,
          `must be an object (secret name -> placeholder), not ${typeName(v)}`,
          "see docs/manifest.md",
        );
        return undefined;
      }
      const out = new Map<string, string>();
      let ok = true;
      for (const [name, ph] of Object.entries(v)) {
        if (typeof ph !== "string" || ph.length < 8 || ph.length > 1024) {
          p.add(
            `${at}["${shown(name)}"]`,
            `must be a string of 8 to 1024 characters, not ${typeof ph === "string" ? `${ph.length} characters` : typeName(ph)}`,
            "the modules make placeholders <nixseal:SHA256:placeholder>",
          );
          ok = false;
        } else out.set(name, ph);
      }
      return ok ? out : undefined;
    },
  },
});

/**
 * Every entry with its place in the manifest, made only when a problem names it: a manifest of
 * 10 000 secrets is checked without 10 000 place strings.
 */
class EntryPlaces {
  readonly all: readonly ManifestEntry[];
  constructor(private readonly m: Manifest) {
    this.all = m.templates.length === 0 ? m.secrets : [...m.secrets, ...m.templates];
  }
  at(i: number): string {
    const n = this.m.secrets.length;
    return i < n ? `secrets[${i}]` : `templates[${i - n}]`;
  }
}

/** Checks between fields: names unique and not nested, keys only for sops, paths distinct... */
function crossCheck(m: Manifest, p: Problems): void {
  const places = new EntryPlaces(m);
  const entries = places.all;
  const owners = new Map<string, number>(); // name -> index in entries
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const other = owners.get(e.name);
    if (other !== undefined) {
      p.add(
        `${places.at(i)}.name`,
        `"${e.name}" is also the name of ${places.at(other)}`,
        "give every secret and template its own name",
      );
    } else owners.set(e.name, i);
  }
  // No name may be a directory of another (a and a/b).
  const sorted = [...owners.keys()].sort();
  for (let i = 0; i + 1 < sorted.length; i++) {
    const a = sorted[i]!;
    for (let j = i + 1; j < sorted.length && sorted[j]!.startsWith(a); j++) {
      if (sorted[j]![a.length] === "/") {
        p.add(
          `${places.at(owners.get(sorted[j]!)!)}.name`,
          `"${sorted[j]}" would need "${a}" (${places.at(owners.get(a)!)}) to be a directory`,
          "a name cannot be both a file and a directory; rename one of them",
        );
      }
    }
  }
  for (let i = 0; i < m.secrets.length; i++) {
    const s = m.secrets[i]!;
    if (s.key === null) continue;
    if (s.format === "age" || s.format === "binary") {
      p.add(
        `secrets[${i}].key`,
        `a ${s.format} file has no keys`,
        "set key to null, or set format to the sops file's format (yaml, json, dotenv, ini)",
      );
    }
    if (s.format === "dotenv" && s.key.includes("/")) {
      p.add(
        `secrets[${i}].key`,
        `"${shown(s.key)}": a dotenv file is flat`,
        "name the variable itself, e.g. DB_PASSWORD",
      );
    }
    if (s.format === "ini" && s.key.split("/").length !== 2) {
      p.add(
        `secrets[${i}].key`,
        `"${shown(s.key)}" is not section/key`,
        "an INI key is section/key, e.g. database/password",
      );
    }
  }
  if (m.generationsDir === m.secretsDir || isUnder(m.secretsDir, m.generationsDir)) {
    p.add(
      "secretsDir",
      "must not be generationsDir or inside it",
      "e.g. /run/nixseal/secrets and /run/nixseal/generations",
    );
  }
  if (isUnder(m.generationsDir, m.secretsDir)) {
    p.add(
      "generationsDir",
      "must not be inside secretsDir",
      "e.g. /run/nixseal/secrets and /run/nixseal/generations",
    );
  }
  const paths = new Map<string, number>();
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.path === null) continue;
    const other = paths.get(e.path);
    if (other !== undefined)
      p.add(
        `${places.at(i)}.path`,
        `"${e.path}" is also the path of ${places.at(other)}`,
        "give every path one owner",
      );
    else paths.set(e.path, i);
    for (const dir of [m.secretsDir, m.generationsDir]) {
      if (e.path === dir || isUnder(e.path, dir) || isUnder(dir, e.path)) {
        p.add(
          `${places.at(i)}.path`,
          `"${e.path}" overlaps ${dir}`,
          "a path is a symlink outside the secrets directories",
        );
      }
    }
  }
  if (m.stage === "users") {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      for (const f of ["owner", "group"] as const) {
        const v = e[f];
        if (v !== null && v !== "root" && v !== "0") {
          p.add(
            `${places.at(i)}.${f}`,
            `is "${v}", but the users stage runs before users and groups exist`,
            "secrets needed for users belong to root (owner and group root)",
          );
        }
      }
      if (e.restartUnits.length > 0 || e.reloadUnits.length > 0) {
        p.add(
          places.at(i),
          "has restart/reload units in the users stage",
          "no service runs yet when users are created; remove the units",
        );
      }
    }
  }
  credentialChecks(m, places, p);
  if (m.placeholders.size > 0) {
    const secretNames = new Set<string>();
    for (const s of m.secrets) secretNames.add(s.name);
    const seen = new Map<string, string>();
    for (const [name, ph] of m.placeholders) {
      if (!secretNames.has(name)) {
        p.add(
          `placeholders["${shown(name)}"]`,
          "names no secret of this manifest",
          "every placeholder stands for a secret",
        );
      }
      const other = seen.get(ph);
      if (other !== undefined) {
        p.add(
          `placeholders["${shown(name)}"]`,
          `is the same string as the placeholder of "${shown(other)}"`,
          "placeholders must be unique",
        );
      } else seen.set(ph, name);
    }
  }
  const known = new Set(m.placeholders.values());
  m.templates.forEach((t, i) => {
    for (const match of t.content.matchAll(PLACEHOLDER_PATTERN)) {
      if (!known.has(match[0])) {
        p.add(
          `templates[${i}].content`,
          `holds the placeholder ${match[0]}, which stands for no secret of this manifest`,
          "define the secret the template uses (nixseal.secrets.<name>)",
        );
        break;
      }
    }
  });
}

/** Credentials: IDs unique, not in the users stage, no `path`, a credstore apart from the ramfs. */
function credentialChecks(m: Manifest, places: EntryPlaces, p: Problems): void {
  const ids = new Map<string, number>();
  const entries = places.all;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const c = e.credential;
    if (c === null) continue;
    const at = places.at(i);
    const other = ids.get(c.name);
    if (other !== undefined) {
      p.add(
        `${at}.credential.name`,
        `"${c.name}" is also the credential of ${places.at(other)}`,
        "give every credential its own name (a credential holds one secret)",
      );
    } else ids.set(c.name, i);
    if (m.stage === "users") {
      p.add(
        `${at}.credential`,
        "is set in the users stage",
        "no service runs before users exist; make it a credential of a secret without neededForUsers",
      );
    }
    if (e.path !== null) {
      p.add(
        `${at}.path`,
        "is set, but a credential is not written to the secrets directory, so the symlink would point nowhere",
        "remove path (services read the credential from $CREDENTIALS_DIRECTORY), or remove credential",
      );
    }
    if (c.tpm2Pcrs !== null && c.withKey === "host") {
      p.add(
        `${at}.credential.tpm2Pcrs`,
        'is set, but withKey is "host": no TPM2 is involved',
        'remove tpm2Pcrs, or set withKey to "tpm2", "host+tpm2" or "auto"',
      );
    }
  }
  if (m.credstoreDir !== null) {
    if (m.stage === "users") {
      p.add(
        "credstoreDir",
        "is set in the users stage",
        "the credential store belongs to the system stage (it removes credentials the manifest does not list)",
      );
    }
    for (const [field, dir] of [
      ["secretsDir", m.secretsDir],
      ["generationsDir", m.generationsDir],
    ] as const) {
      if (m.credstoreDir === dir || isUnder(m.credstoreDir, dir) || isUnder(dir, m.credstoreDir)) {
        p.add(
          "credstoreDir",
          `"${m.credstoreDir}" overlaps ${field} ${dir}`,
          "the credential store is a persistent directory of its own, e.g. /var/lib/nixseal/credstore",
        );
      }
    }
  }
  if (m.restartMode === "systemctl") {
    for (const f of ["restartListFile", "reloadListFile"] as const) {
      if (m[f] !== null) {
        p.add(
          f,
          'is set, but restartMode is "systemctl": units are restarted through systemctl, not the list',
          "set it to null (a list nobody reads now would restart units at a later switch)",
        );
      }
    }
  }
}

function isUnder(p: string, dir: string): boolean {
  return p.startsWith(dir === "/" ? "/" : `${dir}/`);
}

/** Validates a parsed manifest; throws every problem at once (code MANIFEST). */
export function validateManifest(json: unknown, file: string): Manifest {
  const p = new Problems("MANIFEST", file);
  const m = readObject(json as Json, "", TOP_FIELDS(p), p, SCHEMA_HINT);
  if (m === null) throw NixsealError.many(p.list);
  const manifest: Manifest = {
    version: 1,
    stage: m.get("stage") as Stage,
    secretsDir: m.get("secretsDir") as string,
    generationsDir: m.get("generationsDir") as string,
    keepGenerations: m.get("keepGenerations") as number,
    mount: m.get("mount") as MountPolicy,
    restartListFile: m.get("restartListFile") as string | null,
    reloadListFile: m.get("reloadListFile") as string | null,
    dryRestartListFile: m.get("dryRestartListFile") as string | null,
    dryReloadListFile: m.get("dryReloadListFile") as string | null,
    restartMode: m.get("restartMode") as RestartMode,
    changeDetection: m.get("changeDetection") as ChangeDetection,
    credstoreDir: m.get("credstoreDir") as string | null,
    replaceExisting: m.get("replaceExisting") as boolean,
    storeDir: m.get("storeDir") as string | null,
    identities: m.get("identities") as ManifestIdentity[],
    secrets: m.get("secrets") as ManifestSecret[],
    templates: m.get("templates") as ManifestTemplate[],
    placeholders: m.get("placeholders") as Map<string, string>,
  };
  crossCheck(manifest, p);
  if (p.list.length > 0) throw NixsealError.many(p.list);
  return manifest;
}

/** Parses manifest text (JSON) and validates it. */
export function parseManifest(text: string, file: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new NixsealError("MANIFEST", `${file}: not valid JSON: ${(e as Error).message.slice(0, 200)}`, {
      hint: "the manifest is written by the nixseal NixOS module; check the file is the one it made",
      file,
    });
  }
  const dup = duplicateKey(text, json);
  if (dup !== null) {
    throw new NixsealError("MANIFEST", `${file}: ${dup.at}: duplicate key "${shown(dup.key)}"`, {
      hint: DUPLICATE_KEY_HINT,
      file,
    });
  }
  return validateManifest(json, file);
}

/** Reads and validates a manifest file (at most MAX_MANIFEST_SIZE bytes). */
export function readManifest(file: string): Manifest {
  return parseManifest(readManifestText(file), file);
}

/** A manifest file's text, for parseManifest (at most MAX_MANIFEST_SIZE bytes). */
export function readManifestText(file: string): string {
  let text: string;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY);
    try {
      const size = fs.fstatSync(fd).size;
      if (size > MAX_MANIFEST_SIZE) {
        throw new NixsealError("MANIFEST", `${file}: larger than ${MAX_MANIFEST_SIZE / 1024 / 1024} MiB`, {
          hint: "a manifest holds no secrets and is small; check the path",
          file,
        });
      }
      text = fs.readFileSync(fd, "utf8");
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read the manifest", file, e);
  }
  return text;
}

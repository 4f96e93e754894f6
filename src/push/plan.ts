/**
 * The push plan (JSON, version 1): which keys go to which hosts, from which sources, with which
 * owner, mode and units. Written by the NixOS module (config.system.build.nixsealPushPlan) or by
 * hand; read strictly: unknown fields are errors, every problem is reported in one run, before any
 * connection (docs/architecture.md, invariant 4). The schema is in docs/push.md, "The plan".
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  DUPLICATE_KEY_HINT,
  duplicateKey,
  enumField,
  type FieldTable,
  ioError,
  isObject,
  type Json,
  NixsealError,
  type Problems,
  readMode,
  readObject,
  readPath,
  readPrincipal,
  readUnits,
  shown,
  stringField,
  typeName,
  unitNameProblem,
} from "../common/index.js";

export const PLAN_VERSION = 1;
/** A plan is metadata: a few MiB would be tens of thousands of keys. */
export const MAX_PLAN_SIZE = 16 * 1024 * 1024;
export const DEFAULT_DEST_DIR = "/run/keys";

export type UploadAt = "pre-activation" | "post-activation";
export const UPLOAD_AT: readonly UploadAt[] = ["pre-activation", "post-activation"];

/** false: in RAM only; "credential": also sealed with systemd-creds on the host (docs/push.md). */
export type Persist = false | "credential";

/** The prefix of a persisted key's credential name: nixseal-key-<key>, as its unit. */
export const CREDENTIAL_PREFIX = "nixseal-key-";

/** A sops file is recognised by its extension; anything else is an age file. */
export type FileFormat = "age" | "yaml" | "json" | "dotenv" | "ini";

export type KeySource =
  | { kind: "file"; file: string; format: FileFormat; key: string | null }
  | { kind: "command"; argv: string[] };

/** What a key looks like on the host: the part the host keeps and the deployer compares. */
export interface KeyMeta {
  destDir: string;
  name: string;
  owner: string;
  group: string;
  /** The mode as a number (at most 0777). */
  mode: number;
  restartUnits: string[];
  reloadUnits: string[];
  keyUnit: string | null;
  uploadAt: UploadAt;
  persist: Persist;
}

export interface PlanKey extends KeyMeta {
  key: string;
  source: KeySource;
}

export interface PlanHost {
  host: string;
  targetHost: string;
  targetUser: string | null;
  targetPort: number | null;
  sshOptions: string[];
  nixsealCommand: string;
  keys: PlanKey[];
}

export interface Plan {
  /** Host name -> host (a Map: names are data, never object keys). */
  hosts: Map<string, PlanHost>;
}

const SCHEMA_HINT = 'see docs/push.md, "The plan", for the plan\'s schema';

/** Key, file and host names: a file name of letters, digits and ._@+=- , not starting with '.' or '-'. */
const NAME = /^[A-Za-z0-9_@+=][A-Za-z0-9._@+=-]*$/;

export function keyNameProblem(s: string): string | null {
  if (s.length === 0) return "is empty";
  if (s.length > 255) return "is longer than 255 characters";
  if (!NAME.test(s) || s.includes(".."))
    return "may only use A-Z a-z 0-9 . _ @ + = - (no /, no .., not starting with . or -)";
  return null;
}
export const KEY_NAME_HINT =
  "a key name is a file name: letters, digits and . _ @ + = -, no / or .., not starting with . or -";

/** A host name or address ssh takes as its destination; never starting with '-' (an option). */
const TARGET_HOST = /^(?:[A-Za-z0-9_][A-Za-z0-9._%-]*|\[[0-9A-Fa-f:.%A-Za-z]+\]|[0-9A-Fa-f:]+)$/;
function targetHostProblem(s: string): string | null {
  if (s.length > 253) return "is longer than 253 characters";
  return TARGET_HOST.test(s) ? null : "is not a host name or IP address";
}

/** The remote program: a command name or absolute path, no shell syntax (ssh runs it through one). */
const REMOTE_COMMAND = /^[A-Za-z0-9_./+@-]+$/;
function remoteCommandProblem(s: string): string | null {
  if (s.startsWith("-")) return "starts with -";
  if (s.length > 4096) return "is longer than 4096 characters";
  return REMOTE_COMMAND.test(s)
    ? null
    : "may only use letters, digits and _ . / + @ - (no spaces, no shell syntax)";
}

function sshOptionProblem(s: string): string | null {
  return /[\0\n\r]/.test(s) ? "contains a NUL, newline or carriage return character" : null;
}

const readStringList =
  (check: (s: string) => string | null, hint: string) =>
  (v: Json, at: string, p: Problems): string[] | undefined => {
    if (!Array.isArray(v) || v.length === 0) {
      p.add(
        at,
        `must be a non-empty list of strings, not ${Array.isArray(v) ? "an empty list" : typeName(v)}`,
        hint,
      );
      return undefined;
    }
    let ok = true;
    for (let i = 0; i < v.length; i++) {
      const s = v[i];
      const why = typeof s === "string" ? check(s) : `is ${typeName(s)}, not a string`;
      if (why !== null) {
        p.add(`${at}[${i}]`, typeof s === "string" ? `"${shown(s)}" ${why}` : why, hint);
        ok = false;
      }
    }
    return ok ? (v as string[]) : undefined;
  };

const SSH_OPTIONS_HINT = 'extra ssh arguments as strings, e.g. ["-o", "ConnectTimeout=10"]';

const HOST_FIELDS: FieldTable = {
  targetHost: {
    required: true,
    read: stringField(targetHostProblem, "a host name or IP address, e.g. 10.0.0.2"),
  },
  targetUser: { required: false, default: null, read: readPrincipal },
  targetPort: {
    required: false,
    default: null,
    read: (v, at, p) => {
      if (typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535) return v;
      p.add(
        at,
        `must be a port number from 1 to 65535, not ${typeof v === "number" ? v : typeName(v)}`,
        "e.g. 22",
      );
      return undefined;
    },
  },
  sshOptions: {
    required: false,
    default: [],
    read: (v, at, p) =>
      Array.isArray(v) && v.length === 0 ? [] : readStringList(sshOptionProblem, SSH_OPTIONS_HINT)(v, at, p),
  },
  nixsealCommand: {
    required: false,
    default: "nixseal",
    read: stringField(
      remoteCommandProblem,
      "the nixseal program on the host, e.g. /run/current-system/sw/bin/nixseal",
    ),
  },
  keys: { required: true, read: (v) => v },
};

const KEY_FIELDS: FieldTable = {
  source: { required: true, read: (v) => v },
  name: { required: false, default: null, read: stringField(keyNameProblem, KEY_NAME_HINT) },
  destDir: { required: false, default: DEFAULT_DEST_DIR, read: readPath },
  owner: { required: false, default: "root", read: readPrincipal },
  // NixOS's `keys` group (NixOps's /run/keys convention): services read keys by joining it.
  group: { required: false, default: "keys", read: readPrincipal },
  mode: { required: false, default: 0o440, read: readMode },
  restartUnits: { required: false, default: [], read: readUnits },
  reloadUnits: { required: false, default: [], read: readUnits },
  keyUnit: {
    required: false,
    default: null,
    read: stringField(unitNameProblem, "a unit name such as nixseal-key-db.service"),
  },
  uploadAt: {
    required: false,
    default: "pre-activation",
    read: enumField(UPLOAD_AT, "when the key is pushed relative to activation"),
  },
  persist: { required: false, default: false, read: readPersist },
};

function readPersist(v: Json, at: string, p: Problems): Persist | undefined {
  if (v === false || v === "credential") return v;
  p.add(
    at,
    `must be false or "credential", not ${typeof v === "string" ? `"${shown(v)}"` : typeof v === "boolean" ? v : typeName(v)}`,
    'false keeps the key in RAM only; "credential" also seals it on the host with systemd-creds',
  );
  return undefined;
}

/** The extensions of sops files and their formats (as src/install/manifest.ts names them). */
function formatOf(file: string): FileFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === ".yaml" || ext === ".yml") return "yaml";
  if (ext === ".json") return "json";
  if (ext === ".env") return "dotenv";
  if (ext === ".ini") return "ini";
  return "age";
}

function readSource(v: Json, at: string, p: Problems, baseDir: string | null): KeySource | null {
  if (!isObject(v)) {
    p.add(
      at,
      `must be an object, not ${typeName(v)}`,
      '{"file": "x.age"}, {"command": [...]} or {"pass": "name"}',
    );
    return null;
  }
  const kinds = ["file", "command", "pass"].filter((k) => Object.hasOwn(v, k));
  if (kinds.length !== 1) {
    p.add(
      at,
      kinds.length === 0 ? "names no source" : `names ${kinds.join(" and ")}: one source only`,
      'a source is {"file": F} (with an optional "key" for sops files), {"command": [...]} or {"pass": NAME}',
    );
    return null;
  }
  const allowed = kinds[0] === "file" ? ["file", "key"] : kinds;
  let ok = true;
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) {
      p.add(
        `${at}.${shown(k)}`,
        "unknown field",
        `a ${kinds[0]} source has the fields ${allowed.join(", ")}`,
      );
      ok = false;
    }
  }
  if (kinds[0] === "command") {
    const argv = readStringList(
      (s) => (s.includes("\0") ? "contains a NUL character" : null),
      'the program and its arguments, e.g. ["pass", "show", "db"]',
    )(v.command!, `${at}.command`, p);
    return ok && argv ? { kind: "command", argv: [...argv] } : null;
  }
  if (kinds[0] === "pass") {
    const name = v.pass;
    if (typeof name !== "string" || name === "" || name.startsWith("-") || /[\0\n\r]/.test(name)) {
      p.add(
        `${at}.pass`,
        `must be a pass entry name such as "db/password", not ${typeof name === "string" ? `"${shown(name)}"` : typeName(name)}`,
        "the name pass show takes",
      );
      return null;
    }
    return ok ? { kind: "command", argv: ["pass", "show", name] } : null;
  }
  const file = v.file;
  if (typeof file !== "string" || file === "" || /[\0\n\r]/.test(file)) {
    p.add(
      `${at}.file`,
      `must be a file name, not ${typeof file === "string" ? `"${shown(file)}"` : typeName(file)}`,
      "the encrypted file, relative to the plan or absolute",
    );
    return null;
  }
  let abs: string;
  if (path.isAbsolute(file)) abs = path.normalize(file);
  else if (baseDir === null) {
    p.add(
      `${at}.file`,
      `"${shown(file)}" is relative`,
      "a plan from a flake names files by absolute (store) paths",
    );
    return null;
  } else abs = path.resolve(baseDir, file);
  const format = formatOf(abs);
  let key: string | null = null;
  if (Object.hasOwn(v, "key")) {
    const k = v.key;
    if (typeof k !== "string" || k === "" || k.split("/").some((s) => s === "")) {
      p.add(
        `${at}.key`,
        `must be a sops key path such as "db/password", not ${typeof k === "string" ? `"${shown(k)}"` : typeName(k)}`,
        "segments separated by /, none empty",
      );
      ok = false;
    } else if (format === "age") {
      p.add(
        `${at}.key`,
        `${shown(file)} is an age file: it has no keys`,
        "key applies to sops files (.yaml, .yml, .json, .env, .ini)",
      );
      ok = false;
    } else if (format === "dotenv" && k.includes("/")) {
      p.add(`${at}.key`, `"${shown(k)}": a dotenv file is flat`, "name the variable alone");
      ok = false;
    } else if (format === "ini" && k.split("/").length !== 2) {
      p.add(
        `${at}.key`,
        `"${shown(k)}" is not section/key`,
        "an INI key is section/key, e.g. database/password",
      );
      ok = false;
    } else key = k;
  }
  return ok ? { kind: "file", file: abs, format, key } : null;
}

function readKey(key: string, v: Json, at: string, p: Problems, baseDir: string | null): PlanKey | null {
  const m = readObject(v, at, KEY_FIELDS, p, SCHEMA_HINT);
  const source =
    isObject(v) && Object.hasOwn(v, "source") ? readSource(v.source!, `${at}.source`, p, baseDir) : null;
  if (m === null || source === null) return null;
  return {
    key,
    source,
    destDir: m.get("destDir") as string,
    name: (m.get("name") as string | null) ?? key,
    owner: m.get("owner") as string,
    group: m.get("group") as string,
    mode: m.get("mode") as number,
    restartUnits: m.get("restartUnits") as string[],
    reloadUnits: m.get("reloadUnits") as string[],
    keyUnit: m.get("keyUnit") as string | null,
    uploadAt: m.get("uploadAt") as UploadAt,
    persist: m.get("persist") as Persist,
  };
}

/** True if `a` is `b` or a directory below it. */
function within(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}/`);
}

/** Where the host keeps the generations (src/push/receiver.ts): never a destDir. */
export const KEYS_ROOT = "/run/nixseal-keys";

function readHost(host: string, v: Json, at: string, p: Problems, baseDir: string | null): PlanHost | null {
  const m = readObject(v, at, HOST_FIELDS, p, SCHEMA_HINT);
  const keysJson = isObject(v) ? v.keys : undefined;
  const keys: PlanKey[] = [];
  let ok = m !== null;
  if (keysJson !== undefined) {
    if (!isObject(keysJson)) {
      p.add(`${at}.keys`, `must be an object of keys, not ${typeName(keysJson)}`, SCHEMA_HINT);
      ok = false;
    } else {
      for (const [key, kv] of Object.entries(keysJson)) {
        const kat = `${at}.keys.${shown(key)}`;
        const why = keyNameProblem(key);
        if (why !== null) {
          p.add(kat, `key name "${shown(key)}" ${why}`, KEY_NAME_HINT);
          ok = false;
          continue;
        }
        const k = readKey(key, kv, kat, p, baseDir);
        if (k === null) ok = false;
        else keys.push(k);
        if (k !== null && k.persist === "credential" && CREDENTIAL_PREFIX.length + key.length > 255) {
          p.add(
            `${kat}.persist`,
            `the credential name ${CREDENTIAL_PREFIX}<key> would be longer than 255 characters`,
            `a persisted key's name has at most ${255 - CREDENTIAL_PREFIX.length} characters`,
          );
          ok = false;
        }
      }
    }
  }
  // Between keys: one file per (destDir, name); destDirs neither nested nor inside nixseal's own dir.
  const files = new Map<string, string>();
  const dirs = [...new Set(keys.map((k) => k.destDir))];
  for (const k of keys) {
    const f = `${k.destDir}/${k.name}`;
    const other = files.get(f);
    if (other !== undefined) {
      p.add(
        `${at}.keys.${k.key}`,
        `writes ${f}, as key "${other}" does`,
        "give one of them another name or destDir",
      );
      ok = false;
    } else files.set(f, k.key);
  }
  for (const d of dirs) {
    if (within(d, KEYS_ROOT) || within(KEYS_ROOT, d)) {
      p.add(
        `${at}.keys`,
        `destDir ${d} overlaps ${KEYS_ROOT}, where nixseal keeps the keys' generations`,
        "choose another destDir, e.g. /run/keys",
      );
      ok = false;
    }
    for (const e of dirs) {
      if (d !== e && within(d, e)) {
        p.add(
          `${at}.keys`,
          `destDir ${d} is inside destDir ${e}`,
          "destDirs of one host must not nest: each becomes a symlink",
        );
        ok = false;
      }
    }
  }
  // With problems, the valid keys are still returned: their sources are resolved too, so that one
  // run reports every problem (the caller pushes nothing while there is any).
  void ok;
  if (m === null) return null;
  return {
    host,
    targetHost: m.get("targetHost") as string,
    targetUser: m.get("targetUser") as string | null,
    targetPort: m.get("targetPort") as number | null,
    sshOptions: m.get("sshOptions") as string[],
    nixsealCommand: m.get("nixsealCommand") as string,
    keys,
  };
}

/** Validates a parsed plan; `baseDir` resolves relative file names (null: none may be relative). */
export function validatePlan(json: unknown, file: string, baseDir: string | null, p: Problems): Plan {
  const hosts = new Map<string, PlanHost>();
  if (!isObject(json)) {
    p.add("", `must be a JSON object, not ${typeName(json)}`, SCHEMA_HINT);
    return { hosts };
  }
  for (const k of Object.keys(json)) {
    if (k !== "version" && k !== "hosts")
      p.add(shown(k), "unknown field", "a plan has the fields version and hosts");
  }
  if (json.version !== PLAN_VERSION)
    p.add(
      "version",
      `must be ${PLAN_VERSION}, not ${JSON.stringify(json.version ?? null)}`,
      "this nixseal reads plans of version 1",
    );
  if (!isObject(json.hosts)) {
    p.add("hosts", `must be an object of hosts, not ${typeName(json.hosts)}`, SCHEMA_HINT);
    return { hosts };
  }
  for (const [host, hv] of Object.entries(json.hosts)) {
    const why = keyNameProblem(host);
    if (why !== null) {
      p.add(
        `hosts.${shown(host)}`,
        `host name "${shown(host)}" ${why}`,
        "host names follow the rules of key names",
      );
      continue;
    }
    const h = readHost(host, hv, `hosts.${host}`, p, baseDir);
    if (h !== null) hosts.set(host, h);
  }
  void file;
  return { hosts };
}

/** Parses a plan's text; problems go to `p`. */
export function parsePlanText(text: string, file: string, baseDir: string | null, p: Problems): Plan {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    p.add("", `is not valid JSON (${(e as Error).message.split("\n")[0]})`, "fix the JSON syntax");
    return { hosts: new Map() };
  }
  const dup = duplicateKey(text, json);
  if (dup !== null) {
    p.add(dup.at, `duplicate key "${shown(dup.key)}"`, DUPLICATE_KEY_HINT);
    return { hosts: new Map() };
  }
  return validatePlan(json, file, baseDir, p);
}

/** Reads a plan file (relative `file` sources are relative to it). Problems go to `p`. */
export function readPlanFile(file: string, p: Problems): Plan {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile())
      throw new NixsealError("PUSH_PLAN", `${file} is not a regular file`, {
        file,
        hint: "give the plan's JSON file",
      });
    if (st.size > MAX_PLAN_SIZE)
      throw new NixsealError("PUSH_PLAN", `${file} is larger than ${MAX_PLAN_SIZE / 1024 / 1024} MiB`, {
        file,
        hint: "a plan holds metadata only",
      });
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (e instanceof NixsealError) p.list.push(e);
    else {
      const io = ioError("read", file, e);
      p.list.push(
        new NixsealError("PUSH_PLAN", io.message, { hint: io.hint ?? "give the plan's JSON file", file }),
      );
    }
    return { hosts: new Map() };
  }
  return parsePlanText(text, file, path.dirname(path.resolve(file)), p);
}

// ---- the key metadata on the wire (src/push/protocol.ts): the same rules, for the host's side ----

const WIRE_META_FIELDS: FieldTable = {
  key: { required: true, read: stringField(keyNameProblem, KEY_NAME_HINT) },
  destDir: { required: true, read: readPath },
  name: { required: true, read: stringField(keyNameProblem, KEY_NAME_HINT) },
  owner: { required: true, read: readPrincipal },
  group: { required: true, read: readPrincipal },
  mode: { required: true, read: readMode },
  restartUnits: { required: true, read: readUnits },
  reloadUnits: { required: true, read: readUnits },
  keyUnit: {
    required: true,
    read: (v, at, p) => (v === null ? null : stringField(unitNameProblem, "a unit name")(v, at, p)),
  },
  uploadAt: { required: true, read: enumField(UPLOAD_AT, "pre-activation or post-activation") },
  // Optional on the wire and in records: a host of an older version reads keys without it.
  persist: { required: false, default: false, read: readPersist },
};

export interface WireKey extends KeyMeta {
  key: string;
}

/** The JSON form of a key's metadata (mode as an octal string, as in the plan). */
export function wireKey(k: WireKey): Record<string, Json> {
  return {
    key: k.key,
    destDir: k.destDir,
    name: k.name,
    owner: k.owner,
    group: k.group,
    mode: `0${k.mode.toString(8).padStart(3, "0")}`,
    restartUnits: k.restartUnits,
    reloadUnits: k.reloadUnits,
    keyUnit: k.keyUnit,
    uploadAt: k.uploadAt,
    // Only when set: an older host refuses an unknown field, and so refuses only what it cannot do.
    ...(k.persist === "credential" ? { persist: k.persist } : {}),
  };
}

/** Reads one key's metadata from the wire or a record, strictly. */
export function readWireKey(
  v: Json,
  at: string,
  p: Problems,
  extra: FieldTable = {},
): (WireKey & { extra: Map<string, unknown> }) | null {
  const m = readObject(v, at, { ...WIRE_META_FIELDS, ...extra }, p, "the push protocol's key record");
  if (m === null) return null;
  const extraValues = new Map<string, unknown>();
  for (const k of Object.keys(extra)) extraValues.set(k, m.get(k));
  return {
    key: m.get("key") as string,
    destDir: m.get("destDir") as string,
    name: m.get("name") as string,
    owner: m.get("owner") as string,
    group: m.get("group") as string,
    mode: m.get("mode") as number,
    restartUnits: m.get("restartUnits") as string[],
    reloadUnits: m.get("reloadUnits") as string[],
    keyUnit: m.get("keyUnit") as string | null,
    uploadAt: m.get("uploadAt") as UploadAt,
    persist: m.get("persist") as Persist,
    extra: extraValues,
  };
}

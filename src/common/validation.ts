/**
 * The validation kit of nixseal's JSON inputs (the activation manifest, docs/manifest.md; the
 * build-secrets policy, docs/build-secrets.md): one problems collector that names the file and
 * the place of each problem (`secrets[3].mode`), field tables read strictly (unknown fields are
 * errors), and the rules both inputs share with the Nix modules (nix/modules/shared.nix checks
 * the same at evaluation time; test/nix/rules.test.ts holds both to one table):
 *
 * - paths: absolute and normalised (no `.`/`..` segment, no `//`, no trailing `/`), not `/`
 *   itself, no NUL/newline/carriage return, at most 4096 bytes;
 * - user and group names as shadow's useradd/groupadd accept them and NixOS allows (at most 31
 *   characters): [A-Za-z0-9_.][A-Za-z0-9_.-]* with an optional final `$`, not all digits, not
 *   `.` or `..`; or a decimal id 0..4294967294 without leading zeros;
 * - modes: 3 or 4 octal digits, at most 0777;
 * - unit names: systemd.unit(5) characters and a unit type suffix, at most 255 characters.
 */
import { type ErrorCode, NixsealError } from "./errors.js";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every problem of one input, each naming the file and its place in it. */
export class Problems {
  readonly list: NixsealError[] = [];
  constructor(
    /** The NixsealError code of this input's problems (MANIFEST, BUILD_POLICY). */
    readonly code: ErrorCode,
    readonly file: string,
  ) {}

  add(at: string, message: string, hint: string): void {
    this.list.push(
      new NixsealError(this.code, `${this.file}: ${at === "" ? "" : `${at}: `}${message}`, {
        hint,
        file: this.file,
      }),
    );
  }

  /** Throws every problem at once (NixsealError.many), if there is any. */
  throwIfAny(): void {
    if (this.list.length > 0) throw NixsealError.many(this.list);
  }
}

export function isObject(v: unknown): v is { [k: string]: Json } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function typeName(v: unknown): string {
  if (v === undefined) return "missing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** Text of hostile input, shortened and with control characters made visible, for messages. */
export function shown(s: string): string {
  const t = s.length > 60 ? `${s.slice(0, 60)}...` : s;
  return JSON.stringify(t).slice(1, -1);
}

/** `at.key`, or `key` at the top. */
export function placeOf(at: string, key: string): string {
  return at === "" ? key : `${at}.${key}`;
}

// ---- field tables -----------------------------------------------------------------------------

/** Reads one value: the result, or undefined after reporting why not. */
export type Reader<T> = (v: Json, at: string, p: Problems) => T | undefined;

/** A field: how to read it, and whether it must be there. */
export interface Field<T> {
  required: boolean;
  /** Used when an optional field is absent. */
  default?: T;
  read: Reader<T>;
}

export type FieldTable = Record<string, Field<unknown>>;

export function stringField(check: (s: string) => string | null, hint: string): Reader<string> {
  return (v, at, p) => {
    if (typeof v !== "string") {
      p.add(at, `must be a string, not ${typeName(v)}`, hint);
      return undefined;
    }
    const why = check(v);
    if (why !== null) {
      p.add(at, `"${shown(v)}" ${why}`, hint);
      return undefined;
    }
    return v;
  };
}

export function nullable<T>(read: Reader<T>): Reader<T | null> {
  return (v, at, p) => (v === null ? null : read(v, at, p));
}

export function enumField<T extends string>(values: readonly T[], hint: string): Reader<T> {
  return (v, at, p) => {
    if (typeof v === "string" && (values as readonly string[]).includes(v)) return v as T;
    p.add(
      at,
      `must be one of ${values.map((x) => `"${x}"`).join(", ")}, not ${typeof v === "string" ? `"${shown(v)}"` : typeName(v)}`,
      hint,
    );
    return undefined;
  };
}

export function booleanField(hint: string): Reader<boolean> {
  return (v, at, p) => {
    if (typeof v === "boolean") return v;
    p.add(at, `must be true or false, not ${typeName(v)}`, hint);
    return undefined;
  };
}

export function integerField(min: number, max: number, hint: string): Reader<number> {
  return (v, at, p) => {
    if (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max) return v;
    p.add(
      at,
      `must be a whole number from ${min} to ${max}, not ${typeof v === "number" ? v : typeName(v)}`,
      hint,
    );
    return undefined;
  };
}

/** A field table as two arrays, made once per table: reading thousands of entries must not rebuild it. */
interface CompiledTable {
  keys: string[];
  fields: Field<unknown>[];
}
const compiledTables = new WeakMap<FieldTable, CompiledTable>();

function compiled(fields: FieldTable): CompiledTable {
  let t = compiledTables.get(fields);
  if (t === undefined) {
    t = { keys: Object.keys(fields), fields: Object.values(fields) };
    compiledTables.set(fields, t);
  }
  return t;
}

/**
 * Reads an object against its field table; unknown fields are errors. Returns the values read
 * (absent optional fields: their default), or null if anything was wrong (all of it reported).
 */
export function readObject(
  v: Json | undefined,
  at: string,
  fields: FieldTable,
  p: Problems,
  schemaHint: string,
): Map<string, unknown> | null {
  if (!isObject(v)) {
    p.add(at, `must be an object, not ${typeName(v)}`, schemaHint);
    return null;
  }
  const t = compiled(fields);
  const out = new Map<string, unknown>();
  let ok = true;
  // Index loops, not for...of: this runs once per manifest entry, mostly before the JIT warms up.
  let known = 0;
  for (let i = 0; i < t.keys.length; i++) if (Object.hasOwn(v, t.keys[i]!)) known++;
  // As many keys as known ones present: none is unknown (the common case, no second loop).
  const keys = Object.keys(v);
  if (keys.length !== known) {
    for (const key of keys) {
      if (!Object.hasOwn(fields, key)) {
        p.add(
          placeOf(at, shown(key)),
          "unknown field",
          `remove it or fix its spelling; known fields: ${t.keys.join(", ")}`,
        );
        ok = false;
      }
    }
  }
  for (let i = 0; i < t.keys.length; i++) {
    const key = t.keys[i]!;
    const field = t.fields[i]!;
    if (!Object.hasOwn(v, key)) {
      if (field.required) {
        p.add(
          placeOf(at, key),
          "is missing",
          `${schemaHint} (every field is required unless marked optional)`,
        );
        ok = false;
      } else out.set(key, field.default);
      continue;
    }
    const value = field.read(v[key]!, placeOf(at, key), p);
    if (value === undefined) ok = false;
    else out.set(key, value);
  }
  return ok ? out : null;
}

/**
 * Reads a list, each item with `each` (null: a problem, reported). `quick`, if given, is tried
 * first and needs no place: an item it reads (non-null) is taken as it is, without making the
 * item's place (`secrets[1234]`), which only a problem needs (10 000 of them were ~1 MB of
 * strings for the collector in a host's manifest).
 */
export function readList<T>(
  v: Json,
  at: string,
  p: Problems,
  each: (x: Json, at: string) => T | null,
  hint: string,
  quick?: (x: Json) => T | null,
): T[] | undefined {
  if (!Array.isArray(v)) {
    p.add(at, `must be a list, not ${typeName(v)}`, hint);
    return undefined;
  }
  const out: T[] = [];
  let ok = true;
  for (let i = 0; i < v.length; i++) {
    const r = quick?.(v[i]!) ?? each(v[i]!, `${at}[${i}]`);
    if (r === null) ok = false;
    else out.push(r);
  }
  return ok ? out : undefined;
}

// ---- the shared rules -------------------------------------------------------------------------

export const MAX_PATH_BYTES = 4096;

/** Made once: a regular expression literal in the function would be a new object per call. */
const PATH_BAD_CHARACTERS = /[\0\n\r]/;

/** Why a path is not acceptable, or null: absolute and normalised, not `/` itself. */
export function pathProblem(p: string): string | null {
  if (p.length === 0) return "is empty";
  if (PATH_BAD_CHARACTERS.test(p)) return "contains a NUL, newline or carriage return character";
  if (!p.startsWith("/")) return "is not absolute";
  if (p === "/") return "is the root directory itself";
  // A UTF-16 unit is at most 3 UTF-8 bytes: short paths need no count.
  if (p.length * 3 > MAX_PATH_BYTES && Buffer.byteLength(p) > MAX_PATH_BYTES)
    return `is longer than ${MAX_PATH_BYTES} bytes`;
  if (p.endsWith("/")) return "ends with /";
  if (p.includes("//")) return "contains //";
  // p starts with "/", so a . or .. segment is "/." or "/.." followed by "/" or the end.
  if (p.includes("/./") || p.includes("/../") || p.endsWith("/.") || p.endsWith("/.."))
    return "contains a . or .. segment";
  return null;
}

export const PATH_HINT =
  "use an absolute, normalised path (no . or .. segments, no //, no trailing /, not / itself)";

/** NixOS refuses longer user and group names (users.users.<name>.name, users.groups). */
export const MAX_PRINCIPAL_NAME = 31;
const PRINCIPAL_NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/;
const DECIMAL_ID = /^(0|[1-9][0-9]{0,9})$/;
/** (uid_t)-1 means "no change" to chown(2): never an owner. */
export const MAX_ID = 0xfffffffe;

/** Why a user or group (a name or a decimal id) is not acceptable, or null. */
export function principalProblem(v: string): string | null {
  if (/^[0-9]+$/.test(v)) {
    if (!DECIMAL_ID.test(v)) return "is a decimal id with a leading zero or too many digits";
    return Number(v) <= MAX_ID ? null : `is an id above ${MAX_ID}`;
  }
  if (v.length > MAX_PRINCIPAL_NAME) return `is longer than ${MAX_PRINCIPAL_NAME} characters`;
  if (v === "." || v === ".." || !PRINCIPAL_NAME.test(v)) return "is not a valid user or group name";
  return null;
}

export const PRINCIPAL_HINT =
  "a user or group name as useradd accepts it (letters, digits, _ . -, an optional final $; at most 31 characters) or a decimal id";

const MODE = /^[0-7]{3,4}$/;

/** A mode string ("0440", "440") as a number, or why not. */
export function parseMode(v: string): number | string {
  if (!MODE.test(v)) return "is not an octal string of 3 or 4 digits";
  const mode = Number.parseInt(v, 8);
  return mode > 0o777 ? "sets the setuid, setgid or sticky bit" : mode;
}

/** systemd.unit(5): name.type; templates and instances (foo@bar.service) included. */
const UNIT_NAME =
  /^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|device|mount|automount|swap|timer|path|slice|scope)$/;
/** systemd's UNIT_NAME_MAX is 256 with the terminating NUL. */
export const MAX_UNIT_NAME = 255;

export function unitNameProblem(u: string): string | null {
  if (u.length > MAX_UNIT_NAME) return `is longer than ${MAX_UNIT_NAME} characters`;
  return UNIT_NAME.test(u) ? null : "is not a systemd unit name";
}

/** Which keys a systemd credential is sealed with (systemd-creds --with-key=). */
export type CredentialKey = "auto" | "host" | "tpm2" | "host+tpm2";
export const CREDENTIAL_KEYS: readonly CredentialKey[] = ["auto", "host", "tpm2", "host+tpm2"];

const CREDENTIAL_NAME = /^[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*$/;

/**
 * Checks a credential name. systemd accepts any file name without ':' (LoadCredential='s
 * separator); nixseal is stricter, so that a name is also a safe file name in a credential
 * store: letters, digits and `._@+=-`, not starting with '.', at most 255 bytes.
 */
export function validateCredentialName(name: string): void {
  if (name.length === 0 || name.length > 255 || !CREDENTIAL_NAME.test(name)) {
    const shown = JSON.stringify(name.length > 60 ? `${name.slice(0, 60)}...` : name);
    throw new NixsealError("CREDS_NAME", `${shown} is not a valid credential name`, {
      hint: "credential names use letters, digits and ._@+=- (no '/', no ':'), do not start with '.', at most 255 characters",
    });
  }
}

// ---- readers of the shared rules --------------------------------------------------------------

export const readPath: Reader<string> = stringField(pathProblem, PATH_HINT);

export const readPrincipal: Reader<string> = stringField(principalProblem, PRINCIPAL_HINT);

export const readMode: Reader<number> = (v, at, p) => {
  const mode = typeof v === "string" ? parseMode(v) : "";
  if (typeof mode === "number") return mode;
  if (typeof v === "string" && MODE.test(v)) {
    p.add(at, `"${v}" ${mode}`, "a secret's mode is at most 0777");
    return undefined;
  }
  p.add(
    at,
    `must be an octal string of 3 or 4 digits such as "0400", not ${typeof v === "string" ? `"${shown(v)}"` : typeName(v)}`,
    'write the mode as a string, e.g. "0440"',
  );
  return undefined;
};

/** A list of unit names; duplicates are dropped. */
export const readUnits: Reader<string[]> = (v, at, p) => {
  if (!Array.isArray(v)) {
    p.add(at, `must be a list of unit names, not ${typeName(v)}`, 'e.g. ["postgresql.service"]');
    return undefined;
  }
  const out: string[] = [];
  let ok = true;
  for (let i = 0; i < v.length; i++) {
    const u = v[i];
    const why = typeof u === "string" ? unitNameProblem(u) : "is not a systemd unit name";
    if (why !== null) {
      p.add(
        `${at}[${i}]`,
        `${typeof u === "string" ? `"${shown(u)}"` : typeName(u)} ${why}`,
        "unit names look like foo.service or bar@x.socket (no /, no whitespace)",
      );
      ok = false;
    } else if (!out.includes(u as string)) out.push(u as string);
  }
  return ok ? out : undefined;
};
// ---- duplicate keys ---------------------------------------------------------------------------

type Frame =
  | { object: true; keys: Set<string>; key: string | null; expectKey: boolean }
  | { object: false; index: number };

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

function placeOfFrames(frames: readonly Frame[]): string {
  let at = "";
  for (const f of frames) {
    if (!f.object) at += `[${f.index}]`;
    else if (f.key !== null) at = PLAIN_KEY.test(f.key) ? placeOf(at, f.key) : `${at}["${shown(f.key)}"]`;
  }
  return at;
}

/**
 * How many keys the objects of a parsed JSON value hold (without recursion: nesting is input).
 * Only objects go on the stack, and keys are counted without an array of them per object: for
 * a host's manifest (10 000 secrets) ~7 ms instead of ~12.
 */
function keysInValue(value: unknown): number {
  let n = 0;
  const stack: object[] = typeof value === "object" && value !== null ? [value] : [];
  while (stack.length > 0) {
    const v = stack.pop()!;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x: unknown = v[i];
        if (typeof x === "object" && x !== null) stack.push(x);
      }
      continue;
    }
    for (const k in v) {
      if (!Object.hasOwn(v, k)) continue;
      n++;
      const x: unknown = (v as Record<string, unknown>)[k];
      if (typeof x === "object" && x !== null) stack.push(x);
    }
  }
  return n;
}

/** How many keys a JSON text writes, a duplicate counted each time: the strings a ":" follows. */
function keysInText(text: string): number {
  let n = 0;
  let i = text.indexOf('"');
  while (i !== -1) {
    // The closing quote: the next one not escaped (preceded by an even number of backslashes).
    let j = text.indexOf('"', i + 1);
    for (;;) {
      if (j === -1) return n;
      let backslashes = 0;
      while (text.charCodeAt(j - 1 - backslashes) === 0x5c) backslashes++;
      if (backslashes % 2 === 0) break;
      j = text.indexOf('"', j + 1);
    }
    let k = j + 1;
    for (let c = text.charCodeAt(k); c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; ) {
      c = text.charCodeAt(++k);
    }
    if (text.charCodeAt(k) === 0x3a /* : */) n++;
    i = text.indexOf('"', k);
  }
  return n;
}

/**
 * The first key that appears twice in one object of a JSON text (JSON.parse keeps the last, other
 * readers the first: strict validation refuses both), as its place (`secrets[2].owner`) and the
 * key; null if there is none. For text JSON.parse accepted: one linear
 * pass, a set of keys per open object. Given `parsed` (JSON.parse of the text), the keys are
 * counted first, which is much cheaper: JSON.parse drops the first of two equal keys, so as many
 * keys in the parsed value as in the text means there is no duplicate.
 */
export function duplicateKey(text: string, parsed?: unknown): { at: string; key: string } | null {
  if (parsed !== undefined && keysInText(text) === keysInValue(parsed)) return null;
  const frames: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (;;) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
        } else if (d === 0x22 || Number.isNaN(d)) break;
        else j++;
      }
      const top = frames[frames.length - 1];
      if (top?.object && top.expectKey) {
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        if (top.keys.has(key)) return { at: placeOfFrames([...frames.slice(0, -1), { ...top, key }]), key };
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === 0x7b /* { */) frames.push({ object: true, keys: new Set(), key: null, expectKey: true });
    else if (c === 0x5b /* [ */) frames.push({ object: false, index: 0 });
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) frames.pop();
    else if (c === 0x2c /* , */) {
      const top = frames[frames.length - 1];
      if (top?.object) top.expectKey = true;
      else if (top) top.index++;
    }
    i++;
  }
  return null;
}

export const DUPLICATE_KEY_HINT =
  "write each key once: JSON readers disagree on which of two values wins, so nixseal takes neither";

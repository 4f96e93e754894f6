/**
 * generators.nix, validated: what each generated secret is, who reads it, and in which order the
 * generators run. The JSON comes from `nix-instantiate` on generators.nix (src/vault's restricted,
 * cached evaluation) or from a NixOS configuration's `system.build.nixsealGenerators`; both have
 * the shape docs/generators.md defines. Every problem is reported at once; unknown fields are
 * errors; names are plain identifiers (they become directory and file names).
 */
import { createHash } from "node:crypto";
import {
  booleanField,
  enumField,
  type FieldTable,
  integerField,
  isObject,
  type Json,
  NixsealError,
  nullable,
  Problems,
  parseMode,
  principalProblem,
  readList,
  readObject,
  shown,
  stringField,
  typeName,
} from "../common/index.js";
import { type Builtin, builtinFiles, readBuiltin } from "./builtin.js";

export const GENERATORS_FILE = "generators.nix";
export const MAX_GENERATORS_SIZE = 4 * 1024 * 1024;

/** Generator, host, file and prompt names: they become path segments. */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
const IDENTIFIER_HINT = "use a plain identifier: a letter or _, then letters, digits, _ or - (at most 64)";
/**
 * Output file names: as nix/lib/generated.nix and the NixOS module accept them, and as `nixseal
 * gen` writes them (key.pub): dots inside, never first, never two in a row; no "/".
 */
export const FILE_NAME = /^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;
const FILE_NAME_HINT =
  "use a plain file name: a letter, digit or _, then letters, digits, _, - or . (not two dots in a row; at most 64)";

export type PromptType = "hidden" | "line" | "multiline" | "multiline-hidden";
export const PROMPT_TYPES: readonly PromptType[] = ["hidden", "line", "multiline", "multiline-hidden"];

export interface OutputFile {
  name: string;
  /** Encrypted (`<file>.age`) or public (`<file>`, plain). */
  secret: boolean;
  owner: string;
  group: string;
  mode: string;
  neededForUsers: boolean;
}

export interface PromptSpec {
  name: string;
  type: PromptType;
  description: string;
  /** The answer is kept encrypted (to the admins) and reused by later runs. */
  persist: boolean;
}

export interface GeneratorSpec {
  name: string;
  files: OutputFile[];
  /** The sh script, or null for an import command or a builtin. */
  script: string | null;
  /** A built-in generator run in-process (src/generate/builtin.ts), or null. */
  builtin: Builtin | null;
  /** argv of the import command (run without a shell), or null. */
  importCommand: string[] | null;
  dependencies: string[];
  prompts: PromptSpec[];
  share: boolean;
  /** Non-empty: a per-host generator, one instance per host. */
  hosts: string[];
  /** Host names or recipient strings; null: the default (see recipientsOf). */
  recipients: string[] | null;
  /** SHA-256 of the validation value's canonical JSON. */
  validationHash: string;
  /** The rotation period in seconds, or null. */
  rotateEvery: number | null;
  runtimeInputs: string[];
  /** Seconds before the script is killed. */
  timeout: number;
}

export interface Generators {
  /** Where the definition came from (generators.nix, or the flake attribute). */
  source: string;
  admins: string[];
  hosts: Map<string, string>;
  generators: Map<string, GeneratorSpec>;
  /** Generator names, every one after its dependencies. */
  order: string[];
  /** From a flake: the store derivations of each generator's runtimeInputs (built before it runs). */
  runtimeDerivations?: Map<string, string[]>;
}

const SCHEMA_HINT = "see docs/generators.md for the fields of generators.nix";

/** JSON with object keys sorted: the same value always hashes the same. */
function canonicalJson(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (isObject(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k]!)}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

export function validationHash(v: Json): string {
  return createHash("sha256").update(canonicalJson(v)).digest("hex");
}

const UNIT_SECONDS: Record<string, number> = { h: 3600, d: 86400, w: 7 * 86400 };

/** "90d", "12h", "2w" as seconds, or a reason. */
export function parsePeriod(s: string): number | string {
  const m = /^([1-9][0-9]{0,5})([hdw])$/.exec(s);
  if (!m) return 'is not a period such as "90d", "12h" or "2w"';
  return Number(m[1]) * UNIT_SECONDS[m[2]!]!;
}

const stringList = (hint: string): ((v: Json, at: string, p: Problems) => string[] | undefined) => {
  return (v, at, p) =>
    readList(
      v,
      at,
      p,
      (x, a) => {
        if (typeof x === "string" && x !== "" && !/[\0\n\r]/.test(x)) return x;
        p.add(a, `must be a non-empty one-line string, not ${typeName(x)}`, hint);
        return null;
      },
      hint,
    );
};

function looksLikeRecipient(s: string): boolean {
  return /^(age1|ssh-|sk-ssh-|ecdsa-|sk-ecdsa-)/.test(s.trim());
}

const FILE_FIELDS: FieldTable = {
  secret: { required: false, default: true, read: booleanField("write secret = false; for a public file") },
  owner: {
    required: false,
    default: "root",
    read: stringField(principalProblem, "a user name as useradd accepts it, or a decimal id"),
  },
  group: {
    required: false,
    default: "root",
    read: stringField(principalProblem, "a group name as groupadd accepts it, or a decimal id"),
  },
  mode: {
    required: false,
    default: "0400",
    read: stringField((s) => {
      const m = parseMode(s);
      return typeof m === "number" ? null : m;
    }, 'write the mode as a string, e.g. "0440"'),
  },
  neededForUsers: { required: false, default: false, read: booleanField("write true or false") },
};

const PROMPT_FIELDS: FieldTable = {
  type: {
    required: false,
    default: "line",
    read: enumField(PROMPT_TYPES, "hidden and multiline-hidden are not echoed"),
  },
  description: {
    required: false,
    default: "",
    read: stringField(
      (s) => (s.length > 500 || /[\0\r]/.test(s) ? "is too long or has control characters" : null),
      "one short sentence",
    ),
  },
  persist: {
    required: false,
    default: false,
    read: booleanField("write persist = true; to keep the answer"),
  },
};

const GENERATOR_FIELDS: FieldTable = {
  files: { required: true, read: (v) => v },
  script: {
    required: false,
    default: null,
    read: nullable(stringField((s) => (s.includes("\0") ? "contains NUL" : null), "a sh script")),
  },
  import: { required: false, default: null, read: (v) => v },
  builtin: { required: false, default: null, read: (v) => v },
  dependencies: { required: false, default: [], read: stringList("a list of generator names") },
  prompts: { required: false, default: null, read: (v) => v },
  share: {
    required: false,
    default: false,
    read: booleanField("write share = true; for one value on every host"),
  },
  hosts: { required: false, default: [], read: stringList("a list of host names of `hosts`") },
  recipients: {
    required: false,
    default: null,
    read: nullable(stringList("host names or age1.../ssh-... keys")),
  },
  validation: { required: false, default: null, read: (v) => v },
  rotate: { required: false, default: null, read: (v) => v },
  runtimeInputs: { required: false, default: [], read: stringList("command names or absolute paths") },
  timeout: { required: false, default: 60, read: integerField(1, 86400, "seconds, e.g. timeout = 120;") },
};

const TOP_FIELDS: FieldTable = {
  admins: {
    required: false,
    default: [],
    read: stringList('recipient strings: "age1..." or "ssh-ed25519 ..."'),
  },
  hosts: { required: false, default: {}, read: (v) => v },
  generators: { required: true, read: (v) => v },
};

function readFiles(v: Json, at: string, p: Problems): OutputFile[] | undefined {
  if (!isObject(v) || Object.keys(v).length === 0) {
    p.add(
      at,
      `must be an attribute set naming at least one file, not ${typeName(v)}`,
      "write files.password = { };",
    );
    return undefined;
  }
  const out: OutputFile[] = [];
  let ok = true;
  for (const [name, f] of Object.entries(v)) {
    const where = `${at}.${shown(name)}`;
    if (!FILE_NAME.test(name)) {
      p.add(where, "is not a valid file name", FILE_NAME_HINT);
      ok = false;
      continue;
    }
    const r = readObject(f, where, FILE_FIELDS, p, SCHEMA_HINT);
    if (r === null) {
      ok = false;
      continue;
    }
    out.push({
      name,
      secret: r.get("secret") as boolean,
      owner: r.get("owner") as string,
      group: r.get("group") as string,
      mode: r.get("mode") as string,
      neededForUsers: r.get("neededForUsers") as boolean,
    });
  }
  return ok ? out : undefined;
}

function readPrompts(v: Json | null, at: string, p: Problems): PromptSpec[] | undefined {
  if (v === null) return [];
  if (!isObject(v)) {
    p.add(at, `must be an attribute set, not ${typeName(v)}`, 'write prompts.admin = { type = "hidden"; };');
    return undefined;
  }
  const out: PromptSpec[] = [];
  let ok = true;
  for (const [name, f] of Object.entries(v)) {
    const where = `${at}.${shown(name)}`;
    if (!IDENTIFIER.test(name)) {
      p.add(where, "is not a valid prompt name", IDENTIFIER_HINT);
      ok = false;
      continue;
    }
    const r = readObject(f, where, PROMPT_FIELDS, p, SCHEMA_HINT);
    if (r === null) {
      ok = false;
      continue;
    }
    out.push({
      name,
      type: r.get("type") as PromptType,
      description: r.get("description") as string,
      persist: r.get("persist") as boolean,
    });
  }
  return ok ? out : undefined;
}

function readRotate(v: Json | null, at: string, p: Problems): number | null | undefined {
  if (v === null) return null;
  if (!isObject(v) || Object.keys(v).some((k) => k !== "every") || typeof v.every !== "string") {
    p.add(at, 'must be { every = "90d"; }', "rotate.every is a period: a number and h, d or w");
    return undefined;
  }
  const s = parsePeriod(v.every);
  if (typeof s === "string") {
    p.add(`${at}.every`, `"${shown(v.every)}" ${s}`, "rotate.every is a period: a number and h, d or w");
    return undefined;
  }
  return s;
}

function readImport(v: Json | null, at: string, p: Problems): string[] | null | undefined {
  if (v === null) return null;
  if (!isObject(v) || Object.keys(v).some((k) => k !== "command")) {
    p.add(at, "must be { command = [ ... ]; }", 'write import.command = [ "pass" "show" "db" ];');
    return undefined;
  }
  const cmd = stringList("the program and its arguments")(v.command ?? null, `${at}.command`, p);
  if (cmd === undefined) return undefined;
  if (cmd.length === 0) {
    p.add(`${at}.command`, "is empty", 'write import.command = [ "pass" "show" "db" ];');
    return undefined;
  }
  return cmd;
}

/** A builtin generator declares exactly its kind's files, reads only what it names, runs nothing. */
function checkBuiltin(
  at: string,
  b: Builtin,
  files: OutputFile[],
  prompts: PromptSpec[],
  r: Map<string, unknown>,
  p: Problems,
): boolean {
  let ok = true;
  const want = builtinFiles(b);
  const have = files.map((f) => f.name);
  if (want.length !== have.length || !want.every((w) => have.includes(w))) {
    p.add(
      `${at}.files`,
      `builtin ${b.kind} writes ${want.map((w) => `"${w}"`).join(" and ")}, not ${have.map((h) => `"${shown(h)}"`).join(", ")}`,
      `declare ${want.map((w) => (w.includes(".") ? `files."${w}"` : `files.${w}`)).join(" and ")} (docs/generators.md)`,
    );
    ok = false;
  }
  if ((r.get("runtimeInputs") as string[]).length > 0) {
    p.add(`${at}.runtimeInputs`, "is set, but a builtin runs no program", "remove runtimeInputs");
    ok = false;
  }
  const input = b.kind === "hash" ? b.input : null;
  const usedPrompt = input !== null && "prompt" in input ? input.prompt : null;
  for (const q of prompts) {
    if (q.name !== usedPrompt) {
      p.add(`${at}.prompts.${q.name}`, "is asked but the builtin does not read it", "remove the prompt");
      ok = false;
    }
  }
  if (usedPrompt !== null && !prompts.some((q) => q.name === usedPrompt)) {
    p.add(
      `${at}.builtin.hash.sha512Crypt`,
      `reads prompt "${usedPrompt}", which prompts does not declare`,
      `add prompts.${usedPrompt} = { type = "hidden"; };`,
    );
    ok = false;
  }
  if (
    input !== null &&
    "dependency" in input &&
    !(r.get("dependencies") as string[]).includes(input.dependency)
  ) {
    p.add(
      `${at}.builtin.hash.sha512Crypt`,
      `reads "${input.dependency}", which dependencies does not list`,
      `add dependencies = [ "${input.dependency}" ];`,
    );
    ok = false;
  }
  return ok;
}

/** Finds a dependency cycle (as "a -> b -> a"), or null. */
function findCycle(generators: Map<string, GeneratorSpec>): string | null {
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (n: string): string | null => {
    if (state.get(n) === 2) return null;
    if (state.get(n) === 1) return [...stack.slice(stack.indexOf(n)), n].join(" -> ");
    state.set(n, 1);
    stack.push(n);
    for (const d of generators.get(n)?.dependencies ?? []) {
      if (!generators.has(d)) continue;
      const c = visit(d);
      if (c !== null) return c;
    }
    stack.pop();
    state.set(n, 2);
    return null;
  };
  for (const n of [...generators.keys()].sort()) {
    const c = visit(n);
    if (c !== null) return c;
  }
  return null;
}

/** Generator names in dependency order (dependencies first; ties by name, so runs repeat). */
function topologicalOrder(generators: Map<string, GeneratorSpec>): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visit = (n: string) => {
    if (done.has(n)) return;
    done.add(n);
    for (const d of [...(generators.get(n)?.dependencies ?? [])].sort()) visit(d);
    order.push(n);
  };
  for (const n of [...generators.keys()].sort()) visit(n);
  return order;
}

/** Validates the evaluated generators JSON (every problem at once, code GENERATORS). */
export function parseGenerators(source: string, value: unknown): Generators {
  const p = new Problems("GENERATORS", source);
  const top = readObject(value as Json, "", TOP_FIELDS, p, SCHEMA_HINT);
  if (top === null) p.throwIfAny();
  const admins = (top!.get("admins") as string[]).map((s) => s.trim());
  admins.forEach((a, i) => {
    if (!looksLikeRecipient(a))
      p.add(`admins[${i}]`, "is not a recipient", 'write "age1..." or "ssh-ed25519 ..."');
  });
  const hosts = new Map<string, string>();
  const hostsValue = top!.get("hosts") as Json;
  if (!isObject(hostsValue)) {
    p.add(
      "hosts",
      `must be an attribute set of host = "recipient", not ${typeName(hostsValue)}`,
      SCHEMA_HINT,
    );
  } else {
    for (const [h, key] of Object.entries(hostsValue)) {
      if (!IDENTIFIER.test(h)) p.add(`hosts.${shown(h)}`, "is not a valid host name", IDENTIFIER_HINT);
      else if (typeof key !== "string" || !looksLikeRecipient(key))
        p.add(`hosts.${h}`, "must be the host's recipient", 'write hosts.web = "ssh-ed25519 AAAA...";');
      else hosts.set(h, key.trim());
    }
  }
  const generators = new Map<string, GeneratorSpec>();
  const gensValue = top!.get("generators") as Json;
  if (!isObject(gensValue)) {
    p.add("generators", `must be an attribute set, not ${typeName(gensValue)}`, SCHEMA_HINT);
    p.throwIfAny();
  }
  for (const [name, g] of Object.entries(gensValue as Record<string, Json>)) {
    const at = `generators.${shown(name)}`;
    if (!IDENTIFIER.test(name)) {
      p.add(at, "is not a valid generator name", IDENTIFIER_HINT);
      continue;
    }
    const r = readObject(g, at, GENERATOR_FIELDS, p, SCHEMA_HINT);
    if (r === null) continue;
    const files = readFiles(r.get("files") as Json, `${at}.files`, p);
    const prompts = readPrompts(r.get("prompts") as Json | null, `${at}.prompts`, p);
    const rotateEvery = readRotate(r.get("rotate") as Json | null, `${at}.rotate`, p);
    const importCommand = readImport(r.get("import") as Json | null, `${at}.import`, p);
    const builtin = readBuiltin(r.get("builtin") as Json | null, `${at}.builtin`, p);
    const script = r.get("script") as string | null;
    if (
      files === undefined ||
      prompts === undefined ||
      rotateEvery === undefined ||
      importCommand === undefined ||
      builtin === undefined
    )
      continue;
    if ([script, importCommand, builtin].filter((x) => x !== null).length !== 1) {
      p.add(
        at,
        "needs exactly one of script, import.command and builtin",
        'write a script, import.command to take a value from a command, or builtin (e.g. builtin = "password";)',
      );
      continue;
    }
    // Two declared files must not land on one path (a secret "x" is x.age; a public "x.age" too).
    const paths = files.map((f) => (f.secret ? `${f.name}.age` : f.name));
    const clash = paths.find(
      (x, i) => paths.indexOf(x) !== i || prompts.some((q) => x === `prompt.${q.name}.age`),
    );
    if (clash !== undefined) {
      p.add(
        `${at}.files`,
        `two outputs would both be written as "${shown(clash)}"`,
        "rename one of the files",
      );
      continue;
    }
    if (builtin !== null && !checkBuiltin(at, builtin, files, prompts, r, p)) continue;
    if (importCommand !== null && (files.length !== 1 || prompts.length > 0)) {
      p.add(
        at,
        "an import.command generator has exactly one file and no prompts",
        "its command's output is that one file",
      );
      continue;
    }
    const genHosts = r.get("hosts") as string[];
    const share = r.get("share") as boolean;
    if (share && genHosts.length > 0) {
      p.add(at, "is shared and per-host at once", "remove share = true; or hosts");
      continue;
    }
    for (const h of genHosts) {
      if (!hosts.has(h))
        p.add(`${at}.hosts`, `names "${shown(h)}", which is not in hosts`, "add the host to hosts first");
    }
    if (new Set(genHosts).size !== genHosts.length)
      p.add(`${at}.hosts`, "names a host twice", "list each host once");
    const recipients = r.get("recipients") as string[] | null;
    for (const x of recipients ?? []) {
      if (!hosts.has(x) && !looksLikeRecipient(x))
        p.add(
          `${at}.recipients`,
          `"${shown(x)}" is neither a host of hosts nor a recipient`,
          'write a host name or "age1..."',
        );
    }
    const deps = r.get("dependencies") as string[];
    generators.set(name, {
      name,
      files,
      script,
      builtin,
      importCommand,
      dependencies: [...new Set(deps)],
      prompts,
      share,
      hosts: genHosts,
      recipients,
      validationHash: validationHash((r.get("validation") ?? null) as Json),
      rotateEvery,
      runtimeInputs: r.get("runtimeInputs") as string[],
      timeout: r.get("timeout") as number,
    });
  }
  for (const g of generators.values()) {
    const input = g.builtin?.kind === "hash" ? g.builtin.input : null;
    if (input !== null && "dependency" in input) {
      const dep = generators.get(input.dependency);
      if (dep !== undefined && !dep.files.some((f) => f.name === input.file))
        p.add(
          `generators.${g.name}.builtin.hash.sha512Crypt`,
          `reads "${shown(input.file)}", which is not a file of "${input.dependency}"`,
          `name one of: ${dep.files.map((f) => f.name).join(", ")}`,
        );
    }
    for (const d of g.dependencies) {
      const dep = generators.get(d);
      if (dep === undefined) {
        if (!Object.hasOwn(gensValue as object, d))
          p.add(
            `generators.${g.name}.dependencies`,
            `names "${shown(d)}", which is not a generator`,
            "define it, or fix the name",
          );
        continue;
      }
      if (dep.hosts.length > 0 && g.hosts.length === 0) {
        p.add(
          `generators.${g.name}`,
          `${g.share ? "is shared" : "is not per-host"} but depends on the per-host generator "${d}"`,
          "a generator that is not per-host cannot choose which host's value to read; make it per-host or drop the dependency",
        );
      }
      for (const h of g.hosts) {
        if (dep.hosts.length > 0 && !dep.hosts.includes(h))
          p.add(
            `generators.${g.name}`,
            `runs for host "${h}", but its dependency "${d}" does not`,
            `add "${h}" to ${d}'s hosts`,
          );
      }
    }
  }
  p.throwIfAny();
  const cycle = findCycle(generators);
  if (cycle !== null) {
    throw new NixsealError("GENERATORS", `${source}: the dependencies form a cycle: ${cycle}`, {
      file: source,
      hint: "a generator cannot depend on its own output, not even through others; remove one dependency",
    });
  }
  return { source, admins, hosts, generators, order: topologicalOrder(generators) };
}

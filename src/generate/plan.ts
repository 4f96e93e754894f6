/**
 * What `nixseal generate` will do, decided without decrypting anything: each generator instance
 * (one per generator, or one per host of a per-host generator) is compared with its state record
 * in generated/.state.json (docs/generators.md, "State record") and with the output files on
 * disk: missing, regenerate (and why), rekey only (its recipients changed), or nothing.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { isObject, NixsealError } from "../common/index.js";
import { loadAgeSecrets } from "../vault/index.js";
import type { GeneratorSpec, Generators } from "./spec.js";

export const OUTPUT_DIR = "generated";
/**
 * The state of every instance, one file: `generated/.state.json` (docs/generators.md, "State record").
 * Before it, each instance kept its record in `generated/<id>/.state.json` (LEGACY_STATE_FILE):
 * those are still read, for instances the index does not list, and moved into it by the next run
 * that writes.
 */
export const STATE_INDEX = ".state.json";
export const LEGACY_STATE_FILE = ".state.json";
export const STATE_INDEX_VERSION = 2;
/** Not "secrets.nix": commands find the rules walking up from a secret, and must find the repository's. */
export const GENERATED_RULES = "rules.nix";
const MAX_STATE_SIZE = 1024 * 1024;
const MAX_STATE_INDEX_SIZE = 64 * 1024 * 1024;
/** Instance ids in the index: "name" or "name/host" (spec.ts's identifiers). */
const INSTANCE_ID = /^[A-Za-z_][A-Za-z0-9_-]{0,63}(\/[A-Za-z_][A-Za-z0-9_-]{0,63})?$/;

export interface Instance {
  gen: GeneratorSpec;
  host: string | null;
  /** "name" or "name/host": how plans, records and errors name it. */
  id: string;
  /** Absolute directory of its outputs and state. */
  dir: string;
  /** Directory relative to the repository, with "/" (as secrets.nix names files). */
  relDir: string;
  /** The recipient strings its secret outputs are encrypted to (admins first, sorted, unique). */
  recipients: string[];
  /** The instances it reads ($in/<dep>/...), by dependency generator name. */
  deps: Map<string, Instance>;
}

/** An instance's record in generated/.state.json: no secret, nothing derived from one. */
export interface StateRecord {
  version: 1;
  /** Random id of this set of outputs; dependents record it. */
  generation: string;
  /** ISO 8601, when the outputs were generated (rotation counts from it). */
  generatedAt: string;
  /** SHA-256 of the validation value's canonical JSON. */
  validation: string;
  /** Dependency instance id -> the generation id its outputs had when this one was made. */
  dependencies: Record<string, string>;
  /** Recipient strings the secret outputs are encrypted to. */
  recipients: string[];
  /** The output files (names, without .age). */
  files: string[];
}

export type Action = "generate" | "regenerate" | "rekey" | "none";

export interface PlanEntry {
  instance: Instance;
  action: Action;
  reasons: string[];
  state: StateRecord | null;
}

/** A persisted prompt answer whose recipients changed: re-encrypted, like a "rekey" entry. */
export interface PromptRekey {
  gen: GeneratorSpec;
  prompt: string;
  /** Relative to the repository. */
  rel: string;
  recipients: string[];
}

export interface Plan {
  repository: string;
  outputDir: string;
  entries: PlanEntry[];
  /** The records of generated/.state.json as read (also of instances not in this plan). */
  stateIndex: Map<string, StateRecord>;
  /** Instances whose record came from a per-instance .state.json: moved into the index on write. */
  legacyStates: Instance[];
  /** Entries whose action is not "none". */
  work: PlanEntry[];
  prompts: PromptRekey[];
  /** generated/rules.nix differs from what the outputs on disk need (e.g. it was removed). */
  rulesStale: boolean;
}

/** The recipients of persisted answers: the admins, else everybody who reads the generator. */
export function promptRecipients(
  spec: Generators,
  instances: readonly Instance[],
  gen: GeneratorSpec,
): string[] {
  if (spec.admins.length > 0) return spec.admins;
  const all = new Set<string>();
  for (const i of instances) if (i.gen === gen) for (const r of i.recipients) all.add(r);
  return [...all];
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}

/** Default recipients: the admins and the hosts that use it (docs/generators.md, "Recipients"). */
function recipientsOf(spec: Generators, gen: GeneratorSpec, host: string | null): string[] {
  let hosts: string[];
  if (gen.recipients !== null) {
    return unique([...spec.admins, ...gen.recipients.map((r) => spec.hosts.get(r) ?? r.trim())]);
  }
  if (host !== null) hosts = [spec.hosts.get(host)!];
  else hosts = [...spec.hosts.values()];
  return unique([...spec.admins, ...hosts]);
}

/** Every instance, in dependency order. */
export function instancesOf(spec: Generators, repository: string): Instance[] {
  const out: Instance[] = [];
  const byId = new Map<string, Instance>();
  const problems: NixsealError[] = [];
  for (const name of spec.order) {
    const gen = spec.generators.get(name)!;
    const hosts: (string | null)[] = gen.hosts.length > 0 ? gen.hosts : [null];
    for (const host of hosts) {
      const id = host === null ? name : `${name}/${host}`;
      const relDir = `${OUTPUT_DIR}/${id}`;
      const deps = new Map<string, Instance>();
      for (const d of gen.dependencies) {
        const dep = byId.get(d) ?? byId.get(`${d}/${host}`);
        if (dep) deps.set(d, dep);
      }
      const recipients = recipientsOf(spec, gen, host);
      if (recipients.length === 0 && gen.files.some((f) => f.secret)) {
        problems.push(
          new NixsealError(
            "GENERATORS",
            `${spec.source}: generator "${id}" has secret outputs nobody can read`,
            {
              file: spec.source,
              hint: "list admins, hosts, or the generator's recipients",
            },
          ),
        );
      }
      const inst: Instance = { gen, host, id, dir: path.join(repository, relDir), relDir, recipients, deps };
      byId.set(id, inst);
      out.push(inst);
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return out;
}

const HEX = /^[0-9a-f]{16,64}$/;

/** Whether `file` is a regular file (lstat: a symlink is not an output). */
function isRegularFile(file: string): boolean {
  try {
    return fs.lstatSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
  } catch {
    return false;
  }
}

/** A small regular file's text, never through a symlink; null when it does not exist. */
function readSmallFile(file: string, max: number, hint: string): string | null {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.size > max) throw new Error("not a small regular file");
      return fs.readFileSync(fd, "utf8");
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new NixsealError("GENERATE", `${file} cannot be read: ${(e as Error).message}`, { file, hint });
  }
}

const RECORD_KEYS = ["generation", "generatedAt", "validation", "dependencies", "recipients", "files"];

/** One state record, strictly: exactly its fields (and `version` 1 in a per-instance file). */
function parseRecord(v: unknown, legacy: boolean): StateRecord | null {
  const keys = legacy ? ["version", ...RECORD_KEYS] : RECORD_KEYS;
  if (!isObject(v) || Object.keys(v).length !== keys.length || !keys.every((k) => Object.hasOwn(v, k)))
    return null;
  const deps = v.dependencies;
  if (
    (legacy && v.version !== 1) ||
    typeof v.generation !== "string" ||
    !HEX.test(v.generation) ||
    typeof v.generatedAt !== "string" ||
    Number.isNaN(Date.parse(v.generatedAt)) ||
    typeof v.validation !== "string" ||
    !isObject(deps) ||
    !Object.values(deps).every((x) => typeof x === "string") ||
    !Array.isArray(v.recipients) ||
    !v.recipients.every((x) => typeof x === "string") ||
    !Array.isArray(v.files) ||
    !v.files.every((x) => typeof x === "string")
  )
    return null;
  return {
    version: 1,
    generation: v.generation,
    generatedAt: v.generatedAt,
    validation: v.validation,
    dependencies: Object.fromEntries(Object.entries(deps)) as Record<string, string>,
    recipients: v.recipients as string[],
    files: v.files as string[],
  };
}

/** Reads a per-instance state record (written before the index); null when there is none. */
export function readState(inst: Instance): StateRecord | null {
  const file = path.join(inst.dir, LEGACY_STATE_FILE);
  const text = readSmallFile(file, MAX_STATE_SIZE, "remove it to generate this generator's outputs again");
  if (text === null) return null;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {}
  const record = parseRecord(v, true);
  if (record === null)
    throw new NixsealError("GENERATE", `${file} is not a valid state record`, {
      file,
      hint: "it is written by nixseal generate; remove it to generate the outputs again",
    });
  return record;
}

/**
 * Reads generated/.state.json, strictly (unknown fields, malformed records or ids are errors,
 * naming the record); null when it does not exist.
 */
export function readStateIndex(outputDir: string): Map<string, StateRecord> | null {
  const file = path.join(outputDir, STATE_INDEX);
  const hint =
    "it is written by nixseal generate: restore it (git checkout -- generated/.state.json), or remove it to generate every output again";
  const text = readSmallFile(file, MAX_STATE_INDEX_SIZE, hint);
  if (text === null) return null;
  const bad = (what: string) =>
    new NixsealError("GENERATE", `${file} is not a valid state file: ${what}`, { file, hint });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad("not JSON");
  }
  if (!isObject(v) || Object.keys(v).length !== 2 || !Object.hasOwn(v, "version") || !isObject(v.instances))
    throw bad('it must be {"version": 2, "instances": {...}}');
  if (v.version !== STATE_INDEX_VERSION)
    throw bad(
      `version ${JSON.stringify(v.version)} is not ${STATE_INDEX_VERSION} (a newer nixseal wrote it?)`,
    );
  const out = new Map<string, StateRecord>();
  for (const [id, record] of Object.entries(v.instances)) {
    if (!INSTANCE_ID.test(id)) throw bad(`${JSON.stringify(id.slice(0, 140))} is not an instance name`);
    const r = parseRecord(record, false);
    if (r === null) throw bad(`the record of ${id} is malformed`);
    out.set(id, r);
  }
  return out;
}

/** generated/.state.json's text: one instance per line, sorted (so git merges line by line). */
export function stateIndexText(records: ReadonlyMap<string, StateRecord>): string {
  const lines = [...records.keys()].sort().map((id) => {
    const { version: _, ...r } = records.get(id)!;
    return `${JSON.stringify(id)}:${JSON.stringify(r)}`;
  });
  return `{"version":${STATE_INDEX_VERSION},"instances":{\n${lines.join(",\n")}${lines.length ? "\n" : ""}}}\n`;
}

/** A Nix string literal: JSON's escapes are Nix's, and "${" must not start an interpolation. */
function nixString(s: string): string {
  return JSON.stringify(s).replace(/\$\{/g, "\\${");
}

/** The rules file the repository's secrets.nix imports: every generated secret file and who reads it. */
export function generatedRules(
  entries: readonly PlanEntry[],
  spec: Generators,
  exists: (rel: string) => boolean,
): string {
  const lines: string[] = [];
  const add = (rel: string, keys: string[]) => {
    lines.push(`  ${nixString(rel)}.publicKeys = [ ${keys.map(nixString).join(" ")} ];`);
  };
  const prompts = new Set<string>();
  for (const e of entries) {
    const inst = e.instance;
    for (const f of inst.gen.files) {
      const rel = `${inst.relDir}/${outputFileName(f)}`;
      if (f.secret && exists(rel)) add(rel, inst.recipients);
    }
    for (const p of inst.gen.prompts) {
      const rel = `${OUTPUT_DIR}/${inst.gen.name}/prompt.${p.name}.age`;
      if (!p.persist || prompts.has(rel) || !exists(rel)) continue;
      prompts.add(rel);
      add(
        rel,
        promptRecipients(
          spec,
          entries.map((x) => x.instance),
          inst.gen,
        ),
      );
    }
  }
  lines.sort();
  return `# Written by 'nixseal generate' from ${path.basename(spec.source)}: do not edit.
# secrets.nix imports it:  (import ./${OUTPUT_DIR}/${GENERATED_RULES}) // { ... }
{
${lines.join("\n")}${lines.length ? "\n" : ""}}
`;
}

/** The file of an output: `<file>.age` when secret, `<file>` when public. */
export function outputFileName(file: { name: string; secret: boolean }): string {
  return file.secret ? `${file.name}.age` : file.name;
}

/** A persisted prompt answer of a generator: beside its outputs, or above its hosts' directories. */
export function promptFile(repository: string, gen: GeneratorSpec, prompt: string): string {
  return path.join(repository, OUTPUT_DIR, gen.name, `prompt.${prompt}.age`);
}

/** The same recipients, in any order (`wanted` has no duplicates, as instancesOf makes it). */
function sameRecipients(recorded: readonly string[], wanted: readonly string[]): boolean {
  if (recorded.length !== wanted.length) return false;
  const set = new Set(recorded);
  return set.size === recorded.length && wanted.every((r) => set.has(r));
}

function formatPeriod(seconds: number): string {
  for (const [u, s] of [
    ["w", 7 * 86400],
    ["d", 86400],
    ["h", 3600],
  ] as const) {
    if (seconds % s === 0) return `${seconds / s}${u}`;
  }
  return `${seconds}s`;
}

export interface PlanOptions {
  /** Generators to consider (with their dependencies); empty: all. */
  names?: readonly string[];
  /** Generators to regenerate whatever their state. */
  regenerate?: readonly string[];
  now: Date;
}

/** Decides what to do for every instance (selected ones and what they depend on). */
export async function makePlan(spec: Generators, repository: string, options: PlanOptions): Promise<Plan> {
  const problems: NixsealError[] = [];
  for (const n of [...(options.names ?? []), ...(options.regenerate ?? [])]) {
    if (!spec.generators.has(n)) {
      problems.push(
        new NixsealError("USAGE", `"${n}" is not a generator of ${spec.source}`, {
          hint: `known generators: ${[...spec.generators.keys()].join(", ") || "none"}`,
        }),
      );
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  // Selected: the names given and their dependencies (they may be missing too).
  let selected: Set<string> | null = null;
  if (options.names && options.names.length > 0) {
    const sel = new Set<string>();
    const add = (n: string) => {
      if (sel.has(n)) return;
      sel.add(n);
      for (const d of spec.generators.get(n)!.dependencies) add(d);
    };
    for (const n of options.names) add(n);
    selected = sel;
  }
  const forced = new Set(options.regenerate ?? []);
  const entries: PlanEntry[] = [];
  const byId = new Map<string, PlanEntry>();
  const existing = new Set<string>();
  const outputDir = path.join(repository, OUTPUT_DIR);
  const stateIndex = readStateIndex(outputDir);
  const legacyStates: Instance[] = [];
  for (const inst of instancesOf(spec, repository)) {
    // Which outputs exist: regular files only, never through a symlink.
    const present = new Set<string>();
    for (const f of inst.gen.files) {
      const name = outputFileName(f);
      if (!isRegularFile(path.join(inst.dir, name))) continue;
      present.add(name);
      existing.add(`${inst.relDir}/${name}`);
    }
    let state = stateIndex?.get(inst.id) ?? null;
    if (state === null) {
      // Not in the index (or no index yet): a record an earlier nixseal kept beside the outputs.
      state = readState(inst);
      if (state !== null) legacyStates.push(inst);
    }
    const reasons: string[] = [];
    let action: Action = "none";
    const inScope = selected === null || selected.has(inst.gen.name);
    if (state === null) {
      action = "generate";
      reasons.push("not generated yet");
    } else {
      const missing = inst.gen.files.filter(
        (f) => !state.files.includes(f.name) || !present.has(outputFileName(f)),
      );
      if (missing.length > 0) reasons.push(`output ${missing.map((f) => f.name).join(", ")} missing`);
      if (forced.has(inst.gen.name)) reasons.push("--regenerate");
      if (state.validation !== inst.gen.validationHash) reasons.push("validation changed");
      for (const dep of inst.deps.values()) {
        const depEntry = byId.get(dep.id);
        if (depEntry && (depEntry.action === "generate" || depEntry.action === "regenerate")) {
          reasons.push(`dependency ${dep.id} is regenerated`);
        } else if (depEntry?.state && state.dependencies[dep.id] !== depEntry.state.generation) {
          reasons.push(`dependency ${dep.id} changed`);
        }
      }
      if (inst.gen.rotateEvery !== null) {
        const due = Date.parse(state.generatedAt) + inst.gen.rotateEvery * 1000;
        if (due <= options.now.getTime())
          reasons.push(
            `rotation due (generated ${state.generatedAt}, every ${formatPeriod(inst.gen.rotateEvery)})`,
          );
      }
      if (reasons.length > 0) action = "regenerate";
      else if (inst.gen.files.some((f) => f.secret) && !sameRecipients(state.recipients, inst.recipients)) {
        action = "rekey";
        reasons.push("recipients changed");
      }
    }
    if (!inScope) {
      action = "none";
      reasons.length = 0;
    }
    const entry: PlanEntry = { instance: inst, action, reasons, state };
    byId.set(inst.id, entry);
    entries.push(entry);
  }
  // Kept answers are checked by their header's recipients record: no key needed.
  const prompts: PromptRekey[] = [];
  const instances = entries.map((e) => e.instance);
  for (const gen of spec.generators.values()) {
    if (selected !== null && !selected.has(gen.name)) continue;
    for (const p of gen.prompts) {
      const file = promptFile(repository, gen, p.name);
      if (!p.persist || !fs.existsSync(file)) continue;
      const recipients = promptRecipients(spec, instances, gen);
      const rel = path.relative(repository, file).split(path.sep).join("/");
      // src/age and the key formats are loaded only here, for a kept answer: not on every plan.
      const { recordNamesRule } = await loadAgeSecrets();
      if (!recordNamesRule({ name: rel, file, publicKeys: recipients, armor: false }))
        prompts.push({ gen, prompt: p.name, rel, recipients });
    }
  }
  let current: string | null = null;
  try {
    current = fs.readFileSync(path.join(repository, OUTPUT_DIR, GENERATED_RULES), "utf8");
  } catch {}
  const wanted = generatedRules(
    entries,
    spec,
    (rel) =>
      existing.has(rel) ||
      (rel.endsWith(".age") && rel.split("/").length === 3 && fs.existsSync(path.join(repository, rel))),
  );
  return {
    repository,
    outputDir,
    entries,
    stateIndex: stateIndex ?? new Map(),
    legacyStates,
    work: entries.filter((e) => e.action !== "none"),
    prompts,
    rulesStale: current !== wanted && entries.some((e) => e.state !== null),
  };
}

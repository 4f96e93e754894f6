/**
 * The rules of a secrets repository: who may read which secret. agenix's `secrets.nix` is read
 * as it is (`{ "path/file.age".publicKeys = [ ... ]; "x.age".armor = true; }`), evaluated by the
 * real Nix (`nix-instantiate --eval --strict --json`), and cached by content so repeated
 * commands don't pay the evaluation again.
 */
import { createHash } from "node:crypto";
import type { Dirent } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  type Captured,
  captureOutput,
  childProcess,
  nodeFs as fs,
  ioError,
  NixsealError,
  writeFileAtomic,
} from "../common/index.js";

/** An encrypted file larger than this is refused (secrets are small; hostile input is not). */
export const MAX_SECRET_FILE_SIZE = 256 * 1024 * 1024;

export const RULES_FILE = "secrets.nix";
const MAX_RULES_SIZE = 4 * 1024 * 1024;
const CACHE_VERSION = 2;

export interface SecretRule {
  /** The attribute name in secrets.nix, e.g. "hosts/web/db-password.age". */
  name: string;
  /** Absolute path of the encrypted file. */
  file: string;
  /** Recipient strings, exactly as written in the rules. */
  publicKeys: string[];
  armor: boolean;
}

export interface Rules {
  /** Absolute path of secrets.nix. */
  file: string;
  /** The directory secret paths are relative to. */
  dir: string;
  secrets: Map<string, SecretRule>;
}

export interface FindRulesOptions {
  rules?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * A secret path the user typed (e.g. "secrets/db.age"): its directory is searched first, so
   * commands work from the repository root too.
   */
  near?: string;
}

/**
 * Finds the rules file: --rules FILE, then $RULES (agenix's variable), then the first
 * secrets.nix walking up from the secret's directory (when a path was given) or the current one,
 * then ./secrets/secrets.nix (the layout `nixseal init` makes).
 */
export function findRulesFile(options: FindRulesOptions = {}): string {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const explicit = options.rules ?? env.RULES;
  if (explicit) {
    const p = path.resolve(cwd, explicit);
    if (!fs.existsSync(p)) {
      throw new NixsealError("RULES", `rules file ${p} does not exist`, {
        file: p,
        hint: options.rules ? "check the --rules path" : "check the RULES environment variable",
      });
    }
    return p;
  }
  const starts = [path.resolve(cwd)];
  if (options.near?.includes("/")) starts.unshift(path.dirname(path.resolve(cwd, options.near)));
  for (const start of starts) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      const candidate = path.join(dir, RULES_FILE);
      if (fs.existsSync(candidate)) return candidate;
      if (path.dirname(dir) === dir) break;
    }
  }
  // The layout `nixseal init` makes: ./secrets/secrets.nix below the repository root.
  const conventional = path.join(path.resolve(cwd), "secrets", RULES_FILE);
  if (fs.existsSync(conventional)) return conventional;
  throw new NixsealError("RULES", `no ${RULES_FILE} found in ${cwd} or any parent directory`, {
    hint: "run 'nixseal init' to create one, or pass --rules FILE (or set RULES)",
  });
}

/**
 * Where evaluated rules are cached: $XDG_CACHE_HOME/nixseal/rules, else ~/.cache/nixseal/rules;
 * null when there is no usable place. The cache directory (~/.cache, $XDG_CACHE_HOME) may be
 * created, but only inside a directory that exists: nixseal never creates a home directory (a
 * service with HOME=/nonexistent must not make one). Relative paths are ignored, as the XDG
 * base directory specification asks.
 */
export function rulesCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  const xdg = env.XDG_CACHE_HOME;
  let base: string;
  if (xdg && path.isAbsolute(xdg)) {
    base = xdg;
  } else {
    const home = env.HOME || os.homedir();
    if (!home || !path.isAbsolute(home)) return null;
    base = path.join(home, ".cache");
  }
  try {
    if (!fs.statSync(path.dirname(base)).isDirectory()) return null;
  } catch {
    return null;
  }
  return path.join(base, "nixseal", "rules");
}

/** The most directory entries the cache key looks at; a larger tree is evaluated every time. */
const MAX_KEY_ENTRIES = 20_000;

/**
 * The cache key: the rules file's content plus name, size and times of every file below its
 * directory that an evaluation may read: .nix files anywhere (rules `import ./keys.nix` or
 * `./generated/rules.nix`), every other file but encrypted ones (`.age`) and `nixseal generate`'s
 * state records (a secrets.nix may `readFile ./generated/host/web/pub`), and every directory
 * (`readDir`; a file added or removed changes its directory's times). Dot directories and
 * node_modules are skipped, symlinked directories are not followed. null (no caching) when
 * the tree holds more than MAX_KEY_ENTRIES entries. Imports from outside it are not tracked:
 * --no-cache.
 */
function cacheKey(file: string, content: Buffer, skipDirs: readonly string[] = []): string | null {
  const h = createHash("sha256").update(`v${CACHE_VERSION}\0${file}\0`).update(content);
  let seen = 0;
  const walk = (dir: string, rel: string, depth: number): boolean => {
    let entries: Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return true;
    }
    seen += entries.length;
    if (seen > MAX_KEY_ENTRIES) return false;
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const name = e.name;
      if (e.isDirectory()) {
        if (name.startsWith(".") || name === "node_modules" || depth >= 16) continue;
        if (depth === 0 && skipDirs.includes(name)) continue;
        const p = path.join(dir, name);
        try {
          const st = fs.statSync(p);
          h.update(`\0d\0${rel}${name}\0${st.mtimeMs}\0${st.ctimeMs}`);
        } catch {}
        if (!walk(p, `${rel}${name}/`, depth + 1)) return false;
        continue;
      }
      if (name.endsWith(".age") || name === ".state.json") continue;
      try {
        const st = fs.statSync(path.join(dir, name));
        if (!st.isFile()) continue;
        h.update(`\0f\0${rel}${name}\0${st.size}\0${st.mtimeMs}\0${st.ctimeMs}`);
      } catch {}
    }
    return true;
  };
  if (!walk(path.dirname(file), "", 0)) return null;
  return h.digest("hex");
}

/** Evaluates secrets.nix with the real Nix; errors are shown compactly (Nix's own message). */
/**
 * The directory a rules file may read from: the enclosing git repository, else its own
 * directory. Nix's restricted evaluation refuses everything outside it (and every URL), so a
 * hostile secrets.nix cannot read ~/.ssh or send anything over the network.
 */
export function evaluationRoot(file: string): string {
  const dir = path.dirname(path.resolve(file));
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, ".git"))) return d;
    if (path.dirname(d) === d) return dir;
  }
}

/** nix-instantiate's arguments for evaluating `file` (restricted, no store, no network). */
function nixArgs(file: string): string[] {
  return [
    "--eval",
    "--strict",
    "--json",
    // dummy:// store: evaluation needs no daemon and no write access to /nix.
    "--store",
    "dummy://",
    "--option",
    "restrict-eval",
    "true",
    "--option",
    "allowed-uris",
    "",
    "-I",
    `nixseal-rules=${evaluationRoot(file)}`,
    file,
  ];
}

/** The most output (stdout, stderr) an evaluation may print. */
const MAX_NIX_OUTPUT = 64 * 1024 * 1024;

function nixEnv(): NodeJS.ProcessEnv {
  return { ...process.env, NIX_PATH: process.env.NIX_PATH ?? "" };
}

function cannotRun(file: string, e: Error): NixsealError {
  const missing = (e as NodeJS.ErrnoException).code === "ENOENT";
  return new NixsealError(
    "RULES",
    missing ? "nix-instantiate not found" : `cannot run nix-instantiate: ${e.message}`,
    {
      file,
      hint: missing ? "install Nix (nix-instantiate must be on PATH) to read secrets.nix" : undefined,
    },
  );
}

/** The evaluation's outcome: its JSON value, or the error for a failed run. */
function evaluated(file: string, status: number | null, stdout: string, stderr: string): unknown {
  if (status !== 0) {
    throw new NixsealError("RULES", `cannot evaluate ${file}: ${compactNixError(stderr)}`, {
      file,
      hint: "fix the Nix expression; `nix-instantiate --eval --strict secrets.nix` shows the full error",
    });
  }
  try {
    return JSON.parse(stdout);
  } catch {
    throw new NixsealError("RULES", `${file} did not evaluate to JSON`, { file });
  }
}

export function evaluateRules(file: string): unknown {
  // node:child_process loads here, not at start-up: a cached evaluation runs no process.
  const r = childProcess().spawnSync("nix-instantiate", nixArgs(file), {
    encoding: "utf8",
    maxBuffer: MAX_NIX_OUTPUT,
    env: nixEnv(),
  });
  if (r.error) throw cannotRun(file, r.error);
  return evaluated(file, r.status, r.stdout, r.stderr);
}

/**
 * evaluateRules without blocking this thread: Nix evaluates on another core while this one goes
 * on (a command starts it before loading its own modules). The same errors.
 */
export async function evaluateRulesAsync(file: string): Promise<unknown> {
  let r: Captured;
  try {
    r = await captureOutput("nix-instantiate", nixArgs(file), {
      env: nixEnv(),
      maxStdout: MAX_NIX_OUTPUT,
      maxStderr: MAX_NIX_OUTPUT,
    });
  } catch (e) {
    throw cannotRun(file, e as Error);
  }
  if (r.stopped === "too-large")
    throw cannotRun(file, new Error(`it printed more than ${MAX_NIX_OUTPUT / 1024 / 1024} MiB`));
  return evaluated(file, r.signal === null ? r.code : null, r.stdout.toString("utf8"), r.stderr);
}

/** Nix's multi-line error as one line: the message and the position. */
export function compactNixError(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !/^\d+\|/.test(l) && !/^\|/.test(l) && !/^…/.test(l));
  const message = (lines.find((l) => l.startsWith("error:")) ?? lines[0] ?? "unknown error").replace(
    /^error:\s*/,
    "",
  );
  const at = lines.find((l) => l.startsWith("at "));
  return at ? `${message} (${at.replace(/:$/, "")})` : message;
}

function ruleError(file: string, message: string, hint: string): NixsealError {
  return new NixsealError("RULES", `${file}: ${message}`, { file, hint });
}

/** Validates the evaluated rules strictly: hostile names, wrong types, unknown attributes. */
export function parseRules(file: string, value: unknown): Rules {
  const dir = path.dirname(file);
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw ruleError(file, "must evaluate to an attribute set", 'write { "name.age".publicKeys = [ ... ]; }');
  }
  const secrets = new Map<string, SecretRule>();
  const problems: NixsealError[] = [];
  for (const [name, entry] of Object.entries(value as Record<string, unknown>)) {
    const where = `secret "${name}"`;
    const normalized = path.posix.normalize(name);
    if (
      name === "" ||
      path.isAbsolute(name) ||
      normalized.startsWith("../") ||
      normalized === ".." ||
      name.includes("\0")
    ) {
      problems.push(
        ruleError(file, `${where}: the path must stay inside ${dir}`, "use a relative path without '..'"),
      );
      continue;
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      problems.push(ruleError(file, `${where} must be an attribute set`, "write { publicKeys = [ ... ]; }"));
      continue;
    }
    const e = entry as Record<string, unknown>;
    const keys = e.publicKeys;
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string")) {
      problems.push(
        ruleError(file, `${where}: publicKeys must be a list of strings`, "list age1... or ssh public keys"),
      );
      continue;
    }
    if (keys.length === 0) {
      problems.push(
        ruleError(file, `${where} has no publicKeys`, "add at least one recipient, or nobody can read it"),
      );
      continue;
    }
    if (e.armor !== undefined && typeof e.armor !== "boolean") {
      problems.push(ruleError(file, `${where}: armor must be true or false`, "write armor = true;"));
      continue;
    }
    const unknown = Object.keys(e).filter((k) => k !== "publicKeys" && k !== "armor");
    if (unknown.length > 0) {
      problems.push(
        ruleError(file, `${where}: unknown attribute "${unknown[0]}"`, "only publicKeys and armor are known"),
      );
      continue;
    }
    secrets.set(name, {
      name,
      file: path.join(dir, normalized),
      publicKeys: (keys as string[]).map((k) => k.trim()),
      armor: e.armor === true,
    });
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return { file, dir, secrets };
}

/**
 * Evaluates a Nix file of the repository (secrets.nix, generators.nix) as the rules are: real
 * Nix, restricted, the JSON value cached by content. With noCache the cache is neither read nor
 * written. `maxSize` bounds the file read.
 */
export interface NixValueOptions {
  env?: NodeJS.ProcessEnv;
  noCache?: boolean;
  maxSize?: number;
  what?: string;
  /** Directories beside the file that its evaluation does not read (left out of the cache key). */
  skipDirs?: readonly string[];
}

export function loadNixValue(file: string, options: NixValueOptions = {}): unknown {
  const c = cachedNixValue(file, options);
  if ("value" in c) return c.value;
  return c.store(evaluateRules(file));
}

/** loadNixValue with the evaluation on another core (evaluateRulesAsync). */
export async function loadNixValueAsync(file: string, options: NixValueOptions = {}): Promise<unknown> {
  const c = cachedNixValue(file, options);
  if ("value" in c) return c.value;
  return c.store(await evaluateRulesAsync(file));
}

/** The cached value of `file`, or how to store the value once evaluated. */
function cachedNixValue(
  file: string,
  options: NixValueOptions,
): { value: unknown } | { store: (value: unknown) => unknown } {
  const env = options.env ?? process.env;
  let content: Buffer;
  try {
    const st = fs.statSync(file);
    if (st.size > (options.maxSize ?? MAX_RULES_SIZE))
      throw ruleError(file, "is too large", `a ${options.what ?? "rules file"} lists secrets and keys only`);
    content = fs.readFileSync(file);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read", file, e);
  }
  const dir = options.noCache ? null : rulesCacheDir(env);
  const key = dir === null ? null : cacheKey(file, content, options.skipDirs);
  const cached = dir === null || key === null ? null : path.join(dir, `${key}.json`);
  if (cached !== null) {
    try {
      return { value: JSON.parse(fs.readFileSync(cached, "utf8")) };
    } catch {}
  }
  return {
    store: (value) => {
      if (cached !== null) {
        try {
          fs.mkdirSync(path.dirname(cached), { recursive: true, mode: 0o700 });
          writeFileAtomic(cached, Buffer.from(JSON.stringify(value)), 0o600);
        } catch {
          // The cache is an optimisation: a read-only home must not break the command.
        }
      }
      return value;
    },
  };
}

/**
 * Loads the rules, from the cache when nothing changed. With noCache the cache is neither read
 * nor written.
 */
export function loadRules(options: FindRulesOptions & { noCache?: boolean } = {}): Rules {
  const file = findRulesFile(options);
  return parseRules(file, loadNixValue(file, { env: options.env, noCache: options.noCache }));
}

/** loadRules with Nix evaluating on another core meanwhile (loadNixValueAsync). */
export async function loadRulesAsync(options: FindRulesOptions & { noCache?: boolean } = {}): Promise<Rules> {
  const file = findRulesFile(options);
  return parseRules(file, await loadNixValueAsync(file, { env: options.env, noCache: options.noCache }));
}

/** A file's name relative to the rules directory, with "/" separators (as in the rules). */
export function relativeName(rules: Rules, file: string): string {
  return path.relative(rules.dir, file).split(path.sep).join("/");
}

/**
 * Resolves what the user typed to a rule: the attribute name itself, or a path (relative to
 * the current directory) to the file, with or without ".age".
 */
export function findSecret(rules: Rules, name: string, cwd = process.cwd()): SecretRule | undefined {
  const direct = rules.secrets.get(name) ?? rules.secrets.get(`${name}.age`);
  if (direct) return direct;
  const rel = path.relative(rules.dir, path.resolve(cwd, name)).split(path.sep).join("/");
  return rules.secrets.get(rel) ?? rules.secrets.get(`${rel}.age`);
}

export function requireSecret(rules: Rules, name: string, cwd = process.cwd()): SecretRule {
  const s = findSecret(rules, name, cwd);
  if (s) return s;
  const names = [...rules.secrets.keys()];
  const close = names.filter((n) => n.includes(path.basename(name).replace(/\.age$/, ""))).slice(0, 3);
  throw new NixsealError("NOT_IN_RULES", `"${name}" is not in ${rules.file}`, {
    hint: close.length
      ? `did you mean ${close.map((c) => `"${c}"`).join(" or ")}? New secrets are added to secrets.nix first`
      : `add "${name}".publicKeys = [ ... ]; to ${rules.file} first`,
  });
}

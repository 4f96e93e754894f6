/**
 * Where a user's `nixseal agent` gets a build secret's value from (docs/build-secrets.md, "Where
 * the agent gets a value"): the user's `~/.config/nixseal/agent.json` names, per policy secret
 * name, an age file (decrypted with the user's own identities) or a command (argv, run directly,
 * never through a shell); `--secrets DIR` is short for `DIR/<name>.age`; anything else is typed
 * at the prompt. This is the user's configuration, read by the user's agent: the host policy
 * never names a user's command, and the daemon never runs one.
 *
 * Also here: the agent's memory of supplied values (`--remember`), kept per secret name and URL
 * origin, wiped when it expires.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { decrypt, type Identity } from "../age/index.js";
import {
  type Captured,
  captureOutput,
  DUPLICATE_KEY_HINT,
  duplicateKey,
  type FieldTable,
  isObject,
  type Json,
  NixsealError,
  Problems,
  pathProblem,
  readAllSync,
  readObject,
  shown,
  typeName,
  wipe,
} from "../common/index.js";
import { MAX_AGENT_VALUE } from "./agent.js";
import { readSecretFile } from "./secret-dir.js";

export const MAX_AGENT_CONFIG_BYTES = 256 * 1024;
/** A command that has not printed its value by then is stopped. */
export const COMMAND_TIMEOUT_MS = 5 * 60 * 1000;
const MAX_ARGS = 64;
const MAX_STDERR_SHOWN = 4096;

export type ValueSource = { kind: "file"; file: string } | { kind: "command"; argv: string[] };

export interface AgentConfig {
  /** The file read, or null when there was none. */
  file: string | null;
  secrets: Map<string, ValueSource>;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HINT =
  'agent.json is {"secrets": {"NAME": {"file": "~/secrets/NAME.age"} or {"command": ["pass", "show", "NAME"]}}}; see docs/build-secrets.md';

/** `~/.config/nixseal/agent.json`, honouring XDG_CONFIG_HOME (absolute only, as the spec says). */
export function agentConfigPath(env: NodeJS.ProcessEnv, home: string): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg?.startsWith("/") ? xdg : path.join(home, ".config");
  return path.join(base, "nixseal", "agent.json");
}

/** A path of agent.json: absolute, or `~/...` under `home`; normalised. */
function readUserPath(home: string) {
  return (v: Json, at: string, p: Problems): string | undefined => {
    if (typeof v !== "string") {
      p.add(at, `must be a string, not ${typeName(v)}`, HINT);
      return undefined;
    }
    const full = v.startsWith("~/") ? `${home}/${v.slice(2)}` : v;
    const why = pathProblem(full);
    if (why !== null) {
      p.add(at, `"${shown(v)}" ${why}`, "use an absolute path or one starting with ~/");
      return undefined;
    }
    return full;
  };
}

function readArgv(v: Json, at: string, p: Problems): string[] | undefined {
  const hint = 'the command and its arguments, run without a shell, e.g. ["pass", "show", "mods-token"]';
  if (!Array.isArray(v)) {
    p.add(at, `must be a list of strings, not ${typeName(v)}`, hint);
    return undefined;
  }
  if (v.length === 0 || v.length > MAX_ARGS) {
    p.add(at, `must have 1 to ${MAX_ARGS} elements (it has ${v.length})`, hint);
    return undefined;
  }
  let ok = true;
  v.forEach((a, i) => {
    if (typeof a !== "string" || a.includes("\0") || a.length > 4096) {
      p.add(`${at}[${i}]`, "must be a string without NUL of at most 4096 characters", hint);
      ok = false;
    }
  });
  if (ok && (v[0] as string).length === 0) {
    p.add(`${at}[0]`, "is empty", hint);
    ok = false;
  }
  return ok ? (v as string[]) : undefined;
}

/** Parses agent.json; every problem is reported at once. */
export function parseAgentConfig(text: string, file: string, home: string): AgentConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new NixsealError("AGENT_CONFIG", `${file}: not valid JSON: ${(e as Error).message}`, {
      file,
      hint: HINT,
    });
  }
  const dup = duplicateKey(text);
  if (dup !== null) {
    throw new NixsealError("AGENT_CONFIG", `${file}: ${dup.at}: duplicate key "${shown(dup.key)}"`, {
      file,
      hint: DUPLICATE_KEY_HINT,
    });
  }
  if (!isObject(doc))
    throw new NixsealError("AGENT_CONFIG", `${file}: must be a JSON object`, { file, hint: HINT });
  const problems = new Problems("AGENT_CONFIG", file);
  const ENTRY: FieldTable = {
    file: { required: false, default: null, read: readUserPath(home) },
    command: { required: false, default: null, read: readArgv },
  };
  const TOP: FieldTable = {
    secrets: {
      required: true,
      read: (v, at, p) => {
        if (!isObject(v)) {
          p.add(at, `must be an object: secret name -> source, not ${typeName(v)}`, HINT);
          return undefined;
        }
        const out = new Map<string, ValueSource>();
        for (const [name, entry] of Object.entries(v)) {
          const where = `${at}.${JSON.stringify(name.slice(0, 80))}`;
          if (!NAME_RE.test(name)) {
            p.add(where, "is not a valid secret name", "use the name of the secret in the host's policy");
            continue;
          }
          const m = readObject(entry, where, ENTRY, p, HINT);
          if (m === null) continue;
          const f = m.get("file") as string | null;
          const c = m.get("command") as string[] | null;
          if ((f === null) === (c === null)) {
            p.add(where, 'must have exactly one of "file" and "command"', HINT);
            continue;
          }
          out.set(name, f !== null ? { kind: "file", file: f } : { kind: "command", argv: c! });
        }
        return out;
      },
    },
  };
  const m = readObject(doc, "", TOP, problems, HINT);
  problems.throwIfAny();
  return { file, secrets: m!.get("secrets") as Map<string, ValueSource> };
}

/** Reads agent.json; a missing file is an empty configuration (every value is typed). */
export function readAgentConfig(file: string, home: string): AgentConfig {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { file: null, secrets: new Map() };
    throw new NixsealError("AGENT_CONFIG", `cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`, {
      file,
      hint: "check the file's permissions",
    });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > MAX_AGENT_CONFIG_BYTES) {
      throw new NixsealError(
        "AGENT_CONFIG",
        `${file} is not a regular file of at most ${MAX_AGENT_CONFIG_BYTES} bytes`,
        { file, hint: HINT },
      );
    }
    // It names commands the agent runs as this user: nobody else may have written it.
    const uid = process.getuid?.();
    if ((uid !== undefined && st.uid !== uid && st.uid !== 0) || (st.mode & 0o022) !== 0) {
      throw new NixsealError(
        "AGENT_CONFIG",
        `${file} is not owned by you or is writable by group or others (it names commands the agent runs)`,
        { file, hint: `chmod go-w ${file} (and make it yours)` },
      );
    }
    return parseAgentConfig(readAllSync(fd, st.size).toString("utf8"), file, home);
  } finally {
    fs.closeSync(fd);
  }
}

/** Where the agent gets `name`'s value: agent.json first, then `secretsDir/<name>.age`; null: typed. */
export function valueSourceOf(
  config: AgentConfig,
  secretsDir: string | null,
  name: string,
): ValueSource | null {
  const configured = config.secrets.get(name);
  if (configured !== undefined) return configured;
  if (secretsDir !== null && NAME_RE.test(name)) {
    const file = path.join(secretsDir, `${name}.age`);
    if (fs.existsSync(file)) return { kind: "file", file };
  }
  return null;
}

/** A value must fit the agent's answer and be something a header can carry at all. */
function checkValue(value: Uint8Array, what: string): Uint8Array {
  if (value.length === 0 || value.length > MAX_AGENT_VALUE) {
    const len = value.length;
    value.fill(0);
    throw new NixsealError(
      "BUILD_SECRET",
      `${what} is empty or longer than ${MAX_AGENT_VALUE} bytes (${len})`,
      {
        hint: "a build secret is a token or key of one line",
      },
    );
  }
  return value;
}

/** Decrypts the user's own age file with `identities`. The caller wipes the result. */
export async function valueFromFile(
  file: string,
  identities: () => Promise<Identity[]>,
): Promise<Uint8Array> {
  const data = readSecretFile(file, {
    wrongFile: "point agent.json at the age-encrypted secret",
    unreadable: "check agent.json (or --secrets) for this secret",
  });
  let plain: Uint8Array;
  try {
    plain = await decrypt(data, await identities());
  } catch (e) {
    if (e instanceof NixsealError) throw e.withFile(file);
    throw e;
  }
  return checkValue(plain, `the decrypted ${file}`);
}

/**
 * Runs the user's command (argv[0] looked up on PATH, no shell, stdin closed) and returns what it
 * prints on stdout. Its stderr goes to `onStderr` (the agent shows it at its terminal; it never
 * goes to the hook). Stopped when `signal` fires (the hook gave up) or after COMMAND_TIMEOUT_MS.
 */
export async function valueFromCommand(
  argv: readonly string[],
  signal: AbortSignal,
  onStderr: (text: string) => void,
  timeoutMs = COMMAND_TIMEOUT_MS,
): Promise<Uint8Array> {
  const what = `the command ${JSON.stringify(argv[0]!.slice(0, 200))}`;
  let r: Captured;
  try {
    r = await captureOutput(argv[0]!, argv.slice(1), {
      maxStdout: MAX_AGENT_VALUE,
      maxStderr: MAX_STDERR_SHOWN,
      timeoutMs,
      signal,
      stopWith: "SIGTERM",
    });
  } catch (e) {
    throw new NixsealError(
      "BUILD_SECRET",
      `cannot run ${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      {
        hint: "check the command in agent.json (it runs without a shell, found on PATH)",
      },
    );
  }
  if (r.stderr.length > 0) onStderr(r.stderr);
  if (r.stopped !== null || r.code !== 0) {
    wipe(r.stdout);
    const why =
      r.stopped === "timeout"
        ? `did not finish within ${timeoutMs / 1000} s`
        : r.stopped === "aborted"
          ? "was stopped: the build stopped waiting"
          : r.stopped === "too-large"
            ? `printed more than ${MAX_AGENT_VALUE} bytes`
            : r.code !== null
              ? `exited with ${r.code}`
              : `was killed by ${r.signal}`;
    throw new NixsealError("BUILD_SECRET", `${what} ${why}`, {
      hint: "run the command yourself to see what it needs",
    });
  }
  return checkValue(r.stdout, `the output of ${what}`);
}

/**
 * Supplied values and approvals the agent keeps for `--remember`: per request kind, secret name
 * and URL origin (the value goes only where it went before: another host naming the same
 * secret asks again). Entries are wiped when they expire and on `clear`.
 */
export class RememberedAnswers {
  readonly #entries = new Map<string, { value: Uint8Array | null; timer: NodeJS.Timeout }>();
  constructor(readonly ms: number) {}

  static key(want: string, secret: string, url: string): string | null {
    try {
      return JSON.stringify([want, secret, new URL(url).origin]);
    } catch {
      return null;
    }
  }

  /** A copy of the remembered value (the caller wipes it), null for an approval, undefined: none. */
  get(key: string | null): Uint8Array | null | undefined {
    if (key === null) return undefined;
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    return e.value === null ? null : Uint8Array.from(e.value);
  }

  /** Keeps a copy of `value` (null: an approval) for `ms`. */
  set(key: string | null, value: Uint8Array | null): void {
    if (key === null || this.ms <= 0) return;
    this.#drop(key);
    const timer = setTimeout(() => this.#drop(key), this.ms);
    timer.unref();
    this.#entries.set(key, { value: value === null ? null : Uint8Array.from(value), timer });
  }

  #drop(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    clearTimeout(e.timer);
    e.value?.fill(0);
    this.#entries.delete(key);
  }

  clear(): void {
    for (const key of [...this.#entries.keys()]) this.#drop(key);
  }
}

/** Parses `--remember`: `90s`, `15m`, `2h` (or plain seconds); at most 24 h. Milliseconds. */
export function parseRemember(text: string): number {
  const m = /^(\d{1,6})(s|m|h)?$/.exec(text);
  const ms = m ? Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "s" | "m" | "h"] : NaN;
  if (!m || ms > 24 * 3_600_000) {
    throw new NixsealError(
      "USAGE",
      `--remember ${JSON.stringify(text.slice(0, 40))} is not a duration of at most 24h`,
      {
        hint: "e.g. --remember 15m (units s, m, h)",
      },
    );
  }
  return ms;
}

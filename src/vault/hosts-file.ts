/**
 * `hosts.nix`, beside `secrets.nix`: the repository's hosts and their recipients, kept by
 * `nixseal host add`. An attrset of NAME = "recipient"; that secrets.nix imports with one line,
 * `hosts = import ./hosts.nix;`. nixseal owns its form so it can update it without a Nix
 * pretty-printer: comment lines, `{`, one `NAME = "recipient";` line per host, `}`. A line of
 * any other form is an error (nothing is rewritten), so a hand edit is never silently lost.
 * Every write is atomic and the result is evaluated by the real Nix before it counts.
 */
import * as path from "node:path";
import { nodeFs as fs, ioError, NixsealError, writeFileAtomic } from "../common/index.js";
import { evaluateRules } from "./rules.js";

export const HOSTS_FILE = "hosts.nix";
const MAX_HOSTS_FILE_SIZE = 1024 * 1024;
export const MAX_HOST_NAME = 63;
const NIX_KEYWORDS = new Set(["if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"]);

/** Why NAME is not a plain Nix identifier nixseal accepts as a host name, or null. */
export function hostNameProblem(name: string): string | null {
  if (name.length === 0) return "the host name is empty";
  if (name.length > MAX_HOST_NAME) return `the host name is longer than ${MAX_HOST_NAME} characters`;
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name))
    return "a host name is a plain Nix identifier: a letter or _, then letters, digits, _ or -";
  if (NIX_KEYWORDS.has(name)) return `"${name}" is a Nix keyword`;
  return null;
}

/** A recipient nixseal writes into a Nix string: nothing that Nix would interpret. */
function recipientProblem(recipient: string): string | null {
  if (!/^[A-Za-z0-9+/=@._: -]+$/.test(recipient) || recipient.length > 16 * 1024)
    return "not a recipient nixseal can record (only age1..., ssh-ed25519 or ssh-rsa keys)";
  return null;
}

const ENTRY = /^(\s*)([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"([^"\\$]*)"\s*;\s*(#.*)?$/;

export interface HostsFile {
  /** Absolute path of hosts.nix. */
  file: string;
  /** Whether the file exists. */
  exists: boolean;
  /** NAME -> recipient, in file order. */
  hosts: Map<string, string>;
  /** The file's lines as read (for a rewrite that keeps comments and order). */
  lines: string[];
  /** Its bytes as read (to put back if what follows fails). */
  content: Buffer | null;
  mode: number;
}

const HEADER = [
  "# The hosts of this repository and their recipients, kept by `nixseal host add`.",
  "# secrets.nix uses it with: hosts = import ./hosts.nix;  (then e.g. hosts.web1)",
  '# One NAME = "recipient"; line per host; nixseal rewrites only lines of that form.',
];

function formProblem(file: string, line: number, what: string): NixsealError {
  return new NixsealError("RULES", `${file}:${line}: ${what}`, {
    file,
    hint: `keep ${HOSTS_FILE} to comment lines, { , NAME = "recipient"; lines and } (nixseal host add writes it); put other Nix into secrets.nix`,
  });
}

/** Reads hosts.nix beside the rules file strictly; a missing file is an empty one. */
export function readHostsFile(rulesDir: string): HostsFile {
  const file = path.join(rulesDir, HOSTS_FILE);
  let content: Buffer;
  let mode = 0o644;
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile()) {
      throw new NixsealError("RULES", `${file} is not a regular file`, {
        file,
        hint: `${HOSTS_FILE} must be a plain file (not a symlink) beside secrets.nix`,
      });
    }
    if (st.size > MAX_HOSTS_FILE_SIZE) {
      throw new NixsealError("RULES", `${file} is too large (over 1 MiB)`, { file });
    }
    mode = st.mode & 0o777;
    content = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      return { file, exists: false, hosts: new Map(), lines: [], content: null, mode };
    }
    if (e instanceof NixsealError) throw e;
    throw ioError("read", file, e);
  }
  const lines = content.toString("utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  const hosts = new Map<string, string>();
  const problems: NixsealError[] = [];
  let state = "before" as "before" | "inside" | "after";
  for (const [i, raw] of lines.entries()) {
    const n = i + 1;
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line === "{" && state === "before") state = "inside";
    else if (line === "}" && state === "inside") state = "after";
    else if (state === "inside") {
      const m = ENTRY.exec(raw.replace(/\r$/, ""));
      if (m === null) {
        problems.push(formProblem(file, n, 'not a NAME = "recipient"; line'));
        continue;
      }
      const [, , name, recipient] = m;
      const bad = hostNameProblem(name!) ?? recipientProblem(recipient!);
      if (bad !== null) problems.push(formProblem(file, n, bad));
      else if (hosts.has(name!)) problems.push(formProblem(file, n, `host ${name} is listed twice`));
      else hosts.set(name!, recipient!);
    } else problems.push(formProblem(file, n, state === "after" ? "text after the closing }" : "expected {"));
  }
  if (problems.length === 0 && state !== "after")
    problems.push(formProblem(file, lines.length, "the attrset is not closed with }"));
  if (problems.length > 0) throw NixsealError.many(problems);
  return { file, exists: true, hosts, lines, content, mode };
}

/** The text of `hosts` with NAME set to `recipient`: its line replaced in place, or added last. */
export function renderHostsFile(hosts: HostsFile, name: string, recipient: string): string {
  const bad = hostNameProblem(name) ?? recipientProblem(recipient);
  if (bad !== null) throw new NixsealError("USAGE", bad, { hint: "run 'nixseal host --help'" });
  const entry = (indent: string) => `${indent}${name} = "${recipient}";`;
  if (!hosts.exists) return `${[...HEADER, "{", entry("  "), "}"].join("\n")}\n`;
  const lines = [...hosts.lines];
  const at = lines.findIndex((l) => ENTRY.exec(l.replace(/\r$/, ""))?.[2] === name);
  if (at >= 0) {
    const m = ENTRY.exec(lines[at]!.replace(/\r$/, ""))!;
    lines[at] = `${entry(m[1]!)}${m[4] ? ` ${m[4]}` : ""}`;
  } else {
    let close = lines.length - 1;
    while (lines[close]!.trim() !== "}") close--;
    lines.splice(close, 0, entry("  "));
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Writes `text` as hosts.nix (atomically) and checks that the real Nix evaluates it to exactly
 * `expected`; if not, the previous file is put back. Returns a function that puts it back.
 */
export function writeHostsFile(
  hosts: HostsFile,
  text: string,
  expected: ReadonlyMap<string, string>,
): () => void {
  const restore = () => {
    if (hosts.content === null) fs.rmSync(hosts.file, { force: true });
    else writeFileAtomic(hosts.file, hosts.content, hosts.mode);
  };
  writeFileAtomic(hosts.file, Buffer.from(text, "utf8"), hosts.mode);
  try {
    const value = evaluateRules(hosts.file) as Record<string, unknown>;
    const same =
      value !== null &&
      typeof value === "object" &&
      !Array.isArray(value) &&
      Object.keys(value).length === expected.size &&
      [...expected].every(([k, v]) => Object.hasOwn(value, k) && value[k] === v);
    if (!same) {
      throw new NixsealError("RULES", `${hosts.file} does not evaluate to the hosts nixseal wrote`, {
        file: hosts.file,
        hint: "the file was left as it was; check it with nix-instantiate --eval --strict",
      });
    }
  } catch (e) {
    restore();
    throw e;
  }
  return restore;
}

/** Does secrets.nix name hosts.nix (so that a host's recipient reaches the rules)? */
export function rulesImportHostsFile(rulesFile: string): boolean {
  try {
    return /\bhosts\.nix\b/.test(fs.readFileSync(rulesFile, "utf8"));
  } catch {
    return false;
  }
}

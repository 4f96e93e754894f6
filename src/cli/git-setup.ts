/**
 * `nixseal git-setup`: registers a git diff driver so `git diff` shows decrypted changes to
 * secrets to whoever can decrypt them, and a placeholder to everyone else. Two pieces:
 * `.gitattributes` beside secrets.nix (`*.age diff=nixseal`, committed, shared with the team)
 * and the local repository's config (`diff.nixseal.textconv`, per clone: it names this
 * machine's nixseal). Idempotent: the user's content is kept, nothing is rewritten twice.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError, writeFileAtomic } from "../common/index.js";
import type { Rules } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { sanitize } from "./report.js";
import { rulesOf, VAULT_OPTIONS } from "./vault-context.js";

const DRIVER = "nixseal";

const HELP = `Usage: nixseal git-setup [--rules FILE] [--command CMD] [--json]

Makes 'git diff', 'git log -p' and 'git show' show what changed inside encrypted secrets, to
whoever can decrypt them; everyone else sees a placeholder such as
"<nixseal: cannot decrypt: no matching identity>" and never any plaintext.

It adds "*.age diff=${DRIVER}" (and the exact path of any secret in secrets.nix that does not end
in .age) to the .gitattributes beside secrets.nix, keeping what is there; commit that file so
your team gets it too. It sets, in this clone's .git/config (each clone runs git-setup once):
    diff.${DRIVER}.textconv       "<this nixseal> git-textconv" (decrypts for display)
    diff.${DRIVER}.binary         true  (patches without textconv show no ciphertext noise)
    diff.${DRIVER}.cachetextconv  false (git must never store decrypted text in its notes)
The textconv command never prompts: a passphrase-protected key is used only when
NIXSEAL_PASSPHRASE_FILE is set. Running git-setup again changes nothing unless needed (rerun it
after moving or upgrading nixseal, so the textconv command points at the new one).

Options:
    --rules FILE   The rules file (default: $RULES, else the first secrets.nix found walking up).
    --command CMD  The command git runs (default: the absolute path of this nixseal), e.g.
                   --command nixseal to look it up on PATH.
    --json         Print what was done as JSON.
    --no-cache     Evaluate secrets.nix again instead of using the cache.

Example:
    $ nixseal git-setup
    secrets/.gitattributes: added "*.age diff=nixseal"
    git config diff.nixseal.textconv: '/usr/bin/node' '/opt/nixseal/dist/bundle/main.js' git-textconv
    $ git diff secrets/db-password.age

Exit codes: 0 success, 1 failure (not a git repository, git failed, cannot write), 2 usage or
configuration error (bad flags, no secrets.nix).
`;

const OPTIONS = {
  rules: VAULT_OPTIONS.rules,
  json: VAULT_OPTIONS.json,
  "no-cache": VAULT_OPTIONS["no-cache"],
  help: VAULT_OPTIONS.help,
  command: { type: "string" },
} as const;

/** POSIX shell quoting: git runs textconv through the shell with the file name appended. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The command git runs: this very nixseal, by absolute paths (no PATH lookup at diff time). */
function defaultTextconvCommand(): string {
  let script = process.argv[1] ?? "";
  try {
    script = fs.realpathSync(script);
  } catch {}
  return `${shellQuote(process.execPath)} ${shellQuote(script)} git-textconv`;
}

/** A path relative to .gitattributes as an exact gitattributes pattern (wildmatch-escaped). */
export function attributePattern(relative: string): string {
  const escaped = relative.replace(/[*?[\]\\!#"]/g, (c) => `\\${c}`).replace(/\s/g, "[[:space:]]");
  return `/${escaped}`;
}

/** The lines the rules need in .gitattributes. */
export function wantedAttributeLines(rules: Rules): string[] {
  const lines = [`*.age diff=${DRIVER}`];
  for (const name of rules.secrets.keys()) {
    if (name.endsWith(".age")) continue;
    const rel = path.relative(rules.dir, rules.secrets.get(name)!.file).split(path.sep).join("/");
    lines.push(`${attributePattern(rel)} diff=${DRIVER}`);
  }
  return lines;
}

/** Does an existing line already give `pattern` our driver? */
function hasLine(existing: readonly string[], wanted: string): boolean {
  const [pattern, attr] = wanted.split(" ") as [string, string];
  return existing.some((line) => {
    const parts = line.trim().split(/\s+/);
    return parts[0] === pattern && parts.slice(1).includes(attr);
  });
}

/** Adds the missing lines to .gitattributes (atomically, keeping its mode); returns them. */
export function updateGitattributes(file: string, wanted: readonly string[]): string[] {
  let text = "";
  let mode = 0o666;
  try {
    const st = fs.lstatSync(file);
    if (st.isSymbolicLink() || !st.isFile()) {
      throw new NixsealError("IO", `${file} is not a regular file`, {
        file,
        hint: `add "${wanted[0]}" to it yourself, then rerun git-setup`,
      });
    }
    mode = st.mode & 0o777;
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("read", file, e);
  }
  const existing = text.split("\n");
  const added = wanted.filter((w) => !hasLine(existing, w));
  if (added.length === 0) return [];
  const sep = text === "" || text.endsWith("\n") ? "" : "\n";
  const header = text.includes("# nixseal:") ? "" : "# nixseal: show decrypted diffs (nixseal git-setup)\n";
  writeFileAtomic(file, Buffer.from(`${text}${sep}${header}${added.join("\n")}\n`, "utf8"), mode);
  return added;
}

function git(cwd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync("git", args, { cwd, encoding: "utf8" });
  if (r.error) {
    const missing = (r.error as NodeJS.ErrnoException).code === "ENOENT";
    throw new NixsealError("IO", missing ? "git not found" : `cannot run git: ${r.error.message}`, {
      hint: missing ? "install git (it must be on PATH)" : undefined,
    });
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Sets a local config value if it differs; returns true if it changed. */
function setConfig(cwd: string, key: string, value: string): boolean {
  const current = git(cwd, ["config", "--local", "--get", key]);
  if (current.status === 0 && current.stdout.replace(/\n$/, "") === value) return false;
  const r = git(cwd, ["config", "--local", key, value]);
  if (r.status !== 0) {
    throw new NixsealError(
      "IO",
      `git config ${key} failed: ${sanitize(r.stderr.trim().split("\n")[0] ?? "")}`,
      {
        hint: "check that .git/config is writable",
      },
    );
  }
  return true;
}

export const command: Command = {
  name: "git-setup",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const parsed = parse(argv, OPTIONS, "run 'nixseal git-setup --help' for usage");
    const values = parsed.values;
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (parsed.positionals.length > 0) {
      throw new NixsealError("USAGE", "git-setup takes no arguments", {
        hint: "use --rules FILE to choose the secrets repository",
      });
    }
    const textconv = values.command ?? defaultTextconvCommand();
    if (textconv.trim() === "" || /[\n\r]/.test(textconv)) {
      throw new NixsealError("USAGE", "--command must be a one-line command", {
        hint: "e.g. --command nixseal",
      });
    }
    const rules = rulesOf(values);
    const top = git(rules.dir, ["rev-parse", "--show-toplevel"]);
    if (top.status !== 0) {
      throw new NixsealError("IO", `${rules.dir} is not inside a git repository`, {
        hint: "run 'git init' first (or run git-setup in the clone that holds secrets.nix)",
      });
    }
    const attributes = path.join(rules.dir, ".gitattributes");
    const added = updateGitattributes(attributes, wantedAttributeLines(rules));
    let configChanged = setConfig(rules.dir, `diff.${DRIVER}.textconv`, textconv);
    configChanged = setConfig(rules.dir, `diff.${DRIVER}.binary`, "true") || configChanged;
    configChanged = setConfig(rules.dir, `diff.${DRIVER}.cachetextconv`, "false") || configChanged;

    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({ gitattributes: attributes, added, textconv, configChanged })}\n`,
      );
      return 0;
    }
    const shown = sanitize(path.relative(process.cwd(), attributes) || attributes);
    for (const line of added) process.stdout.write(`${shown}: added "${sanitize(line)}"\n`);
    if (configChanged) {
      process.stdout.write(`git config diff.${DRIVER}.textconv: ${sanitize(textconv)}\n`);
    }
    if (added.length === 0 && !configChanged) {
      process.stdout.write("already set up: nothing changed\n");
    } else if (added.length > 0) {
      process.stdout.write(`commit ${shown} so that other clones get the diff driver too\n`);
    }
    return 0;
  },
};

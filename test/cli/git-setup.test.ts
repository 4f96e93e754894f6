/**
 * `nixseal git-setup` with a real git repository: after it, `git diff` shows the plaintext
 * change of a secret to whoever holds a key, and a placeholder (never plaintext) to everyone
 * else, including the holder of a passphrase-protected key, who is never prompted.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { chooseEditBase } from "../../src/vault/edit-session.js";
import { nixseal, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE_KEYGEN = which("age-keygen");
const GIT = which("git");
const SSH_KEYGEN = which("ssh-keygen");
const SCRIPT = which("script");
const hasRam = (() => {
  try {
    chooseEditBase();
    return true;
  } catch {
    return false;
  }
})();
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !GIT
    ? "git is not installed"
    : !AGE_KEYGEN
      ? "age-keygen (Debian package age) is not installed"
      : !hasRam
        ? "no RAM-backed directory for nixseal edit"
        : false;

const FIRST = `first-${randomBytes(8).toString("hex")}`;
const SECOND = `second-${randomBytes(8).toString("hex")}`;

let dir: string;
let cleanup: () => void;
let repo: string;
let secrets: string;
let home: string; // holds the age key
let strangerHome: string; // holds an unrelated key
let sshHome: string; // holds only a passphrase-protected ssh key that is a recipient
let passFile: string;
let env: Record<string, string | undefined>;

function git(args: string[], extra: Record<string, string | undefined> = {}) {
  const r = run(GIT!, args, { cwd: repo, env: { ...env, ...extra } });
  assert.equal(r.status, 0, `git ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.toString();
}

function ns(args: string[], extra: Record<string, string | undefined> = {}) {
  return nixseal(args, { cwd: repo, env: { ...env, ...extra } });
}

function editor(name: string, body: string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return p;
}

function keygen(file: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  assert.equal(spawnSync(AGE_KEYGEN!, ["-o", file]).status, 0);
  return spawnSync(AGE_KEYGEN!, ["-y", file]).stdout.toString().trim();
}

before(() => {
  ({ dir, cleanup } = tempDir());
  if (missing) return;
  repo = path.join(dir, "repo");
  secrets = path.join(repo, "secrets");
  home = path.join(dir, "home");
  strangerHome = path.join(dir, "stranger");
  sshHome = path.join(dir, "ssh-home");
  fs.mkdirSync(secrets, { recursive: true });
  const me = keygen(path.join(home, ".config", "nixseal", "identity.txt"));
  keygen(path.join(strangerHome, ".config", "nixseal", "identity.txt"));
  let sshPub = "";
  if (SSH_KEYGEN) {
    fs.mkdirSync(path.join(sshHome, ".ssh"), { recursive: true });
    const key = path.join(sshHome, ".ssh", "id_ed25519");
    const k = spawnSync(SSH_KEYGEN, [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "correct horse",
      "-C",
      "bob@desk",
      "-f",
      key,
    ]);
    assert.equal(k.status, 0);
    sshPub = fs.readFileSync(`${key}.pub`, "utf8").trim();
    passFile = path.join(dir, "passphrase");
    fs.writeFileSync(passFile, "correct horse\n", { mode: 0o600 });
  }
  fs.writeFileSync(
    path.join(secrets, "secrets.nix"),
    `let me = "${me}"; bob = ${JSON.stringify(sshPub)}; keys = [ me ] ++ (if bob == "" then [ ] else [ bob ]);
in {
  "db.age".publicKeys = keys;
  "wifi psk".publicKeys = keys;
}
`,
  );
  env = {
    HOME: home,
    XDG_CONFIG_HOME: undefined,
    XDG_CACHE_HOME: path.join(dir, "cache"),
    NIXSEAL_IDENTITY: undefined,
    SOPS_AGE_KEY_FILE: undefined,
    SOPS_AGE_KEY: undefined,
    NIXSEAL_PASSPHRASE_FILE: undefined,
    RULES: undefined,
    VISUAL: undefined,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_AUTHOR_NAME: "t",
    GIT_AUTHOR_EMAIL: "t@example.org",
    GIT_COMMITTER_NAME: "t",
    GIT_COMMITTER_EMAIL: "t@example.org",
    GIT_PAGER: "cat",
    NO_COLOR: "1",
  };
  git(["init", "-q"]);
  // The user's own attributes, which git-setup must keep.
  fs.writeFileSync(path.join(secrets, ".gitattributes"), "*.png binary\n# keep me");
});
after(() => cleanup());

describe("nixseal git-setup", { skip: missing }, () => {
  const attributes = () => path.join(secrets, ".gitattributes");

  test("outside a git repository: exit 1 with a hint", () => {
    const lone = path.join(dir, "lone");
    fs.mkdirSync(lone);
    fs.writeFileSync(path.join(lone, "secrets.nix"), "{ }\n");
    const r = nixseal(["git-setup"], { cwd: lone, env: { ...env, GIT_CEILING_DIRECTORIES: dir } });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /is not inside a git repository/);
    assert.match(r.stderr, /hint: run 'git init'/);
    assert.equal(fs.existsSync(path.join(lone, ".gitattributes")), false);
  });

  test("adds the diff driver to .gitattributes (keeping the user's lines) and the local git config", () => {
    const r = ns(["git-setup", "--rules", "secrets/secrets.nix"]);
    assert.equal(r.status, 0, r.stderr);
    const text = fs.readFileSync(attributes(), "utf8");
    assert.ok(text.startsWith("*.png binary\n# keep me\n"), text);
    assert.match(text, /^\*\.age diff=nixseal$/m);
    // A secret whose name does not end in .age gets its exact, escaped path.
    assert.match(text, /^\/wifi\[\[:space:\]\]psk diff=nixseal$/m);
    assert.equal(git(["check-attr", "diff", "secrets/db.age"]).trim(), "secrets/db.age: diff: nixseal");
    assert.equal(git(["check-attr", "diff", "secrets/wifi psk"]).trim(), "secrets/wifi psk: diff: nixseal");
    assert.equal(
      git(["check-attr", "diff", "secrets/secrets.nix"]).trim(),
      "secrets/secrets.nix: diff: unspecified",
    );
    assert.match(git(["config", "--local", "diff.nixseal.textconv"]), /git-textconv\n$/);
    assert.equal(git(["config", "--local", "diff.nixseal.binary"]), "true\n");
    assert.equal(git(["config", "--local", "diff.nixseal.cachetextconv"]), "false\n");
  });

  test("a second run changes nothing", () => {
    const before = fs.readFileSync(attributes());
    const config = fs.readFileSync(path.join(repo, ".git", "config"));
    const r = ns(["git-setup", "--rules", "secrets/secrets.nix", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.toString());
    assert.deepEqual(out.added, []);
    assert.equal(out.configChanged, false);
    assert.equal(out.gitattributes, attributes());
    assert.deepEqual(fs.readFileSync(attributes()), before);
    assert.deepEqual(fs.readFileSync(path.join(repo, ".git", "config")), config);
    const human = ns(["git-setup"]); // found as ./secrets/secrets.nix from the repository root
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stdout.toString(), /already set up/);
  });

  test("git diff shows the plaintext change to the key holder and a placeholder to anyone else", () => {
    const db = path.join(secrets, "db.age");
    const create = ns(["edit", "secrets/db.age"], { EDITOR: editor("write", `printf '${FIRST}\\n' > "$1"`) });
    assert.equal(create.status, 0, create.stderr);
    git(["add", "-A"]);
    git(["commit", "-qm", "add db"]);
    const change = ns(["edit", "secrets/db.age"], {
      EDITOR: editor("append", `printf '${SECOND}\\n' >> "$1"`),
    });
    assert.equal(change.status, 0, change.stderr);
    assert.ok(fs.readFileSync(db).length > 0);

    const holder = git(["diff", "secrets/db.age"]);
    assert.match(holder, new RegExp(`^ ${FIRST}$`, "m"));
    assert.match(holder, new RegExp(`^\\+${SECOND}$`, "m"));
    assert.equal(holder.includes("age-encryption.org"), false, "no ciphertext in the diff");

    const stranger = git(["diff", "secrets/db.age"], { HOME: strangerHome });
    assert.match(stranger, /<nixseal: cannot decrypt: no matching identity>/);
    assert.match(stranger, /^-<nixseal: ciphertext sha256:[0-9a-f]{16}, recipients: /m);
    assert.equal(stranger.includes(FIRST), false);
    assert.equal(stranger.includes(SECOND), false);

    const nobody = git(["diff", "secrets/db.age"], { HOME: path.join(dir, "empty-home") });
    assert.match(nobody, /<nixseal: cannot decrypt: no identity found>/);

    // History too, and git never cached decrypted text in its object store (cachetextconv off).
    git(["commit", "-qam", "change db"]);
    assert.match(git(["log", "-p", "-1"]), new RegExp(`^\\+${SECOND}$`, "m"));
    const leaked = spawnSync("grep", ["-rl", SECOND, path.join(repo, ".git")]);
    assert.equal(leaked.stdout.toString(), "", "plaintext found under .git");
    assert.equal(git(["notes", "--ref=textconv/nixseal", "list"]), "");
  });

  test("a passphrase-protected key: placeholder without a prompt; NIXSEAL_PASSPHRASE_FILE unlocks it", (t) => {
    if (!SSH_KEYGEN) return t.skip("ssh-keygen is not installed");
    const range = ["diff", "HEAD~1", "HEAD", "--", "secrets/db.age"];
    const locked = git(range, { HOME: sshHome });
    assert.match(locked, /<nixseal: cannot decrypt: the matching key is passphrase-protected/);
    assert.equal(locked.includes(SECOND), false);
    const unlocked = git(range, { HOME: sshHome, NIXSEAL_PASSPHRASE_FILE: passFile });
    assert.match(unlocked, new RegExp(`^\\+${SECOND}$`, "m"));
    if (!SCRIPT) return;
    // With a real terminal (script(1) gives git one): still no prompt, still the placeholder.
    const r = spawnSync(SCRIPT, ["-qec", `git ${range.join(" ")}`, "/dev/null"], {
      cwd: repo,
      env: Object.fromEntries(
        Object.entries({ ...process.env, ...env, HOME: sshHome }).filter(([, v]) => v !== undefined),
      ) as NodeJS.ProcessEnv,
      input: "",
      timeout: 30_000,
    });
    const out = r.stdout.toString();
    assert.equal(r.status, 0, out);
    assert.match(out, /passphrase-protected/);
    assert.equal(/Enter passphrase/i.test(out), false, "textconv prompted");
  });

  test("git-textconv on something that is not an age file: a placeholder, exit 0", () => {
    const junk = path.join(dir, "junk.age");
    fs.writeFileSync(junk, "hello, not encrypted\n");
    const r = ns(["git-textconv", junk]);
    assert.equal(r.status, 0, r.stderr);
    const sha = createHash("sha256").update(fs.readFileSync(junk)).digest("hex").slice(0, 16);
    assert.equal(
      r.stdout.toString(),
      `<nixseal: cannot decrypt: not a valid age file>\n<nixseal: sha256:${sha}>\n`,
    );
    const usage = ns(["git-textconv"]);
    assert.equal(usage.status, 2);
  });
});

/**
 * The daily repository commands users rely on: init, encrypt, decrypt, list, who — with real
 * Nix evaluating an agenix-style secrets.nix, the real age binary reading what we write, and
 * every error a clear line with a hint and a documented exit code.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const SSH_KEYGEN = which("ssh-keygen");
const GIT = which("git");
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE
    ? "age is not installed"
    : false;

let dir: string;
let cleanup: () => void;
let home: string;
let repo: string;
let env: Record<string, string | undefined>;

function sh(
  args: string[],
  options: { input?: string; cwd?: string; env?: Record<string, string | undefined> } = {},
) {
  return nixseal(args, { cwd: options.cwd ?? repo, env: { ...env, ...options.env }, input: options.input });
}

before(() => {
  ({ dir, cleanup } = tempDir());
  home = path.join(dir, "home");
  repo = path.join(dir, "repo");
  fs.mkdirSync(home);
  fs.mkdirSync(repo);
  // Never touch the real home: every default path lives in the temp dir.
  env = isolatedUserEnv(home, path.join(dir, "cache"));
});
after(() => cleanup());

describe("init, encrypt, decrypt, list, who", { skip: missing }, () => {
  let recipient: string;
  const rulesFile = () => path.join(repo, "secrets", "secrets.nix");
  const identityFile = () => path.join(home, ".config", "nixseal", "identity.txt");

  test("init creates a 0600 identity and secrets.nix naming its recipient; a second run changes nothing", () => {
    const r = sh(["init", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.toString());
    assert.equal(out.identity.created, true);
    assert.equal(out.rules.created, true);
    recipient = out.identity.recipient;
    assert.match(recipient, /^age1[0-9a-z]{58}$/);
    assert.equal(fs.statSync(identityFile()).mode & 0o777, 0o600);
    assert.ok(fs.readFileSync(rulesFile(), "utf8").includes(recipient));
    // The recipient printed is the identity's, as the real age-keygen derives it.
    const y = run(which("age-keygen")!, ["-y", identityFile()]);
    assert.equal(y.stdout.toString().trim(), recipient);

    const before = [fs.readFileSync(identityFile()), fs.readFileSync(rulesFile())];
    const again = sh(["init", "--json"]);
    assert.equal(again.status, 0, again.stderr);
    const out2 = JSON.parse(again.stdout.toString());
    assert.equal(out2.identity.created, false);
    assert.equal(out2.rules.created, false);
    assert.deepEqual([fs.readFileSync(identityFile()), fs.readFileSync(rulesFile())], before);
  });

  test("init's next steps name the rules and the secret by paths that work from where it ran", () => {
    // Under the working directory: relative. Elsewhere: absolute, never a climb like "../../x".
    const cwd = path.join(dir, "init-cwd");
    fs.mkdirSync(cwd);
    const inside = sh(["init", "sub"], { cwd });
    assert.equal(inside.status, 0, inside.stderr);
    assert.match(inside.stdout.toString(), /add a secret to sub\/secrets\.nix:/);
    assert.match(inside.stdout.toString(), /nixseal edit sub\/db-password\.age\n/);
    const elsewhere = path.join(dir, "elsewhere");
    const outside = sh(["init", elsewhere], { cwd });
    assert.equal(outside.status, 0, outside.stderr);
    assert.ok(
      outside.stdout.toString().includes(`nixseal edit ${path.join(elsewhere, "db-password.age")}\n`),
    );
    assert.doesNotMatch(outside.stdout.toString(), /\.\.\//);
  });

  test("the evaluated rules work with real Nix: encrypt, decrypt, armor, paths from anywhere", () => {
    const text = fs
      .readFileSync(rulesFile(), "utf8")
      .replace(
        /\n\{\n\}\n$/,
        `\n{\n  "db-password.age".publicKeys = users;\n  "hosts/web/tls.age" = { publicKeys = users ++ hosts; armor = true; };\n  "-dash.age".publicKeys = users;\n}\n`,
      );
    fs.writeFileSync(rulesFile(), text);
    let r = sh(["encrypt", "secrets/db-password.age"], { input: "hunter2" });
    assert.equal(r.status, 0, r.stderr);
    r = sh(["decrypt", "secrets/db-password.age"]);
    assert.equal(r.stdout.toString(), "hunter2");
    // From inside the secrets dir, by name without .age.
    r = sh(["decrypt", "db-password"], { cwd: path.join(repo, "secrets") });
    assert.equal(r.stdout.toString(), "hunter2");
    // The real age reads it.
    const a = run(AGE!, ["-d", "-i", identityFile(), path.join(repo, "secrets", "db-password.age")]);
    assert.equal(a.stdout.toString(), "hunter2");
    // armor = true is honoured, parent dirs are created.
    r = sh(["encrypt", "hosts/web/tls.age"], { input: "key material\n", cwd: path.join(repo, "secrets") });
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      fs.readFileSync(path.join(repo, "secrets", "hosts", "web", "tls.age"), "latin1"),
      /^-----BEGIN AGE/,
    );
    // A name starting with "-" works after "--".
    r = sh(["encrypt", "--", "secrets/-dash.age"], { input: "dash" });
    assert.equal(r.status, 0, r.stderr);
    r = sh(["decrypt", "--", "-dash.age"], { cwd: path.join(repo, "secrets") });
    assert.equal(r.stdout.toString(), "dash");
  });

  test("decrypt -o creates a 0600 file; --in reads a file", () => {
    const input = path.join(dir, "in.txt");
    fs.writeFileSync(input, "from a file");
    assert.equal(sh(["encrypt", "secrets/db-password.age", "--in", input]).status, 0);
    const out = path.join(dir, "out.txt");
    const r = sh(["decrypt", "secrets/db-password.age", "-o", out]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.readFileSync(out, "utf8"), "from a file");
    assert.equal(fs.statSync(out).mode & 0o777, 0o600);
  });

  test("decrypt -o to a pipe or device writes into it and leaves it one (never renamed over)", async () => {
    const fifo = path.join(dir, "out.fifo");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    const got = path.join(dir, "from-fifo.txt");
    const reader = spawn("sh", ["-c", 'cat "$0" > "$1"', fifo, got]);
    const done = new Promise((resolve) => reader.on("exit", resolve));
    try {
      const r = sh(["decrypt", "secrets/db-password.age", "-o", fifo]);
      assert.equal(r.status, 0, r.stderr.toString());
      // Renamed over, the FIFO would never see a writer and the reader would wait forever.
      const timedOut = await Promise.race([
        done.then(() => false),
        new Promise((resolve) => setTimeout(() => resolve(true), 10_000).unref()),
      ]);
      assert.equal(timedOut, false, "nothing was written into the FIFO");
    } finally {
      reader.kill();
    }
    assert.equal(fs.readFileSync(got, "utf8"), "from a file");
    assert.ok(fs.lstatSync(fifo).isFIFO(), "the FIFO is still a FIFO");
  });

  test("identities from SOPS_AGE_KEY and NIXSEAL_IDENTITY", () => {
    const key = fs.readFileSync(identityFile(), "utf8");
    const moved = path.join(dir, "moved-identity.txt");
    fs.writeFileSync(moved, key, { mode: 0o600 });
    const noDefault = { HOME: path.join(dir, "empty-home") };
    fs.mkdirSync(noDefault.HOME, { recursive: true });
    let r = sh(["decrypt", "secrets/db-password.age"], { env: { ...noDefault, NIXSEAL_IDENTITY: moved } });
    assert.equal(r.status, 0, r.stderr);
    r = sh(["decrypt", "secrets/db-password.age"], { env: { ...noDefault, SOPS_AGE_KEY: key } });
    assert.equal(r.status, 0, r.stderr);
    r = sh(["decrypt", "secrets/db-password.age"], { env: noDefault });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no identity found/);
    assert.match(r.stderr, /hint: .*nixseal init/);
  });

  test("list and who show recipients, sizes and git history; need no key", {
    skip: GIT ? false : "git is not installed",
  }, () => {
    spawnSync(GIT!, ["init", "-q"], { cwd: repo });
    spawnSync(GIT!, ["-c", "user.email=t@t", "-c", "user.name=t", "add", "."], { cwd: repo });
    spawnSync(GIT!, ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "secrets"], { cwd: repo });
    const r = sh(["list", "--json"], {
      cwd: path.join(repo, "secrets"),
      env: { HOME: path.join(dir, "nobody") },
    });
    assert.equal(r.status, 0, r.stderr);
    const rows = JSON.parse(r.stdout.toString()) as {
      name: string;
      exists: boolean;
      lastChange: string | null;
      recipients: { recipient: string }[];
    }[];
    const db = rows.find((x) => x.name === "db-password.age")!;
    assert.equal(db.exists, true);
    assert.match(db.lastChange ?? "", /^\d{4}-\d\d-\d\dT/);
    assert.deepEqual(
      db.recipients.map((x) => x.recipient),
      [recipient],
    );
    const text = sh(["list"], { cwd: path.join(repo, "secrets") }).stdout.toString();
    assert.match(text, /db-password\.age\s+\d+ B\s+\d{4}-\d\d-\d\d\s+age1/);

    const who = sh(["who", recipient], { cwd: path.join(repo, "secrets") });
    assert.deepEqual(who.stdout.toString().trim().split("\n").sort(), [
      "-dash.age",
      "db-password.age",
      "hosts/web/tls.age",
    ]);
    const whoSecret = sh(["who", "secrets/db-password.age", "--json"]);
    assert.equal(JSON.parse(whoSecret.stdout.toString()).recipients[0].recipient, recipient);
  });

  test("ssh keys in the rules: ~/.ssh/id_ed25519 decrypts, comments shown", {
    skip: SSH_KEYGEN ? false : "ssh-keygen is not installed",
  }, () => {
    const sshHome = path.join(dir, "ssh-home");
    fs.mkdirSync(path.join(sshHome, ".ssh"), { recursive: true });
    spawnSync(SSH_KEYGEN!, [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "alice@laptop",
      "-f",
      path.join(sshHome, ".ssh", "id_ed25519"),
    ]);
    const pub = fs.readFileSync(path.join(sshHome, ".ssh", "id_ed25519.pub"), "utf8").trim();
    fs.writeFileSync(
      rulesFile(),
      fs.readFileSync(rulesFile(), "utf8").replace("hosts = [ ];", `hosts = [ ${JSON.stringify(pub)} ];`),
    );
    let r = sh(["encrypt", "secrets/hosts/web/tls.age"], { input: "for alice" });
    assert.equal(r.status, 0, r.stderr);
    r = sh(["decrypt", "secrets/hosts/web/tls.age"], { env: { HOME: sshHome } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "for alice");
    const list = sh(["list"]).stdout.toString();
    assert.match(list, /alice@laptop \(ssh-ed25519\)/);
  });
});

/** Every error: the documented exit code, an error line, a hint line, no stack trace. */
function assertError(r: { status: number | null; stderr: string }, code: number, pattern: RegExp): void {
  assert.equal(r.status, code, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stderr, /^nixseal [a-z-]+: error: /);
  assert.match(r.stderr, pattern);
  assert.match(r.stderr, /\nnixseal [a-z-]+: hint: /);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}

describe("errors", { skip: missing }, () => {
  let work: string;
  before(() => {
    work = path.join(dir, "errors");
    fs.mkdirSync(work);
    fs.writeFileSync(path.join(work, "key.txt"), spawnSync(which("age-keygen")!, []).stdout, { mode: 0o600 });
  });

  test("no rules file: exit 2 with the init hint", () => {
    const empty = path.join(dir, "no-rules");
    fs.mkdirSync(empty);
    assertError(sh(["decrypt", "x.age"], { cwd: empty }), 2, /no secrets\.nix found[\s\S]*nixseal init/);
  });

  test("NAME not in the rules: exit 2, suggests close names", () => {
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      '{ "db-password.age".publicKeys = [ "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq" ]; }\n',
    );
    assertError(
      sh(["encrypt", "password"], { cwd: work, input: "x" }),
      2,
      /"password" is not in .*secrets\.nix[\s\S]*did you mean "db-password\.age"/,
    );
  });

  test("malformed secrets.nix: exit 2, Nix's error in one line with its position", () => {
    fs.writeFileSync(path.join(work, "secrets.nix"), '{ "a.age".publicKeys = [ ;\n');
    const r = sh(["list"], { cwd: work });
    assertError(r, 2, /cannot evaluate .*secrets\.nix: syntax error.*\(at .*secrets\.nix:1:\d+\)/);
    assert.equal(r.stderr.trim().split("\n").length, 2, "one error line and one hint line");
  });

  test("rules that break the format: every problem reported at once", () => {
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      '{ "../escape.age".publicKeys = [ "age1x" ]; "empty.age".publicKeys = [ ]; "odd.age" = { publicKeys = [ "age1x" ]; armour = true; }; }\n',
    );
    const r = sh(["list"], { cwd: work });
    assertError(r, 2, /must stay inside/);
    assert.match(r.stderr, /"empty\.age" has no publicKeys/);
    assert.match(r.stderr, /unknown attribute "armour"/);
  });

  test("a hostile secrets.nix can read nothing outside the repository and fetch nothing", () => {
    const secretOutside = path.join(dir, "outside-secret.txt");
    fs.writeFileSync(secretOutside, "AGE-SECRET-KEY-1OUTSIDE");
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      `{ "x.age".publicKeys = [ (builtins.readFile ${secretOutside}) ]; }\n`,
    );
    let r = sh(["list", "--no-cache"], { cwd: work });
    assertError(r, 2, /forbidden in restricted mode/);
    assert.doesNotMatch(r.stderr, /OUTSIDE/);
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      '{ "x.age".publicKeys = [ (builtins.readFile (builtins.fetchurl "http://127.0.0.1:9/k")) ]; }\n',
    );
    r = sh(["list", "--no-cache"], { cwd: work });
    assertError(r, 2, /access to URI .* is forbidden/);
  });

  test("rekey (which starts Nix while it loads) evaluates secrets.nix as strictly, with the same errors, and rewrites nothing", () => {
    const key = path.join(work, "key.txt");
    const recipient = /public key: (age1\S+)/.exec(fs.readFileSync(key, "utf8"))![1]!;
    fs.writeFileSync(path.join(work, "secrets.nix"), `{ "r.age".publicKeys = [ "${recipient}" ]; }\n`);
    assert.equal(sh(["encrypt", "r.age"], { cwd: work, input: "x" }).status, 0);
    const before = fs.readFileSync(path.join(work, "r.age"));
    const rekey = (extra: Record<string, string> = {}) =>
      sh(["rekey", "--force", "--no-cache", "-i", key], { cwd: work, env: extra });

    // A syntax error: the message, position and line count of every other command.
    fs.writeFileSync(path.join(work, "secrets.nix"), '{ "r.age".publicKeys = [ ;\n');
    let r = rekey();
    assertError(r, 2, /cannot evaluate .*secrets\.nix: syntax error.*\(at .*secrets\.nix:1:\d+\)/);
    assert.equal(r.stderr.trim().split("\n").length, 2, "one error line and one hint line");
    // Restricted evaluation: nothing outside the repository is read, and nothing of it is shown.
    const secretOutside = path.join(dir, "outside-rekey.txt");
    fs.writeFileSync(secretOutside, "AGE-SECRET-KEY-1OUTSIDE");
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      `{ "r.age".publicKeys = [ (builtins.readFile ${secretOutside}) ]; }\n`,
    );
    r = rekey();
    assertError(r, 2, /forbidden in restricted mode/);
    assert.doesNotMatch(r.stderr, /OUTSIDE/);
    // No Nix on PATH: the same error as the commands that evaluate on their own thread.
    fs.writeFileSync(path.join(work, "secrets.nix"), `{ "r.age".publicKeys = [ "${recipient}" ]; }\n`);
    const noNix = { PATH: "/nonexistent" };
    r = rekey(noNix);
    assertError(r, 2, /nix-instantiate not found/);
    assert.equal(
      sh(["list", "--no-cache"], { cwd: work, env: noNix }).stderr.toString().split("\n")[0],
      r.stderr.toString().split("\n")[0]!.replace("nixseal rekey:", "nixseal list:"),
    );
    assert.deepEqual(fs.readFileSync(path.join(work, "r.age")), before, "no failed rekey rewrote the file");
    // And a good secrets.nix: rekey evaluates it and rewrites the file.
    r = rekey();
    assert.equal(r.status, 0, r.stderr.toString());
    assert.notDeepEqual(fs.readFileSync(path.join(work, "r.age")), before);
  });

  test("an unknown recipient type in the rules names the rules file and the secret", () => {
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      '{ "a.age".publicKeys = [ "pgp:ABCDEF" "age1bogus" ]; }\n',
    );
    const r = sh(["encrypt", "a.age"], { cwd: work, input: "x" });
    assertError(r, 2, /secrets\.nix: secret "a\.age": unknown recipient type "pgp:\.\.\."/);
    assert.doesNotMatch(r.stderr, /ABCDEF/, "only the type prefix of a bad key is quoted");
    assert.match(r.stderr, /secret "a\.age": invalid X25519 recipient/);
    assert.equal(fs.existsSync(path.join(work, "a.age")), false);
  });

  test("no identity can decrypt: exit 1, lists the identities tried", () => {
    const other = spawnSync(which("age-keygen")!, []).stdout.toString();
    const otherRecipient = /public key: (age1\S+)/.exec(other)![1]!;
    fs.writeFileSync(path.join(work, "secrets.nix"), `{ "a.age".publicKeys = [ "${otherRecipient}" ]; }\n`);
    assert.equal(sh(["encrypt", "a.age"], { cwd: work, input: "x" }).status, 0);
    const r = sh(["decrypt", "a.age", "-i", path.join(work, "key.txt")], { cwd: work });
    assertError(r, 1, /a\.age: no identity matched/);
    assert.match(r.stderr, /tried: age identity from .*key\.txt/);
  });

  test("the rules cache: a second run needs no Nix; a changed keys file is evaluated again", () => {
    const cacheHome = path.join(dir, "cache2");
    fs.writeFileSync(
      path.join(work, "keys.nix"),
      '{ k = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"; }\n',
    );
    fs.writeFileSync(
      path.join(work, "secrets.nix"),
      'let keys = import ./keys.nix; in { "c.age".publicKeys = [ keys.k ]; }\n',
    );
    const withNix = { XDG_CACHE_HOME: cacheHome };
    assert.equal(sh(["list"], { cwd: work, env: withNix }).status, 0);
    // Without nix-instantiate on PATH the cached evaluation is used...
    const noNix = { ...withNix, PATH: "/nonexistent" };
    const cached = run(
      process.execPath,
      [path.join(__dirname_(), "..", "..", "src", "cli", "main.js"), "list", "--json"],
      {
        cwd: work,
        env: { ...env, ...noNix },
      },
    );
    assert.equal(cached.status, 0, cached.stderr);
    assert.equal(JSON.parse(cached.stdout.toString())[0].name, "c.age");
    // ...until an imported file beside it changes.
    fs.writeFileSync(
      path.join(work, "keys.nix"),
      '{ k = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"; j = 1; }\n',
    );
    const stale = run(
      process.execPath,
      [path.join(__dirname_(), "..", "..", "src", "cli", "main.js"), "list"],
      {
        cwd: work,
        env: { ...env, ...noNix },
      },
    );
    assertError(stale, 2, /nix-instantiate not found/);
  });
});

function __dirname_(): string {
  return path.dirname(new URL(import.meta.url).pathname);
}

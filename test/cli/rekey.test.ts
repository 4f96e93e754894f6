/**
 * `nixseal rekey` and `nixseal check` on an agenix-style repository made by the test: real Nix
 * evaluates secrets.nix, the real age binary writes the files (binary and armored, one named
 * "-dash.age") and reads what rekey writes, ssh-keygen makes the user's and the host's keys.
 * Then: a file nobody here can decrypt (nothing changes, every failure listed), a directory it
 * cannot write (nothing replaced), and crash safety: `nixseal rekey` killed with SIGKILL at
 * random points and right at its first rename, many times.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { decrypt, readHeader } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { CLI, isolatedUserEnv, nixseal, prng, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const SSH_KEYGEN = which("ssh-keygen");
const SCRIPT = which("script");
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "the age binary is not installed"
    : !SSH_KEYGEN
      ? "ssh-keygen is not installed"
      : false;

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

/** The environment of a user whose home is `home` (nothing from the real home leaks in). */
function envFor(home: string): Record<string, string | undefined> {
  return { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1" };
}

function sshKeygen(file: string, comment: string): string {
  const r = spawnSync(SSH_KEYGEN!, ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file]);
  assert.equal(r.status, 0, r.stderr.toString());
  return fs.readFileSync(`${file}.pub`, "utf8").trim();
}

function ageKeygen(file: string): string {
  assert.equal(spawnSync(AGE_KEYGEN!, ["-o", file]).status, 0);
  return spawnSync(AGE_KEYGEN!, ["-y", file]).stdout.toString().trim();
}

/** Encrypts with the real age binary, as agenix does. */
function ageEncrypt(file: string, plaintext: string, recipients: string[], armor: boolean): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const args = [...(armor ? ["-a"] : []), ...recipients.flatMap((r) => ["-r", r]), "-o", file];
  const r = spawnSync(AGE!, args, { input: plaintext });
  assert.equal(r.status, 0, r.stderr.toString());
}

function ageDecrypt(file: string, identity: string): string {
  // Through stdin: a file name starting with "-" is no problem that way.
  const r = spawnSync(AGE!, ["-d", "-i", identity], { input: fs.readFileSync(file) });
  assert.equal(r.status, 0, `age -d ${file}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

function snapshot(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".age")) out.set(path.relative(root, p), fs.readFileSync(p));
    }
  };
  walk(root);
  return out;
}

function changed(a: Map<string, Buffer>, b: Map<string, Buffer>): string[] {
  return [...a.keys()].filter((k) => !a.get(k)!.equals(b.get(k) ?? Buffer.alloc(0))).sort();
}

describe("an agenix repository, as it is", { skip: missing }, () => {
  let repo: string;
  let home: string;
  let env: Record<string, string | undefined>;
  let adminKey: string; // an age identity file (age-keygen)
  let hostKey: string; // the host's ssh private key
  let newHostKey: string;
  let userPub: string;
  let hostPub: string;
  let newHostPub: string;
  let admin: string;
  const plaintexts: Record<string, string> = {
    "secrets/db-password.age": "hunter2\n",
    "secrets/tls-key.age": "-----BEGIN PRIVATE KEY-----\nMIIE...\n",
    "secrets/-dash.age": "dash\n",
    "secrets/hosts/web/api-token.age": "token\n",
    "secrets/user-only.age": "mine\n",
  };
  const sh = (args: string[], extra: Record<string, string | undefined> = {}) =>
    nixseal(args, { cwd: repo, env: { ...env, ...extra } });

  before(() => {
    repo = path.join(dir, "agenix");
    home = path.join(dir, "home");
    fs.mkdirSync(path.join(home, ".ssh"), { recursive: true });
    fs.mkdirSync(path.join(repo, "secrets"), { recursive: true });
    env = envFor(home);
    // The user's ssh key, where agenix (and nixseal) look for it.
    userPub = sshKeygen(path.join(home, ".ssh", "id_ed25519"), "alice@laptop");
    hostKey = path.join(dir, "ssh_host_ed25519_key");
    hostPub = sshKeygen(hostKey, "root@web");
    newHostKey = path.join(dir, "ssh_host_new_key");
    newHostPub = sshKeygen(newHostKey, "root@db");
    adminKey = path.join(dir, "admin.txt");
    admin = ageKeygen(adminKey);
    fs.writeFileSync(
      path.join(repo, "secrets", "secrets.nix"),
      `let
  alice = "${userPub}";
  admin = "${admin}";
  users = [ alice admin ];
  web = "${hostPub}";
  systems = [ web ];
in
{
  "db-password.age".publicKeys = users ++ systems;
  "tls-key.age" = { publicKeys = users ++ systems; armor = true; };
  "-dash.age".publicKeys = users;
  "hosts/web/api-token.age".publicKeys = [ alice web ];
  "user-only.age".publicKeys = [ alice ];
}
`,
    );
    const keysOf: Record<string, string[]> = {
      "secrets/db-password.age": [userPub, admin, hostPub],
      "secrets/tls-key.age": [userPub, admin, hostPub],
      "secrets/-dash.age": [userPub, admin],
      "secrets/hosts/web/api-token.age": [userPub, hostPub],
      "secrets/user-only.age": [userPub],
    };
    for (const [f, text] of Object.entries(plaintexts)) {
      ageEncrypt(path.join(repo, f), text, keysOf[f]!, f.includes("tls-key"));
    }
  });

  test("check: clean as agenix left it; only age1 recipients without a record get a warning", () => {
    const r = sh(["check"]);
    assert.equal(r.status, 0, r.stderr + r.stdout.toString());
    const all = r.stdout.toString().trim().split("\n");
    const lines = all.filter((l) => l.startsWith("warning:"));
    // Files whose recipients are all ssh keys are fully verified by their tags.
    assert.deepEqual(lines.map((l) => l.split(" ")[1]).sort(), [
      "-dash.age",
      "db-password.age",
      "tls-key.age",
    ]);
    for (const l of lines)
      assert.match(
        l,
        /^warning: .*no recipients record: 1 of \d recipients can't be verified.*nixseal rekey/,
      );
    // Every file says what was verified; the admin's age1 key is verified nowhere.
    const checked = new Map(
      all.filter((l) => l.startsWith("checked:")).map((l) => [l.split(" ")[1], l] as const),
    );
    assert.equal(checked.size, 5);
    for (const f of ["user-only.age", "hosts/web/api-token.age"])
      assert.match(checked.get(f)!, /: verified: stanza count and types, ssh key tags$/);
    for (const f of ["-dash.age", "db-password.age", "tls-key.age"])
      assert.match(
        checked.get(f)!,
        /: verified: stanza count and types, ssh key tags; not verified: 1 X25519 recipient$/,
      );
    assert.match(
      r.stderr,
      /5 secrets match the rules \(2 verified from their headers, 3 not fully verified; 3 warnings\)/,
    );
    const json = JSON.parse(sh(["check", "--json"]).stdout.toString());
    assert.equal(json.problems.length, 3);
    assert.ok(json.problems.every((p: { severity: string }) => p.severity === "warning"));
    assert.equal(json.files.length, 5);
  });

  test("check needs no identity at all (empty HOME)", () => {
    const empty = path.join(dir, "empty-home");
    fs.mkdirSync(empty, { recursive: true });
    const r = nixseal(["check", "--rules", path.join(repo, "secrets", "secrets.nix")], {
      cwd: dir,
      env: envFor(empty),
    });
    assert.equal(r.status, 0, r.stderr);
  });

  test("rekey adds the record once where an age1 recipient needs it; files of ssh keys only stay as agenix wrote them", () => {
    const before = snapshot(repo);
    const r = sh(["rekey", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.toString());
    assert.deepEqual(out.rewritten.sort(), ["-dash.age", "db-password.age", "tls-key.age"]);
    assert.deepEqual(out.unchanged.sort(), ["hosts/web/api-token.age", "user-only.age"]);
    assert.deepEqual(changed(before, snapshot(repo)), [
      "secrets/-dash.age",
      "secrets/db-password.age",
      "secrets/tls-key.age",
    ]);
    // The real age binary reads every file with every key it was for.
    for (const [f, text] of Object.entries(plaintexts)) {
      assert.equal(ageDecrypt(path.join(repo, f), path.join(home, ".ssh", "id_ed25519")), text);
    }
    assert.equal(
      ageDecrypt(path.join(repo, "secrets/db-password.age"), hostKey),
      plaintexts["secrets/db-password.age"],
    );
    assert.equal(ageDecrypt(path.join(repo, "secrets/-dash.age"), adminKey), plaintexts["secrets/-dash.age"]);
    assert.match(
      fs.readFileSync(path.join(repo, "secrets/tls-key.age"), "latin1"),
      /^-----BEGIN AGE ENCRYPTED FILE-----\n/,
    );
    const c = sh(["check"]);
    assert.equal(c.status, 0);
    assert.ok(!c.stdout.toString().includes("warning:"), "no warnings once recorded");
  });

  test("a new host key in secrets.nix: check reports drift, rekey rewrites exactly those files", () => {
    const rules = path.join(repo, "secrets", "secrets.nix");
    fs.writeFileSync(
      rules,
      fs
        .readFileSync(rules, "utf8")
        .replace("systems = [ web ];", `db = "${newHostPub}";\n  systems = [ web db ];`),
    );
    // db-password and tls-key use `systems`; the others don't.
    const c = sh(["check"]);
    assert.equal(c.status, 1, c.stderr);
    const lines = c.stdout
      .toString()
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("checked:"));
    assert.ok(lines.length >= 2);
    for (const l of lines)
      assert.match(l, /^drift: (db-password|tls-key)\.age \(secret "(db-password|tls-key)\.age"\): /);
    assert.match(c.stdout.toString(), /no ssh-ed25519 stanza for the key "root@db"/);
    assert.match(c.stderr, /run 'nixseal rekey'/);
    const cj = JSON.parse(sh(["check", "--json"]).stdout.toString());
    assert.deepEqual([...new Set(cj.problems.map((p: { secret: string }) => p.secret))].sort(), [
      "db-password.age",
      "tls-key.age",
    ]);

    const before = snapshot(repo);
    const r = sh(["rekey"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "rewritten db-password.age\nrewritten tls-key.age\n");
    assert.match(r.stderr, /2 rewritten, 3 unchanged/);
    assert.deepEqual(changed(before, snapshot(repo)), ["secrets/db-password.age", "secrets/tls-key.age"]);
    // The new host reads them with the real age binary.
    assert.equal(
      ageDecrypt(path.join(repo, "secrets/db-password.age"), newHostKey),
      plaintexts["secrets/db-password.age"],
    );
    assert.equal(
      ageDecrypt(path.join(repo, "secrets/tls-key.age"), newHostKey),
      plaintexts["secrets/tls-key.age"],
    );
    const stanzas = readHeader(fs.readFileSync(path.join(repo, "secrets/db-password.age"))).stanzas;
    assert.deepEqual(
      stanzas.map((s) => s.type),
      ["ssh-ed25519", "X25519", "ssh-ed25519", "ssh-ed25519", "nixseal-recipients"],
    );

    assert.equal(sh(["check"]).status, 0);
    const again = snapshot(repo);
    const r2 = sh(["rekey"]);
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.stdout.toString(), "");
    assert.match(r2.stderr, /0 rewritten, 5 unchanged/);
    assert.deepEqual(changed(again, snapshot(repo)), []);
  });

  test("rekey NAME rewrites that secret only (a name starting with '-' after --)", () => {
    const before = snapshot(repo);
    const r = sh(["rekey", "--force", "--", "-dash.age"], {});
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(changed(before, snapshot(repo)), ["secrets/-dash.age"]);
    assert.equal(ageDecrypt(path.join(repo, "secrets/-dash.age"), adminKey), "dash\n");
  });

  test("progress is shown on a terminal's stderr, and only there", {
    skip: SCRIPT ? false : "script (util-linux) is not installed",
  }, () => {
    const quiet = sh(["rekey", "--force"]);
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.ok(!quiet.stderr.includes("\r") && !quiet.stderr.includes("decrypting"), quiet.stderr);
    const fullEnv = { ...process.env, ...env } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(fullEnv)) if (v === undefined) delete fullEnv[k];
    const tty = spawnSync(SCRIPT!, ["-qec", `${process.execPath} ${CLI} rekey --force`, "/dev/null"], {
      cwd: repo,
      env: fullEnv,
      timeout: 20_000,
    });
    assert.equal(tty.status, 0, tty.stdout.toString());
    const out = tty.stdout.toString();
    assert.match(out, /\r\x1b\[Knixseal rekey: (decrypting|writing) \d+\/5/);
    assert.match(out, /5 rewritten, 0 unchanged/);
  });

  test("files nobody here can decrypt: nothing changes, every failure listed with the identities tried", () => {
    const stranger = ageKeygen(path.join(dir, "stranger.txt"));
    ageEncrypt(path.join(repo, "secrets", "db-password.age"), "theirs", [stranger], false);
    ageEncrypt(path.join(repo, "secrets", "hosts", "web", "api-token.age"), "theirs", [stranger], false);
    const before = snapshot(repo);
    const r = sh(["rekey", "--force"]);
    assert.equal(r.status, 1);
    const errors = r.stderr.split("\n").filter((l) => l.includes("error:"));
    assert.equal(errors.length, 2, r.stderr);
    assert.match(
      errors[0]!,
      /^nixseal rekey: error: db-password\.age \(secret "db-password\.age"\): no identity can decrypt it \(recipients: X25519; tried: .*\.ssh\/id_ed25519/,
    );
    assert.match(errors[1]!, /hosts\/web\/api-token\.age/);
    assert.match(r.stderr, /hint: nothing was changed/);
    assert.deepEqual(changed(before, snapshot(repo)), []);
    const json = JSON.parse(sh(["rekey", "--force", "--json"]).stdout.toString());
    assert.deepEqual(json.rewritten, []);
    assert.deepEqual(
      json.failed.map((f: { file: string }) => f.file),
      ["db-password.age", "hosts/web/api-token.age"],
    );
    assert.deepEqual(changed(before, snapshot(repo)), []);
    // check sees it too: the stranger's stanza is not what the rules say.
    assert.equal(sh(["check"]).status, 1);
  });

  test("usage and rules errors exit 2 with a hint", () => {
    let r = sh(["rekey", "nope.age"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /"nope\.age" is not in .*secrets\.nix/);
    assert.match(r.stderr, /hint:/);
    r = sh(["rekey", "--bogus"]);
    assert.equal(r.status, 2);
    r = sh(["check", "extra-arg"]);
    assert.equal(r.status, 2);
    r = nixseal(["check"], { cwd: dir, env: env });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /no secrets\.nix found/);
    assert.equal(sh(["rekey", "--help"]).status, 0);
    assert.match(sh(["check", "--help"]).stdout.toString(), /Exit codes: 0 clean/);
  });
});

describe("agenix's example repository: every recipient an ssh key", { skip: missing }, () => {
  // As agenix's own example: a user key and a system key (ssh-ed25519), five secrets, one
  // armored, one whose name starts with '-'; the files written by the real age binary.
  test("check verifies every file by its stanzas' key tags; rekey leaves all five byte-identical", () => {
    const root = path.join(dir, "agenix-example");
    const home = path.join(root, "home");
    fs.mkdirSync(path.join(home, ".ssh"), { recursive: true });
    const user1 = sshKeygen(path.join(home, ".ssh", "id_ed25519"), "user1@example");
    const system1Key = path.join(root, "ssh_host_ed25519_key");
    const system1 = sshKeygen(system1Key, "root@system1");
    const secrets = path.join(root, "secrets");
    fs.mkdirSync(secrets);
    fs.writeFileSync(
      path.join(secrets, "secrets.nix"),
      `let
  user1 = "${user1}";
  system1 = "${system1}";
in
{
  "secret1.age".publicKeys = [ user1 system1 ];
  "secret2.age".publicKeys = [ user1 ];
  "passwordfile-user1.age".publicKeys = [ user1 system1 ];
  "-leading-hyphen-filename.age".publicKeys = [ user1 system1 ];
  "armored-secret.age" = { publicKeys = [ user1 ]; armor = true; };
}
`,
    );
    const keysOf: Record<string, string[]> = {
      "secret1.age": [user1, system1],
      "secret2.age": [user1],
      "passwordfile-user1.age": [user1, system1],
      "-leading-hyphen-filename.age": [user1, system1],
      "armored-secret.age": [user1],
    };
    for (const [f, keys] of Object.entries(keysOf))
      ageEncrypt(path.join(secrets, f), `value of ${f}\n`, keys, f.startsWith("armored"));
    const env = envFor(home);
    const run = (args: string[]) => nixseal(args, { cwd: secrets, env });

    const c = run(["check"]);
    assert.equal(c.status, 0, c.stderr + c.stdout.toString());
    const lines = c.stdout.toString().trim().split("\n").sort();
    assert.equal(lines.length, 5, c.stdout.toString());
    for (const l of lines)
      assert.match(l, /^checked: \S+ \(secret "\S+"\): verified: stanza count and types, ssh key tags$/);
    assert.equal(c.stderr, "nixseal check: 5 secrets match the rules\n");

    const before = snapshot(root);
    const dry = run(["rekey", "--dry-run", "--json"]);
    assert.equal(dry.status, 0, dry.stderr);
    assert.deepEqual(JSON.parse(dry.stdout.toString()).rewritten, []);
    const r = run(["rekey"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "");
    assert.match(r.stderr, /0 rewritten, 5 unchanged/);
    assert.deepEqual(changed(before, snapshot(root)), []);

    // A second system key: the files that list it are rewritten, the others still are not.
    const system2 = sshKeygen(path.join(root, "ssh_host_2"), "root@system2");
    const rulesFile = path.join(secrets, "secrets.nix");
    fs.writeFileSync(
      rulesFile,
      fs
        .readFileSync(rulesFile, "utf8")
        .replace(`system1 = "${system1}";`, `system1 = "${system1}";\n  system2 = "${system2}";`)
        .replace(
          '"secret1.age".publicKeys = [ user1 system1 ];',
          '"secret1.age".publicKeys = [ user1 system1 system2 ];',
        ),
    );
    const r2 = run(["rekey"]);
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.stdout.toString(), "rewritten secret1.age\n");
    assert.deepEqual(changed(before, snapshot(root)), ["secrets/secret1.age"]);
    assert.equal(
      ageDecrypt(path.join(secrets, "secret1.age"), path.join(root, "ssh_host_2")),
      "value of secret1.age\n",
    );
    assert.equal(ageDecrypt(path.join(secrets, "secret1.age"), system1Key), "value of secret1.age\n");
    assert.equal(run(["check"]).status, 0);
  });
});

const UNSHARE = which("unshare");

describe("a directory rekey cannot write (a read-only bind mount in a mount namespace)", {
  skip: missing || (!UNSHARE && "unshare (util-linux) is not installed"),
}, () => {
  test("no file is renamed anywhere, the failure names the file and the cause, and no temp file is left", () => {
    const root = path.join(dir, "read-only");
    const home = path.join(root, "home");
    fs.mkdirSync(home, { recursive: true });
    const id = path.join(root, "admin.txt");
    const admin = ageKeygen(id);
    const other = ageKeygen(path.join(root, "other.txt"));
    const repo = path.join(root, "repo");
    const names = ["a/one.age", "b/two.age", "three.age"];
    for (const n of names) ageEncrypt(path.join(repo, n), `value of ${n}\n`, [admin], false);
    const entries = (keys: string) => names.map((n) => `  "${n}".publicKeys = [ ${keys} ];`).join("\n");
    fs.writeFileSync(
      path.join(repo, "secrets.nix"),
      `let admin = "${admin}"; other = "${other}"; in {\n${entries("admin other")}\n}\n`,
    );
    const before = snapshot(repo);
    // b/ is read-only for this rekey only: creating its temp file fails after the others were
    // written (in file order), as a full disk or a lost mount would.
    const script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"';
    const r = spawnSync(
      UNSHARE!,
      [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        path.join(repo, "b"),
        process.execPath,
        CLI,
        "rekey",
        "-i",
        id,
      ],
      { cwd: repo, env: { ...process.env, ...envFor(home) } as NodeJS.ProcessEnv },
    );
    assert.equal(r.status, 1, r.stderr.toString());
    assert.match(r.stderr.toString(), /b\/two\.age.*: read-only file system\n/);
    assert.match(r.stderr.toString(), /nothing was changed/);
    assert.deepEqual(changed(before, snapshot(repo)), [], "no file was replaced");
    const left = (d: string): string[] =>
      fs
        .readdirSync(d, { withFileTypes: true })
        .flatMap((e) =>
          e.isDirectory() ? left(path.join(d, e.name)) : e.name.endsWith(".tmp") ? [e.name] : [],
        );
    assert.deepEqual(left(repo), []);
    // Writable again: the same rekey rewrites all three, readable by the new recipient.
    const again = nixseal(["rekey", "-i", id], { cwd: repo, env: envFor(home) });
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(changed(before, snapshot(repo)), [...names].sort());
    for (const n of names)
      assert.equal(ageDecrypt(path.join(repo, n), path.join(root, "other.txt")), `value of ${n}\n`);
  });
});

describe("crash safety: rekey killed with SIGKILL at random points", { skip: missing }, () => {
  const SECRETS = 200;
  const RUNS = 30;

  test(`${RUNS} kills over ${SECRETS} secrets: every file always old or new and decrypts; temp files swept`, async (t) => {
    const repo = path.join(dir, "crash");
    fs.mkdirSync(repo, { recursive: true });
    const home = path.join(dir, "crash-home");
    fs.mkdirSync(home, { recursive: true });
    const env = { ...process.env, ...envFor(home) } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const ids = [X25519Identity.generate(), X25519Identity.generate(), X25519Identity.generate()];
    const keys = ids.map((i) => i.recipient().toString());
    const keyFile = path.join(dir, "crash-key.txt");
    fs.writeFileSync(keyFile, `${ids[0]!.encode()}\n`, { mode: 0o600 });
    const names = Array.from({ length: SECRETS }, (_, i) => `s${String(i).padStart(3, "0")}.age`);
    fs.writeFileSync(
      path.join(repo, "secrets.nix"),
      `let k = [ ${keys.map((k) => `"${k}"`).join(" ")} ]; in {\n${names
        .map((n, i) => `  "${n}" = { publicKeys = k; armor = ${i % 5 === 0}; };`)
        .join("\n")}\n}\n`,
    );
    // The first version of every file comes from the real age binary.
    for (const [i, n] of names.entries()) {
      ageEncrypt(path.join(repo, n), `value ${n}\n`, keys, i % 5 === 0);
    }
    const rekeyArgs = [CLI, "rekey", "--force", "--json", "-i", keyFile];
    // One complete run first: it also fills the rules cache, as a user's second run would have.
    const t0 = performance.now();
    const full = spawnSync(process.execPath, rekeyArgs, { cwd: repo, env, encoding: "utf8" });
    const fullMs = performance.now() - t0;
    assert.equal(full.status, 0, full.stderr);

    const random = prng(20261121);
    // Even runs: kill points spread over a whole run (0-300 ms, or the run's length on a slow
    // machine), mostly while temp files are written and synced. Odd runs: killed as soon as the
    // first file is renamed into place, since rekey renames every file in one short burst at
    // the end and random points rarely land inside it.
    const span = Math.max(300, fullMs * 1.1);
    let interruptedMidway = 0;
    let leftovers = 0;
    for (let run = 0; run < RUNS; run++) {
      const before = new Map(names.map((n) => [n, fs.readFileSync(path.join(repo, n))]));
      const child = spawn(process.execPath, rekeyArgs, { cwd: repo, env, stdio: "ignore", detached: true });
      const exited = new Promise((r) => child.once("exit", r));
      let delay = -1;
      if (run % 2 === 0) {
        delay = Math.floor(random() * span);
        await new Promise((r) => setTimeout(r, delay));
        child.kill("SIGKILL");
      } else {
        const watcher = fs.watch(repo, (_event, name) => {
          if (name?.endsWith(".age") && !name.startsWith(".")) child.kill("SIGKILL");
        });
        await exited;
        watcher.close();
      }
      await exited;

      let rewritten = 0;
      for (const n of names) {
        const now = fs.readFileSync(path.join(repo, n));
        if (now.equals(before.get(n)!)) continue;
        rewritten++;
        // Not the old version: then a complete new one.
        const plain = await decrypt(now, [ids[1]!]);
        assert.equal(
          Buffer.from(plain).toString(),
          `value ${n}\n`,
          `run ${run} (${delay < 0 ? "at the first rename" : `${delay} ms`}): ${n}`,
        );
      }
      if (rewritten > 0 && rewritten < SECRETS) interruptedMidway++;
      // Every file decrypts, whichever version it is; a sample with the real age binary.
      for (const n of names) {
        const plain = await decrypt(fs.readFileSync(path.join(repo, n)), [ids[2]!]);
        assert.equal(Buffer.from(plain).toString(), `value ${n}\n`, `run ${run}: ${n} decrypts`);
      }
      for (let s = 0; s < 3; s++) {
        const n = names[Math.floor(random() * SECRETS)]!;
        assert.equal(ageDecrypt(path.join(repo, n), keyFile), `value ${n}\n`);
      }
      leftovers += fs.readdirSync(repo).filter((f) => f.endsWith(".tmp")).length;
    }
    // The kills must have hit the dangerous window (some files written, some not) at least once.
    assert.ok(
      interruptedMidway > 0,
      `no kill landed while files were being written (run takes ${fullMs} ms)`,
    );

    // The next run sweeps what the killed ones left, and finishes.
    const temps = fs.readdirSync(repo).filter((f) => f.endsWith(".tmp"));
    const last = spawnSync(process.execPath, [CLI, "rekey", "--json", "-i", keyFile], {
      cwd: repo,
      env,
      encoding: "utf8",
    });
    assert.equal(last.status, 0, last.stderr);
    assert.deepEqual(JSON.parse(last.stdout).swept.sort(), temps.sort());
    assert.deepEqual(
      fs.readdirSync(repo).filter((f) => f.startsWith(".")),
      [],
      "no temp file and no lock left",
    );
    const check = run(process.execPath, [CLI, "check"], { cwd: repo, env: envFor(home) });
    assert.equal(check.status, 0, check.stderr + check.stdout.toString());
    t.diagnostic(
      `full run ${fullMs.toFixed(0)} ms; ${interruptedMidway}/${RUNS} kills mid-write; ${leftovers} temp files seen after kills`,
    );
  });
});

/**
 * Built-in generators in generators.nix (`builtin = ...`), end to end: real Nix evaluates
 * generators.nix, `nixseal generate` runs them in-process, and every output is decrypted by the
 * real `age` and checked by the real tool that uses it (ssh-keygen -y, age, openssl passwd -6,
 * wg where installed), as test/cli/gen.test.ts checks `nixseal gen`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const SSH_KEYGEN = which("ssh-keygen");
const OPENSSL = which("openssl");
const WG = which("wg");
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "the age binary (Debian package age) is not installed"
    : !SSH_KEYGEN || !OPENSSL
      ? "ssh-keygen and openssl are needed"
      : false;

let dir: string;
let cleanup: () => void;
let repo: string;
let env: Record<string, string | undefined>;
let admin: string;
let adminKey: string;
let hostWeb: string;

function ageKeygen(file: string): string {
  assert.equal(spawnSync(AGE_KEYGEN!, ["-o", file]).status, 0);
  return spawnSync(AGE_KEYGEN!, ["-y", file]).stdout.toString().trim();
}

function ageDecrypt(file: string, key = adminKey): Buffer {
  const r = spawnSync(AGE!, ["-d", "-i", key, file]);
  assert.equal(r.status, 0, `age -d ${file}: ${r.stderr}`);
  return r.stdout;
}

const out = (...p: string[]) => path.join(repo, "generated", ...p);

function generate(args: string[] = []) {
  return nixseal(["generate", ...args], { cwd: repo, env });
}

describe("builtin generators", { skip: missing }, () => {
  before(() => {
    ({ dir, cleanup } = tempDir("nixseal-builtin-"));
    const home = path.join(dir, "home");
    fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
    adminKey = path.join(home, ".config", "nixseal", "identity.txt");
    admin = ageKeygen(adminKey);
    hostWeb = ageKeygen(path.join(dir, "web.txt"));
    env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1", NIXSEAL_NOW: undefined };
    repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), "(import ./generated/rules.nix) // { }\n");
    // A PATH without any program: a builtin must not need one (nothing is run).
    fs.writeFileSync(
      path.join(repo, "generators.nix"),
      `{
  admins = [ "${admin}" ];
  hosts.web = "${hostWeb}";
  generators.pw = { hosts = [ "web" ]; files.password = { }; builtin = "password"; };
  generators.pin = { files.password = { }; builtin.password = { length = 12; charset = "hex"; }; };
  generators.token = { files.hex = { }; builtin.hex.bytes = 16; };
  generators.age = { files.key = { }; files."key.pub".secret = false; builtin = "age-key"; };
  generators.ssh = {
    hosts = [ "web" ];
    files.key = { }; files."key.pub".secret = false;
    builtin.ssh-ed25519.comment = "root@web";
  };
  generators.wg = { files.key = { }; files."key.pub".secret = false; builtin = "wireguard"; };
  generators.pwhash = {
    hosts = [ "web" ];
    dependencies = [ "pw" ];
    files.hash.neededForUsers = true;
    builtin.hash = { sha512Crypt = "$in/pw/password"; rounds = 6000; };
  };
  generators.roothash = {
    prompts.password = { type = "hidden"; };
    files.hash = { };
    builtin.hash.sha512Crypt = "$prompts/password";
  };
}
`,
    );
  });
  after(() => cleanup());

  test("every kind: the files nixseal gen writes, accepted by the real tools", () => {
    const answers = path.join(dir, "answers.json");
    fs.writeFileSync(answers, JSON.stringify({ roothash: { password: "correct horse\n" } }), { mode: 0o600 });
    const r = generate(["--prompt-file", answers]);
    assert.equal(r.status, 0, r.stderr.toString());
    // No script ran: no isolation warning; secrets.nix imports generated/rules.nix: no warning.
    assert.doesNotMatch(r.stderr.toString(), /warning/);

    const pw = ageDecrypt(out("pw", "web", "password.age")).toString();
    assert.match(pw, /^[A-Za-z0-9]{32}$/);
    // The host reads its own password.
    assert.equal(ageDecrypt(out("pw", "web", "password.age"), path.join(dir, "web.txt")).toString(), pw);
    assert.match(ageDecrypt(out("pin", "password.age")).toString(), /^[0-9a-f]{12}$/);
    assert.match(ageDecrypt(out("token", "hex.age")).toString(), /^[0-9a-f]{32}$/);

    // age-key: the real age encrypts to key.pub and decrypts with key.
    const ageKey = path.join(dir, "age-key.txt");
    fs.writeFileSync(ageKey, ageDecrypt(out("age", "key.age")), { mode: 0o600 });
    const recipient = fs.readFileSync(out("age", "key.pub"), "utf8");
    assert.match(recipient, /^age1[0-9a-z]{58}\n$/);
    const enc = spawnSync(AGE!, ["-e", "-r", recipient.trim()], { input: "hello" });
    assert.equal(enc.status, 0);
    assert.equal(spawnSync(AGE!, ["-d", "-i", ageKey], { input: enc.stdout }).stdout.toString(), "hello");

    // ssh-ed25519: ssh-keygen -y on the key prints key.pub.
    const sshKey = path.join(dir, "ssh-key");
    fs.writeFileSync(sshKey, ageDecrypt(out("ssh", "web", "key.age")), { mode: 0o600 });
    const derived = spawnSync(SSH_KEYGEN!, ["-y", "-f", sshKey], { encoding: "utf8" });
    assert.equal(derived.status, 0, derived.stderr);
    const pub = fs.readFileSync(out("ssh", "web", "key.pub"), "utf8");
    assert.match(pub, /^ssh-ed25519 AAAA\S+ root@web\n$/);
    assert.equal(derived.stdout.split(" ").slice(0, 2).join(" "), pub.split(" ").slice(0, 2).join(" "));

    // wireguard: 44 characters of base64 each; wg pubkey agrees where installed.
    const wgKey = ageDecrypt(out("wg", "key.age")).toString();
    const wgPub = fs.readFileSync(out("wg", "key.pub"), "utf8");
    assert.match(wgKey, /^[A-Za-z0-9+/]{43}=\n$/);
    assert.match(wgPub, /^[A-Za-z0-9+/]{43}=\n$/);
    if (WG) assert.equal(spawnSync(WG, ["pubkey"], { input: wgKey, encoding: "utf8" }).stdout, wgPub);

    // hash: openssl passwd -6 gives the same hash from the salt and rounds.
    const checkHash = (hash: string, password: string, rounds: number | null) => {
      const m = /^\$6\$(?:rounds=(\d+)\$)?([A-Za-z0-9./]{16})\$[A-Za-z0-9./]{86}$/.exec(hash);
      assert.ok(m, hash);
      assert.equal(m[1] === undefined ? null : Number(m[1]), rounds);
      const salt = rounds === null ? m[2]! : `rounds=${rounds}$${m[2]}`;
      const theirs = spawnSync(OPENSSL!, ["passwd", "-6", "-salt", salt, "-stdin"], {
        input: password,
        encoding: "utf8",
      });
      assert.equal(theirs.stdout.trim(), hash);
    };
    checkHash(ageDecrypt(out("pwhash", "web", "hash.age")).toString(), pw, 6000);
    checkHash(ageDecrypt(out("roothash", "hash.age")).toString(), "correct horse", null);

    // generated/rules.nix names the secret files (key.pub, public, is not among them).
    const rules = fs.readFileSync(out("rules.nix"), "utf8");
    assert.match(rules, /"generated\/ssh\/web\/key\.age"\.publicKeys/);
    assert.doesNotMatch(rules, /key\.pub/);
  });

  test("a second run has nothing to do; --regenerate makes a new value and the dependent follows", () => {
    const r = generate();
    assert.equal(r.status, 0, r.stderr.toString());
    assert.match(r.stderr.toString(), /nothing to do/);
    const before = ageDecrypt(out("pwhash", "web", "hash.age")).toString();
    const r2 = generate(["--regenerate", "pw"]);
    assert.equal(r2.status, 0, r2.stderr.toString());
    assert.match(r2.stdout.toString(), /^regenerate +pwhash\/web: dependency pw\/web is regenerated$/m);
    assert.notEqual(ageDecrypt(out("pwhash", "web", "hash.age")).toString(), before);
  });

  test("a prompt answer that cannot be hashed: nothing written, the error names the input, not the value", () => {
    const answers = path.join(dir, "bad.json");
    fs.writeFileSync(answers, JSON.stringify({ roothash: { password: "two\nlines-s3cret" } }), {
      mode: 0o600,
    });
    const before = fs.readFileSync(out("roothash", "hash.age"));
    const r = generate(["--regenerate", "roothash", "--prompt-file", answers]);
    assert.equal(r.status, 1, r.stderr.toString());
    assert.match(r.stderr.toString(), /roothash: builtin hash: \$prompts\/password has more than one line/);
    assert.doesNotMatch(r.stderr.toString(), /s3cret/);
    assert.deepEqual(fs.readFileSync(out("roothash", "hash.age")), before);
  });

  test("list, then generate adds a generator, then list shows it (the rules cache sees generated/)", () => {
    const cache = { XDG_CACHE_HOME: path.join(dir, "list-cache") };
    const list = () => {
      const r = nixseal(["list", "--json"], { cwd: repo, env: { ...env, ...cache } });
      assert.equal(r.status, 0, r.stderr.toString());
      return (JSON.parse(r.stdout.toString()) as { name: string }[]).map((x) => x.name);
    };
    // The generator is declared first: only what generate writes changes between the lists.
    const file = path.join(repo, "generators.nix");
    const text = fs.readFileSync(file, "utf8");
    fs.writeFileSync(
      file,
      text.replace(/}\n$/, '  generators.later = { files.hex = { }; builtin = "hex"; };\n}\n'),
    );
    const before = list();
    assert.ok(before.includes("generated/pw/web/password.age"), before.join(" "));
    assert.ok(!before.includes("generated/later/hex.age"));
    const r = generate(["later"]);
    assert.equal(r.status, 0, r.stderr.toString());
    assert.ok(list().includes("generated/later/hex.age"));
  });

  test("a secrets.nix that does not import generated/rules.nix: a warning with the fix", () => {
    const rules = path.join(repo, "secrets.nix");
    const text = fs.readFileSync(rules, "utf8");
    try {
      fs.writeFileSync(rules, "{ }\n");
      const r = generate(["--dry-run"]);
      assert.equal(r.status, 0, r.stderr.toString());
      assert.match(
        r.stderr.toString(),
        /warning: .*secrets\.nix does not import generated\/rules\.nix.*fix: make it \(import \.\/generated\/rules\.nix\) \/\/ \{ \.\.\. \}/,
      );
    } finally {
      fs.writeFileSync(rules, text);
    }
  });
});

/**
 * Which identities a command decrypts with, through the built CLI: given -i, only those files
 * (as with age), for every command that takes -i; an empty identity file is "no identity", not
 * "passphrase-protected".
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, type RunResult, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");

let dir: string;
let cleanup: () => void;
let home: string;
let env: Record<string, string | undefined>;
let alice: string; // identity file
let bob: string; // identity file
let aliceRecipient: string;
let bobRecipient: string;

function keygen(file: string): string {
  const r = nixseal(["age-keygen", "-o", file]);
  assert.equal(r.status, 0, r.stderr);
  return /Public key: (age1\S+)/.exec(r.stderr)![1]!;
}

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-ids-"));
  home = path.join(dir, "home");
  fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
  alice = path.join(dir, "alice.txt");
  bob = path.join(dir, "bob.txt");
  aliceRecipient = keygen(alice);
  bobRecipient = keygen(bob);
  env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1", SOPS_CONFIG: undefined };
});
after(() => cleanup());

/** Every way alice's key can come from the environment or the home directory. */
function aliceEverywhere(): Record<string, string>[] {
  fs.copyFileSync(alice, path.join(home, ".config", "nixseal", "identity.txt"));
  const key = fs
    .readFileSync(alice, "utf8")
    .split("\n")
    .find((l) => l.startsWith("AGE-SECRET-KEY-"))!;
  return [
    { NIXSEAL_IDENTITY: alice },
    { SOPS_AGE_KEY_FILE: alice },
    { SOPS_AGE_KEY: key },
    { SOPS_AGE_KEY_CMD: `cat '${alice}'` },
    {}, // ~/.config/nixseal/identity.txt
  ];
}

/** The command failed because bob's key (the only one tried) does not open the file. */
function assertOnlyBobTried(r: RunResult, what: string): void {
  assert.equal(r.status, 1, `${what}: ${r.stderr}`);
  assert.match(r.stderr, /bob\.txt/, what);
  assert.doesNotMatch(r.stderr, /alice\.txt|identity\.txt|from SOPS_AGE_KEY/, `${what}: only -i is tried`);
}

describe("-i replaces the default identities (sops files: decrypt, set, rotate, updatekeys)", () => {
  test("with alice's key in the environment or the home, -i bob.txt cannot open alice's file", () => {
    const w = path.join(dir, "sops");
    fs.mkdirSync(w);
    fs.writeFileSync(path.join(w, ".sops.yaml"), `creation_rules:\n  - age: ${aliceRecipient}\n`);
    const enc = nixseal(["encrypt", "app.yaml"], { cwd: w, env, input: "token: abc\n" });
    assert.equal(enc.status, 0, enc.stderr);
    for (const extra of aliceEverywhere()) {
      const e = { ...env, ...extra };
      const plain = nixseal(["decrypt", "app.yaml"], { cwd: w, env: e });
      assert.equal(plain.status, 0, `without -i, alice's key opens it: ${plain.stderr}`);
      assert.equal(plain.stdout.toString(), "token: abc\n");
      const label = JSON.stringify(extra);
      for (const args of [
        ["decrypt", "app.yaml", "-i", bob],
        ["set", "app.yaml", '["token"]', "-i", bob],
        ["rotate", "app.yaml", "-i", bob],
      ]) {
        const r = nixseal(args, { cwd: w, env: e, input: '"new"' });
        assertOnlyBobTried(r, `${label} ${args[0]}`);
        assert.equal(r.stdout.toString(), "", "nothing decrypted is printed");
      }
      // updatekeys needs the data key once the rule changes.
      fs.writeFileSync(
        path.join(w, ".sops.yaml"),
        `creation_rules:\n  - age: ${aliceRecipient},${bobRecipient}\n`,
      );
      assertOnlyBobTried(
        nixseal(["updatekeys", "app.yaml", "-i", bob], { cwd: w, env: e }),
        `${label} updatekeys`,
      );
      fs.writeFileSync(path.join(w, ".sops.yaml"), `creation_rules:\n  - age: ${aliceRecipient}\n`);
    }
    fs.rmSync(path.join(home, ".config", "nixseal", "identity.txt"));
  });
});

describe("-i replaces the default identities (age secrets: decrypt, edit, rekey, audit)", {
  skip: NIX ? false : "nix-instantiate is not installed",
}, () => {
  test("decrypt x.age -i bob.txt fails although NIXSEAL_IDENTITY could open it", () => {
    const repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), `{ "x.age".publicKeys = [ "${aliceRecipient}" ]; }\n`);
    const enc = nixseal(["encrypt", "x.age"], { cwd: repo, env, input: "alice's secret value" });
    assert.equal(enc.status, 0, enc.stderr);
    for (const extra of aliceEverywhere()) {
      const e = { ...env, ...extra, EDITOR: "true" };
      const label = JSON.stringify(extra);
      const ok = nixseal(["decrypt", "x.age"], { cwd: repo, env: e });
      assert.equal(ok.stdout.toString(), "alice's secret value", ok.stderr);
      const r = nixseal(["decrypt", "x.age", "-i", bob], { cwd: repo, env: e });
      assertOnlyBobTried(r, `${label} decrypt`);
      assert.equal(r.stdout.toString(), "", "the secret is not printed");
      assertOnlyBobTried(nixseal(["edit", "x.age", "-i", bob], { cwd: repo, env: e }), `${label} edit`);
      assertOnlyBobTried(nixseal(["rekey", "--force", "-i", bob], { cwd: repo, env: e }), `${label} rekey`);
      // audit: nothing it can decrypt is an error (exit 2), and the file is listed as not checked.
      const a = nixseal(["audit", repo, "-i", bob], { cwd: repo, env: e });
      assert.equal(a.status, 2, a.stderr);
      assert.match(a.stderr, /no identity could decrypt any secret/);
    }
    fs.rmSync(path.join(home, ".config", "nixseal", "identity.txt"));
  });
});

describe("an empty identity file", () => {
  test("-i /dev/null or an empty file: 'no identity in FILE', with a hint, not a passphrase prompt", () => {
    const empty = path.join(dir, "empty.txt");
    fs.writeFileSync(empty, "");
    const file = nixseal(["age", "-r", aliceRecipient], { input: "x" }).stdout;
    for (const id of ["/dev/null", empty]) {
      for (const args of [
        ["age", "-d", "-i", id],
        ["age", "-e", "-i", id],
        ["age-keygen", "-y", id],
        ["decrypt", "x.yaml", "-i", id],
      ]) {
        const r = nixseal(args, { cwd: dir, env, input: file });
        const what = args.join(" ");
        assert.ok(r.status === 1, `${what}: ${r.status} ${r.stderr}`);
        assert.match(
          r.stderr,
          new RegExp(`no identity in ${id.replace(/[.]/g, "\\.")} \\(it is empty\\)`),
          what,
        );
        assert.match(r.stderr, /hint: an identity file holds AGE-SECRET-KEY-1\.\.\. lines/, what);
        assert.doesNotMatch(r.stderr, /passphrase/, what);
      }
    }
    // A file of comments only says so.
    const comments = path.join(dir, "comments.txt");
    fs.writeFileSync(comments, "# nothing here\n");
    const r = nixseal(["age", "-d", "-i", comments], { env, input: file });
    assert.match(r.stderr, /no identity in .*comments\.txt \(only comments\)/);
  });
});

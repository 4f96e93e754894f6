/**
 * `nixseal check` as CI runs it: no identity anywhere, no terminal; exit 0 clean, 1 drift,
 * 2 rules errors; one line per problem naming file and secret; --json. (The agenix-repository
 * story with rekey is in rekey.test.ts.)
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
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "the age binary is not installed"
    : false;

let dir: string;
let cleanup: () => void;
let repo: string;
let env: Record<string, string | undefined>;
before(() => {
  ({ dir, cleanup } = tempDir());
  repo = path.join(dir, "repo");
  const home = path.join(dir, "empty-home");
  fs.mkdirSync(repo);
  fs.mkdirSync(home);
  // CI: an empty home, no identity variables, no terminal (nixseal() runs under setsid).
  env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1" };
});
after(() => cleanup());

const check = (args: string[] = []) => nixseal(["check", ...args], { cwd: repo, env });

function recipient(): string {
  const key = path.join(dir, `k${Math.random().toString(36).slice(2)}.txt`);
  spawnSync(AGE_KEYGEN!, ["-o", key]);
  return spawnSync(AGE_KEYGEN!, ["-y", key]).stdout.toString().trim();
}

function writeRules(text: string): void {
  fs.writeFileSync(path.join(repo, "secrets.nix"), text);
}

describe("nixseal check", { skip: missing }, () => {
  let a: string;
  let b: string;

  test("clean repository: exit 0; each file's line says its X25519 recipients are the record's claim", () => {
    a = recipient();
    b = recipient();
    writeRules(
      `{ "one.age".publicKeys = [ "${a}" ]; "two.age" = { publicKeys = [ "${a}" "${b}" ]; armor = true; }; }`,
    );
    // Written by nixseal itself (encrypt needs no identity), so they carry the record.
    for (const name of ["one.age", "two.age"]) {
      const r = nixseal(["encrypt", name], { cwd: repo, env, input: `value of ${name}` });
      assert.equal(r.status, 0, r.stderr);
    }
    const r = check();
    assert.equal(r.status, 0, r.stderr);
    // No header shows who an X25519 stanza is for: check says what it verified and what only
    // the record (written by whoever wrote the file) says.
    const lines = r.stdout.toString().trim().split("\n").sort();
    assert.equal(lines.length, 2, r.stdout.toString());
    assert.match(
      lines[0]!,
      /^checked: one\.age \(secret "one\.age"\): verified: stanza count and types, the record names the rules' recipients; claimed by the record: 1 X25519 recipient$/,
    );
    assert.match(
      lines[1]!,
      /^checked: two\.age \(secret "two\.age"\): verified: .*; claimed by the record: 2 X25519 recipients$/,
    );
    assert.ok(!lines.some((l) => /ssh key tags/.test(l)), "no ssh key in these rules");
    assert.equal(r.stderr, "nixseal check: 2 secrets match the rules (2 relying on the recipients record)\n");
    const j = JSON.parse(check(["--json"]).stdout.toString());
    assert.deepEqual(
      j.files.map((f: { file: string; claimedByRecord: string[]; unverified: string[] }) => [
        f.file,
        f.claimedByRecord,
        f.unverified,
      ]),
      [
        ["one.age", ["1 X25519 recipient"], []],
        ["two.age", ["2 X25519 recipients"], []],
      ],
    );
    assert.ok(j.files.every((f: { verified: string[] }) => f.verified.includes("stanza count and types")));
  });

  test("drift: exit 1, one line per problem naming file and secret; --json lists the same", () => {
    fs.mkdirSync(path.join(repo, "old"));
    fs.writeFileSync(path.join(repo, "old", "forgotten.age"), fs.readFileSync(path.join(repo, "one.age")));
    writeRules(
      `{ "one.age".publicKeys = [ "${a}" "${b}" ]; "two.age" = { publicKeys = [ "${a}" "${b}" ]; armor = true; }; "three.age".publicKeys = [ "${a}" ]; }`,
    );
    const r = check();
    assert.equal(r.status, 1);
    const all = r.stdout.toString().trim().split("\n").sort();
    // The file without drift still says on what grounds it matches; the others don't.
    assert.deepEqual(
      all.filter((l) => l.startsWith("checked:")).map((l) => l.split(" ")[1]),
      ["two.age"],
    );
    const lines = all.filter((l) => !l.startsWith("checked:"));
    assert.equal(lines.length, 4, r.stdout.toString());
    assert.match(lines[0]!, /^drift: old\/forgotten\.age: not listed in secrets\.nix$/);
    assert.match(
      lines[1]!,
      /^drift: one\.age \(secret "one\.age"\): 1 X25519 stanza for 2 X25519 recipients in the rules$/,
    );
    assert.match(
      lines[2]!,
      /^drift: one\.age \(secret "one\.age"\): the recipients record differs from the rules/,
    );
    assert.match(
      lines[3]!,
      /^drift: three\.age \(secret "three\.age"\): the rules list it but the file does not exist$/,
    );
    assert.match(r.stderr, /4 problems in 3 secrets/);
    assert.ok(!r.stdout.toString().includes("\x1b["), "NO_COLOR: no escape sequences");

    const j = check(["--json"]);
    assert.equal(j.status, 1);
    const report = JSON.parse(j.stdout.toString());
    assert.equal(report.rules, path.join(repo, "secrets.nix"));
    assert.equal(report.secrets, 3);
    assert.deepEqual(
      report.problems.map((p: { kind: string; file: string }) => `${p.kind} ${p.file}`).sort(),
      [
        "missing-file three.age",
        "not-in-rules old/forgotten.age",
        "recipients one.age",
        "recipients one.age",
      ],
    );
  });

  test("rules errors exit 2 with one line each and a hint: malformed secrets.nix, unusable keys", () => {
    writeRules(`{ "one.age".publicKeys = [ "${a}" ]; `);
    let r = check();
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^nixseal check: error: cannot evaluate .*secrets\.nix: /m);
    assert.match(r.stderr, /^nixseal check: hint: /m);
    writeRules(`{ "one.age".publicKeys = [ "age1notakey" "ecdsa-sha2-nistp256 AAAAE2VjZHNh x@y" ]; }`);
    r = check();
    assert.equal(r.status, 2);
    const errors = r.stderr.split("\n").filter((l) => l.includes("error:"));
    assert.equal(errors.length, 2, r.stderr);
    for (const e of errors) assert.match(e, /secrets\.nix: secret "one\.age"/);
    assert.match(r.stderr, /unsupported ssh key type ecdsa-sha2-nistp256/);
  });
});

/**
 * --json: every command that takes it prints JSON on stdout on failure too (one line,
 * {"error": {"code", "message", "hint", "file"}}), and `decrypt --json` prints an object, not
 * the raw plaintext: the value as a string when it is UTF-8, else base64.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, type RunResult, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");

let dir: string;
let cleanup: () => void;
let env: Record<string, string | undefined>;
let key: string;
let recipient: string;
let sops: string; // a directory with a .sops.yaml for `recipient`

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-json-"));
  fs.mkdirSync(path.join(dir, "home"));
  env = {
    ...isolatedUserEnv(path.join(dir, "home"), path.join(dir, "cache")),
    NO_COLOR: "1",
    SOPS_CONFIG: undefined,
  };
  key = path.join(dir, "key.txt");
  const r = nixseal(["age-keygen", "-o", key]);
  assert.equal(r.status, 0, r.stderr);
  recipient = /Public key: (age1\S+)/.exec(r.stderr)![1]!;
  sops = path.join(dir, "sops");
  fs.mkdirSync(sops);
  fs.writeFileSync(path.join(sops, ".sops.yaml"), `creation_rules:\n  - age: ${recipient}\n`);
});
after(() => cleanup());

/** stdout is exactly one line of JSON; returns it parsed. */
function oneJsonLine(r: RunResult, what: string): Record<string, unknown> {
  const out = r.stdout.toString("utf8");
  assert.ok(
    out.endsWith("\n") && out.indexOf("\n") === out.length - 1,
    `${what}: one line on stdout:\n${out}\n${r.stderr}`,
  );
  return JSON.parse(out);
}

function assertErrorJson(r: RunResult, what: string, code: string, file?: string | null): void {
  assert.notEqual(r.status, 0, what);
  const o = oneJsonLine(r, what);
  const e = o.error as Record<string, unknown>;
  assert.ok(e, `${what}: {"error": ...}`);
  assert.deepEqual(Object.keys(e).slice(0, 4), ["code", "message", "hint", "file"], what);
  assert.equal(e.code, code, `${what}: ${JSON.stringify(e)}`);
  assert.equal(typeof e.message, "string");
  assert.ok(typeof e.hint === "string" && e.hint.length > 0, `${what}: a hint`);
  if (file !== undefined) assert.equal(e.file, file, what);
  // The usual lines on stderr as well.
  assert.match(r.stderr, /error:/, what);
}

describe("failures with --json", () => {
  test('every command that takes --json prints {"error": {...}} on stdout', () => {
    const cases: [string[], string, string?][] = [
      [["init", "a", "b", "--json"], "USAGE"],
      [["edit", "--json"], "USAGE"],
      [["encrypt", "--json"], "USAGE"],
      [["decrypt", "x.yaml", "-i", "/dev/null", "--json"], "AGE_IDENTITY", "/dev/null"],
      [["set", "x.yaml", "--json"], "USAGE"],
      [["rotate", "--json"], "USAGE"],
      [["rekey", "--bogus", "--json"], "USAGE"],
      [["check", "--json"], "RULES"],
      [["list", "--json"], "RULES"],
      [["who", "--json"], "USAGE"],
      [["git-setup", "extra", "--json"], "USAGE"],
      [["install", "--json"], "USAGE"],
      [["audit", "--json"], "USAGE"],
      [["host-key", "--json"], "USAGE"],
      [["host", "add", "if", "--ssh", "web1", "--json"], "USAGE"],
      [["build-hook", "--sweep", "--policy", path.join(dir, "none.json"), "--json"], "BUILD_POLICY"],
      [
        ["gen", "hex", "8", "--out", path.join(dir, "no-such-dir"), "--json"],
        "IO",
        path.join(dir, "no-such-dir"),
      ],
    ];
    for (const [args, code, file] of cases) {
      const r = nixseal(args, { cwd: dir, env });
      assertErrorJson(r, `nixseal ${args.join(" ")}`, code, file);
    }
    // A command without --json prints no JSON.
    const age = nixseal(["age", "-r", "bogus"], { env, input: "x" });
    assert.equal(age.status, 1);
    assert.equal(age.stdout.length, 0);
  });

  test('several problems: the first one, and all of them in "problems"', () => {
    const empty = path.join(dir, "empty.txt");
    fs.writeFileSync(empty, "");
    const r = nixseal(["decrypt", "x.yaml", "-i", "/dev/null", "-i", empty, "--json"], { cwd: dir, env });
    assertErrorJson(r, "two empty identity files", "AGE_IDENTITY");
    const e = oneJsonLine(r, "").error as { problems: { file: string }[] };
    assert.deepEqual(
      e.problems.map((p) => p.file),
      ["/dev/null", empty],
    );
  });

  test("install: an invalid manifest's report has the error too", () => {
    const manifest = path.join(dir, "manifest.json");
    fs.writeFileSync(manifest, "{}\n");
    const r = nixseal(["install", "--manifest", manifest, "--json"], { env });
    assert.equal(r.status, 2, r.stderr);
    const o = oneJsonLine(r, "install");
    assert.equal(o.ok, false);
    assert.equal((o.error as { code: string }).code, "MANIFEST");
    assert.ok(Array.isArray(o.problems));
  });

  test("updatekeys: a file that failed has an error object in its line", () => {
    const r = nixseal(["updatekeys", "missing.yaml", "--json"], { cwd: sops, env });
    assert.equal(r.status, 1);
    const o = oneJsonLine(r, "updatekeys");
    assert.equal(o.file, "missing.yaml");
    assert.equal((o.error as { code: string }).code, "IO");
  });

  test("who: nothing found (exit 1) is a JSON error too", {
    skip: NIX ? false : "nix-instantiate is not installed",
  }, () => {
    const repo = path.join(dir, "who");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), "{ }\n");
    const r = nixseal(["who", recipient, "--json"], { cwd: repo, env });
    assert.equal(r.status, 1, r.stderr);
    assertErrorJson(r, "who RECIPIENT", "NOT_IN_RULES");
  });
});

describe("decrypt --json", () => {
  test("sops files: the document or --extract value as a string; -o FILE: no value", () => {
    const enc = nixseal(["encrypt", "app.yaml"], { cwd: sops, env, input: "token: caf\u00e9\nn: 1\n" });
    assert.equal(enc.status, 0, enc.stderr);
    const whole = nixseal(["decrypt", "app.yaml", "-i", key, "--json"], { cwd: sops, env });
    assert.equal(whole.status, 0, whole.stderr);
    assert.deepEqual(oneJsonLine(whole, "decrypt"), {
      file: "app.yaml",
      format: "yaml",
      value: "token: caf\u00e9\nn: 1\n",
    });
    const one = nixseal(["decrypt", "app.yaml", "-i", key, "--json", "--extract", '["token"]'], {
      cwd: sops,
      env,
    });
    assert.deepEqual(oneJsonLine(one, "extract"), {
      file: "app.yaml",
      format: "yaml",
      path: '["token"]',
      value: "caf\u00e9",
    });
    const out = path.join(dir, "plain.yaml");
    const toFile = nixseal(["decrypt", "app.yaml", "-i", key, "--json", "-o", out], { cwd: sops, env });
    assert.deepEqual(oneJsonLine(toFile, "-o"), { file: "app.yaml", format: "yaml", output: out });
    assert.equal(fs.readFileSync(out, "utf8"), "token: caf\u00e9\nn: 1\n");
  });

  test('a value that is not UTF-8 is base64, with "encoding": "base64"', () => {
    const bytes = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0xc3]), randomBytes(64)]);
    const enc = nixseal(["encrypt", "blob.bin", "--input-type", "binary"], { cwd: sops, env, input: bytes });
    assert.equal(enc.status, 0, enc.stderr);
    const r = nixseal(["decrypt", "blob.bin", "--input-type", "binary", "-i", key, "--json"], {
      cwd: sops,
      env,
    });
    assert.equal(r.status, 0, r.stderr);
    const o = oneJsonLine(r, "binary");
    assert.equal(o.encoding, "base64");
    assert.deepEqual(Buffer.from(o.value as string, "base64"), bytes);
    // The plain output is the same bytes.
    const raw = nixseal(["decrypt", "blob.bin", "--input-type", "binary", "-i", key], { cwd: sops, env });
    assert.deepEqual(raw.stdout, bytes);
  });

  test("age secrets: {secret, file, value}; a byte order mark is kept", {
    skip: NIX ? false : "nix-instantiate is not installed",
  }, () => {
    const repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), `{ "x.age".publicKeys = [ "${recipient}" ]; }\n`);
    const text = "\ufeffpass\u00e9word\n";
    assert.equal(nixseal(["encrypt", "x.age"], { cwd: repo, env, input: text }).status, 0);
    const r = nixseal(["decrypt", "x.age", "-i", key, "--json"], { cwd: repo, env });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(oneJsonLine(r, "age"), { secret: "x.age", file: path.join(repo, "x.age"), value: text });
  });
});

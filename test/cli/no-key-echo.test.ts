/**
 * No error echoes key material (docs/threat-model.md, "What errors show"). Lines that look like
 * secret keys (age and plugin identities in either case, mangled ones, PEM private keys, a key
 * inside a longer line) are fed to every path that reads keys from the user: -r, -R, -i, identity
 * variables and commands, secrets.nix, .sops.yaml, command-line arguments. After each run, no
 * 8-character run of the key's data may appear on stdout or stderr (--json output included).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, type RunResult, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const SSH_KEYGEN = which("ssh-keygen");

let dir: string;
let cleanup: () => void;
let env: Record<string, string | undefined>;

/** A line that looks like a secret key, and the secret part of it (what must never show). */
interface SecretLine {
  label: string;
  line: string;
  /** The key data: no 8-character run of it may appear. */
  material: string;
  /** bech32 is case-insensitive: a run in the other case leaks as much. */
  caseless: boolean;
  /** A usable identity (so `age -e -i` and `age-keygen -y` succeed with it). */
  valid?: boolean;
}

const BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

function keygen(args: string[] = []): string {
  const r = nixseal(["age-keygen", ...args]);
  assert.equal(r.status, 0, r.stderr);
  const line = r.stdout
    .toString()
    .split("\n")
    .find((l) => l.startsWith("AGE-SECRET-KEY-"));
  assert.ok(line);
  return line;
}

/** Not a valid key (the checksum is off), but shaped like one. */
function fakePluginIdentity(): string {
  let data = "";
  for (let i = 0; i < 58; i++) data += BECH32[(i * 7 + 3) % 32];
  return `AGE-PLUGIN-YUBIKEY-1${data.toUpperCase()}`;
}

function dataOf(line: string): string {
  // Everything after the Bech32 separator (the last "1" of the type prefix).
  const m = /^(?:.*?)(AGE-SECRET-KEY-(?:PQ-)?1|AGE-PLUGIN-[A-Z0-9]+-1)(.*)$/i.exec(line);
  assert.ok(m, line);
  return m[2]!;
}

let secrets: SecretLine[];
/** An OpenSSH private key file (its base64 body is the material), when ssh-keygen exists. */
let pem: { file: string; material: string[] } | null = null;

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-no-echo-"));
  const home = path.join(dir, "home");
  fs.mkdirSync(home);
  env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1", SOPS_CONFIG: undefined };
  const x = keygen();
  const pq = keygen(["--pq"]);
  const plugin = fakePluginIdentity();
  const typo = `${x.slice(0, 30)}${x[30] === "Q" ? "P" : "Q"}${x.slice(31)}`;
  secrets = [
    { label: "an age secret key", line: x, material: dataOf(x), caseless: true, valid: true },
    { label: "a lowercase age secret key", line: x.toLowerCase(), material: dataOf(x), caseless: true },
    { label: "an age secret key with a typo", line: typo, material: dataOf(typo), caseless: true },
    {
      label: "a truncated age secret key",
      line: x.slice(0, 50),
      material: dataOf(x.slice(0, 50)),
      caseless: true,
    },
    { label: "a lowercase post-quantum key", line: pq.toLowerCase(), material: dataOf(pq), caseless: true },
    { label: "a plugin identity", line: plugin, material: dataOf(plugin), caseless: true },
    {
      label: "a lowercase plugin identity",
      line: plugin.toLowerCase(),
      material: dataOf(plugin),
      caseless: true,
    },
    {
      label: "a key inside a longer line",
      line: `export SOPS_AGE_KEY=${x}`,
      material: dataOf(x),
      caseless: true,
    },
  ];
  if (SSH_KEYGEN) {
    const file = path.join(dir, "id_ed25519");
    const r = spawnSync(SSH_KEYGEN, ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", file]);
    assert.equal(r.status, 0, String(r.stderr));
    const body = fs
      .readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => l !== "" && !l.startsWith("-----"));
    pem = { file, material: body };
  }
});
after(() => cleanup());

/** Every 8-character window of `material`. */
function runsOf(material: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 8 <= material.length; i++) out.push(material.slice(i, i + 8));
  return out;
}

function assertNoRun(r: RunResult, material: string, caseless: boolean, what: string): void {
  const output = `${r.stdout.toString("utf8")}\n${r.stderr}`;
  const hay = caseless ? output.toLowerCase() : output;
  for (const run of runsOf(caseless ? material.toLowerCase() : material)) {
    assert.ok(!hay.includes(run), `${what}: "${run}" of the key appears in the output:\n${output}`);
  }
}

/** Runs nixseal and checks both that it failed (the path was taken) and that nothing leaked. */
function expectQuietFailure(
  s: SecretLine,
  args: string[],
  options: { cwd?: string; env?: Record<string, string | undefined>; input?: string } = {},
): RunResult {
  const r = nixseal(args, { cwd: options.cwd ?? dir, env: { ...env, ...options.env }, input: options.input });
  const what = `${s.label}: nixseal ${args.join(" ").replaceAll(s.line, "LINE")}`;
  assert.notEqual(r.status, 0, `${what} should fail:\n${r.stderr}`);
  assert.ok(r.stderr.length > 0, `${what}: the failure is reported`);
  assertNoRun(r, s.material, s.caseless, what);
  return r;
}

/** A file holding a comment and the line, as recipients and identity files look. */
function fileWith(name: string, line: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, `# a key file\n${line}\n`);
  return f;
}

describe("age: -r, -R, -i, age-keygen -y", () => {
  test("no run of a secret key appears in any error", () => {
    const good = keygen();
    const recipient = nixseal(["age-keygen", "-y"], { input: `${good}\n` })
      .stdout.toString()
      .trim();
    const encrypted = nixseal(["age", "-r", recipient], { input: "payload" }).stdout;
    secrets.forEach((s, i) => {
      const f = fileWith(`key${i}.txt`, s.line);
      const r = expectQuietFailure(s, ["age", "-R", f], { input: "x" });
      // The error names where the line is.
      assert.match(r.stderr, new RegExp(`key${i}\\.txt:2`));
      expectQuietFailure(s, ["age", "-r", s.line], { input: "x" });
      expectQuietFailure(s, ["age", "-d", "-i", f], { input: encrypted.toString("latin1") });
      if (!s.valid) {
        expectQuietFailure(s, ["age", "-e", "-i", f], { input: "x" });
        expectQuietFailure(s, ["age-keygen", "-y", f]);
      }
    });
  });

  test("a secret key where a recipient belongs is called what it is", () => {
    const s = secrets[1]!; // lowercase: before, only the uppercase form was recognised
    const r = expectQuietFailure(s, ["age", "-R", fileWith("lower.txt", s.line)], { input: "x" });
    assert.match(r.stderr, /looks like an identity \(a secret key\), not a recipient/);
  });

  test("an ssh private key given as recipients: no line of it is quoted", { skip: !SSH_KEYGEN }, () => {
    const r = nixseal(["age", "-R", pem!.file], { env, input: "x" });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /looks like a private key, not a recipient/);
    const output = `${r.stdout.toString()}${r.stderr}`;
    for (const line of pem!.material) {
      for (const run of runsOf(line)) assert.ok(!output.includes(run), `"${run}" appears:\n${output}`);
    }
  });
});

describe("command-line arguments and identity variables", () => {
  test("unknown commands and options, who, SOPS_AGE_KEY, SOPS_AGE_KEY_CMD, NIXSEAL_IDENTITY", () => {
    secrets.forEach((s, i) => {
      const f = fileWith(`id${i}.txt`, s.line);
      // Arguments are quoted by one function (one check of the marks, in any case): three kinds
      // of line are enough there.
      if (i === 0 || i === 1 || i === secrets.length - 1) {
        expectQuietFailure(s, [s.line]);
        expectQuietFailure(s, ["decrypt", "--json", `--${s.line}`]);
        expectQuietFailure(s, ["who", s.line, "--json"]);
        expectQuietFailure(s, ["decrypt", "x.yaml", "--extract", s.line, "--json"]);
        expectQuietFailure(s, ["decrypt", "x.yaml", "--input-type", s.line]);
        expectQuietFailure(s, ["host-key", s.line]);
        expectQuietFailure(s, ["host-key", "seal", s.line, "-o", path.join(dir, "out.cred")]);
        expectQuietFailure(s, ["host-key", "new", "--with-key", s.line, "-o", path.join(dir, "out.cred")]);
        expectQuietFailure(s, ["audit", dir, "--min-length", s.line]);
        expectQuietFailure(s, ["build-hook", "--wrapper", s.line]);
      }
      for (const [name, value] of [
        ["SOPS_AGE_KEY", s.line],
        ["SOPS_AGE_KEY_CMD", `cat '${f}'`],
        ["NIXSEAL_IDENTITY", f],
      ] as const) {
        expectQuietFailure(s, ["decrypt", "x.yaml", "--json"], { env: { [name]: value } });
      }
      // (A valid key would be sealed, where systemd-creds works.)
      if (!s.valid) expectQuietFailure(s, ["host-key", "seal", "-i", f, "-o", path.join(dir, "out.cred")]);
    });
  });
});

describe("secrets.nix and .sops.yaml", { skip: NIX ? false : "nix-instantiate is not installed" }, () => {
  test("a secret key in publicKeys: encrypt, edit, rekey, check, list, who and audit show none of it", () => {
    const good = keygen();
    const goodFile = fileWith("good.txt", good);
    const recipient = nixseal(["age-keygen", "-y", goodFile]).stdout.toString().trim();
    const cases = [secrets[1]!, secrets[3]!, secrets[4]!, secrets[6]!];
    cases.forEach((s, i) => {
      const repo = path.join(dir, `repo${i}`);
      fs.mkdirSync(repo);
      fs.writeFileSync(
        path.join(repo, "secrets.nix"),
        `{ "x.age".publicKeys = [ "${recipient}" "${s.line}" ]; "y.age".publicKeys = [ "${recipient}" ]; }\n`,
      );
      const y = nixseal(["encrypt", "y.age"], { cwd: repo, env, input: "why" });
      assert.equal(y.status, 0, y.stderr);
      fs.copyFileSync(path.join(repo, "y.age"), path.join(repo, "x.age"));
      const opts = { cwd: repo, env: { EDITOR: "true" } };
      expectQuietFailure(s, ["encrypt", "x.age", "--json"], { ...opts, input: "secret" });
      expectQuietFailure(s, ["edit", "x.age", "-i", goodFile, "--json"], opts);
      expectQuietFailure(s, ["rekey", "-i", goodFile], opts);
      expectQuietFailure(s, ["rekey", "-i", goodFile, "--json"], opts);
      expectQuietFailure(s, ["check"], opts);
      expectQuietFailure(s, ["check", "--json"], opts);
      expectQuietFailure(s, ["who", fileWith(`who${i}.pub`, s.line)], opts);
      expectQuietFailure(s, ["audit", repo, "-i", fileWith(`audit${i}.txt`, s.line), "--json"], opts);
      for (const args of [["list"], ["list", "--json"], ["who", "x.age"], ["who", "x.age", "--json"]]) {
        const r = nixseal(args, { cwd: repo, env });
        assert.equal(r.status, 0, r.stderr);
        assertNoRun(r, s.material, s.caseless, `${s.label}: nixseal ${args.join(" ")}`);
        assert.match(r.stdout.toString(), /SECRET key/, "the mistake is pointed out");
      }
    });
  });

  test("a secret key as a .sops.yaml age recipient: encrypt, updatekeys --dry-run", () => {
    const good = keygen();
    const goodFile = fileWith("sops-good.txt", good);
    const recipient = nixseal(["age-keygen", "-y", goodFile]).stdout.toString().trim();
    [secrets[0]!, secrets[1]!, secrets[2]!].forEach((s, i) => {
      const w = path.join(dir, `sops${i}`);
      fs.mkdirSync(w);
      fs.writeFileSync(path.join(w, ".sops.yaml"), `creation_rules:\n  - age: ${recipient}\n`);
      const ok = nixseal(["encrypt", "app.yaml"], { cwd: w, env, input: "a: 1\n" });
      assert.equal(ok.status, 0, ok.stderr);
      fs.writeFileSync(path.join(w, ".sops.yaml"), `creation_rules:\n  - age: ${recipient},${s.line}\n`);
      const opts = { cwd: w, env: { SOPS_AGE_KEY_FILE: goodFile } };
      expectQuietFailure(s, ["encrypt", "new.yaml", "--json"], { ...opts, input: "b: 2\n" });
      expectQuietFailure(s, ["updatekeys", "app.yaml"], opts);
      const dry = nixseal(["updatekeys", "--dry-run", "app.yaml"], { cwd: w, env: { ...env, ...opts.env } });
      assertNoRun(dry, s.material, s.caseless, `${s.label}: updatekeys --dry-run`);
      const dryJson = nixseal(["updatekeys", "--dry-run", "--json", "app.yaml"], {
        cwd: w,
        env: { ...env, ...opts.env },
      });
      assertNoRun(dryJson, s.material, s.caseless, `${s.label}: updatekeys --dry-run --json`);
    });
  });
});

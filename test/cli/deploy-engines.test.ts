/**
 * docs/deploy-engines.md, checked: colmena's keyCommand contract (what colmena runs: an argv
 * with standard input closed; standard output is the key and nothing else, errors on standard
 * error, non-zero exit on failure) met by `nixseal decrypt`, and the nixos-anywhere recipe run
 * as the doc writes it, with a stand-in for nixos-anywhere that copies the --extra-files tree
 * onto a "new root" as it does.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, isolatedUserEnv, nixseal, REPO, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const SSH_KEYGEN = which("ssh-keygen");
const TAR = which("tar");

let dir = "";
let cleanup = () => {};
let env: Record<string, string | undefined> = {};
let bin = "";
let me = "";

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-deploy-"));
  const home = path.join(dir, "home");
  fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
  env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1" };
  // The user's identity where nixseal finds it without -i.
  const k = nixseal(["age-keygen", "-o", path.join(home, ".config", "nixseal", "identity.txt")], { env });
  assert.equal(k.status, 0, k.stderr);
  me = /Public key: (age1\S+)/.exec(k.stderr)![1]!;
  // `nixseal` on PATH, as colmena and the recipe call it.
  bin = path.join(dir, "bin");
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, "nixseal"), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`, {
    mode: 0o755,
  });
  env.PATH = `${bin}:${process.env.PATH}`;
});
after(() => cleanup());

/** A flake-like project: the secrets repository in ./secrets, as nixseal init lays it out. */
function project(name: string, secretsNix: string, hostsNix?: string): string {
  const root = path.join(dir, name);
  fs.mkdirSync(path.join(root, "secrets"), { recursive: true });
  fs.writeFileSync(path.join(root, "secrets", "secrets.nix"), secretsNix);
  if (hostsNix !== undefined) fs.writeFileSync(path.join(root, "secrets", "hosts.nix"), hostsNix);
  return root;
}

function cleanEnv(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(e)) if (v === undefined) delete e[k];
  return e;
}

describe('colmena: keyCommand = [ "nixseal" "decrypt" NAME ]', {
  skip: NIX ? false : "nix-instantiate is not installed",
}, () => {
  /** What colmena does with a keyCommand: argv, stdin closed, both outputs captured. */
  function keyCommand(cwd: string, argv: string[]) {
    const r = spawnSync(argv[0]!, argv.slice(1), { cwd, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    assert.equal(r.error, undefined);
    return { status: r.status, stdout: r.stdout as Buffer, stderr: (r.stderr as Buffer).toString() };
  }

  test("standard output is exactly the key; failures exit non-zero with nothing on standard output", () => {
    const stranger = nixseal(["age-keygen"], { env })
      .stdout.toString()
      .match(/public key: (age1\S+)/)![1]!;
    const root = project(
      "colmena",
      `{\n  "db-password.age".publicKeys = [ "${me}" ];\n  "other.age".publicKeys = [ "${stranger}" ];\n}\n`,
    );
    // A key with no trailing newline, a NUL and bytes that are not UTF-8.
    const key = Buffer.concat([
      Buffer.from("pass\0word"),
      Buffer.from([0xff, 0xfe, 0x80]),
      Buffer.from("\n\n x"),
    ]);
    for (const name of ["db-password.age", "other.age"]) {
      const e = nixseal(["encrypt", name], { cwd: root, env, input: key });
      assert.equal(e.status, 0, e.stderr);
    }
    const ok = keyCommand(root, ["nixseal", "decrypt", "db-password.age"]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.deepEqual(ok.stdout, key);
    assert.equal(ok.stderr, "");

    // Not in the rules; not for this user; damaged: an error on stderr, stdout empty.
    const missing = keyCommand(root, ["nixseal", "decrypt", "nope.age"]);
    assert.notEqual(missing.status, 0);
    assert.equal(missing.stdout.length, 0);
    assert.match(missing.stderr, /nope\.age/);
    const notMine = keyCommand(root, ["nixseal", "decrypt", "other.age"]);
    assert.equal(notMine.status, 1);
    assert.equal(notMine.stdout.length, 0);
    assert.match(notMine.stderr, /no identity matched/);
    const file = path.join(root, "secrets", "db-password.age");
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 5]! ^= 1;
    fs.writeFileSync(file, bytes);
    const damaged = keyCommand(root, ["nixseal", "decrypt", "db-password.age"]);
    assert.equal(damaged.status, 1);
    assert.equal(damaged.stdout.length, 0);
    assert.match(damaged.stderr, /error:/);
  });
});

/** The first ```sh block after a heading of docs/deploy-engines.md. */
function docBlock(heading: string): string {
  const doc = fs.readFileSync(path.join(REPO, "docs", "deploy-engines.md"), "utf8");
  const at = doc.indexOf(`\n## ${heading}`);
  assert.ok(at >= 0, `docs/deploy-engines.md has no section "${heading}"`);
  const m = /```sh\n([\s\S]*?)```/.exec(doc.slice(at));
  assert.ok(m, `no sh block in "${heading}"`);
  return m[1]!;
}

describe("nixos-anywhere: the documented recipe", {
  skip:
    (NIX ? null : "nix-instantiate is not installed") ??
    (SSH_KEYGEN ? null : "ssh-keygen is not installed") ??
    (TAR ? null : "tar is not installed") ??
    (fs.existsSync("/dev/shm") ? false : "no /dev/shm"),
}, () => {
  test("a host key made 0600 in RAM, recorded and its secrets rekeyed; the installed host decrypts them", () => {
    const root = project(
      "anywhere",
      `let hosts = import ./hosts.nix; in {\n  "web.age".publicKeys = [ "${me}" hosts.web1 ];\n}\n`,
    );
    const secret = "web1's first-boot secret";
    // Encrypted for the user alone (web1 does not exist yet), as agenix or age would.
    const enc = nixseal(["age", "-r", me, "-o", path.join(root, "secrets", "web.age")], {
      env,
      input: secret,
    });
    assert.equal(enc.status, 0, enc.stderr);

    // nixos-anywhere's stand-in: copies the --extra-files tree onto the new root, as root would.
    const newRoot = path.join(dir, "new-root");
    fs.mkdirSync(newRoot, { mode: 0o700 });
    const calls = path.join(dir, "nixos-anywhere.args");
    fs.writeFileSync(
      path.join(bin, "nixos-anywhere"),
      [
        "#!/bin/sh",
        `printf '%s\\n' "$@" > '${calls}'`,
        'while [ $# -gt 0 ]; do if [ "$1" = --extra-files ]; then extra=$2; fi; shift; done',
        `tar -C "$extra" -cf - . | tar -C '${newRoot}' -xpf -`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const before = fs.readdirSync("/dev/shm").filter((f) => f.startsWith("nixseal-host."));
    const r = spawnSync("/bin/sh", ["-eu", "-c", docBlock("nixos-anywhere")], {
      cwd: root,
      env: cleanEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);

    assert.deepEqual(fs.readFileSync(calls, "utf8").split("\n").slice(-4, -1), [
      "--flake",
      ".#web1",
      "root@203.0.113.7",
    ]);
    // The private key reached the new root 0600 and the tree's modes are those of a root fs.
    const key = path.join(newRoot, "etc", "ssh", "ssh_host_ed25519_key");
    assert.equal(fs.statSync(key).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.join(newRoot, "etc", "ssh")).mode & 0o777, 0o755);
    assert.equal(fs.statSync(newRoot).mode & 0o777, 0o755);
    // Nothing is left in RAM.
    assert.deepEqual(
      fs.readdirSync("/dev/shm").filter((f) => f.startsWith("nixseal-host.")),
      before,
    );
    // hosts.nix names the key, and the host's key decrypts its secret, as at first boot.
    const pub = fs.readFileSync(`${key}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
    const hosts = spawnSync(NIX!, ["--eval", "--strict", "--json", path.join(root, "secrets", "hosts.nix")]);
    assert.deepEqual(JSON.parse(hosts.stdout.toString()), { web1: pub });
    const dec = nixseal(["decrypt", "-i", key, "web.age"], { cwd: root, env });
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), secret);
    // For .sops.yaml: the same key's age1 recipient decrypts too (the ssh key is its identity).
    const age1 = nixseal(["age-keygen", "-y", `${key}.pub`], { env });
    assert.match(age1.stdout.toString(), /^age1[0-9a-z]{58}\n$/);
  });
});

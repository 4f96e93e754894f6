/**
 * `nixseal host add` against a real OpenSSH server on 127.0.0.1 (test/cli/sshd.ts): the host's
 * recipient recorded in hosts.nix, the host's secrets rekeyed so its own key decrypts them,
 * known_hosts honoured (a different key is refused), unreachable hosts and bad input refused
 * with nothing changed, and --sealed running `nixseal host-key new` on the host over ssh.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { decrypt } from "../../src/age/index.js";
import { loadSealedIdentities } from "../../src/creds/index.js";
import { hostKeyPath, systemdCredsMissing } from "../creds/creds-env.js";
import { CLI, isolatedUserEnv, nixseal, run, tempDir, which } from "../helpers.js";
import { freePort, type Sshd, sshdMissing, startSshd } from "./sshd.js";

const AGE = which("age");
const NIX = which("nix-instantiate");
const skip =
  sshdMissing() ?? (AGE ? null : "age is not installed") ?? (NIX ? null : "nix-instantiate is not installed");

let dir = "";
let cleanup = () => {};
let env: Record<string, string | undefined> = {};
let a: Sshd;
let b: Sshd;
let repoCount = 0;

before(async () => {
  if (skip) return;
  ({ dir, cleanup } = tempDir("nixseal-host-add-"));
  fs.mkdirSync(path.join(dir, "home"));
  env = { ...isolatedUserEnv(path.join(dir, "home"), path.join(dir, "cache")), NO_COLOR: "1" };
  // Host a's sessions find a `nixseal` on their PATH (put there by the --sealed test).
  fs.mkdirSync(path.join(dir, "remote-bin"));
  a = await startSshd(dir, "a", [
    `SetEnv PATH=${path.join(dir, "remote-bin")}:/usr/sbin:/usr/bin:/sbin:/bin`,
  ]);
  b = await startSshd(dir, "b");
});
after(async () => {
  await a?.stop();
  await b?.stop();
  cleanup();
});

interface Repo {
  dir: string;
  identity: string;
  hostsFile: string;
  web: string;
  other: string;
}

/** A repository whose web.age is for the user and hosts.web1, other.age for the user only. */
function makeRepo(secretsNix?: (me: string) => string): Repo {
  const repo = path.join(dir, `repo${repoCount++}`);
  fs.mkdirSync(repo);
  const identity = path.join(repo, "..", `${path.basename(repo)}-me.txt`);
  const k = nixseal(["age-keygen", "-o", identity], { env });
  assert.equal(k.status, 0, k.stderr);
  const me = /Public key: (age1\S+)/.exec(k.stderr)![1]!;
  fs.writeFileSync(
    path.join(repo, "secrets.nix"),
    secretsNix?.(me) ??
      `let hosts = import ./hosts.nix; me = "${me}"; in {\n  "web.age".publicKeys = [ me hosts.web1 ];\n  "other.age".publicKeys = [ me ];\n}\n`,
  );
  for (const [name, value] of [
    ["web.age", "web1's database password"],
    ["other.age", "not for web1"],
  ] as const) {
    const r = run(AGE!, ["-r", me, "-o", path.join(repo, name)], { input: value });
    assert.equal(r.status, 0, r.stderr);
  }
  return {
    dir: repo,
    identity,
    hostsFile: path.join(repo, "hosts.nix"),
    web: path.join(repo, "web.age"),
    other: path.join(repo, "other.age"),
  };
}

function sshArgs(host: Sshd): string[] {
  return [
    "--ssh",
    "root@127.0.0.1",
    "--port",
    String(host.port),
    ...host.clientOptions.flatMap((o) => ["--ssh-option", o]),
  ];
}

function hostAdd(repo: Repo, name: string, host: Sshd, extra: string[] = []) {
  return nixseal(["host", "add", name, ...sshArgs(host), "-i", repo.identity, ...extra], {
    cwd: repo.dir,
    env,
  });
}

/** Decrypts a secret as the host would: with its ssh host key. */
function decryptAs(repo: Repo, key: string, file: string) {
  return nixseal(["decrypt", "-i", key, path.basename(file)], { cwd: repo.dir, env });
}

/** hosts.nix as the real Nix evaluates it. */
function evaluated(file: string): unknown {
  const r = run(NIX!, ["--eval", "--strict", "--json", file]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.toString());
}

/** The fingerprint ssh-keygen prints for a public key file. */
function fingerprintOf(pub: string): string {
  const r = run(which("ssh-keygen")!, ["-l", "-f", pub]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString().split(" ")[1]!;
}

function writeKnownHosts(host: Sshd, keyLine: string, hashed: boolean): void {
  fs.writeFileSync(host.knownHosts, `[127.0.0.1]:${host.port} ${keyLine}\n`);
  if (hashed) {
    const r = run(which("ssh-keygen")!, ["-H", "-f", host.knownHosts]);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(fs.readFileSync(host.knownHosts, "utf8"), /127\.0\.0\.1/);
  }
}

describe("nixseal host add", { skip: skip ?? false }, () => {
  test("by the ssh host key: recorded in hosts.nix, the host's secrets rekeyed for it, others untouched", () => {
    fs.writeFileSync(a.knownHosts, "");
    const repo = makeRepo();
    const otherBefore = fs.readFileSync(repo.other);
    // Before: the host cannot read its secret.
    assert.notEqual(decryptAs(repo, a.hostKey, repo.web).status, 0);
    const r = hostAdd(repo, "web1", a);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "rewritten web.age\n");
    // Unverified (no known_hosts entry): said so, with the fingerprint ssh-keygen shows.
    assert.match(r.stderr, /NOT verified/);
    assert.ok(r.stderr.includes(fingerprintOf(`${a.hostKey}.pub`)), r.stderr);
    assert.deepEqual(evaluated(repo.hostsFile), { web1: a.hostPublic });
    const dec = decryptAs(repo, a.hostKey, repo.web);
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), "web1's database password");
    assert.deepEqual(fs.readFileSync(repo.other), otherBefore);
    assert.notEqual(decryptAs(repo, a.hostKey, repo.other).status, 0);
    // The user still reads it; nixseal check agrees with the rules.
    assert.equal(nixseal(["decrypt", "-i", repo.identity, "web.age"], { cwd: repo.dir, env }).status, 0);
    const check = nixseal(["check"], { cwd: repo.dir, env });
    assert.equal(check.status, 0, check.stderr);

    // Again: nothing to do, nothing rewritten.
    const web = fs.readFileSync(repo.web);
    const hosts = fs.readFileSync(repo.hostsFile);
    const again = hostAdd(repo, "web1", a, ["--json"]);
    assert.equal(again.status, 0, again.stderr);
    const json = JSON.parse(again.stdout.toString());
    assert.equal(json.changed, false);
    assert.equal(json.recipient, a.hostPublic);
    assert.deepEqual(json.rewritten, []);
    assert.deepEqual(json.secrets, ["web.age"]);
    assert.deepEqual(fs.readFileSync(repo.web), web);
    assert.deepEqual(fs.readFileSync(repo.hostsFile), hosts);
  });

  test("known_hosts: a matching (hashed) entry verifies the key; a different key is refused, nothing changes", () => {
    const repo = makeRepo();
    writeKnownHosts(a, a.hostPublic, true);
    const ok = hostAdd(repo, "web1", a);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stderr, new RegExp(`verified by ${a.knownHosts.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    assert.doesNotMatch(ok.stderr, /NOT verified/);

    // known_hosts records another key for this host: an impostor, as far as nixseal can tell.
    const repo2 = makeRepo();
    writeKnownHosts(a, b.hostPublic, false);
    const web = fs.readFileSync(repo2.web);
    const bad = hostAdd(repo2, "web1", a);
    assert.equal(bad.status, 1, bad.stderr);
    assert.match(bad.stderr, /is not the one .*known_hosts records for \[127\.0\.0\.1\]:\d+/);
    assert.match(bad.stderr, /hint: someone may be impersonating the host/);
    assert.equal(fs.existsSync(repo2.hostsFile), false);
    assert.deepEqual(fs.readFileSync(repo2.web), web);
    fs.writeFileSync(a.knownHosts, "");
  });

  test("NAME taken by another key: refused without --replace; with it the new key reads, the old no longer", () => {
    const repo = makeRepo();
    assert.equal(hostAdd(repo, "web1", a).status, 0);
    const hosts = fs.readFileSync(repo.hostsFile);
    const refused = hostAdd(repo, "web1", b);
    assert.equal(refused.status, 1, refused.stderr);
    assert.match(refused.stderr, /host web1 is already in .*hosts\.nix with another recipient/);
    assert.match(refused.stderr, /--replace/);
    assert.deepEqual(fs.readFileSync(repo.hostsFile), hosts);
    const replaced = hostAdd(repo, "web1", b, ["--replace"]);
    assert.equal(replaced.status, 0, replaced.stderr);
    assert.deepEqual(evaluated(repo.hostsFile), { web1: b.hostPublic });
    assert.equal(decryptAs(repo, b.hostKey, repo.web).stdout.toString(), "web1's database password");
    assert.notEqual(decryptAs(repo, a.hostKey, repo.web).status, 0);
  });

  test("a second host is added beside the first; comments and order of hosts.nix are kept", () => {
    const repo = makeRepo(
      (me) =>
        `let hosts = import ./hosts.nix; in {\n  "web.age".publicKeys = [ "${me}" hosts.web1 ];\n  "other.age".publicKeys = [ "${me}" hosts.db ];\n}\n`,
    );
    fs.writeFileSync(
      repo.hostsFile,
      `# my hosts\n{\n  # the web server\n  web1 = "${a.hostPublic}";\n  db = "${a.hostPublic}";\n}\n`,
    );
    const r = hostAdd(repo, "db", b, ["--replace"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      fs.readFileSync(repo.hostsFile, "utf8"),
      `# my hosts\n{\n  # the web server\n  web1 = "${a.hostPublic}";\n  db = "${b.hostPublic}";\n}\n`,
    );
    assert.equal(decryptAs(repo, b.hostKey, repo.other).stdout.toString(), "not for web1");
    const add = hostAdd(repo, "cache_2", b);
    assert.equal(add.status, 0, add.stderr);
    assert.deepEqual(evaluated(repo.hostsFile), {
      web1: a.hostPublic,
      db: b.hostPublic,
      cache_2: b.hostPublic,
    });
    // The same key as db: other.age already is for it.
    assert.match(add.stderr, /0 secrets rekeyed/);
  });

  test("an unreachable host: a clear error naming the address, nothing written", async () => {
    const repo = makeRepo();
    const port = await freePort();
    const r = nixseal(
      ["host", "add", "web1", "--ssh", "127.0.0.1", "--port", String(port), "-i", repo.identity],
      {
        cwd: repo.dir,
        env,
      },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `cannot read the ed25519 host key of 127\\.0\\.0\\.1 \\(127\\.0\\.0\\.1:${port}\\): connection refused`,
      ),
    );
    assert.match(r.stderr, /hint: check the address and --port/);
    assert.equal(fs.existsSync(repo.hostsFile), false);
  });

  test("a rekey that cannot decrypt changes nothing, hosts.nix included", () => {
    const repo = makeRepo();
    const web = fs.readFileSync(repo.web);
    const stranger = path.join(dir, "stranger.txt");
    if (!fs.existsSync(stranger)) assert.equal(nixseal(["age-keygen", "-o", stranger], { env }).status, 0);
    const r = nixseal(["host", "add", "web1", ...sshArgs(a), "-i", stranger], { cwd: repo.dir, env });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /cannot rekey 1 secret for web1: nothing was changed, hosts\.nix included/);
    assert.equal(fs.existsSync(repo.hostsFile), false);
    assert.deepEqual(fs.readFileSync(repo.web), web);
  });

  test("secrets.nix that does not import hosts.nix: the host is recorded, and the warning says how", () => {
    const repo = makeRepo(
      (me) => `{ "web.age".publicKeys = [ "${me}" ]; "other.age".publicKeys = [ "${me}" ]; }\n`,
    );
    const r = hostAdd(repo, "web1", a);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /secrets\.nix does not import hosts\.nix.*hosts = import \.\/hosts\.nix;/);
    assert.deepEqual(evaluated(repo.hostsFile), { web1: a.hostPublic });
  });

  test("bad input is refused before any connection: NAME, hosts.nix's form, options", async () => {
    const repo = makeRepo();
    const logBefore = (await a.settledLog()).length;
    const cases: [string[], RegExp][] = [
      [["host", "add", "web.1", ...sshArgs(a)], /invalid host name "web\.1"/],
      [["host", "add", "rec", ...sshArgs(a)], /"rec" is a Nix keyword/],
      [["host", "add", "web1", "--ssh", "root@127.0.0.1", "--port", "99999"], /invalid --port/],
      [
        ["host", "add", "web1", ...sshArgs(a), "--ssh-option", "StrictHostKeyChecking=no"],
        /would trust any host key/,
      ],
      [["host", "add", "web1", "--ssh", "-oProxyCommand=sh", "--port", "22"], /./],
      [["host", "add", "web1", ...sshArgs(a), "--nixseal-command", "x"], /go with --sealed/],
      [
        ["host", "add", "web1", "--public-key", `${a.hostKey}.pub`, ...sshArgs(a)],
        /--public-key takes the recipient from the file/,
      ],
      [["host", "add", "web1"], /--ssh \[USER@\]HOST \(or --public-key FILE\) is required/],
    ];
    for (const [args, why] of cases) {
      const r = nixseal(args, { cwd: repo.dir, env });
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, why);
    }
    // A hosts.nix with Nix nixseal does not rewrite: every bad line named, nothing rewritten.
    const text = `{\n  web1 = "x" + "y";\n  inherit (import ./keys.nix) db;\n}\n`;
    fs.writeFileSync(repo.hostsFile, text);
    const form = hostAdd(repo, "web2", a);
    assert.equal(form.status, 2, form.stderr);
    assert.match(form.stderr, /hosts\.nix:2: not a NAME = "recipient"; line/);
    assert.match(form.stderr, /hosts\.nix:3: not a NAME = "recipient"; line/);
    assert.equal(fs.readFileSync(repo.hostsFile, "utf8"), text);
    // No secrets.nix.
    const none = nixseal(["host", "add", "web1", ...sshArgs(a)], { cwd: path.join(dir, "home"), env });
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /no secrets\.nix found/);
    const logAfter = await a.settledLog();
    assert.equal(logAfter.length, logBefore, `sshd saw a connection:\n${logAfter.slice(logBefore)}`);
  });

  test("--sealed: host-key new runs on the host over ssh; the sealed identity decrypts the rekeyed secrets", {
    skip: systemdCredsMissing() ?? false,
  }, async () => {
    writeKnownHosts(a, a.hostPublic, false);
    const repo = makeRepo();
    // The host's nixseal: this checkout, with a credential host key of the test's own.
    const credKey = hostKeyPath(dir, "sealed");
    const wrapper = path.join(dir, "remote-bin", "nixseal");
    fs.writeFileSync(
      wrapper,
      `#!/bin/sh\nSYSTEMD_CREDENTIAL_SECRET='${credKey}' exec '${process.execPath}' '${CLI}' "$@"\n`,
      { mode: 0o755 },
    );
    const remoteDir = path.join(dir, "remote-var");
    fs.mkdirSync(remoteDir);
    const sealedFile = path.join(remoteDir, "host-key.cred");
    // No --nixseal-command: without NixOS's /run/current-system/sw/bin/nixseal there, the
    // `nixseal` on the host's PATH runs.
    const r = hostAdd(repo, "web1", a, ["--sealed", "--sealed-file", sealedFile, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const json = JSON.parse(r.stdout.toString());
    assert.equal(json.source, "sealed");
    if (!fs.existsSync("/run/current-system/sw/bin/nixseal")) assert.equal(json.remoteCommand, "nixseal");
    assert.match(json.recipient, /^age1[0-9a-z]{58}$/);
    assert.deepEqual(json.rewritten, ["web.age"]);
    assert.deepEqual(evaluated(repo.hostsFile), { web1: json.recipient });
    assert.equal(fs.statSync(sealedFile).mode & 0o777, 0o600);
    // The identity sealed on the host opens the host's secret.
    const saved = process.env.SYSTEMD_CREDENTIAL_SECRET;
    process.env.SYSTEMD_CREDENTIAL_SECRET = credKey;
    try {
      const sealed = await loadSealedIdentities({ path: sealedFile });
      assert.deepEqual(sealed.recipients, [json.recipient]);
      const plain = await decrypt(fs.readFileSync(repo.web), sealed.identities);
      assert.equal(Buffer.from(plain).toString(), "web1's database password");
    } finally {
      if (saved === undefined) delete process.env.SYSTEMD_CREDENTIAL_SECRET;
      else process.env.SYSTEMD_CREDENTIAL_SECRET = saved;
    }
    // An existing sealed key is never replaced: the error says how to read its recipient.
    const again = hostAdd(repo, "web2", a, [
      "--sealed",
      "--nixseal-command",
      wrapper,
      "--sealed-file",
      sealedFile,
    ]);
    assert.equal(again.status, 1, again.stderr);
    assert.match(again.stderr, /host-key recipient/);
    // No nixseal there.
    const missing = hostAdd(repo, "web2", a, [
      "--sealed",
      "--nixseal-command",
      path.join(dir, "no-such-nixseal"),
    ]);
    assert.equal(missing.status, 1, missing.stderr);
    assert.match(missing.stderr, /no nixseal on root@127\.0\.0\.1: tried .*no-such-nixseal/);
    fs.writeFileSync(a.knownHosts, "");
  });
});

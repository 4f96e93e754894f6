/**
 * `nixseal audit` with the real Nix: a derivation built from an expression that reads a
 * decrypted secret with builtins.readFile leaks it into its output and its .drv, and the audit
 * says so (name, file, offset, encoding); a base64-embedded secret is found; a clean closure is
 * clean; sops values are found one by one; bad input (missing path, unreadable file, bad store
 * path, no identity) exits 2 with a clear line.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, run, runtimeForOtherUsers, tempDir, which } from "../helpers.js";

const NIX_BUILD = which("nix-build");
const NIX_STORE = which("nix-store");
const SETPRIV = which("setpriv");
const missing = !NIX_BUILD || !NIX_STORE ? "needs nix-build and nix-store (Debian nix-bin)" : false;

let dir: string;
let cleanup: () => void;
let repo: string;
let env: Record<string, string | undefined>;
const built: string[] = [];
const nonce = randomBytes(4).toString("hex");

// The secrets: a password with characters a .drv escapes, a token, and one too short to check.
const dbPassword = `Pw-${randomBytes(9).toString("base64url")}"q\\z\n`;
const apiToken = randomBytes(18).toString("base64url");

function sh(args: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}) {
  const r = nixseal(args, { cwd: options.cwd ?? repo, env: { ...env, ...options.env } });
  return { status: r.status, out: r.stdout.toString("utf8"), err: r.stderr };
}

/** Builds a `builtins.derivation` with /bin/sh (no nixpkgs); returns [output path, .drv path]. */
function build(name: string, expr: string): [string, string] {
  const file = path.join(dir, `${name}.nix`);
  fs.writeFileSync(file, expr);
  const r = spawnSync(NIX_BUILD!, ["--no-out-link", "--option", "substituters", "", file], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout.trim();
  const drv = spawnSync(NIX_STORE!, ["--query", "--deriver", out], { encoding: "utf8" }).stdout.trim();
  built.push(out, drv);
  return [out, drv];
}

function derivation(name: string, script: string, attrs: string): string {
  return `builtins.derivation {
  name = "nxs-audit-${name}-${nonce}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ${JSON.stringify(script)} ];
  ${attrs}
}
`;
}

interface JsonLeak {
  secret: string;
  file: string;
  offset: number;
  encoding: string;
  place: string;
}

before(() => {
  ({ dir, cleanup } = tempDir());
  // Readable by the unprivileged user of the unreadable-file test (the key is a test key).
  fs.chmodSync(dir, 0o755);
  const home = path.join(dir, "home");
  repo = path.join(dir, "repo");
  fs.mkdirSync(home);
  fs.mkdirSync(repo);
  env = isolatedUserEnv(home, path.join(dir, "cache"));
});

after(() => {
  // Builds have no GC root: delete what the tests put in the store.
  if (NIX_STORE && built.length > 0) spawnSync(NIX_STORE, ["--delete", ...built], { encoding: "utf8" });
  cleanup();
});

describe("nixseal audit with the real Nix", { skip: missing }, () => {
  let leakOut: string;
  let leakDrv: string;

  before(() => {
    let r = sh(["init", "--json"]);
    assert.equal(r.status, 0, r.err);
    const rules = path.join(repo, "secrets", "secrets.nix");
    const text = fs
      .readFileSync(rules, "utf8")
      .replace(
        /\n\{\n\}\n$/,
        `\n{\n  "db-password.age".publicKeys = users;\n  "api-token.age".publicKeys = users;\n  "pin.age".publicKeys = users;\n}\n`,
      );
    fs.writeFileSync(rules, text);
    for (const [name, value] of [
      ["db-password.age", dbPassword],
      ["api-token.age", apiToken],
      ["pin.age", "1234\n"],
    ]) {
      const e = nixseal(["encrypt", `secrets/${name}`], { cwd: repo, env, input: value });
      assert.equal(e.status, 0, e.stderr);
    }
    // The mistake: a decrypted copy read at evaluation time with builtins.readFile.
    const plain = path.join(dir, "db-password.txt");
    fs.writeFileSync(plain, dbPassword);
    [leakOut, leakDrv] = build(
      "leak",
      derivation("leak", `printf 'password=%s\\n' "$pw" > $out`, `pw = builtins.readFile ${plain};`),
    );
    r = { status: 0, out: fs.readFileSync(leakOut, "utf8"), err: "" };
    assert.equal(r.out, `password=${dbPassword}\n`);
  });

  test("a secret read with builtins.readFile is found in the output and in the .drv", () => {
    const r = sh(["audit", "--closure", leakOut, "--drv", "--json"]);
    assert.equal(r.status, 1, r.err);
    const report = JSON.parse(r.out);
    const leaks = report.leaks as JsonLeak[];
    // In the output: raw, after "password=".
    const inOut = leaks.filter((l) => l.file === leakOut);
    assert.equal(inOut.length, 1);
    assert.equal(inOut[0]!.secret, "db-password.age");
    assert.equal(inOut[0]!.offset, "password=".length);
    assert.equal(inOut[0]!.encoding.split("/")[0], "raw");
    // In the .drv: as Nix writes strings there, with " and \ escaped.
    const drvText = fs.readFileSync(leakDrv, "latin1");
    const escaped = dbPassword.trim().replace(/\\/g, "\\\\").replace(/"/g, '\\"');
    const at = drvText.indexOf(escaped);
    assert.ok(at > 0);
    const inDrv = leaks.filter((l) => l.file === leakDrv);
    assert.equal(inDrv.length, 1);
    assert.equal(inDrv[0]!.secret, "db-password.age");
    assert.equal(inDrv[0]!.offset, at);
    assert.ok(inDrv[0]!.encoding.split("/").includes("drv-string"), inDrv[0]!.encoding);
    assert.equal(leaks.length, 2);
    // The short secret is listed as skipped, with the reason; nothing of any value is printed.
    assert.deepEqual(report.secrets.skipped, [
      { secret: "pin.age", file: "secrets/pin.age", reason: "too short (4 bytes < --min-length 8)" },
    ]);
    assert.equal(report.secrets.checked, 2);
    assert.ok(!r.out.includes(dbPassword.trim()) && !r.out.includes(escaped));

    const t = sh(["audit", "--closure", leakOut, "--drv"]);
    assert.equal(t.status, 1);
    // One line per leak, sorted by file, naming secret, file, offset and encoding.
    const lines = [
      [leakOut, `leak: secret "db-password.age" in ${leakOut} at byte 9 (${inOut[0]!.encoding})`],
      [leakDrv, `leak: secret "db-password.age" in ${leakDrv} at byte ${at} (${inDrv[0]!.encoding})`],
    ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
    assert.equal(t.out, lines.map((l) => `${l[1]}\n`).join(""));
    assert.match(t.err, /skipped pin\.age: too short/);
    assert.match(t.err, /2 leaks of 1 secret in 2 files/);
    assert.ok(!t.err.includes(dbPassword.trim()) && !t.out.includes(dbPassword.trim()));
  });

  test("without --drv only the closure is scanned", () => {
    const r = sh(["audit", "--closure", leakOut, "--json"]);
    assert.equal(r.status, 1, r.err);
    const leaks = JSON.parse(r.out).leaks as JsonLeak[];
    assert.deepEqual(
      leaks.map((l) => l.file),
      [leakOut],
    );
  });

  test("--drv also covers sources a derivation copied into the store (a path to a decrypted file)", () => {
    const plain = path.join(dir, "token-copy.txt");
    fs.writeFileSync(plain, `token=${apiToken}\n`);
    // `src = /path` copies the file into the store; the output does not refer to it.
    const [out] = build("source", derivation("source", `echo built > $out`, `src = ${plain};`));
    const without = sh(["audit", "--closure", out]);
    assert.equal(without.status, 0, without.err);
    const r = sh(["audit", "--closure", out, "--drv", "--json"]);
    assert.equal(r.status, 1, r.err);
    const leaks = JSON.parse(r.out).leaks as JsonLeak[];
    assert.equal(leaks.length, 1);
    assert.match(leaks[0]!.file, /^\/nix\/store\/[0-9a-z]{32}-token-copy\.txt$/);
    assert.deepEqual([leaks[0]!.secret, leaks[0]!.offset, leaks[0]!.encoding], ["api-token.age", 6, "raw"]);
    built.push(leaks[0]!.file);
  });

  test("a secret embedded base64-encoded in a config file is found, with its offset", () => {
    const header = "Authorization: Basic ";
    const b64 = Buffer.from(`admin:${apiToken}`).toString("base64");
    const [out, drv] = build(
      "b64",
      derivation("b64", `printf '%s\\n' "$auth" > $out`, `auth = ${JSON.stringify(header + b64)};`),
    );
    const r = sh(["audit", "--closure", out, "--drv", "--json"]);
    assert.equal(r.status, 1, r.err);
    const leaks = JSON.parse(r.out).leaks as JsonLeak[];
    // "admin:" is 6 bytes, two whole base64 groups: the token's own characters start 8 in.
    const inOut = leaks.find((l) => l.file === out)!;
    assert.deepEqual(
      [inOut.secret, inOut.offset, inOut.encoding.split("/")[0]],
      ["api-token.age", header.length + 8, "base64"],
    );
    const inDrv = leaks.find((l) => l.file === drv)!;
    const drvText = fs.readFileSync(drv, "latin1");
    assert.deepEqual([inDrv.secret, inDrv.offset], ["api-token.age", drvText.indexOf(b64) + 8]);
    // A file outside the store, given as a PATH, too.
    const conf = path.join(dir, "app.conf");
    fs.writeFileSync(conf, `[http]\n${header}${b64}\n`);
    const p = sh(["audit", conf, "--json"]);
    assert.equal(p.status, 1, p.err);
    assert.deepEqual(
      (JSON.parse(p.out).leaks as JsonLeak[]).map((l) => [l.secret, l.file, l.offset]),
      [["api-token.age", conf, 7 + header.length + 8]],
    );
  });

  test("a tree large enough for scanning threads (over 64 MiB): every leak found, the report complete", () => {
    const tree = path.join(dir, "large-tree");
    fs.mkdirSync(tree);
    const files = 10;
    const size = 8 << 20;
    for (let i = 0; i < files; i++) {
      const body = randomBytes(size);
      // Every file, whichever thread scans it, holds the token once, at its own offset.
      body.write(apiToken, size - 1000 - i * 7, "latin1");
      fs.writeFileSync(path.join(tree, `part-${i}.bin`), body);
    }
    try {
      const r = sh(["audit", tree, "--json"]);
      assert.equal(r.status, 1, r.err);
      const report = JSON.parse(r.out);
      assert.deepEqual(
        (report.leaks as JsonLeak[]).map((l) => [l.secret, path.basename(l.file), l.offset, l.place]),
        Array.from({ length: files }, (_, i) => [
          "api-token.age",
          `part-${i}.bin`,
          size - 1000 - i * 7,
          "content",
        ]),
      );
      assert.equal(report.scanned.files, files);
      assert.equal(report.scanned.bytes, files * size);
    } finally {
      fs.rmSync(tree, { recursive: true, force: true });
    }
  });

  test("a clean closure reports nothing and exits 0", () => {
    const [out] = build(
      "clean",
      derivation("clean", `echo 'listen 8080;' > $out`, `note = "nothing secret";`),
    );
    const r = sh(["audit", "--closure", out, "--drv"]);
    assert.equal(r.status, 0, r.err);
    assert.equal(r.out, "");
    assert.match(r.err, /no leak: 2 secrets checked \(\d+ patterns\) in 2 files/);
    const j = sh(["audit", "--closure", out, "--drv", "--json"]);
    assert.equal(j.status, 0);
    const report = JSON.parse(j.out);
    assert.deepEqual(report.leaks, []);
    assert.equal(report.scanned.files, 2);
    assert.equal(report.scanned.derivationPaths, 1);
  });

  test("sops values are checked one by one, named by their path", () => {
    const w = path.join(dir, "sops-repo");
    fs.mkdirSync(w);
    const recipient = spawnSync(which("age-keygen") ?? "age-keygen", [
      "-y",
      path.join(env.HOME!, ".config", "nixseal", "identity.txt"),
    ])
      .stdout.toString()
      .trim();
    assert.match(recipient, /^age1/);
    fs.writeFileSync(
      path.join(w, ".sops.yaml"),
      `creation_rules:\n  - path_regex: \\.yaml$\n    age: ${recipient}\n`,
    );
    const smtp = randomBytes(15).toString("hex");
    fs.writeFileSync(path.join(dir, "plain.yaml"), `smtp:\n  user: mailer\n  password: ${smtp}\nport: 25\n`);
    let r = sh(["encrypt", "hosts.yaml", "--in", path.join(dir, "plain.yaml")], { cwd: w });
    assert.equal(r.status, 0, r.err);
    const target = path.join(dir, "mail.json");
    fs.writeFileSync(target, JSON.stringify({ relay: { user: "mailer", pass: smtp } }));
    r = sh(["audit", target, "--json"], { cwd: w });
    assert.equal(r.status, 1, r.err);
    const report = JSON.parse(r.out);
    assert.deepEqual(
      (report.leaks as JsonLeak[]).map((l) => [l.secret, l.offset]),
      [
        [
          'hosts.yaml:["smtp"]["password"]',
          JSON.stringify({ relay: { user: "mailer", pass: "" } }).length - 3,
        ],
      ],
    );
    assert.deepEqual(
      (report.secrets.skipped as { secret: string }[]).map((s) => s.secret),
      ['hosts.yaml:["smtp"]["user"]', 'hosts.yaml:["port"]'],
    );
  });

  test("bad input: a path that does not exist, a non-store --closure, nothing to scan: exit 2", () => {
    const missingPath = path.join(dir, "does-not-exist");
    let r = sh(["audit", missingPath]);
    assert.equal(r.status, 2);
    assert.match(r.err, new RegExp(`error: cannot scan ${missingPath}: no such file`));
    assert.match(r.err, /hint: check the path/);
    r = sh(["audit", "--closure", dir]);
    assert.equal(r.status, 2);
    assert.match(r.err, /error: nix-store could not list the closure of .*not in the Nix store/);
    assert.match(r.err, /hint: /);
    r = sh(["audit"]);
    assert.equal(r.status, 2);
    assert.match(r.err, /nothing to scan/);
    r = sh(["audit", dir, "--min-length", "zero"]);
    assert.equal(r.status, 2);
    assert.match(r.err, /--min-length needs a positive whole number/);
  });

  test("bad input: no identity that decrypts anything is an error, not a silent pass", () => {
    const empty = path.join(dir, "empty-home");
    fs.mkdirSync(empty, { recursive: true });
    const other = path.join(dir, "other-key.txt");
    assert.equal(run(which("age-keygen") ?? "age-keygen", ["-o", other]).status, 0);
    let r = sh(["audit", leakOut, "-i", other], { env: { HOME: empty } });
    assert.equal(r.status, 2, r.err);
    assert.match(r.err, /not checked: db-password\.age \(secrets\/db-password\.age\)/);
    assert.match(r.err, /error: no identity could decrypt any secret: nothing to compare against/);
    assert.match(r.err, /hint: pass an identity/);
    assert.equal(r.out, "");
    r = sh(["audit", leakOut], { env: { HOME: empty } });
    assert.equal(r.status, 2, r.err);
    assert.match(r.err, /error: no identity found/);
  });

  test("bad input: an unreadable file (scanned as an unprivileged user) exits 2; a leak elsewhere wins with 1", {
    skip: !SETPRIV || process.getuid?.() !== 0 ? "needs setpriv and root (to drop to another user)" : false,
  }, () => {
    // A copy of the runtime stands in when the checkout is not reachable (under a 0700 /root).
    const { node, cli } = runtimeForOtherUsers();
    const tree = path.join(dir, "unreadable");
    fs.mkdirSync(tree);
    fs.writeFileSync(path.join(tree, "locked"), "anything", { mode: 0o000 });
    fs.writeFileSync(path.join(tree, "open"), "nothing secret");
    // The unprivileged user reads the repository, a copy of the key and its own cache.
    const key = path.join(dir, "key-copy.txt");
    fs.copyFileSync(path.join(env.HOME!, ".config", "nixseal", "identity.txt"), key);
    fs.chmodSync(key, 0o644);
    spawnSync("chmod", ["-R", "a+rX", repo]);
    const cache = path.join(dir, "nobody-cache");
    fs.mkdirSync(cache);
    fs.chownSync(cache, 65534, 65534);
    const asNobody = (paths: string[]) => {
      const r = run(
        SETPRIV!,
        ["--reuid=65534", "--regid=65534", "--clear-groups", node, cli, "audit", "-i", key, ...paths],
        { cwd: repo, env: { ...env, HOME: cache, XDG_CACHE_HOME: cache } },
      );
      return { status: r.status, out: r.stdout.toString(), err: r.stderr };
    };
    let r = asNobody([tree]);
    assert.equal(r.status, 2, r.err);
    assert.match(r.err, new RegExp(`error: cannot read ${tree}/locked: permission denied`));
    assert.match(r.err, /hint: check the file's owner and mode/);
    assert.match(r.err, /no leak in what could be read \(1 problem above\)/);
    fs.writeFileSync(path.join(tree, "leak"), `k=${apiToken}`);
    r = asNobody([tree]);
    assert.equal(r.status, 1, r.err);
    assert.match(r.out, /leak: secret "api-token\.age" in .*\/leak at byte 2 \(raw/);
    assert.match(r.err, /cannot read .*locked: permission denied/);
  });
});

/**
 * `nixseal build-hook` exit codes: --sweep, which a timer runs, fails visibly (exit 1) when the
 * policy is missing or invalid; the pre- and post-build hooks themselves never fail (a failing
 * hook would stop Nix's builds). And --check, the doctor a new user runs, with --fetcher-path.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { nixseal, REPO, tempDir, which } from "../helpers.js";

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir("nixseal-hook-"));
});
after(() => cleanup());

test("--sweep without a usable policy exits 1 with the error, so a timer shows the failure", () => {
  const missing = path.join(dir, "missing.json");
  const r = nixseal(["build-hook", "--sweep", "--policy", missing]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /nixseal build-hook: error: cannot read the build-secrets policy .*missing\.json/);
  assert.match(r.stderr, /nixseal build-hook: hint: /);

  const invalid = path.join(dir, "invalid.json");
  fs.writeFileSync(invalid, "{ not json", { mode: 0o644 });
  const bad = nixseal(["build-hook", "--sweep", "--policy", invalid]);
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /invalid\.json/);
});

test("the hooks never fail: --post and the pre-build hook exit 0 even without a policy", () => {
  const policy = path.join(dir, "none.json");
  const post = nixseal(["build-hook", "--post", "--policy", policy], {
    env: { DRV_PATH: "/nix/store/00000000000000000000000000000000-x.drv" },
  });
  assert.equal(post.status, 0, post.stderr);
  const pre = nixseal(["build-hook", "--policy", policy, path.join(dir, "missing.drv")]);
  assert.equal(pre.status, 0, pre.stderr);
  assert.equal(pre.stdout.length, 0, "nothing for Nix to read");
});

const CAN_CHECK =
  process.getuid?.() !== 0
    ? "needs root (the policy and hooks must be root's)"
    : which("nix") === null || which("nix-store") === null
      ? "needs nix and nix-store"
      : !fs.existsSync("/dev/shm") || fs.statfsSync("/dev/shm").type !== 0x01021994
        ? "needs /dev/shm on tmpfs"
        : false;

test("--check: a complete set-up passes; each way to get it wrong is reported in one run, with a hint", {
  skip: CAN_CHECK,
}, () => {
  const shm = fs.mkdtempSync("/dev/shm/nixseal-check-");
  try {
    const conf = path.join(dir, "check-conf");
    fs.mkdirSync(conf);
    const policyFile = path.join(dir, "check-policy.json");
    const agents = path.join(shm, "agents");
    fs.mkdirSync(agents);
    fs.chmodSync(agents, 0o1733);
    fs.writeFileSync(path.join(dir, "host.txt"), "not read by --check\n", { mode: 0o600 });
    fs.writeFileSync(path.join(dir, "token.age"), "not read either\n");
    const doc = {
      version: 1,
      runtimeDir: path.join(shm, "build"),
      agentDir: agents,
      identities: [{ type: "age", path: path.join(dir, "host.txt") }],
      interpreters: [process.execPath],
      secrets: {
        token: {
          file: path.join(dir, "token.age"),
          allowedUrlPrefixes: ["https://mods.example.com/api/"],
          prompt: true,
          fetcherStorePaths: ["/nix/store/00000000000000000000000000000000-nixseal-fetcher.mjs"],
        },
      },
    };
    fs.writeFileSync(policyFile, JSON.stringify(doc), { mode: 0o644 });
    // --fetcher-path --update pins this nixseal's fetcher, replacing the stale one.
    const pinned = nixseal(["build-hook", "--fetcher-path", "--update", "--policy", policyFile]);
    assert.equal(pinned.status, 0, pinned.stderr);
    const storePath = pinned.stdout.toString().trim();
    assert.match(storePath, /^\/nix\/store\/[0-9a-z]{32}-nixseal-fetcher\.mjs$/);
    assert.deepEqual(
      fs.readFileSync(storePath),
      fs.readFileSync(path.join(REPO, "dist", "src", "build-secrets", "fetcher.js")),
    );
    const updated = JSON.parse(fs.readFileSync(policyFile, "utf8"));
    assert.deepEqual(updated.secrets.token.fetcherStorePaths, [storePath]);
    assert.equal(fs.statSync(policyFile).mode & 0o777, 0o644);
    for (const kind of ["pre", "post"]) {
      const w = nixseal(["build-hook", "--wrapper", kind, "--policy", policyFile]);
      fs.writeFileSync(path.join(dir, `${kind}-hook`), w.stdout, { mode: 0o755 });
    }
    const nixConf = (lines: string[]) =>
      fs.writeFileSync(path.join(conf, "nix.conf"), `${lines.join("\n")}\n`);
    const good = [
      "sandbox = true",
      `pre-build-hook = ${path.join(dir, "pre-hook")}`,
      `post-build-hook = ${path.join(dir, "post-hook")}`,
    ];
    nixConf(good);
    const env = { NIX_CONF_DIR: conf };
    const ok = nixseal(["build-hook", "--check", "--policy", policyFile], { env });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stderr, /the build-secrets set-up is complete/);
    assert.match(ok.stdout.toString(), /ok: sandbox = true/);

    // Everything wrong at once: a stale fetcher, sandbox off, no post hook, a pre hook that is
    // not nixseal's, an agent directory anyone may replace entries in, an interpreter in a
    // directory anyone may write to.
    doc.secrets.token.fetcherStorePaths = [path.join(dir, "fetcher.mjs")];
    const open = path.join(dir, "open-bin");
    fs.mkdirSync(open, { mode: 0o755 });
    fs.chmodSync(open, 0o777);
    fs.copyFileSync("/bin/true", path.join(open, "node"));
    doc.interpreters = [process.execPath, path.join(open, "node")];
    fs.writeFileSync(path.join(dir, "fetcher.mjs"), "an older fetcher\n");
    fs.writeFileSync(policyFile, JSON.stringify({ ...doc, storeDir: dir }), { mode: 0o644 });
    fs.writeFileSync(path.join(dir, "other-hook"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    nixConf(["sandbox = false", `pre-build-hook = ${path.join(dir, "other-hook")}`]);
    fs.chmodSync(agents, 0o777);
    const bad = nixseal(["build-hook", "--check", "--json", "--policy", policyFile], { env });
    assert.equal(bad.status, 1, bad.stderr);
    const report = JSON.parse(bad.stdout.toString()) as {
      ok: boolean;
      problems: { message: string; hint: string }[];
    };
    assert.equal(report.ok, false);
    const messages = report.problems.map((p) => p.message).join("\n");
    for (const re of [
      /its fetcher .*fetcher\.mjs is not the fetcher this nixseal ships/,
      /the sandbox is off/,
      /post-build-hook is not set/,
      /pre-build-hook .*other-hook is not a nixseal pre-build-hook wrapper/,
      /agentDir .* is not a root-owned directory with mode 1733/,
      /interpreter .*open-bin\/node can be replaced by others than root \(.*open-bin is not root's alone\)/,
    ]) {
      assert.match(messages, re);
    }
    assert.ok(
      report.problems.every((p) => p.hint.length > 0),
      "every problem has a hint",
    );
    assert.match(
      report.problems.find((p) => /fetcher this nixseal ships/.test(p.message))!.hint,
      /nixseal build-hook --fetcher-path --update/,
    );

    // A runtimeDir on a disk-backed file system.
    const disk = fs.statfsSync(dir).type !== 0x01021994 ? dir : "/var/tmp";
    nixConf(good);
    fs.chmodSync(agents, 0o1733);
    fs.writeFileSync(
      policyFile,
      JSON.stringify({ ...doc, runtimeDir: path.join(disk, "nixseal-build"), storeDir: dir }),
      { mode: 0o644 },
    );
    const onDisk = nixseal(["build-hook", "--check", "--policy", policyFile], { env });
    assert.equal(onDisk.status, 1);
    assert.match(onDisk.stderr, /problem: runtimeDir .*nixseal-build is not on a RAM-backed file system/);
  } finally {
    fs.rmSync(shm, { recursive: true, force: true });
  }
});

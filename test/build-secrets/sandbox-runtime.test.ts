/**
 * The sandbox runtime of the build-secret tests (./sandbox-runtime.ts) and the check that keeps
 * host system directories out of every nix.conf they write. That the runtime runs Node, git and
 * /bin/sh inside a real sandbox is shown by daemon.test.ts, agent-daemon.test.ts, fetchgit.test.ts
 * and docs-setup.test.ts, which build with it.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { REPO, tempDir } from "../helpers.js";
import {
  assertStoreOnlySandboxPaths,
  SANDBOX_RUNTIME_SKIP,
  sandboxRuntime,
  writeNixConf,
} from "./sandbox-runtime.js";

const STORE = "/nix/store/p3zhadv5702362vp28ns1c2n6cd7w985-rt";

test("a nix.conf that binds a host system directory into the sandbox is refused, entry by entry", () => {
  for (const line of [
    // What the tests, the bench and the docs used to write.
    "sandbox-paths = /bin/sh=/usr/bin/dash /lib=/usr/lib /lib64=/usr/lib64 /usr/bin/node",
    "extra-sandbox-paths = /nix/store/x-node/bin/node /lib=/usr/lib /lib64=/usr/lib64",
    "sandbox-paths = /bin",
    "sandbox-paths = /etc/ssl=/etc/ssl",
    "sandbox-paths = /sbin/x?",
    "  extra-sandbox-paths   =   /x=/lib64/ld-linux-x86-64.so.2",
    // Not a store path once normalised.
    `sandbox-paths = /lib=${STORE}/../../../usr/lib`,
    "sandbox-paths = /data=/srv/data",
  ]) {
    assert.throws(
      () => assertStoreOnlySandboxPaths(`sandbox = true\n${line}\n`, "nix.conf"),
      (e: Error) => /nix\.conf binds host paths into the sandbox: \S/.test(e.message),
      line,
    );
  }
  // Every offending entry is named, not only the first.
  assert.throws(
    () => assertStoreOnlySandboxPaths(`sandbox-paths = /lib=/usr/lib /x=${STORE}/x /etc\n`, "c"),
    (e: Error) => e.message.includes("/lib=/usr/lib /etc") && !e.message.includes(`/x=${STORE}`),
  );
});

test("store paths as sources pass, whatever the targets", () => {
  assertStoreOnlySandboxPaths(
    [
      "sandbox = true",
      `sandbox-paths = /lib=${STORE}/lib /lib64=${STORE}/lib64 /bin/sh=${STORE}/bin/sh`,
      `extra-sandbox-paths = ${STORE}/bin/node /opt/x=${STORE}/x?`,
      "pre-build-hook = /usr/local/libexec/nixseal-pre-build-hook",
      "",
    ].join("\n"),
    "nix.conf",
  );
  const { dir, cleanup } = tempDir();
  try {
    assert.throws(() => writeNixConf(path.join(dir, "nix.conf"), ["sandbox-paths = /lib=/usr/lib"]));
    assert.ok(!fs.existsSync(path.join(dir, "nix.conf")), "a refused nix.conf is not written");
    writeNixConf(path.join(dir, "nix.conf"), ["sandbox = true", `sandbox-paths = /lib=${STORE}/lib`]);
    assert.equal(
      fs.readFileSync(path.join(dir, "nix.conf"), "utf8"),
      `sandbox = true\nsandbox-paths = /lib=${STORE}/lib\n`,
    );
  } finally {
    cleanup();
  }
});

test("the runtime is one valid store path holding node, git, sh and the loader; sandbox paths name only it", {
  skip: SANDBOX_RUNTIME_SKIP,
}, () => {
  const rt = sandboxRuntime();
  assert.match(rt.storePath, /^\/nix\/store\/[0-9a-z]{32}-nixseal-test-sandbox-runtime-[0-9a-f]{32}$/);
  assert.equal(spawnSync("nix-store", ["--check-validity", rt.storePath]).status, 0);
  for (const p of [rt.node, rt.git, rt.sh, `${rt.storePath}/libexec/git-core/git-remote-http`]) {
    assert.ok(p.startsWith(`${rt.storePath}/`), p);
    fs.accessSync(p, fs.constants.X_OK);
  }
  // The loader where the programs' PT_INTERP names it, as a file (not a link out of the store).
  const interp = spawnSync("ldd", [rt.node], { encoding: "utf8" }).stdout.match(/^\s*(\/lib\S*) \(/m)?.[1];
  assert.ok(interp, "ldd names the loader");
  assert.ok(fs.lstatSync(path.join(rt.storePath, interp)).isFile());
  for (const entry of rt.sandboxPaths.split(" ")) {
    const [target, source] = entry.split("=");
    assert.ok(source?.startsWith(`${rt.storePath}/`), entry);
    assert.equal(source, `${rt.storePath}${target}`, "each target is bound to the same place in the runtime");
  }
  assert.ok(rt.sandboxPaths.split(" ").includes(`/bin/sh=${rt.sh}`));
  assertStoreOnlySandboxPaths(`sandbox-paths = ${rt.sandboxPaths}\n`, "the runtime's sandbox paths");
  // The runtime's programs run (here outside a sandbox; the daemon tests run them inside one).
  assert.match(spawnSync(rt.node, ["--version"], { encoding: "utf8" }).stdout, /^v\d+\./);
  assert.match(spawnSync(rt.git, ["--version"], { encoding: "utf8" }).stdout, /^git version /);
  assert.equal(spawnSync(rt.sh, ["-c", "echo ok"], { encoding: "utf8" }).stdout, "ok\n");
});

test("no test or benchmark source writes a sandbox path with a host source, even past writeNixConf", () => {
  // Every `sandbox-paths =` line in the sources, with interpolations read as store paths. This
  // file (whose refusal cases are such lines on purpose) is the one exception.
  const sources: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (
        e.name.endsWith(".ts") &&
        p !== path.join(REPO, "test", "build-secrets", "sandbox-runtime.test.ts")
      )
        sources.push(p);
    }
  };
  walk(path.join(REPO, "test"));
  walk(path.join(REPO, "bench"));
  assert.ok(
    sources.includes(path.join(REPO, "test", "build-secrets", "hook-daemon.ts")),
    "the sources are read",
  );
  let lines = 0;
  for (const file of sources) {
    for (const m of fs.readFileSync(file, "utf8").matchAll(/(?:extra-)?sandbox-paths\s*=[^`"\n]*/g)) {
      lines++;
      assertStoreOnlySandboxPaths(m[0].replace(/\$\{[^}]*\}/g, `${STORE}/x`), path.relative(REPO, file));
    }
  }
  // hook-daemon.ts (the daemon tests' nix.conf), fetchgit, docs-setup and the build-hook bench.
  assert.ok(lines >= 4, "the daemon tests and the bench write sandbox paths");
});

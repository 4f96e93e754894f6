/**
 * docs/build-secrets.md's step-by-step set-up of a host without NixOS, run as written: the code
 * blocks marked `<!-- setup-step -->` are taken from the document and run in order with sh -e,
 * with only the paths of its first ("settings") block pointed into a temporary directory. The
 * "restart" step is replaced by starting our own nix-daemon on that nix.conf. It must end with
 * `nixseal build-hook --check` clean and a sandboxed build that downloads with the secret.
 *
 * The document's Node comes from nixpkgs (`nix-build '<nixpkgs>' -A nodejs`), which this machine
 * may not have (no channel, no network). So NODE (one of the settings the document lets the reader
 * override) is the node of the test sandbox runtime in the store (./sandbox-runtime.ts). Unlike
 * nixpkgs' Node, that one is the host's program and needs its loader and libraries at /lib64 and
 * /lib inside the sandbox: the test adds those store-only sandbox paths itself, in the nix.conf
 * the host has before the document's steps (a nixpkgs Node needs none). After the steps, the
 * nix.conf must still bind no host system directory into the sandbox.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { after, test } from "node:test";
import { CLI, REPO, which } from "../helpers.js";
import {
  assertStoreOnlySandboxPaths,
  SANDBOX_RUNTIME_SKIP,
  sandboxRuntime,
  writeNixConf,
} from "./sandbox-runtime.js";

const TOOLS = ["nix-daemon", "nix-build", "nix-store", "nix", "grep", "readlink"];
const missing = TOOLS.filter((t) => which(t) === null);
const SKIP =
  missing.length > 0
    ? `needs ${missing.join(", ")}`
    : process.getuid?.() !== 0
      ? "needs root (its own nix-daemon)"
      : !fs.existsSync("/dev/shm") || fs.statfsSync("/dev/shm").type !== 0x01021994
        ? "needs /dev/shm on tmpfs"
        : SANDBOX_RUNTIME_SKIP;

interface Step {
  kind: string;
  script: string;
}

/** The marked steps of the document, in order. */
function docSteps(): Step[] {
  const text = fs.readFileSync(path.join(REPO, "docs", "build-secrets.md"), "utf8");
  const steps: Step[] = [];
  for (const m of text.matchAll(/<!-- setup-step(?:: (\w+))? -->\n```sh\n([\s\S]*?)```\n/g)) {
    steps.push({ kind: m[1] ?? "", script: m[2]! });
  }
  return steps;
}

const RUN = randomBytes(4).toString("hex");
const TOKEN = `nxs-doc-token-${randomBytes(16).toString("hex")}`;
const CONTENT = Buffer.from(`documented mod ${RUN}\n`);
let work = "";
let shm = "";
let daemon: ReturnType<typeof spawn> | null = null;
let server: http.Server | null = null;

function killDaemon(): void {
  if (daemon?.pid !== undefined && daemon.exitCode === null) {
    try {
      process.kill(-daemon.pid, "SIGTERM");
    } catch {}
  }
}
process.on("exit", killDaemon);
after(() => {
  killDaemon();
  server?.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
  if (shm) fs.rmSync(shm, { recursive: true, force: true });
});

function runSh(
  script: string,
  env: Record<string, string>,
  input: string,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn("/bin/sh", ["-e", "-c", script], { cwd: work, env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.stdin.end(input);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

test("the document marks the whole set-up: settings, the steps, a restart, the check and a build", () => {
  const steps = docSteps();
  assert.equal(steps[0]?.kind, "settings");
  assert.equal(steps.filter((s) => s.kind === "restart").length, 1);
  const all = steps.map((s) => s.script).join("\n");
  for (const re of [
    /--wrapper pre/,
    /--wrapper post/,
    /--fetcher-path/,
    /sandbox = true/,
    /--check/,
    /nix-build/,
  ]) {
    assert.match(all, re);
  }
  // No nix.conf line of the document binds a host system directory into the sandbox.
  assertStoreOnlySandboxPaths(
    fs.readFileSync(path.join(REPO, "docs", "build-secrets.md"), "utf8"),
    "docs/build-secrets.md",
  );
});

test("a fresh host set up from docs/build-secrets.md alone passes --check and builds with the secret", {
  skip: SKIP,
}, async () => {
  work = fs.mkdtempSync("/tmp/nixseal-docsetup-");
  fs.chmodSync(work, 0o755);
  shm = fs.mkdtempSync("/dev/shm/nixseal-docsetup-");
  const requests: (string | undefined)[] = [];
  server = http.createServer((req, res) => {
    requests.push(req.headers.authorization);
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(req.url === `/api/mod-${RUN}.zip` ? 200 : 404).end(CONTENT);
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;

  // `nixseal` on PATH, as an installed one is.
  const bin = path.join(work, "bin");
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, "nixseal"), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`, {
    mode: 0o755,
  });
  const conf = path.join(work, "conf");
  fs.mkdirSync(conf);
  // What a fresh multi-user install has; the document adds the rest. Not from the document: the
  // store-only sandbox paths the runtime's (host-built) node needs, see the top of this file.
  const rt = sandboxRuntime();
  writeNixConf(path.join(conf, "nix.conf"), [
    "build-users-group = nixbld",
    "substituters =",
    "trusted-users = root",
    `extra-sandbox-paths = ${rt.sandboxPaths}`,
  ]);
  const socket = path.join(work, "daemon.sock");
  const env: Record<string, string> = {
    PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
    HOME: work,
    POLICY: path.join(work, "etc", "nixseal", "build-secrets.json"),
    HOOK_DIR: path.join(work, "libexec"),
    NIX_CONF: path.join(conf, "nix.conf"),
    STATE_DIR: path.join(work, "state"),
    RUNTIME_DIR: path.join(shm, "build"),
    NIXSEAL_LIB: path.join(REPO, "nix", "lib"),
    NODE: rt.node,
    MODS_PREFIX: `http://127.0.0.1:${port}/api/`,
    MOD_URL: `http://127.0.0.1:${port}/api/mod-${RUN}.zip`,
    MOD_HASH: `sha256-${createHash("sha256").update(CONTENT).digest("base64")}`,
    NIX_CONF_DIR: conf,
    NIX_REMOTE: `unix://${socket}`,
  };

  const steps = docSteps();
  const restart = steps.findIndex((s) => s.kind === "restart");
  const settings = steps[0]!.script;
  const before = [settings, ...steps.slice(1, restart).map((s) => s.script)].join("\n");
  // Before our daemon runs, root uses the store directly (a real host's daemon is already up).
  const { NIX_REMOTE: _, ...withoutDaemon } = env;
  const first = await runSh(before, withoutDaemon, `${TOKEN}\n`);
  assert.equal(first.status, 0, `steps before the restart failed:\n${first.stderr}`);
  assertStoreOnlySandboxPaths(
    fs.readFileSync(path.join(conf, "nix.conf"), "utf8"),
    "the documented nix.conf",
  );

  // "Restart nix-daemon": ours, on the nix.conf the steps wrote.
  const log = fs.openSync(path.join(work, "daemon.log"), "a");
  daemon = spawn("nix-daemon", ["--daemon"], {
    detached: true,
    stdio: ["ignore", log, log],
    env: { ...process.env, NIX_CONF_DIR: conf, NIX_DAEMON_SOCKET_PATH: socket },
  });
  fs.closeSync(log);
  for (let i = 0; i < 200 && !fs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
  const daemonLog = () => fs.readFileSync(path.join(work, "daemon.log"), "utf8");
  assert.ok(fs.existsSync(socket), `nix-daemon did not start: ${daemonLog()}`);

  const afterSteps = [settings, ...steps.slice(restart + 1).map((s) => s.script)].join("\n");
  const second = await runSh(afterSteps, env, "");
  assert.equal(
    second.status,
    0,
    `steps after the restart failed:\n${second.stderr}\n--- daemon:\n${daemonLog()}`,
  );
  assert.match(second.stderr, /the build-secrets set-up is complete/);
  const out = second.stdout.trim().split("\n").pop()!;
  assert.match(out, /^\/nix\/store\/[0-9a-z]{32}-mod-\w+\.zip$/);
  assert.deepEqual(fs.readFileSync(out), CONTENT);
  assert.ok(requests.includes(`Bearer ${TOKEN}`), "the server got the token");
  assert.match(daemonLog(), /gave secret "mods-token"/);

  const found = spawnSync(
    "grep",
    [
      "-rlF",
      "--binary-files=text",
      "--no-messages",
      TOKEN,
      "/nix/store",
      "/nix/var/log/nix",
      "/nix/var/nix/db",
      "/tmp",
      shm,
    ],
    { encoding: "utf8" },
  );
  assert.equal(found.stdout, "", `the token was found in: ${found.stdout}`);
  assert.ok(!daemonLog().includes(TOKEN) && !second.stderr.includes(TOKEN) && !first.stderr.includes(TOKEN));
});

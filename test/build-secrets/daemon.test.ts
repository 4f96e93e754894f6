/**
 * Build-time secrets end to end with the real Nix: our own nix-daemon (sandbox = true, build
 * users, the pre/post-build hook wrappers), builds by non-root users through the daemon, a local
 * HTTP server that serves a file only with the right token, and the attacks the hook must refuse.
 *
 * One daemon for the whole file, on a private socket (NIX_DAEMON_SOCKET_PATH) so it does not
 * collide with anything else on the machine; it is killed on every exit path. The fetcher's
 * interpreter and /bin/sh come from the sandbox runtime in the store (./sandbox-runtime.ts): the
 * sandbox paths bind store paths only, never a host system directory (Nix 2.8 writes into the
 * chroot, and through a bind mount of a host directory into the host).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { encrypt } from "../../src/age/index.js";
import { parseRecipientString } from "../../src/keys/index.js";
import { generateIdentity } from "../../src/keys/key-types.js";
import { runtimeForOtherUsers, which } from "../helpers.js";
import {
  assertTokenNowhere as assertTokenNowhereShared,
  fetcherInStore,
  startHookDaemon,
  writeHookWrappers,
} from "./hook-daemon.js";
import { SANDBOX_RUNTIME_SKIP, type SandboxRuntime, sandboxRuntime } from "./sandbox-runtime.js";

const HAVE_SCRIPT = which("script") !== null;

const TOOLS = ["nix-daemon", "nix-build", "nix-instantiate", "useradd", "userdel", "runuser", "grep"];
const missing = TOOLS.filter((t) => which(t) === null);
const isRoot = process.getuid?.() === 0;
const shmOk = fs.existsSync("/dev/shm") && fs.statfsSync("/dev/shm").type === 0x01021994;
const SKIP =
  missing.length > 0
    ? `needs ${missing.join(", ")}`
    : !isRoot
      ? "needs root (its own nix-daemon and build users)"
      : !shmOk
        ? "needs /dev/shm on tmpfs"
        : SANDBOX_RUNTIME_SKIP;

const RUN = randomBytes(4).toString("hex");
const TOKEN = `nxs-token-${randomBytes(16).toString("hex")}`;
const USER_A = `nxsbsa${RUN}`;
const USER_B = `nxsbsb${RUN}`;
const CONTENT = Buffer.from(`mod archive ${RUN}\n`);
const SRI = `sha256-${createHash("sha256").update(CONTENT).digest("base64")}`;

let work = "";
let runtimeDir = "";
let socket = "";
let daemon: ReturnType<typeof spawn> | null = null;
let server: http.Server | null = null;
let port = 0;
let fetcherStorePath = "";
let rt: SandboxRuntime;
const requests: { url: string; authorization: string | undefined }[] = [];
const usersMade: string[] = [];

function killDaemon(): void {
  if (daemon?.pid !== undefined && daemon.exitCode === null) {
    try {
      process.kill(-daemon.pid, "SIGTERM");
    } catch {}
  }
}
process.on("exit", killDaemon);

function sh(cmd: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env } });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Runs a command without blocking the event loop (the HTTP server lives in this process). */
function runAsync(
  cmd: string,
  args: string[],
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

function clientEnv(home: string): string[] {
  return [
    `HOME=${home}`,
    "PATH=/usr/bin:/bin",
    `NIX_REMOTE=unix://${socket}`,
    `NIX_CONF_DIR=${path.join(work, "conf")}`,
  ];
}

function buildAs(user: string, attr: string, extra: string[] = []) {
  const home = path.join(work, `home-${user}`);
  return runAsync("runuser", [
    "-u",
    user,
    "--",
    "env",
    "-i",
    ...clientEnv(home),
    "nix-build",
    path.join(work, "builds.nix"),
    "-A",
    attr,
    "--no-out-link",
    ...extra,
  ]);
}

function daemonLog(): string {
  return fs.readFileSync(path.join(work, "daemon.log"), "utf8");
}

function secretFilesLeft(): string[] {
  const out: string[] = [];
  for (const d of fs.existsSync(runtimeDir) ? fs.readdirSync(runtimeDir) : []) {
    for (const f of fs.readdirSync(path.join(runtimeDir, d))) if (f === "secret") out.push(path.join(d, f));
  }
  return out;
}

function policy(): object {
  return {
    version: 1,
    runtimeDir,
    agentDir: path.join(work, "agents"),
    agentTimeoutSeconds: 5,
    identities: [{ type: "age", path: path.join(work, "host-key.txt") }],
    interpreters: [rt.node],
    secrets: {
      "mods-token": {
        file: path.join(work, "mods-token.age"),
        allowedUrlPrefixes: [`http://127.0.0.1:${port}/files/`],
        allowedUsers: [USER_A],
        fetcherStorePaths: [fetcherStorePath],
      },
      "approval-token": {
        file: path.join(work, "mods-token.age"),
        allowedUrlPrefixes: [`http://127.0.0.1:${port}/files/`],
        prompt: true,
        fetcherStorePaths: [fetcherStorePath],
      },
    },
  };
}

function buildsNix(): string {
  const url = (p: string) => `http://127.0.0.1:${port}/${p}`;
  return `
let
  fetcher = builtins.path { path = ./nixseal-fetcher.js; name = "nixseal-fetcher.mjs"; };
  # builtins.storePath: the runtime is an input of the build, so it is in the sandbox.
  node = builtins.storePath "${rt.node}";
  lib = import ./lib { inherit fetcher; interpreter = node; };
  hash = "${SRI}";
in {
  good = lib.fetchurl { url = "${url(`files/mod-${RUN}.zip`)}"; inherit hash; secret = "mods-token"; name = "nxs-good-${RUN}"; };
  goodByB = lib.fetchurl { url = "${url(`files/mod-${RUN}.zip`)}"; inherit hash; secret = "mods-token"; name = "nxs-by-b-${RUN}"; };
  outsidePrefix = lib.fetchurl { url = "${url(`other/mod-${RUN}.zip`)}"; inherit hash; secret = "mods-token"; name = "nxs-outside-${RUN}"; };
  dotDot = lib.fetchurl { url = "${url(`files/%2e%2e/other/mod-${RUN}.zip`)}"; inherit hash; secret = "mods-token"; name = "nxs-dotdot-${RUN}"; };
  ownShell = derivation {
    name = "nxs-own-shell-${RUN}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "cat /run/nixseal-secret; cat /run/nixseal-secret > $out" ];
    nixsealSecret = "mods-token"; url = "${url(`files/mod-${RUN}.zip`)}";
    outputHash = hash; outputHashMode = "flat";
  };
  notFixed = derivation {
    name = "nxs-not-fixed-${RUN}"; system = builtins.currentSystem; builder = node;
    args = [ "\${fetcher}" ]; nixsealSecret = "mods-token"; url = "${url(`files/mod-${RUN}.zip`)}";
  };
  nodeOptions = derivation {
    name = "nxs-node-options-${RUN}"; system = builtins.currentSystem; builder = node;
    args = [ "\${fetcher}" ]; nixsealSecret = "mods-token"; url = "${url(`files/mod-${RUN}.zip`)}";
    NODE_OPTIONS = "--require /run/nixseal-secret"; outputHash = hash; outputHashMode = "flat";
  };
  needsApproval = lib.fetchurl { url = "${url(`files/mod-${RUN}.zip`)}"; inherit hash; secret = "approval-token"; name = "nxs-approval-${RUN}"; };
  declined = lib.fetchurl { url = "${url(`files/mod-${RUN}.zip`)}"; inherit hash; secret = "approval-token"; name = "nxs-declined-${RUN}"; };
  viaBuild = lib.fetchurl { url = "${url(`files/mod-${RUN}.zip`)}"; inherit hash; secret = "approval-token"; name = "nxs-via-build-${RUN}"; };
  sandboxOff = lib.fetchurl { url = "${url(`files/mod-${RUN}.zip`)}"; inherit hash; secret = "mods-token"; name = "nxs-sandbox-off-${RUN}"; };
}
`;
}

before(async () => {
  if (SKIP) return;
  rt = sandboxRuntime();
  work = fs.mkdtempSync("/tmp/nixseal-buildsec-");
  fs.chmodSync(work, 0o755);
  runtimeDir = path.join(fs.mkdtempSync("/dev/shm/nixseal-buildsec-"), "build");
  socket = path.join(work, "daemon.sock");
  fs.mkdirSync(path.join(work, "agents"), { mode: 0o1733 });
  fs.chmodSync(path.join(work, "agents"), 0o1733);

  // The local server: the file only with the right token; every request recorded.
  server = http.createServer((req, res) => {
    requests.push({ url: req.url ?? "", authorization: req.headers.authorization });
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401).end("unauthorized");
      return;
    }
    if (req.url === `/files/mod-${RUN}.zip` || req.url === `/other/mod-${RUN}.zip`) {
      res.writeHead(200, { "content-type": "application/zip" }).end(CONTENT);
      return;
    }
    res.writeHead(404).end("not found");
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;

  // Users, homes, the host key and the encrypted token.
  for (const u of [USER_A, USER_B]) {
    sh("useradd", ["-M", "-N", "-s", "/bin/sh", "-d", path.join(work, `home-${u}`), u]);
    usersMade.push(u);
    fs.mkdirSync(path.join(work, `home-${u}`), { mode: 0o700 });
    sh("chown", [u, path.join(work, `home-${u}`)]);
  }
  const host = await generateIdentity(false);
  fs.writeFileSync(path.join(work, "host-key.txt"), `${host.identity}\n`, { mode: 0o600 });
  const ciphertext = await encrypt(Buffer.from(`${TOKEN}\n`), [parseRecipientString(host.recipient, "test")]);
  fs.writeFileSync(path.join(work, "mods-token.age"), ciphertext, { mode: 0o600 });

  // The Nix side: the library and the fetcher, copied where the build users can read them.
  fetcherStorePath = fetcherInStore(work);
  fs.writeFileSync(path.join(work, "builds.nix"), buildsNix());
  fs.writeFileSync(path.join(work, "policy.json"), JSON.stringify(policy(), null, 2), { mode: 0o644 });

  // The hooks, through the wrappers `nixseal build-hook --wrapper` prints.
  writeHookWrappers(work, path.join(work, "policy.json"));
  daemon = await startHookDaemon(work, socket, rt.sandboxPaths);
});

after(() => {
  killDaemon();
  server?.close();
  for (const u of usersMade) {
    const r = spawnSync("userdel", [u], { encoding: "utf8" });
    if (r.status !== 0) process.stderr.write(`cleanup: userdel ${u} failed: ${r.stderr}\n`);
  }
  if (work) fs.rmSync(work, { recursive: true, force: true });
  if (runtimeDir) fs.rmSync(path.dirname(runtimeDir), { recursive: true, force: true });
});

/** The token in no file of the store, logs, db, /tmp or the runtime dir, and in none of `extraText`. */
function assertTokenNowhere(extraText: string[]): void {
  assertTokenNowhereShared(TOKEN, path.dirname(runtimeDir), extraText, daemonLog());
}

test("an allowed build gets the secret, downloads the file with the right hash, and leaves nothing behind", {
  skip: SKIP,
}, async () => {
  const r = await buildAs(USER_A, "good");
  assert.equal(r.status, 0, `build failed:\n${r.stderr}\n--- daemon log:\n${daemonLog()}`);
  const out = r.stdout.trim().split("\n").pop()!;
  assert.deepEqual(fs.readFileSync(out), CONTENT);
  // The same search the token must fail finds the downloaded content.
  const found = spawnSync(
    "grep",
    ["-rlF", "--binary-files=text", "--no-messages", CONTENT.toString().trim(), "/nix/store"],
    {
      encoding: "utf8",
    },
  );
  assert.ok(found.stdout.split("\n").includes(out), "grep finds what is in the store");
  assert.match(
    daemonLog(),
    new RegExp(
      `gave secret "mods-token" to /nix/store/\\w{32}-nxs-good-${RUN}\\.drv \\(daemon client pid \\d+`,
    ),
  );
  assert.deepEqual(
    requests
      .filter((q) => q.url === `/files/mod-${RUN}.zip`)
      .map((q) => q.authorization === `Bearer ${TOKEN}`),
    [true],
  );
  assert.deepEqual(secretFilesLeft(), [], "the post-build hook removes the build's secret");
  const nixLog = spawnSync("nix-store", ["--read-log", out], { encoding: "utf8" });
  assert.match(nixLog.stdout + nixLog.stderr, /nixseal-fetch: downloading/);
  assertTokenNowhere([r.stdout, r.stderr, nixLog.stdout]);
});

const ATTACKS: [string, string, string, RegExp][] = [
  ["a fixed-output derivation with its own shell builder", USER_A, "ownShell", /is not the trusted fetcher/],
  [
    "the trusted fetcher pointed outside the allowed prefixes",
    USER_A,
    "outsidePrefix",
    /is not under an allowed prefix/,
  ],
  ["a URL with an encoded '..'", USER_A, "dotDot", /has an encoded '\.'/],
  ["a derivation that is not fixed-output", USER_A, "notFixed", /is not fixed-output/],
  [
    "NODE_OPTIONS smuggled into the trusted fetcher",
    USER_A,
    "nodeOptions",
    /attributes the fetcher must not see: "NODE_OPTIONS"/,
  ],
  [
    "a second user's build when the policy names only the first",
    USER_B,
    "goodByB",
    /requested by uid \d+ \(daemon client pid \d+\), not by nxsbsa/,
  ],
  [
    "a build needing approval while no agent runs",
    USER_A,
    "needsApproval",
    /needs approval from a nixseal agent, but no agent of uid \d+ is running/,
  ],
];

for (const [what, user, attr, reason] of ATTACKS) {
  test(`refused: ${what}`, { skip: SKIP }, async () => {
    const seen = requests.length;
    const r = await buildAs(user, attr);
    assert.notEqual(r.status, 0, "the build must fail");
    const log = daemonLog();
    const drvRe = `/nix/store/\\w{32}-nxs-[a-z-]+-${RUN}\\.drv`;
    assert.match(log, new RegExp(`refused secret "[a-z-]+" to ${drvRe}: .*${reason.source}`));
    assert.doesNotMatch(log, new RegExp(`gave secret "[a-z-]+" to /nix/store/\\w{32}-${attr}`));
    if (!["ownShell", "notFixed", "nodeOptions"].includes(attr)) {
      // The fetcher ran and showed the user why (from the refusal the hook mounted).
      assert.match(r.stderr, new RegExp(`nixseal refused the build secret[^]*${reason.source}`));
      // The hint names the policy the hook was given (--policy), not the default path.
      assert.match(r.stderr, /nixseal-fetch: hint: see the build-secrets policy \/tmp\/\S+\/policy\.json/);
      assert.doesNotMatch(r.stderr, /\/etc\/nixseal/);
    }
    assert.deepEqual(secretFilesLeft(), [], "no secret was written for a refused build");
    assert.ok(
      requests.slice(seen).every((q) => q.authorization === undefined || !q.authorization.includes(TOKEN)),
      "the token was never sent",
    );
    assertTokenNowhere([r.stdout, r.stderr]);
  });
}

test("with the sandbox off the hook never runs and the fetcher says what to check", {
  skip: SKIP,
}, async () => {
  const r = await runAsync("env", [
    "-i",
    ...clientEnv(work),
    "nix-build",
    path.join(work, "builds.nix"),
    "-A",
    "sandboxOff",
    "--no-out-link",
    "--option",
    "sandbox",
    "false",
  ]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /the build secret "mods-token" was not provided to this build/);
  assert.match(r.stderr, /is the sandbox on \(sandbox = true\) and nixseal's pre-build-hook configured\?/);
  assertTokenNowhere([r.stdout, r.stderr]);
});

/** Runs `nixseal agent` (or another nixseal command) as a user inside a pseudo-terminal. */
function startAgent(user: string, command = `agent --agent-dir ${path.join(work, "agents")}`) {
  const child = spawn(
    "runuser",
    [
      "-u",
      user,
      "--",
      "env",
      "-i",
      `HOME=${path.join(work, `home-${user}`)}`,
      "PATH=/usr/bin:/bin",
      "TERM=dumb",
      `NIX_REMOTE=unix://${socket}`,
      `NIX_CONF_DIR=${path.join(work, "conf")}`,
      "script",
      "-qfec",
      `${runtimeForOtherUsers().node} ${runtimeForOtherUsers().cli} ${command}`,
      "/dev/null",
    ],
    { stdio: ["pipe", "pipe", "pipe"], detached: true },
  );
  let screen = "";
  child.stdout.on("data", (d) => {
    screen += d;
  });
  child.stderr.on("data", (d) => {
    screen += d;
  });
  const waitFor = async (re: RegExp, from = 0): Promise<string> => {
    for (let i = 0; i < 600; i++) {
      const m = re.exec(screen.slice(from));
      if (m) return m[0];
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the agent did not show ${re}; its screen:\n${screen}`);
  };
  return {
    child,
    waitFor,
    get screen() {
      return screen;
    },
    type: (text: string) => child.stdin.write(text),
    /** Stops the agent and waits for it: its user can only be removed once it has exited. */
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {}
      await exited;
    },
  };
}

test("prompt: the user's agent, in a pseudo-terminal, shows the request; yes gives the secret, no refuses", {
  skip: SKIP || (!HAVE_SCRIPT && "needs script (util-linux)"),
}, async () => {
  const agent = startAgent(USER_A);
  try {
    await agent.waitFor(/listening on \S+/);
    const approved = buildAs(USER_A, "needsApproval");
    const asked = await agent.waitFor(
      /asks for the secret "approval-token"\s+to send it to \S+\s+Approve\? \[y\/N\]/,
    );
    assert.match(asked, new RegExp(`to send it to http://127\\.0\\.0\\.1:${port}/files/mod-${RUN}\\.zip`));
    assert.match(agent.screen, new RegExp(`build /nix/store/\\w{32}-nxs-approval-${RUN}\\.drv asks`));
    agent.type("y\n");
    const r = await approved;
    assert.equal(r.status, 0, `${r.stderr}\n--- daemon log:\n${daemonLog()}`);
    assert.deepEqual(fs.readFileSync(r.stdout.trim().split("\n").pop()!), CONTENT);
    assert.match(daemonLog(), /gave secret "approval-token" to \/nix\/store\/\w{32}-nxs-approval-/);

    const mark = agent.screen.length;
    const declined = buildAs(USER_A, "declined");
    await agent.waitFor(
      /nxs-declined-\w+\.drv asks for the secret "approval-token"[\s\S]*Approve\? \[y\/N\]/,
      mark,
    );
    agent.type("n\n");
    const d = await declined;
    assert.notEqual(d.status, 0);
    assert.match(
      d.stderr,
      /needs approval from a nixseal agent, but the user declined \(declined at the terminal\)/,
    );
    assert.deepEqual(secretFilesLeft(), []);
    assertTokenNowhere([r.stdout, r.stderr, d.stderr, agent.screen]);
  } finally {
    await agent.stop();
  }
});

test("nixseal build runs nix build with an agent at the same terminal", {
  skip: SKIP || (!HAVE_SCRIPT && "needs script (util-linux)"),
}, async () => {
  const out = path.join(work, `home-${USER_A}`, "result");
  const build = startAgent(
    USER_A,
    `build --agent-dir ${path.join(work, "agents")} -- --extra-experimental-features nix-command -f ${path.join(work, "builds.nix")} viaBuild --out-link ${out}`,
  );
  try {
    await build.waitFor(
      /nxs-via-build-\w+\.drv asks for the secret "approval-token"[\s\S]*Approve\? \[y\/N\]/,
    );
    build.type("yes\n");
    const code = await new Promise((r) =>
      build.child.exitCode !== null ? r(build.child.exitCode) : build.child.once("exit", r),
    );
    assert.equal(code, 0, build.screen);
    assert.deepEqual(fs.readFileSync(out), CONTENT);
    assert.equal(
      fs.existsSync(path.join(work, "agents", String(Number(sh("id", ["-u", USER_A]))))),
      false,
      "the agent's socket is gone",
    );
    assertTokenNowhere([build.screen]);
  } finally {
    await build.stop();
  }
});

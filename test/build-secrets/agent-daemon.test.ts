/**
 * Build secrets the requesting user's `nixseal agent` supplies (source = "agent" and
 * "host-or-agent"), end to end with the real Nix: our own nix-daemon (sandbox, build users, the
 * hook wrappers), builds by real non-root users, agents in pseudo-terminals (script(1)), a local
 * HTTP server that serves a file only with the right token. The value is typed at the agent's
 * prompt, decrypted from the user's own age file, or printed by the user's command (real pass
 * and gpg); --remember answers a second build without asking; another user's agent cannot
 * answer; without an agent the build is refused at once. After each, the token is in no output,
 * .drv, log, the Nix database or /tmp.
 *
 * The set-up follows test/build-secrets/daemon.test.ts (one daemon on a private socket, killed on
 * every exit path; the sandbox runtime in the store, ./sandbox-runtime.ts, for Node and /bin/sh).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
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

const TOOLS = [
  "nix-daemon",
  "nix-build",
  "nix-instantiate",
  "useradd",
  "userdel",
  "runuser",
  "grep",
  "script",
  "pass",
  "gpg",
  "gpgconf",
];
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
const TOKEN = `nxs-agent-token-${randomBytes(16).toString("hex")}`;
const USER_A = `nxsaga${RUN}`;
const USER_B = `nxsagb${RUN}`;
const CONTENT = Buffer.from(`agent mod archive ${RUN}\n`);
const SRI = `sha256-${createHash("sha256").update(CONTENT).digest("base64")}`;
/** The hook waits this long for an agent; "refused at once" must be far quicker. */
const AGENT_TIMEOUT_S = 60;

let work = "";
let runtimeDir = "";
let agentDir = "";
let socket = "";
let daemon: ReturnType<typeof spawn> | null = null;
let server: http.Server | null = null;
let port = 0;
let fetcherStorePath = "";
let rt: SandboxRuntime;
const requests: { url: string; authorization: string | undefined }[] = [];
const usersMade: string[] = [];
const agents: { stop(): Promise<void> }[] = [];

function killDaemon(): void {
  if (daemon?.pid !== undefined && daemon.exitCode === null) {
    try {
      process.kill(-daemon.pid, "SIGTERM");
    } catch {}
  }
}
process.on("exit", killDaemon);

function sh(cmd: string, args: string[], input?: string | Buffer): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", input });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

function home(user: string): string {
  return path.join(work, `home-${user}`);
}

/** Runs a command as `user` with a clean environment (HOME, PATH, the test daemon). */
function asUser(user: string, argv: string[]): string[] {
  return [
    "-u",
    user,
    "--",
    "env",
    "-i",
    `HOME=${home(user)}`,
    "PATH=/usr/bin:/bin",
    `NIX_REMOTE=unix://${socket}`,
    `NIX_CONF_DIR=${path.join(work, "conf")}`,
    ...argv,
  ];
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

function buildAs(user: string, attrs: string[]) {
  return runAsync(
    "runuser",
    asUser(user, [
      "nix-build",
      path.join(work, "builds.nix"),
      ...attrs.flatMap((a) => ["-A", a]),
      "--no-out-link",
    ]),
  );
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

function uidOf(user: string): number {
  return Number(sh("id", ["-u", user]));
}

/** Runs `nixseal ARGS` as `user` inside a pseudo-terminal; the test reads its screen and types. */
function startAgent(user: string, args: string) {
  const { node, cli } = runtimeForOtherUsers();
  const child = spawn(
    "runuser",
    asUser(user, ["TERM=dumb", "script", "-qfec", `${node} ${cli} ${args}`, "/dev/null"]),
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
    for (let i = 0; i < 1200; i++) {
      const m = re.exec(screen.slice(from));
      if (m) return m[0];
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the agent did not show ${re}; its screen:\n${screen}`);
  };
  const agent = {
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
  agents.push(agent);
  return agent;
}

function policy(): object {
  const secret = (extra: object) => ({
    allowedUrlPrefixes: [`http://127.0.0.1:${port}/files/`],
    fetcherStorePaths: [fetcherStorePath],
    ...extra,
  });
  return {
    version: 1,
    runtimeDir,
    agentDir,
    agentTimeoutSeconds: AGENT_TIMEOUT_S,
    identities: [{ type: "age", path: path.join(work, "host-key.txt") }],
    interpreters: [rt.node],
    secrets: {
      "typed-token": secret({ source: "agent" }),
      "file-token": secret({ source: "agent", allowedUsers: [USER_A] }),
      "cmd-token": secret({ source: "agent" }),
      "dir-token": secret({ source: "agent" }),
      "confirm-token": secret({ source: "agent", prompt: true }),
      // The host's file is missing: the agent supplies it.
      "either-token": secret({ source: "host-or-agent", file: path.join(work, "absent.age") }),
    },
  };
}

function buildsNix(): string {
  const fetch = (attr: string, secret: string) =>
    `${attr} = lib.fetchurl { url = "http://127.0.0.1:${port}/files/mod-${RUN}.zip"; inherit hash; secret = "${secret}"; name = "nxs-${attr.toLowerCase()}-${RUN}"; };`;
  return `
let
  fetcher = builtins.path { path = ./nixseal-fetcher.js; name = "nixseal-fetcher.mjs"; };
  # builtins.storePath: the runtime is an input of the build, so it is in the sandbox.
  lib = import ./lib { inherit fetcher; interpreter = builtins.storePath "${rt.node}"; };
  hash = "${SRI}";
in {
  ${fetch("typed1", "typed-token")}
  ${fetch("typed2", "typed-token")}
  ${fetch("typed3", "typed-token")}
  ${fetch("typed4", "typed-token")}
  ${fetch("fromFile", "file-token")}
  ${fetch("fromFileByB", "file-token")}
  ${fetch("fromPass", "cmd-token")}
  ${fetch("fromDir", "dir-token")}
  ${fetch("ownA", "typed-token")}
  ${fetch("ownB", "typed-token")}
  ${fetch("confirmed", "confirm-token")}
  ${fetch("either", "either-token")}
  ${fetch("noAgent", "typed-token")}
  ${fetch("otherAgent", "typed-token")}
  ${fetch("squatted", "typed-token")}
  ${fetch("viaBuild", "typed-token")}
}
`;
}

before(async () => {
  if (SKIP) return;
  rt = sandboxRuntime();
  work = fs.mkdtempSync("/tmp/nixseal-buildagent-");
  fs.chmodSync(work, 0o755);
  runtimeDir = path.join(fs.mkdtempSync("/dev/shm/nixseal-buildagent-"), "build");
  socket = path.join(work, "daemon.sock");
  agentDir = path.join(work, "agents");
  fs.mkdirSync(agentDir, { mode: 0o1733 });
  fs.chmodSync(agentDir, 0o1733);

  server = http.createServer((req, res) => {
    requests.push({ url: req.url ?? "", authorization: req.headers.authorization });
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401).end("unauthorized");
      return;
    }
    if (req.url === `/files/mod-${RUN}.zip`) {
      res.writeHead(200, { "content-type": "application/zip" }).end(CONTENT);
      return;
    }
    res.writeHead(404).end("not found");
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;

  for (const u of [USER_A, USER_B]) {
    sh("useradd", ["-M", "-N", "-s", "/bin/sh", "-d", home(u), u]);
    usersMade.push(u);
    fs.mkdirSync(home(u), { mode: 0o700 });
    sh("chown", [u, home(u)]);
  }
  // The host has a key, but holds none of these secrets.
  const host = await generateIdentity(false);
  fs.writeFileSync(path.join(work, "host-key.txt"), `${host.identity}\n`, { mode: 0o600 });

  // USER_A's own age identity (where 'nixseal decrypt' looks by default) and age file, and a pass
  // store with the token (gpg key without passphrase), made as USER_A.
  const a = await generateIdentity(false);
  const asA = (argv: string[], input?: string | Buffer) => sh("runuser", asUser(USER_A, argv), input);
  asA(["mkdir", "-p", `${home(USER_A)}/.config/nixseal`, `${home(USER_A)}/secrets`]);
  asA(["sh", "-c", 'umask 077; cat > "$HOME/.config/nixseal/identity.txt"'], `${a.identity}\n`);
  const ciphertext = await encrypt(Buffer.from(`${TOKEN}\n`), [parseRecipientString(a.recipient, "test")]);
  asA(["sh", "-c", 'cat > "$HOME/secrets/file-token.age"'], Buffer.from(ciphertext));
  asA(["sh", "-c", 'cat > "$HOME/secrets/dir-token.age"'], Buffer.from(ciphertext));
  asA(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", `nixseal test <${USER_A}@example.invalid>`]);
  asA(["pass", "init", `${USER_A}@example.invalid`]);
  asA(["pass", "insert", "-m", "nixseal/cmd-token"], `${TOKEN}\n`);
  asA(
    ["sh", "-c", 'cat > "$HOME/.config/nixseal/agent.json"'],
    JSON.stringify({
      secrets: {
        "file-token": { file: "~/secrets/file-token.age" },
        "cmd-token": { command: ["pass", "show", "nixseal/cmd-token"] },
        "confirm-token": { file: "~/secrets/file-token.age" },
      },
    }),
  );

  fetcherStorePath = fetcherInStore(work);
  fs.writeFileSync(path.join(work, "builds.nix"), buildsNix());
  fs.writeFileSync(path.join(work, "policy.json"), JSON.stringify(policy(), null, 2), { mode: 0o644 });
  writeHookWrappers(work, path.join(work, "policy.json"));
  daemon = await startHookDaemon(work, socket, rt.sandboxPaths);
});

after(async () => {
  for (const a of agents) await a.stop();
  killDaemon();
  server?.close();
  for (const u of usersMade) {
    spawnSync("runuser", asUser(u, ["gpgconf", "--kill", "all"]), { encoding: "utf8" });
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

function outputOf(r: { stdout: string }): string {
  return r.stdout.trim().split("\n").pop()!;
}

function gaveFromAgent(attr: string): RegExp {
  return new RegExp(
    `gave secret "[a-z-]+" to /nix/store/\\w{32}-nxs-${attr.toLowerCase()}-${RUN}\\.drv \\(daemon client pid \\d+; URL [^;]+; from the requesting user's agent\\)`,
  );
}

test("typed at the agent's prompt (hidden): the build succeeds; with --remember, later builds ask nothing", {
  skip: SKIP,
}, async () => {
  const agent = startAgent(USER_A, `agent --agent-dir ${agentDir} --remember 15m`);
  try {
    await agent.waitFor(/listening on \S+ \(remembering answers for 900 s\)/);
    const first = buildAs(USER_A, ["typed1"]);
    const asked = await agent.waitFor(
      /build \S+ asks for the secret "typed-token"\s+to send it to \S+\s+Value of "typed-token" \(hidden; empty declines\): /,
    );
    assert.match(asked, new RegExp(`nxs-typed1-${RUN}\\.drv asks`));
    agent.type(`${TOKEN}\n`);
    const r = await first;
    assert.equal(r.status, 0, `${r.stderr}\n--- daemon log:\n${daemonLog()}`);
    assert.deepEqual(fs.readFileSync(outputOf(r)), CONTENT);
    assert.match(daemonLog(), gaveFromAgent("typed1"));

    // Two more downloads of the same secret from the same origin, in one build: no question.
    const mark = agent.screen.length;
    const again = await buildAs(USER_A, ["typed2", "typed3"]);
    assert.equal(again.status, 0, `${again.stderr}\n--- daemon log:\n${daemonLog()}`);
    assert.match(daemonLog(), gaveFromAgent("typed2"));
    assert.match(daemonLog(), gaveFromAgent("typed3"));
    const later = agent.screen.slice(mark);
    assert.doesNotMatch(later, /Value of/, "a remembered value is not asked for again");
    assert.equal(later.match(/gave the remembered value for "typed-token"/g)?.length, 2, later);
    assert.deepEqual(secretFilesLeft(), []);
    // The hidden input was not echoed: the token is not on the agent's screen.
    assertTokenNowhere([r.stdout, r.stderr, again.stdout, again.stderr, agent.screen]);
  } finally {
    await agent.stop();
  }
  // Without --remember the agent asks every time: empty input declines.
  const plain = startAgent(USER_A, `agent --agent-dir ${agentDir}`);
  try {
    await plain.waitFor(/listening on \S+\r?\n/);
    const b = buildAs(USER_A, ["typed4"]);
    await plain.waitFor(/nxs-typed4-\w+\.drv asks for the secret "typed-token"[\s\S]*Value of "typed-token"/);
    plain.type("\n");
    const r = await b;
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /the secret is supplied by the requesting user's nixseal agent, but the user declined \(declined at the terminal\)/,
    );
    assertTokenNowhere([r.stdout, r.stderr, plain.screen]);
  } finally {
    await plain.stop();
  }
});

test("from the user's own age file (agent.json, the user's identity) and from pass: no question asked", {
  skip: SKIP,
}, async () => {
  const agent = startAgent(USER_A, `agent --agent-dir ${agentDir} --secrets ${home(USER_A)}/secrets`);
  try {
    await agent.waitFor(/listening on /);
    const r = await buildAs(USER_A, ["fromFile"]);
    assert.equal(r.status, 0, `${r.stderr}\n--- agent:\n${agent.screen}\n--- daemon log:\n${daemonLog()}`);
    assert.deepEqual(fs.readFileSync(outputOf(r)), CONTENT);
    assert.match(daemonLog(), gaveFromAgent("fromFile"));
    assert.match(agent.screen, /gave "file-token" from your file \S+\/secrets\/file-token\.age/);

    const p = await buildAs(USER_A, ["fromPass"]);
    assert.equal(p.status, 0, `${p.stderr}\n--- agent:\n${agent.screen}\n--- daemon log:\n${daemonLog()}`);
    assert.deepEqual(fs.readFileSync(outputOf(p)), CONTENT);
    assert.match(daemonLog(), gaveFromAgent("fromPass"));
    assert.match(agent.screen, /gave "cmd-token" from the command "pass"/);

    // Not in agent.json: --secrets DIR/NAME.age.
    const d = await buildAs(USER_A, ["fromDir"]);
    assert.equal(d.status, 0, `${d.stderr}\n--- agent:\n${agent.screen}`);
    assert.match(agent.screen, /gave "dir-token" from your file \S+\/secrets\/dir-token\.age/);
    assert.doesNotMatch(agent.screen, /Approve\?|Value of/);
    assertTokenNowhere([r.stdout, r.stderr, p.stdout, p.stderr, d.stdout, d.stderr, agent.screen]);
  } finally {
    await agent.stop();
  }
});

test("prompt = true: even a value from the user's file needs a yes at the terminal", {
  skip: SKIP,
}, async () => {
  const agent = startAgent(USER_A, `agent --agent-dir ${agentDir}`);
  try {
    await agent.waitFor(/listening on /);
    const b = buildAs(USER_A, ["confirmed"]);
    await agent.waitFor(
      /asks for the secret "confirm-token"[\s\S]*the value comes from your file \S+file-token\.age; the host's policy asks you to confirm[\s\S]*Approve\? \[y\/N\]/,
    );
    agent.type("y\n");
    const r = await b;
    assert.equal(r.status, 0, `${r.stderr}\n--- agent:\n${agent.screen}`);
    assert.match(daemonLog(), gaveFromAgent("confirmed"));
    assertTokenNowhere([r.stdout, r.stderr, agent.screen]);
  } finally {
    await agent.stop();
  }
});

test("host-or-agent: the host's file is missing, so the agent is asked", { skip: SKIP }, async () => {
  const agent = startAgent(USER_A, `agent --agent-dir ${agentDir}`);
  try {
    await agent.waitFor(/listening on /);
    const b = buildAs(USER_A, ["either"]);
    await agent.waitFor(/asks for the secret "either-token"[\s\S]*Value of "either-token"/);
    agent.type(`${TOKEN}\n`);
    const r = await b;
    assert.equal(r.status, 0, `${r.stderr}\n--- daemon log:\n${daemonLog()}`);
    assert.match(
      daemonLog(),
      /secret "either-token" for \S+: the host's file is not usable \(.*absent\.age.*\); asking the agent/,
    );
    assert.match(daemonLog(), gaveFromAgent("either"));
    assertTokenNowhere([r.stdout, r.stderr, agent.screen]);
  } finally {
    await agent.stop();
  }
});

test("no agent: refused at once with a clear message, not after the timeout", { skip: SKIP }, async () => {
  const started = Date.now();
  const r = await buildAs(USER_A, ["noAgent"]);
  const seconds = (Date.now() - started) / 1000;
  assert.notEqual(r.status, 0);
  assert.match(
    r.stderr,
    new RegExp(
      `the secret is supplied by the requesting user's nixseal agent, but no agent of uid ${uidOf(USER_A)} is running \\(start 'nixseal agent' or use 'nixseal build'\\)`,
    ),
  );
  assert.ok(seconds < AGENT_TIMEOUT_S - 10, `refused after ${seconds} s: it waited for the timeout`);
  assert.deepEqual(secretFilesLeft(), []);
  assertTokenNowhere([r.stdout, r.stderr]);
});

test("another user's agent cannot answer: not by its own socket, not by one named after the requester", {
  skip: SKIP,
}, async () => {
  // USER_B runs an agent; USER_A's build does not reach it.
  const agentB = startAgent(USER_B, `agent --agent-dir ${agentDir}`);
  try {
    await agentB.waitFor(/listening on /);
    const r = await buildAs(USER_A, ["otherAgent"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`no agent of uid ${uidOf(USER_A)} is running`));
    assert.doesNotMatch(agentB.screen, /asks for the secret/);
  } finally {
    await agentB.stop();
  }
  // USER_B binds a socket named after USER_A's uid (the 1733 directory lets anyone create one)
  // and answers every request with a value: the hook sees the owner and does not connect.
  const squat = path.join(agentDir, String(uidOf(USER_A)));
  const answer = JSON.stringify({ approved: true, secret: Buffer.from("planted").toString("base64") });
  const squatter = spawn(
    "runuser",
    asUser(USER_B, [
      runtimeForOtherUsers().node,
      "-e",
      `require("net").createServer((c) => { c.on("data", () => c.end(${JSON.stringify(`${answer}\n`)})); }).listen(${JSON.stringify(squat)}, () => console.log("up"));`,
    ]),
    { stdio: ["ignore", "pipe", "inherit"], detached: true },
  );
  try {
    await new Promise<void>((resolve) => squatter.stdout.once("data", () => resolve()));
    const r = await buildAs(USER_A, ["squatted"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`${squat} is not a socket owned by uid ${uidOf(USER_A)}`));
    assert.match(daemonLog(), /refused secret "typed-token" to \S+nxs-squatted-/);
  } finally {
    process.kill(-squatter.pid!, "SIGTERM");
    await new Promise((r) => (squatter.exitCode !== null ? r(null) : squatter.once("exit", r)));
    fs.rmSync(squat, { force: true });
  }
  // allowedUsers applies as before: USER_B's build of a secret limited to USER_A is refused.
  const byB = await buildAs(USER_B, ["fromFileByB"]);
  assert.notEqual(byB.status, 0);
  assert.match(byB.stderr, /requested by uid \d+ \(daemon client pid \d+\), not by nxsaga/);
  assertTokenNowhere([byB.stdout, byB.stderr]);
});

test("nixseal build uses the agent the user already runs (its socket answers) instead of starting one", {
  skip: SKIP,
}, async () => {
  const agent = startAgent(USER_A, `agent --agent-dir ${agentDir}`);
  const out = path.join(home(USER_A), "result-via-build");
  try {
    await agent.waitFor(/listening on /);
    const build = startAgent(
      USER_A,
      `build --agent-dir ${agentDir} -- --extra-experimental-features nix-command -f ${path.join(work, "builds.nix")} viaBuild --out-link ${out}`,
    );
    await build.waitFor(/nixseal build: using your running agent on \S+/);
    await agent.waitFor(
      /nxs-viabuild-\w+\.drv asks for the secret "typed-token"[\s\S]*Value of "typed-token"/,
    );
    agent.type(`${TOKEN}\n`);
    const code = await new Promise((r) =>
      build.child.exitCode !== null ? r(build.child.exitCode) : build.child.once("exit", r),
    );
    assert.equal(code, 0, build.screen);
    assert.deepEqual(fs.readFileSync(out), CONTENT);
    assert.doesNotMatch(build.screen, /listening on|asks for the secret/);
    // The running agent's socket was left alone: it still answers after the build.
    const answers = await new Promise<boolean>((resolve) => {
      const c = net.connect(path.join(agentDir, String(uidOf(USER_A))));
      c.on("connect", () => {
        c.destroy();
        resolve(true);
      });
      c.on("error", () => resolve(false));
    });
    assert.ok(answers, "the agent's socket still answers");
    assertTokenNowhere([build.screen, agent.screen]);
  } finally {
    await agent.stop();
    fs.rmSync(out, { force: true });
  }
});

test("nixseal build without a running agent runs its own, which asks once for the whole build", {
  skip: SKIP,
}, async () => {
  const build = startAgent(
    USER_A,
    `build --agent-dir ${agentDir} -- --extra-experimental-features nix-command -f ${path.join(work, "builds.nix")} ownA ownB --no-link`,
  );
  try {
    await build.waitFor(
      /nxs-own[ab]-\w+\.drv asks for the secret "typed-token"[\s\S]*Value of "typed-token"/,
    );
    build.type(`${TOKEN}\n`);
    const code = await new Promise((r) =>
      build.child.exitCode !== null ? r(build.child.exitCode) : build.child.once("exit", r),
    );
    assert.equal(code, 0, build.screen);
    assert.match(daemonLog(), gaveFromAgent("ownA"));
    assert.match(daemonLog(), gaveFromAgent("ownB"));
    assert.equal(build.screen.match(/Value of/g)?.length, 1, build.screen);
    assert.match(build.screen, /gave the remembered value for "typed-token"/);
    assert.equal(fs.existsSync(path.join(agentDir, String(uidOf(USER_A)))), false, "its agent is gone");
    assertTokenNowhere([build.screen]);
  } finally {
    await build.stop();
  }
});

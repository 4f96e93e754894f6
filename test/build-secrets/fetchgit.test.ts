/**
 * lib.fetchgit end to end with the real Nix and git: a private repository served over http on
 * 127.0.0.1 by `git http-backend` (as CGI, behind a Basic-auth check of the token), our own
 * nix-daemon with the sandbox and the hook wrappers, and a sandboxed build of a commit. Its output
 * must have the NAR hash of the same commit cloned without authentication (file://) minus .git,
 * and the token must be nowhere afterwards.
 *
 * git inside the sandbox: the host's git and its http helper in the sandbox runtime in the store
 * (./sandbox-runtime.ts; the policy pins git by store path), with Node and their shared
 * libraries, bound at /lib and /lib64 from the store; the shell git starts credential helpers
 * with (/bin/sh, compiled in) is the runtime's dash, bound from the store too. No host system
 * directory is bound into the sandbox.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { encrypt } from "../../src/age/index.js";
import type { Derivation } from "../../src/build-secrets/drv.js";
import { decide, parsePolicy } from "../../src/build-secrets/policy.js";
import { parseRecipientString } from "../../src/keys/index.js";
import { generateIdentity } from "../../src/keys/key-types.js";
import { CLI, isError, REPO, which } from "../helpers.js";
import { assertTokenNowhere as assertTokenNowhereShared } from "./hook-daemon.js";
import {
  SANDBOX_RUNTIME_SKIP,
  type SandboxRuntime,
  sandboxRuntime,
  writeNixConf,
} from "./sandbox-runtime.js";

const TOOLS = ["nix-daemon", "nix-build", "nix-instantiate", "nix-store", "nix-hash", "git", "grep"];
const missing = TOOLS.filter((t) => which(t) === null);
const SKIP =
  missing.length > 0
    ? `needs ${missing.join(", ")}`
    : process.getuid?.() !== 0
      ? "needs root (its own nix-daemon)"
      : !fs.existsSync("/dev/shm") || fs.statfsSync("/dev/shm").type !== 0x01021994
        ? "needs /dev/shm on tmpfs"
        : SANDBOX_RUNTIME_SKIP;

const RUN = randomBytes(4).toString("hex");
const TOKEN = `nxs-git-token-${randomBytes(16).toString("hex")}`;
const WRONG_TOKEN = `nxs-git-revoked-${randomBytes(16).toString("hex")}`;

let work = "";
let runtimeDir = "";
let socket = "";
const daemons: ReturnType<typeof spawn>[] = [];
let server: http.Server | null = null;
let port = 0;
let fetcherStorePath = "";
let rt: SandboxRuntime;
let rev = "";
let expectedNarHash = "";
const requests: { url: string; authorized: boolean }[] = [];

function killDaemon(): void {
  for (const daemon of daemons) {
    if (daemon.pid !== undefined && daemon.exitCode === null) {
      try {
        process.kill(-daemon.pid, "SIGTERM");
      } catch {}
    }
  }
}
process.on("exit", killDaemon);

function sh(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): string {
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
  });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

function runAsync(
  cmd: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env });
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

function daemonLog(name = "daemon"): string {
  return fs.readFileSync(path.join(work, `${name}.log`), "utf8");
}

/** `git http-backend` as CGI: only /private/ with the token (Basic x-access-token:TOKEN). */
function gitServer(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  const expected = `Basic ${Buffer.from(`x-access-token:${TOKEN}`).toString("base64")}`;
  const authorized = req.headers.authorization === expected;
  requests.push({ url: req.url ?? "", authorized });
  if (!url.pathname.startsWith("/private/")) {
    res.writeHead(404).end();
    return;
  }
  if (!authorized) {
    res.writeHead(401, { "www-authenticate": 'Basic realm="private"' }).end("unauthorized");
    return;
  }
  const cgi = spawn("git", ["http-backend"], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      GIT_PROJECT_ROOT: path.join(work, "repos"),
      GIT_HTTP_EXPORT_ALL: "1",
      REQUEST_METHOD: req.method ?? "GET",
      PATH_INFO: url.pathname.slice("/private".length),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers["content-type"] ?? "",
      REMOTE_USER: "x-access-token",
      REMOTE_ADDR: "127.0.0.1",
      ...(typeof req.headers["git-protocol"] === "string"
        ? { GIT_PROTOCOL: req.headers["git-protocol"] }
        : {}),
    },
    stdio: ["pipe", "pipe", "ignore"],
  });
  req.pipe(cgi.stdin);
  const chunks: Buffer[] = [];
  cgi.stdout.on("data", (d: Buffer) => chunks.push(d));
  cgi.on("close", () => {
    const out = Buffer.concat(chunks);
    const end = out.indexOf("\r\n\r\n");
    const headerEnd = end >= 0 ? end : out.indexOf("\n\n");
    const sep = end >= 0 ? 4 : 2;
    const headers: Record<string, string> = {};
    let status = 200;
    for (const line of out.subarray(0, headerEnd).toString("latin1").split(/\r?\n/)) {
      const i = line.indexOf(":");
      if (i < 0) continue;
      const k = line.slice(0, i).trim().toLowerCase();
      const v = line.slice(i + 1).trim();
      if (k === "status") status = Number(v.split(" ")[0]);
      else headers[k] = v;
    }
    res.writeHead(status, headers).end(out.subarray(headerEnd + sep));
  });
}

function buildsNix(): string {
  const url = (p: string) => `http://127.0.0.1:${port}/${p}`;
  return `
let
  fetcher = builtins.path { path = ./nixseal-fetcher.js; name = "nixseal-fetcher.mjs"; };
  # builtins.storePath gives the strings their context: the runtime is an input, so git and Node
  # are in the sandbox.
  git = builtins.storePath "${rt.git}";
  node = builtins.storePath "${rt.node}";
  lib = import ./lib { inherit fetcher git; interpreter = node; };
in {
  good = lib.fetchgit { url = "${url("private/project.git")}"; rev = "${rev}"; hash = "${expectedNarHash}"; secret = "git-token"; name = "nxs-git-${RUN}"; };
  revoked = lib.fetchgit { url = "${url("private/project.git")}"; rev = "${rev}"; hash = "${expectedNarHash}"; secret = "revoked-token"; name = "nxs-git-revoked-${RUN}"; };
  noShell = lib.fetchgit { url = "${url("private/project.git")}"; rev = "${rev}"; hash = "${expectedNarHash}"; secret = "git-token"; name = "nxs-git-no-shell-${RUN}"; };
  outside = lib.fetchgit { url = "${url("public/project.git")}"; rev = "${rev}"; hash = "${expectedNarHash}"; secret = "git-token"; name = "nxs-git-outside-${RUN}"; };
  otherGit = derivation {
    name = "nxs-git-other-${RUN}"; system = builtins.currentSystem; builder = node;
    args = [ "\${fetcher}" ]; nixsealSecret = "git-token"; url = "${url("private/project.git")}";
    rev = "${rev}"; nixsealGit = "/bin/sh"; outputHash = "${expectedNarHash}"; outputHashMode = "recursive";
  };
}
`;
}

before(async () => {
  if (SKIP) return;
  work = fs.mkdtempSync("/tmp/nixseal-fetchgit-");
  fs.chmodSync(work, 0o755);
  runtimeDir = path.join(fs.mkdtempSync("/dev/shm/nixseal-fetchgit-"), "build");
  socket = path.join(work, "daemon.sock");

  // The repository: files, an executable, a symlink, a subdirectory; the fetched commit is not
  // the branch's tip.
  const src = path.join(work, "src");
  fs.mkdirSync(path.join(src, "sub"), { recursive: true });
  const gitEnv = {
    GIT_CONFIG_NOSYSTEM: "1",
    HOME: work,
    GIT_AUTHOR_NAME: "t",
    GIT_AUTHOR_EMAIL: "t@example.com",
    GIT_COMMITTER_NAME: "t",
    GIT_COMMITTER_EMAIL: "t@example.com",
  };
  sh("git", ["init", "--quiet", "-b", "main", src], { env: gitEnv });
  fs.writeFileSync(path.join(src, "README"), `private project ${RUN}\n`);
  fs.writeFileSync(path.join(src, "sub", "run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  fs.symlinkSync("sub/run.sh", path.join(src, "link"));
  sh("git", ["add", "-A"], { cwd: src, env: gitEnv });
  sh("git", ["commit", "--quiet", "-m", "one"], { cwd: src, env: gitEnv });
  rev = sh("git", ["rev-parse", "HEAD"], { cwd: src, env: gitEnv });
  fs.writeFileSync(path.join(src, "later"), "a later commit\n");
  sh("git", ["add", "-A"], { cwd: src, env: gitEnv });
  sh("git", ["commit", "--quiet", "-m", "two"], { cwd: src, env: gitEnv });
  fs.mkdirSync(path.join(work, "repos"));
  sh("git", ["clone", "--quiet", "--bare", src, path.join(work, "repos", "project.git")], { env: gitEnv });

  // What an unauthenticated clone of that commit checks out, without .git: its NAR hash.
  const publicCopy = path.join(work, "public-checkout");
  sh("git", ["clone", "--quiet", `file://${path.join(work, "repos", "project.git")}`, publicCopy], {
    env: gitEnv,
  });
  sh("git", ["-c", "advice.detachedHead=false", "checkout", "--quiet", rev], {
    cwd: publicCopy,
    env: gitEnv,
  });
  fs.rmSync(path.join(publicCopy, ".git"), { recursive: true });
  const hex = sh("nix-hash", ["--type", "sha256", publicCopy]);
  expectedNarHash = `sha256-${Buffer.from(hex, "hex").toString("base64")}`;

  server = http.createServer(gitServer);
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;

  const host = await generateIdentity(false);
  fs.writeFileSync(path.join(work, "host-key.txt"), `${host.identity}\n`, { mode: 0o600 });
  const ciphertext = await encrypt(Buffer.from(`${TOKEN}\n`), [parseRecipientString(host.recipient, "test")]);
  fs.writeFileSync(path.join(work, "git-token.age"), ciphertext, { mode: 0o600 });
  const wrong = await encrypt(Buffer.from(`${WRONG_TOKEN}\n`), [
    parseRecipientString(host.recipient, "test"),
  ]);
  fs.writeFileSync(path.join(work, "wrong-token.age"), wrong, { mode: 0o600 });

  // git and Node for the sandbox, pinned by their store paths (with git's http helper).
  rt = sandboxRuntime();

  fs.cpSync(path.join(REPO, "nix", "lib"), path.join(work, "lib"), { recursive: true });
  fs.copyFileSync(
    path.join(REPO, "dist", "src", "build-secrets", "fetcher.js"),
    path.join(work, "nixseal-fetcher.js"),
  );
  fetcherStorePath = sh("nix-instantiate", [
    "--eval",
    "--expr",
    `"\${builtins.path { path = ${path.join(work, "nixseal-fetcher.js")}; name = "nixseal-fetcher.mjs"; }}"`,
  ]).replace(/^"|"$/g, "");
  fs.writeFileSync(path.join(work, "builds.nix"), buildsNix());
  const policy = {
    version: 1,
    runtimeDir,
    identities: [{ type: "age", path: path.join(work, "host-key.txt") }],
    interpreters: [rt.node],
    gitPaths: [rt.git],
    secrets: {
      "git-token": {
        file: path.join(work, "git-token.age"),
        allowedUrlPrefixes: [`http://127.0.0.1:${port}/private/`],
        fetcherStorePaths: [fetcherStorePath],
      },
      "revoked-token": {
        file: path.join(work, "wrong-token.age"),
        allowedUrlPrefixes: [`http://127.0.0.1:${port}/private/`],
        fetcherStorePaths: [fetcherStorePath],
      },
    },
  };
  fs.writeFileSync(path.join(work, "policy.json"), JSON.stringify(policy, null, 2), { mode: 0o644 });
  for (const kind of ["pre", "post"]) {
    const script = sh(process.execPath, [
      CLI,
      "build-hook",
      "--wrapper",
      kind,
      "--policy",
      path.join(work, "policy.json"),
    ]);
    fs.writeFileSync(path.join(work, `${kind}-hook`), `${script}\n`, { mode: 0o755 });
  }
  // git starts credential helpers through its compiled-in shell: /bin/sh for the host's git
  // (nixpkgs' git is built with a shell from the store, which is in its closure); here the
  // runtime's dash, bound from the store.
  socket = await startDaemon("daemon", rt.sandboxPaths);
});

/** A nix-daemon on its own socket and nix.conf (`<name>.sock`, `conf-<name>/`, `<name>.log`). */
async function startDaemon(name: string, sandboxPaths: string): Promise<string> {
  const conf = path.join(work, `conf-${name}`);
  const sock = path.join(work, `${name}.sock`);
  fs.mkdirSync(conf);
  writeNixConf(path.join(conf, "nix.conf"), [
    "sandbox = true",
    "substituters =",
    "build-users-group = nixbld",
    `sandbox-paths = ${sandboxPaths}`,
    `pre-build-hook = ${path.join(work, "pre-hook")}`,
    `post-build-hook = ${path.join(work, "post-hook")}`,
    "trusted-users = root",
  ]);
  const log = fs.openSync(path.join(work, `${name}.log`), "a");
  daemons.push(
    spawn("nix-daemon", ["--daemon"], {
      detached: true,
      stdio: ["ignore", log, log],
      env: { ...process.env, NIX_CONF_DIR: conf, NIX_DAEMON_SOCKET_PATH: sock },
    }),
  );
  fs.closeSync(log);
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(fs.existsSync(sock), `nix-daemon did not start: ${daemonLog(name)}`);
  return sock;
}

after(() => {
  killDaemon();
  server?.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
  if (runtimeDir) fs.rmSync(path.dirname(runtimeDir), { recursive: true, force: true });
});

function build(attr: string, name = "daemon", sock = socket) {
  return runAsync("nix-build", [path.join(work, "builds.nix"), "-A", attr, "--no-out-link"], {
    HOME: work,
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    NIX_REMOTE: `unix://${sock}`,
    NIX_CONF_DIR: path.join(work, `conf-${name}`),
  });
}

/** The token in no file of the store, logs, db, /tmp or the runtime dir, and in none of `texts`. */
function assertTokenNowhere(texts: string[]): void {
  assertTokenNowhereShared(TOKEN, path.dirname(runtimeDir), texts, daemonLog());
}

test("fetchgit: a private commit fetched with the token equals an unauthenticated checkout without .git", {
  skip: SKIP,
}, async () => {
  const r = await build("good");
  assert.equal(r.status, 0, `build failed:\n${r.stderr}\n--- daemon log:\n${daemonLog()}`);
  const out = r.stdout.trim().split("\n").pop()!;
  // The same NAR hash as the public checkout (Nix checked it too, as the output hash).
  const hex = sh("nix-hash", ["--type", "sha256", out]);
  assert.equal(`sha256-${Buffer.from(hex, "hex").toString("base64")}`, expectedNarHash);
  assert.deepEqual(fs.readdirSync(out).sort(), ["README", "link", "sub"]);
  assert.equal(fs.readFileSync(path.join(out, "README"), "utf8"), `private project ${RUN}\n`);
  assert.equal(fs.readlinkSync(path.join(out, "link")), "sub/run.sh");
  assert.ok((fs.statSync(path.join(out, "sub", "run.sh")).mode & 0o111) !== 0, "the executable bit is kept");
  // The server saw the token (and refused the request without it).
  assert.ok(requests.some((q) => q.authorized && q.url.startsWith("/private/project.git/")));
  assert.match(daemonLog(), new RegExp(`gave secret "git-token" to /nix/store/\\w{32}-nxs-git-${RUN}\\.drv`));
  const drv = sh("nix-store", ["--query", "--deriver", out]);
  const drvText = fs.existsSync(drv) ? fs.readFileSync(drv, "utf8") : "";
  assert.ok(!drvText.includes(TOKEN));
  const nixLog = spawnSync("nix-store", ["--read-log", out], { encoding: "utf8" });
  assert.match(
    nixLog.stdout + nixLog.stderr,
    /nixseal-fetch: fetching [0-9a-f]{40} from http:\/\/127\.0\.0\.1/,
  );
  assert.deepEqual(fs.readdirSync(runtimeDir), [], "the post-build hook removed the build's secret");
  assertTokenNowhere([r.stdout, r.stderr, nixLog.stdout, nixLog.stderr]);
});

test("fetchgit refused: a repository outside the allowed prefixes, and a git the policy does not pin", {
  skip: SKIP,
}, async () => {
  const seen = requests.length;
  const outside = await build("outside");
  assert.notEqual(outside.status, 0);
  assert.match(
    outside.stderr,
    /nixseal refused the build secret "git-token"[\s\S]*is not under an allowed prefix/,
  );
  const other = await build("otherGit");
  assert.notEqual(other.status, 0);
  assert.match(
    daemonLog(),
    /refused secret "git-token" to \S+-nxs-git-other-\w+\.drv: .*its git \("\/bin\/sh"\) is not one of the policy's gitPaths/,
  );
  assert.ok(
    requests.slice(seen).every((q) => !q.authorized),
    "the token was never sent",
  );
  assertTokenNowhere([outside.stderr, other.stderr]);
});

// --- the decision for git fetches (no Nix needed) -------------------------------------------------

const STORE_FETCHER = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.mjs";
const STORE_NODE = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nodejs/bin/node";
const STORE_GIT = "/nix/store/gggggggggggggggggggggggggggggggg-git-minimal/bin/git";

function gitPolicy(extra: Record<string, unknown> = {}) {
  return parsePolicy(
    JSON.stringify({
      version: 1,
      identities: [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }],
      interpreters: [STORE_NODE],
      gitPaths: [STORE_GIT],
      secrets: {
        "git-token": {
          file: "/var/lib/nixseal/git-token.age",
          allowedUrlPrefixes: ["https://git.example.com/org/"],
          fetcherStorePaths: [STORE_FETCHER],
        },
      },
      ...extra,
    }),
    "p.json",
  );
}

function gitDrv(env: Record<string, string | undefined> = {}): Derivation {
  const out = "/nix/store/cccccccccccccccccccccccccccccccc-project";
  const all: Record<string, string | undefined> = {
    builder: STORE_NODE,
    name: "project",
    out,
    system: "x86_64-linux",
    outputHash: "sha256-AAAA",
    outputHashMode: "recursive",
    url: "https://git.example.com/org/project.git",
    rev: "0123456789abcdef0123456789abcdef01234567",
    nixsealGit: STORE_GIT,
    nixsealSecret: "git-token",
    ...env,
  };
  return {
    outputs: new Map([["out", { path: out, hashAlgo: "r:sha256", hash: "00".repeat(32) }]]),
    inputDrvs: new Map(),
    inputSrcs: [STORE_FETCHER],
    platform: "x86_64-linux",
    builder: STORE_NODE,
    args: [STORE_FETCHER],
    env: new Map(Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined)),
  };
}

test("decide, git fetches: allowed with a pinned git and a full rev; every deviation refused", () => {
  const policy = gitPolicy();
  const client = { uid: 1000, how: "test" };
  const uidOf = () => null;
  assert.equal(decide(gitDrv(), policy, client, uidOf).kind, "allow");
  assert.equal(decide(gitDrv({ nixsealUser: "oauth2" }), policy, client, uidOf).kind, "allow");
  const reasons = (drv: Derivation, p = policy) => {
    const r = decide(drv, p, client, uidOf);
    assert.equal(r.kind, "refuse");
    return (r as { reasons: string[] }).reasons.join("\n");
  };
  assert.match(
    reasons(gitDrv({ nixsealGit: "/bin/sh" })),
    /its git \("\/bin\/sh"\) is not one of the policy's gitPaths/,
  );
  assert.match(reasons(gitDrv({ nixsealGit: undefined })), /its git \("none"\) is not one of/);
  assert.match(reasons(gitDrv(), gitPolicy({ gitPaths: [] })), /gitPaths \(none\)/);
  assert.match(reasons(gitDrv({ rev: "main" })), /rev is not a full commit id/);
  assert.match(reasons(gitDrv({ rev: "0123456" })), /rev is not a full commit id/);
  assert.match(reasons(gitDrv({ nixsealHeader: "X-Token: {secret}" })), /a git fetch has no nixsealHeader/);
  assert.match(reasons(gitDrv({ nixsealUser: "a b" })), /nixsealUser is not a plain user name/);
  assert.match(
    reasons(gitDrv({ url: "https://git.example.com/other/project.git" })),
    /not under an allowed prefix/,
  );
  assert.match(reasons(gitDrv({ GIT_CONFIG_GLOBAL: "/tmp/evil" })), /must not see: "GIT_CONFIG_GLOBAL"/);
  // The git attributes belong to git fetches only.
  assert.match(
    reasons(gitDrv({ rev: undefined })),
    /it sets nixsealGit, which only a git fetch \(with rev\) has/,
  );
  // gitPaths are pinned by store path.
  assert.throws(
    () => gitPolicy({ gitPaths: ["/usr/bin/git"] }),
    isError("BUILD_POLICY", /gitPaths\[0\]: is not in the Nix store/),
  );
});

test("fetchgit with a token the server refuses fails with a clear message and leaves neither token anywhere", {
  skip: SKIP,
}, async () => {
  const r = await build("revoked");
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /nixseal-fetch: error: git fetch failed/);
  assert.match(r.stderr, /nixseal-fetch: hint: the server refused the secret/);
  assert.ok(!r.stderr.includes(WRONG_TOKEN), "the refused token is not shown");
  // A failed build gets no post-build hook: its secret stays (in RAM, root's) until the sweeper,
  // which removes it once the build has ended.
  const swept = spawnSync(
    process.execPath,
    [CLI, "build-hook", "--sweep", "--json", "--policy", path.join(work, "policy.json")],
    {
      encoding: "utf8",
    },
  );
  assert.equal(swept.status, 0, swept.stderr);
  assert.match(swept.stdout, /nxs-git-revoked-/);
  assert.deepEqual(fs.readdirSync(runtimeDir), [], "the sweeper removed the failed build's secret");
  const found = spawnSync(
    "grep",
    ["-rlF", "--binary-files=text", "--no-messages", WRONG_TOKEN, "/nix/store", "/nix/var/log/nix", "/tmp"],
    {
      encoding: "utf8",
    },
  );
  assert.equal(found.stdout, "", `the refused token was found in: ${found.stdout}`);
  assertTokenNowhere([r.stderr]);
});

test("fetchgit with a git whose shell is not in the sandbox (as a distribution's git) fails with a hint to use nixpkgs' git", {
  skip: SKIP,
}, async () => {
  // The runtime's git was built for /bin/sh; a daemon whose sandbox lacks it (Node's libraries only).
  const withoutShell = rt.sandboxPaths
    .split(" ")
    .filter((e) => !e.startsWith("/bin/sh="))
    .join(" ");
  assert.notEqual(withoutShell, rt.sandboxPaths);
  const sock = await startDaemon("no-shell", withoutShell);
  const authorizedBefore = requests.filter((q) => q.authorized).length;
  const r = await build("noShell", "no-shell", sock);
  assert.notEqual(r.status, 0, "the build must fail");
  assert.match(r.stderr, /nixseal-fetch: error: git fetch failed[\s\S]*cannot run [^\n]*credential-helper/);
  assert.match(
    r.stderr,
    /nixseal-fetch: hint: git starts its credential helper through the shell it was built with: use a git from nixpkgs \(gitMinimal\)/,
  );
  assert.doesNotMatch(r.stderr, /sandbox-paths/, "the hint no longer suggests binding /bin/sh");
  assert.equal(requests.filter((q) => q.authorized).length, authorizedBefore, "git never sent the token");
  // The failed build's secret is swept once the build has ended.
  const swept = spawnSync(
    process.execPath,
    [CLI, "build-hook", "--sweep", "--json", "--policy", path.join(work, "policy.json")],
    { encoding: "utf8" },
  );
  assert.equal(swept.status, 0, swept.stderr);
  assert.deepEqual(fs.readdirSync(runtimeDir), []);
  assert.ok(!daemonLog("no-shell").includes(TOKEN));
  assertTokenNowhere([r.stderr]);
});

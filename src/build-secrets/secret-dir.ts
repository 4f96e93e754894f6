/**
 * Where a build secret lives while one build runs: `<runtimeDir>/<drv name>/secret`, a 0444 file
 * in a 0700 root-owned directory on tmpfs/ramfs. Nobody but root can reach it on the host; Nix
 * bind-mounts the file into that one build's sandbox, where the build user can read it. The
 * directory is removed by the post-build hook, and by the sweeper for builds that failed (Nix runs
 * no post-build hook for those).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { decrypt, type Identity } from "../age/index.js";
import { NixsealError, writeAllSync } from "../common/index.js";
import { loadDefaultIdentities } from "../keys/index.js";
import type { IdentitySpec } from "./policy.js";

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
/** Age files holding build secrets are tokens and keys, not archives. */
export const MAX_SECRET_FILE_BYTES = 16 * 1024 * 1024;
/** A per-build directory older than this is swept even if its build still seems to run. */
export const DEFAULT_SWEEP_AGE_MS = 60 * 60 * 1000;

const DRV_NAME_RE = /^[0-9a-z]{32}-[A-Za-z0-9+._?=-]{1,211}\.drv$/;

/** The per-build directory name for a .drv path, or an error for anything else. */
export function drvDirName(drvPath: string, storeDir: string): string {
  const base = path.posix.basename(drvPath);
  if (path.posix.dirname(drvPath) !== storeDir || !DRV_NAME_RE.test(base)) {
    throw new NixsealError("BUILD_SECRET", `not a derivation in ${storeDir}: ${drvPath.slice(0, 300)}`, {
      hint: "the pre-build hook is called by Nix with the .drv path",
    });
  }
  return base;
}

/** Creates (or checks) the runtime directory: root-owned, 0700, on tmpfs or ramfs, no symlink. */
export function ensureRuntimeDir(runtimeDir: string): void {
  try {
    fs.mkdirSync(path.dirname(runtimeDir), { recursive: true, mode: 0o755 });
    fs.mkdirSync(runtimeDir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") {
      throw new NixsealError("IO", `cannot create ${runtimeDir}: ${(e as NodeJS.ErrnoException).code}`, {
        file: runtimeDir,
        hint: "the hook runs as root under nix-daemon; check the parent directory",
      });
    }
  }
  const st = fs.lstatSync(runtimeDir);
  const problems: string[] = [];
  if (!st.isDirectory()) problems.push("is not a directory");
  if (st.uid !== 0 && process.getuid?.() === 0) problems.push("is not owned by root");
  if ((st.mode & 0o077) !== 0) problems.push("is accessible to group or others (must be 0700)");
  const type = fs.statfsSync(runtimeDir).type;
  if (type !== TMPFS_MAGIC && type !== RAMFS_MAGIC) problems.push("is not on tmpfs or ramfs");
  if (problems.length > 0) {
    throw new NixsealError(
      "BUILD_SECRET",
      `the build-secrets runtime directory ${runtimeDir} ${problems.join(", ")}`,
      {
        file: runtimeDir,
        hint: "use a directory under /run (tmpfs), created by nixseal as root with mode 0700",
      },
    );
  }
}

/**
 * Loads the host identities of the policy; missing files are skipped unless none is left. ssh and
 * age files as at activation; a systemd-creds entry is a key sealed with `nixseal host-key seal`,
 * opened by systemd-creds in memory (src/creds is loaded only then).
 */
export async function loadHostIdentities(specs: readonly IdentitySpec[]): Promise<Identity[]> {
  const present = specs.filter((s) => fs.existsSync(s.path));
  if (present.length === 0) {
    throw new NixsealError("BUILD_SECRET", "no host identity found to decrypt build secrets with", {
      hint: `create one of: ${specs.map((s) => s.path).join(", ") || "(the policy lists none)"}`,
    });
  }
  const files = present.filter((s) => s.type !== "systemd-creds").map((s) => s.path);
  const sealed = present.filter((s) => s.type === "systemd-creds");
  const out: Identity[] = [];
  for (const s of sealed) {
    const { loadSealedIdentities } = await import("../creds/index.js");
    out.push(
      ...(await loadSealedIdentities({ path: s.path, ...(s.name === undefined ? {} : { name: s.name }) }))
        .identities,
    );
  }
  // The default-identity loader adds the ssh-to-age identity of ed25519 host keys; with an empty
  // environment and no home it reads nothing but these files.
  if (files.length > 0) {
    out.push(...(await loadDefaultIdentities({ flags: files, env: {}, home: "/nonexistent" }, {})));
  }
  return out;
}

/**
 * Reads an age-encrypted build secret: a regular file of at most MAX_SECRET_FILE_BYTES. `fix`
 * names where the file was configured (the policy, agent.json), for the hints.
 */
export function readSecretFile(file: string, fix: { wrongFile: string; unreadable: string }): Buffer {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > MAX_SECRET_FILE_BYTES) {
      throw new NixsealError(
        "BUILD_SECRET",
        `${file} is not a regular file of at most ${MAX_SECRET_FILE_BYTES} bytes`,
        { file, hint: fix.wrongFile },
      );
    }
    return fs.readFileSync(file);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw new NixsealError("IO", `cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`, {
      file,
      hint: fix.unreadable,
    });
  }
}

/** Decrypts one age file with the host identities. The caller wipes the result. */
export async function decryptBuildSecret(file: string, specs: readonly IdentitySpec[]): Promise<Uint8Array> {
  const data = readSecretFile(file, {
    wrongFile: "point the policy's file at the age-encrypted secret",
    unreadable: "check the policy's file for this secret",
  });
  const identities = await loadHostIdentities(specs);
  try {
    return await decrypt(data, identities);
  } catch (e) {
    if (e instanceof NixsealError) throw e.withFile(file);
    throw e;
  }
}

/**
 * Writes `plaintext` as the secret of one build: a fresh directory (any leftover of an earlier
 * attempt of the same derivation is removed first), the file created 0444 and never chmod-ed.
 * Returns the file's path.
 */
export function materializeSecret(
  runtimeDir: string,
  dirName: string,
  plaintext: Uint8Array,
  fileName: "secret" | "refusal" = "secret",
  chroot?: string,
): string {
  ensureRuntimeDir(runtimeDir);
  const dir = path.join(runtimeDir, dirName);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  // The sandbox directory Nix gave the hook: the build runs while it exists (any Nix version).
  if (chroot !== undefined) fs.writeFileSync(path.join(dir, "chroot"), chroot, { mode: 0o600 });
  const file = path.join(dir, fileName);
  const fd = fs.openSync(
    file,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
    0o444,
  );
  try {
    writeAllSync(fd, plaintext);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
    throw new NixsealError(
      "IO",
      `cannot write the build secret in ${dir}: ${(e as NodeJS.ErrnoException).code}`,
      {
        file: dir,
        hint: "check the space on the runtime directory's tmpfs",
      },
    );
  }
  fs.closeSync(fd);
  return file;
}

/** Removes one build's directory (post-build hook). True if there was one. */
export function removeSecretDir(runtimeDir: string, dirName: string): boolean {
  const dir = path.join(runtimeDir, dirName);
  if (!fs.existsSync(dir)) return false;
  fs.rmSync(dir, { recursive: true, force: true });
  return true;
}

/**
 * Removes the directories of builds that no longer run: the sandbox directory the hook was given
 * (recorded in the directory; Nix 2.8 uses `<drv>.chroot`) is gone, or they are older than
 * `maxAgeMs` (an already running build keeps its bind mount). Returns the names removed.
 */
export function sweepSecretDirs(
  runtimeDir: string,
  storeDir: string,
  maxAgeMs = DEFAULT_SWEEP_AGE_MS,
  now = Date.now(),
): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(runtimeDir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const dir = path.join(runtimeDir, name);
    let age = 0;
    try {
      age = now - fs.lstatSync(dir).mtimeMs;
    } catch {
      continue;
    }
    let chroot = path.join(storeDir, `${name}.chroot`);
    try {
      const recorded = fs.readFileSync(path.join(dir, "chroot"), "utf8");
      if (recorded.startsWith("/") && recorded.length < 4096) chroot = recorded;
    } catch {}
    const running = DRV_NAME_RE.test(name) && fs.existsSync(chroot);
    if (!running || age > maxAgeMs) {
      fs.rmSync(dir, { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}

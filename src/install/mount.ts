/**
 * Plaintext only in RAM (docs/architecture.md, invariant 2): generationsDir must be on a ramfs (never swapped)
 * or a tmpfs. One `mount` process per install, and none when it already is one.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { childProcess, findExecutable, ioError, NixsealError } from "../common/index.js";
import type { MountPolicy } from "./manifest.js";

/** statfs(2) f_type values (linux/magic.h). */
export const RAMFS_MAGIC = 0x858458f6;
export const TMPFS_MAGIC = 0x01021994;

/** The mode of generationsDir and of each generation: others may traverse, not list. */
export const GENERATIONS_DIR_MODE = 0o751;

export type RamKind = "ramfs" | "tmpfs" | null;

/** What `dir` is on: "ramfs", "tmpfs", or null (a disk, or it does not exist). */
export function ramKindOf(dir: string): RamKind {
  try {
    const type = fs.statfsSync(dir).type >>> 0;
    if (type === RAMFS_MAGIC) return "ramfs";
    if (type === TMPFS_MAGIC) return "tmpfs";
  } catch {}
  return null;
}

/** A system tool: PATH first, then where NixOS and Debian keep it (activation's PATH is short). */
export function findTool(name: string): string | null {
  return (
    findExecutable(name) ??
    findExecutable(name, ["/run/current-system/sw/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"].join(":"))
  );
}

/** mkdir -p, new directories root-owned with `mode` (umask is 0 while installing). */
export function makeDirs(dir: string, mode: number): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode });
  } catch (e) {
    throw ioError("create the directory", dir, e);
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) {
    throw new NixsealError("INSTALL", `${dir} is not a directory`, {
      file: dir,
      hint: "move the file or symlink that is in the way",
    });
  }
}

/**
 * Makes sure `dir` is on a ramfs (policy "ramfs") or tmpfs, mounting one when it is not.
 * Returns what it is on and whether this call mounted it.
 */
export function ensureRamDir(dir: string, policy: MountPolicy): { kind: RamKind; mounted: boolean } {
  makeDirs(path.dirname(dir), 0o755);
  if (!fs.existsSync(dir)) makeDirs(dir, GENERATIONS_DIR_MODE);
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) {
    throw new NixsealError("INSTALL", `generationsDir ${dir} is not a directory`, {
      file: dir,
      hint: "move what is in the way; nixseal mounts a ramfs there",
    });
  }
  const kind = ramKindOf(dir);
  if (policy === "existing") {
    if (kind === null) {
      throw new NixsealError("INSTALL", `generationsDir ${dir} is not on a ramfs or tmpfs`, {
        file: dir,
        hint: 'plaintext must never reach a disk: put it under $XDG_RUNTIME_DIR or /run, or set mount to "ramfs"',
      });
    }
    return { kind, mounted: false };
  }
  if (policy === "ramfs" && kind === "ramfs") return { kind, mounted: false };
  if (policy === "tmpfs-noswap" && kind === "tmpfs" && isMountPoint(dir)) return { kind, mounted: false };
  const mount = findTool("mount");
  if (mount === null) {
    throw new NixsealError("INSTALL", `cannot mount a ${policy} on ${dir}: mount(8) not found`, {
      file: dir,
      hint: "install util-linux, or mount a ramfs there before running nixseal install",
    });
  }
  const mode = GENERATIONS_DIR_MODE.toString(8).padStart(4, "0");
  const args =
    policy === "ramfs"
      ? ["-t", "ramfs", "-o", `mode=${mode}`, "nixseal", dir]
      : ["-t", "tmpfs", "-o", `mode=${mode},noswap,nosuid,nodev`, "nixseal", dir];
  const r = childProcess().spawnSync(mount, args, {
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
    timeout: 30_000,
  });
  const after = ramKindOf(dir);
  const want = policy === "ramfs" ? "ramfs" : "tmpfs";
  if (r.status !== 0 || after !== want) {
    const why = (r.stderr ?? "").trim().split("\n")[0]?.slice(0, 200) || `exit status ${r.status}`;
    throw new NixsealError("INSTALL", `cannot mount a ${policy} on ${dir}: ${why}`, {
      file: dir,
      hint:
        policy === "tmpfs-noswap"
          ? 'tmpfs noswap needs Linux 6.4 or later; use mount "ramfs" instead'
          : "nixseal install must run as root (or mount a ramfs there first)",
    });
  }
  return { kind: after, mounted: true };
}

/**
 * Whether `dir`, as it is, is what `policy` asks for: ensureRamDir would neither mount nor
 * refuse. An install that keeps the active generation (steps/keep-active.ts) asks this instead.
 */
export function ramDirSatisfies(dir: string, policy: MountPolicy): boolean {
  const kind = ramKindOf(dir);
  if (policy === "existing") return kind !== null;
  if (policy === "ramfs") return kind === "ramfs";
  return kind === "tmpfs" && isMountPoint(dir);
}

/** True if `dir` is the root of a mount (its device differs from its parent's). */
function isMountPoint(dir: string): boolean {
  try {
    return fs.statSync(dir).dev !== fs.statSync(path.dirname(dir)).dev;
  } catch {
    return false;
  }
}

/**
 * Runs inside `unshare --mount --propagation private` for the install tests: the ramfs that
 * `nixseal install` mounts lives only in that namespace, so every step that must see it (runs
 * of the real CLI, looks at the files) happens here, in order; the results go back as JSON.
 * Not a test itself: without --plan it does nothing (the test runner loads every file here).
 *
 * Usage: node ns-driver.js --plan PLAN.json > RESULTS.json
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

/** The CLI users run: the bundle (dist/bundle/main.js). */
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bundle", "main.js");

export type Step =
  /** `nixseal install ARGS...`; with `strace`, under strace -f writing the execve/openat log there. */
  | {
      op: "install";
      args: string[];
      env?: Record<string, string>;
      strace?: string;
      /** Another entry point: the unbundled dist/src/cli/main.js, to see which modules load. */
      cli?: string;
    }
  /** Every file, directory and symlink under `dir` (not following symlinks), with its fs type. */
  | { op: "snapshot"; dir: string }
  | { op: "mountRamfs"; dir: string }
  /** A tmpfs of `size` (mount -o size=) on `dir`: a small, fillable generations dir. */
  | { op: "mountTmpfs"; dir: string; size: string }
  /**
   * `pairs` rounds of two `nixseal install ARGS...` started together; after each round, what
   * secretsDir points to and the content of `file` under it.
   */
  | { op: "installPairs"; args: string[]; pairs: number; secretsDir: string; file: string }
  | { op: "copy"; from: string; to: string }
  /** lstat and stat of `path`, and whether open(2) with O_NOFOLLOW opens it (what services see). */
  | { op: "stat"; path: string }
  /** Replaces `path` with a regular file holding `content` (a file changed by hand), or removes it (null). */
  | { op: "write"; path: string; content: string | null }
  | { op: "mkdir"; path: string; mode: number }
  | { op: "chmod"; path: string; mode: number }
  /** A symlink at `path` to `target`, replacing whatever symlink or empty directory is there. */
  | { op: "symlink"; path: string; target: string; replace: boolean }
  /** lstat of `path`: its inode, link count and modification time (null if absent). */
  | { op: "inode"; path: string }
  /** Changes behind nixseal's back: remove a file, overwrite one in place (keeping owner and mode). */
  | { op: "remove"; path: string }
  | { op: "overwrite"; path: string; content: string }
  /** `mount --bind from to`: another file seen at `to` (in the namespace only), its path the same. */
  | { op: "bind"; from: string; to: string };

export interface FileInfo {
  type: "file" | "dir" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  content?: string;
  target?: string;
}

export type StepResult =
  | { op: "install"; status: number | null; stdout: string; stderr: string }
  | { op: "snapshot"; exists: boolean; fsType: number | null; files: Record<string, FileInfo> }
  | { op: "inode"; ino: number | null; nlink: number | null; mtimeNs: string | null }
  | {
      op:
        | "mountRamfs"
        | "mountTmpfs"
        | "copy"
        | "write"
        | "mkdir"
        | "chmod"
        | "symlink"
        | "remove"
        | "overwrite"
        | "bind";
      ok: boolean;
    }
  | {
      op: "stat";
      lstatType: FileInfo["type"] | null;
      stat: { mode: number; uid: number; gid: number } | null;
      noFollowOpen: boolean;
      content: string | null;
    }
  | {
      op: "installPairs";
      rounds: {
        statuses: (number | null)[];
        stderr: string;
        target: string | null;
        content: string | null;
      }[];
    };

function runCli(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, "install", ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      stderr += d;
    });
    child.on("close", (status) => resolve({ status, stderr }));
  });
}

async function installPairs(step: Extract<Step, { op: "installPairs" }>): Promise<StepResult> {
  const rounds: Extract<StepResult, { op: "installPairs" }>["rounds"] = [];
  for (let i = 0; i < step.pairs; i++) {
    const both = await Promise.all([runCli(step.args), runCli(step.args)]);
    let target: string | null = null;
    let content: string | null = null;
    try {
      target = fs.readlinkSync(step.secretsDir);
      content = fs.readFileSync(path.join(step.secretsDir, step.file), "utf8");
    } catch {}
    rounds.push({
      statuses: both.map((r) => r.status),
      stderr: both.map((r) => r.stderr).join(""),
      target,
      content,
    });
  }
  return { op: "installPairs", rounds };
}

function infoOf(p: string): FileInfo {
  const st = fs.lstatSync(p);
  const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  if (st.isSymbolicLink()) return { type: "symlink", ...base, target: fs.readlinkSync(p) };
  if (st.isDirectory()) return { type: "dir", ...base };
  if (st.isFile()) return { type: "file", ...base, content: fs.readFileSync(p, "latin1") };
  return { type: "other", ...base };
}

function snapshot(dir: string): StepResult {
  const files: Record<string, FileInfo> = {};
  if (!fs.existsSync(dir) && !isLink(dir)) return { op: "snapshot", exists: false, fsType: null, files };
  const walk = (rel: string) => {
    const abs = rel === "" ? dir : path.join(dir, rel);
    const info = infoOf(abs);
    files[rel === "" ? "." : rel] = info;
    if (info.type === "dir")
      for (const name of fs.readdirSync(abs).sort()) walk(rel === "" ? name : `${rel}/${name}`);
  };
  walk("");
  let fsType: number | null = null;
  try {
    fsType = fs.statfsSync(dir).type >>> 0;
  } catch {}
  return { op: "snapshot", exists: true, fsType, files };
}

function statPath(p: string): StepResult {
  let lstatType: FileInfo["type"] | null = null;
  let stat: { mode: number; uid: number; gid: number } | null = null;
  let noFollowOpen = false;
  let content: string | null = null;
  try {
    lstatType = infoOf(p).type;
    const st = fs.statSync(p);
    stat = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    content = fs.readFileSync(p, "latin1");
  } catch {}
  try {
    fs.closeSync(fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW));
    noFollowOpen = true;
  } catch {}
  return { op: "stat", lstatType, stat, noFollowOpen, content };
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

async function runStep(step: Step): Promise<StepResult> {
  switch (step.op) {
    case "install": {
      const argv = [process.execPath, step.cli ?? CLI, "install", ...step.args];
      const cmd = step.strace
        ? ["strace", "-f", "-v", "-s", "65536", "-e", "trace=execve,openat", "-o", step.strace, ...argv]
        : argv;
      const r = spawnSync(cmd[0]!, cmd.slice(1), {
        env: { ...process.env, ...step.env },
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
      return { op: "install", status: r.status, stdout: r.stdout, stderr: r.stderr };
    }
    case "snapshot":
      return snapshot(step.dir);
    case "mountRamfs": {
      fs.mkdirSync(step.dir, { recursive: true });
      const r = spawnSync("mount", ["-t", "ramfs", "-o", "mode=0751", "test", step.dir]);
      return { op: "mountRamfs", ok: r.status === 0 };
    }
    case "mountTmpfs": {
      fs.mkdirSync(step.dir, { recursive: true });
      const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${step.size},mode=0751`, "test", step.dir]);
      return { op: "mountTmpfs", ok: r.status === 0 };
    }
    case "installPairs":
      return installPairs(step);
    case "copy":
      fs.copyFileSync(step.from, step.to);
      return { op: "copy", ok: true };
    case "stat":
      return statPath(step.path);
    case "write":
      fs.rmSync(step.path, { force: true });
      if (step.content !== null) fs.writeFileSync(step.path, step.content);
      return { op: "write", ok: true };
    case "mkdir":
      fs.mkdirSync(step.path, { recursive: true, mode: step.mode });
      fs.chmodSync(step.path, step.mode);
      return { op: "mkdir", ok: true };
    case "chmod":
      fs.chmodSync(step.path, step.mode);
      return { op: "chmod", ok: true };
    case "symlink":
      if (step.replace) fs.rmSync(step.path, { force: true });
      fs.mkdirSync(path.dirname(step.path), { recursive: true });
      fs.symlinkSync(step.target, step.path);
      return { op: "symlink", ok: true };
    case "inode":
      try {
        const st = fs.lstatSync(step.path, { bigint: true });
        return { op: "inode", ino: Number(st.ino), nlink: Number(st.nlink), mtimeNs: String(st.mtimeNs) };
      } catch {
        return { op: "inode", ino: null, nlink: null, mtimeNs: null };
      }
    case "remove":
      fs.rmSync(step.path);
      return { op: "remove", ok: true };
    case "overwrite":
      fs.writeFileSync(step.path, step.content);
      return { op: "overwrite", ok: true };
    case "bind": {
      const r = spawnSync("mount", ["--bind", step.from, step.to]);
      return { op: "bind", ok: r.status === 0 };
    }
  }
}

const i = process.argv.indexOf("--plan");
if (i > 0 && process.argv[i + 1]) {
  const plan = JSON.parse(fs.readFileSync(process.argv[i + 1]!, "utf8")) as Step[];
  const results: StepResult[] = [];
  for (const step of plan) results.push(await runStep(step));
  process.stdout.write(JSON.stringify(results));
}

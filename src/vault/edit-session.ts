/**
 * The place where a secret's plaintext lives while the user edits it: a fresh 0700 directory on a
 * RAM-backed filesystem (tmpfs/ramfs), one 0600 file, and the editor that opens it. The directory
 * is removed on every exit path: normal return (dispose()), a signal while the editor runs
 * (runEditor() kills and waits for the editor first), and process exit (a last-resort 'exit'
 * hook). Files are overwritten with zeros before they are unlinked.
 *
 * No printing and no process.exit here: the CLI decides what to say and which code to exit with.
 */
import type { ChildProcess } from "node:child_process";
import type { Stats } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { childProcess, findExecutable, nodeFs as fs, ioError, NixsealError } from "../common/index.js";
import { MAX_SECRET_FILE_SIZE } from "./rules.js";

/** statfs(2) f_type of tmpfs (linux/magic.h). */
export const TMPFS_MAGIC = 0x01021994;
/** statfs(2) f_type of ramfs (linux/magic.h). */
export const RAMFS_MAGIC = 0x858458f6;

/** Edit directories are named `nixseal-edit.<pid>.<random>` so stale ones can be recognised. */
const DIR_PREFIX = "nixseal-edit.";
const STALE_DIR = /^nixseal-edit\.(\d+)\.[A-Za-z0-9]{6}$/;

/** Is `dir` on a filesystem that lives in memory only (tmpfs or ramfs)? */
export function isRamBacked(dir: string): boolean {
  try {
    // f_type is unsigned in the kernel; Node may hand it back as a negative 32-bit number.
    const type = fs.statfsSync(dir).type >>> 0;
    return type === TMPFS_MAGIC || type === RAMFS_MAGIC;
  } catch {
    return false;
  }
}

/** Where an edit directory may go, best first: $XDG_RUNTIME_DIR, /dev/shm, /run/user/$UID. */
export function ramDirCandidates(env: NodeJS.ProcessEnv = process.env, uid = os.userInfo().uid): string[] {
  const out: string[] = [];
  if (env.XDG_RUNTIME_DIR && path.isAbsolute(env.XDG_RUNTIME_DIR)) out.push(env.XDG_RUNTIME_DIR);
  out.push("/dev/shm", `/run/user/${uid}`);
  return [...new Set(out)];
}

function isWritableDir(dir: string): boolean {
  try {
    if (!fs.statSync(dir).isDirectory()) return false;
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface EditBase {
  /** The directory the edit directory is created in. */
  dir: string;
  /** False only with allowDisk, when no RAM-backed directory was usable. */
  ramBacked: boolean;
}

/**
 * Chooses where the plaintext may go: the first writable RAM-backed candidate. Without one, it
 * refuses, unless `allowDisk` (then the system temp dir, and the caller should warn).
 */
export function chooseEditBase(
  options: { env?: NodeJS.ProcessEnv; candidates?: readonly string[]; allowDisk?: boolean } = {},
): EditBase {
  const env = options.env ?? process.env;
  const candidates = options.candidates ?? ramDirCandidates(env);
  for (const dir of candidates) {
    if (isWritableDir(dir) && isRamBacked(dir)) return { dir, ramBacked: true };
  }
  if (options.allowDisk) {
    return { dir: env.TMPDIR && path.isAbsolute(env.TMPDIR) ? env.TMPDIR : os.tmpdir(), ramBacked: false };
  }
  throw new NixsealError(
    "IO",
    `no RAM-backed directory to hold the plaintext while editing (tried ${candidates.join(", ")})`,
    {
      hint: "set XDG_RUNTIME_DIR to a tmpfs directory (e.g. mount one), or pass --allow-disk-tempdir to accept plaintext on disk",
    },
  );
}

/**
 * The file name the editor sees: the secret's basename without ".age", so editors pick their
 * syntax by extension ("hosts/config.yaml.age" -> "config.yaml"). Only harmless characters.
 */
export function editFileName(secretName: string): string {
  const base = path.posix.basename(secretName).replace(/\.age$/, "");
  const safe = base.replace(/[^A-Za-z0-9._+@=,-]/g, "_");
  return safe === "" || /^\.+$/.test(safe) ? "secret" : safe;
}

/** Overwrites a regular file with zeros (through a descriptor that cannot follow a symlink). */
function zeroFile(file: string, size: number): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return;
  }
  try {
    const zeros = Buffer.alloc(Math.min(size, 1024 * 1024));
    for (let off = 0; off < size; off += zeros.length) {
      fs.writeSync(fd, zeros, 0, Math.min(zeros.length, size - off), off);
    }
    fs.fsyncSync(fd);
  } catch {
    // Best effort: the unlink below still happens.
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Removes a directory tree the user owns, zeroing every regular file first. Never follows
 * symlinks. Returns false if something could not be removed.
 */
export function wipeTree(dir: string): boolean {
  let ok = true;
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT";
  }
  for (const name of entries) {
    const p = path.join(dir, name);
    let st: Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory()) {
      ok = wipeTree(p) && ok;
      continue;
    }
    if (st.isFile()) zeroFile(p, st.size);
    try {
      fs.unlinkSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") ok = false;
    }
  }
  try {
    fs.rmdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") ok = false;
  }
  return ok;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes edit directories left in `base` by a nixseal that could not clean up (SIGKILL, a
 * crash): ours (same uid), named like ours, whose process is gone. Returns what was removed.
 */
export function sweepStaleEditDirs(base: string, uid = os.userInfo().uid): string[] {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync(base);
  } catch {
    return removed;
  }
  for (const name of entries) {
    const m = STALE_DIR.exec(name);
    if (!m) continue;
    const p = path.join(base, name);
    try {
      const st = fs.lstatSync(p);
      if (!st.isDirectory() || st.uid !== uid) continue;
    } catch {
      continue;
    }
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    if (wipeTree(p)) removed.push(p);
  }
  return removed;
}

/** One edit: a private directory holding the plaintext file. dispose() removes both. */
export class EditSession {
  readonly dir: string;
  readonly file: string;
  readonly ramBacked: boolean;
  private disposed = false;
  private readonly onExit = () => this.dispose();

  private constructor(dir: string, file: string, ramBacked: boolean) {
    this.dir = dir;
    this.file = file;
    this.ramBacked = ramBacked;
    // Last resort: whatever ends the process (main's signal handlers call process.exit), the
    // directory goes with it. 'exit' listeners run synchronously, as the removal does.
    process.on("exit", this.onExit);
  }

  /**
   * Creates the directory (0700, on `base`) and the plaintext file (0600 from its creation:
   * never a moment with a wider mode) holding `content`.
   */
  static create(secretName: string, content: Uint8Array, base: EditBase): EditSession {
    let dir: string;
    try {
      dir = fs.mkdtempSync(path.join(base.dir, `${DIR_PREFIX}${process.pid}.`));
    } catch (e) {
      throw ioError("create a private directory in", base.dir, e);
    }
    const session = new EditSession(dir, path.join(dir, editFileName(secretName)), base.ramBacked);
    try {
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || st.uid !== os.userInfo().uid || (st.mode & 0o077) !== 0) {
        throw new NixsealError("IO", `${dir} is not a private directory`, {
          hint: "something changed the edit directory; check who else can write to its parent",
        });
      }
      const fd = fs.openSync(
        session.file,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
        0o600,
      );
      try {
        let off = 0;
        while (off < content.length) off += fs.writeSync(fd, content, off, content.length - off);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      session.dispose();
      if (e instanceof NixsealError) throw e;
      throw ioError("write", session.file, e);
    }
    return session;
  }

  /** The file as the editor left it (refusing a symlink or something that is not a file). */
  read(): Buffer {
    let fd: number;
    try {
      fd = fs.openSync(this.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        throw new NixsealError("IO", "the editor removed the file it was editing", {
          hint: "nothing was written; run the edit again and save the file in place",
        });
      }
      throw ioError("read", this.file, e);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) {
        throw new NixsealError("IO", `${this.file} is not a regular file any more`, {
          hint: "nothing was written; run the edit again",
        });
      }
      if (st.size > MAX_SECRET_FILE_SIZE) {
        throw new NixsealError("IO", "the edited file is too large for a secret", {
          hint: "nothing was written; secrets are small files",
        });
      }
      return fs.readFileSync(fd);
    } catch (e) {
      if (e instanceof NixsealError) throw e;
      throw ioError("read", this.file, e);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Zeroes and removes every file in the directory, then the directory. Idempotent, sync. */
  dispose(): boolean {
    if (this.disposed) return true;
    this.disposed = true;
    process.removeListener("exit", this.onExit);
    return wipeTree(this.dir);
  }
}

// --- the editor ------------------------------------------------------------------------------

/** The editor command line, as git chooses it: $VISUAL, else $EDITOR, else vi. */
export function editorString(env: NodeJS.ProcessEnv = process.env): string {
  for (const v of [env.VISUAL, env.EDITOR]) if (v && v.trim() !== "") return v.trim();
  return "vi";
}

/** Names of the vim family (vim, nvim, gvim, mvim, vimx, Debian's vim.basic/vim.tiny/...). */
const VIM_NAME = /^(?:n|g|m)?vimx?(?:\.[A-Za-z0-9_-]+)?$/;
const GUI_VIM_NAME = /^[gm]vim/;

/** The first word of an editor command, if it is a plain word (no quotes or shell syntax). */
function firstWord(editor: string): string | null {
  const m = /^([^\s'"\\$`;&|<>()*?[\]#~=]+)(?:\s|$)/.exec(editor);
  return m ? m[1]! : null;
}

function findOnPath(program: string, env: NodeJS.ProcessEnv): string | null {
  if (program.includes("/")) return program;
  return findExecutable(program, env.PATH);
}

/**
 * Which member of the vim family the editor command runs, or null. "vi" counts only when it is
 * vim under another name (Debian's alternatives); nvi or busybox vi take none of vim's flags.
 */
export function vimFlavour(editor: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const word = firstWord(editor);
  if (word === null) return null;
  const name = path.basename(word);
  if (VIM_NAME.test(name)) return name;
  if (name !== "vi") return null;
  const found = findOnPath(word, env);
  if (found === null) return null;
  try {
    const real = path.basename(fs.realpathSync(found));
    return VIM_NAME.test(real) ? real : null;
  } catch {
    return null;
  }
}

/**
 * Flags that keep vim and neovim from writing the plaintext anywhere else: no swap file (-n),
 * no viminfo/shada with registers and history (-i NONE), no backup or undo file. The options are
 * set before the vimrc (--cmd) and again after it (-c), so a vimrc that turns them on loses.
 */
export function vimFlags(flavour: string): string[] {
  const flags = [
    "-n",
    "-i",
    "NONE",
    "--cmd",
    "set nobackup nowritebackup noundofile noswapfile",
    "-c",
    "setlocal noswapfile noundofile | set nobackup nowritebackup",
  ];
  // The GUI versions fork into the background unless told not to: the edit would end at once.
  if (GUI_VIM_NAME.test(flavour)) flags.unshift("-f");
  return flags;
}

export interface EditorInvocation {
  /** The editor command as the user wrote it ($VISUAL/$EDITOR/vi). */
  editor: string;
  /** Extra flags nixseal adds before the file (vim's, or none). */
  flags: string[];
  /** What is spawned: /bin/sh and its arguments. */
  program: string;
  args: string[];
}

/**
 * How the editor is run: through the shell, as git does (`sh -c 'EDITOR "$@"' EDITOR FILE`), so
 * `EDITOR="code --wait"` works. The file path is an argument; the content never is. A command
 * of plain words is exec-ed by the shell, so a signal sent to the child reaches the editor.
 */
export function editorInvocation(file: string, env: NodeJS.ProcessEnv = process.env): EditorInvocation {
  const editor = editorString(env);
  const flavour = vimFlavour(editor, env);
  const flags = flavour === null ? [] : vimFlags(flavour);
  const plainWords = /^[A-Za-z0-9_./+,:@%~ -]+$/.test(editor);
  const script = `${plainWords ? "exec " : ""}${editor} "$@"`;
  return { editor, flags, program: "/bin/sh", args: ["-c", script, editor, ...flags, file] };
}

export type EditorOutcome =
  /** The editor exited by itself with this code. */
  | { kind: "exit"; code: number }
  /** The editor was killed by a signal nobody sent through nixseal. */
  | { kind: "editor-signal"; signal: NodeJS.Signals }
  /** nixseal itself got this signal while the editor ran; the editor was stopped. */
  | { kind: "interrupted"; signal: NodeJS.Signals }
  /** The editor could not be started at all. */
  | { kind: "spawn-error"; message: string };

const HANDLED_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

export interface RunEditorOptions {
  env?: NodeJS.ProcessEnv;
  /** How long an editor gets to exit after SIGTERM/SIGHUP before SIGKILL (ms). */
  graceMs?: number;
}

/**
 * Runs the editor on the session's file with the terminal (stdio inherited) and the user's
 * environment, unchanged. While it runs, SIGINT/SIGTERM/SIGHUP to nixseal are handled here
 * (the process's other handlers are set aside and restored afterwards): the editor is asked to
 * stop (SIGTERM, or SIGHUP for a hang-up), killed after a grace period, and waited for, so the
 * caller can remove the directory knowing nothing writes into it any more.
 */
export function runEditor(session: EditSession, options: RunEditorOptions = {}): Promise<EditorOutcome> {
  const env = options.env ?? process.env;
  const graceMs = options.graceMs ?? 3000;
  const inv = editorInvocation(session.file, env);
  const saved = new Map<NodeJS.Signals, ((...args: unknown[]) => void)[]>();
  return new Promise<EditorOutcome>((resolve) => {
    let child: ChildProcess;
    let interrupted: NodeJS.Signals | null = null;
    let killTimer: NodeJS.Timeout | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      if (interrupted !== null) {
        // A second signal: stop waiting politely.
        child.kill("SIGKILL");
        return;
      }
      interrupted = signal;
      child.kill(signal === "SIGHUP" ? "SIGHUP" : "SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    };
    const restore = () => {
      if (killTimer) clearTimeout(killTimer);
      for (const sig of HANDLED_SIGNALS) {
        process.removeListener(sig, onSignal);
        for (const l of saved.get(sig) ?? []) process.on(sig, l);
      }
    };
    for (const sig of HANDLED_SIGNALS) {
      const listeners = process.listeners(sig) as ((...args: unknown[]) => void)[];
      saved.set(sig, listeners);
      process.removeAllListeners(sig);
      process.on(sig, onSignal);
    }
    try {
      child = childProcess().spawn(inv.program, inv.args, { stdio: "inherit", env });
    } catch (e) {
      restore();
      resolve({ kind: "spawn-error", message: (e as Error).message });
      return;
    }
    let settled = false;
    child.once("error", (e) => {
      if (settled) return;
      settled = true;
      restore();
      resolve({ kind: "spawn-error", message: e.message });
    });
    child.once("exit", (code, signal) => {
      if (settled) return;
      settled = true;
      restore();
      if (interrupted !== null) resolve({ kind: "interrupted", signal: interrupted });
      else if (signal !== null) resolve({ kind: "editor-signal", signal });
      else resolve({ kind: "exit", code: code ?? 1 });
    });
  });
}

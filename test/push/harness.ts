/**
 * Test hosts for push: each a real `/usr/sbin/sshd -D` on 127.0.0.1:<free port>, inside its own
 * mount namespace (`unshare -m --propagation private`) with its own tmpfs on /run, so each has its
 * own /run/keys and /run/nixseal-keys. Key authentication only (a generated client key, root
 * login by key), a host key per host, the client's own known_hosts with StrictHostKeyChecking=yes.
 * The remote `nixseal` is a wrapper (the plan's nixsealCommand) that logs each run and puts a
 * recording `systemctl` first on PATH (systemd is not PID 1 here); it fails for failing.service.
 * Not a test itself (no .test. in the name).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { CLI, tempDir, which } from "../helpers.js";

export const SSHD = "/usr/sbin/sshd";

/** Why the push tests cannot run here, or null. */
export function pushTestsSkipReason(): string | null {
  if (process.getuid?.() !== 0) return "needs root (mount namespaces, sshd, chown)";
  if (!fs.existsSync(SSHD)) return "needs the OpenSSH server (/usr/sbin/sshd)";
  for (const t of ["ssh", "ssh-keygen", "unshare", "nsenter", "useradd", "groupadd"])
    if (which(t) === null) return `needs ${t}`;
  return null;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, "127.0.0.1");
      c.on("connect", () => {
        c.destroy();
        resolve(true);
      });
      c.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd on port ${port} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

export interface FileInfo {
  type: "file" | "dir" | "symlink";
  mode: number;
  uid: number;
  gid: number;
  content?: string;
  ino?: number;
}

export interface TestHost {
  name: string;
  port: number;
  dir: string;
  sshd: ChildProcess;
  /** The plan's connection fields for this host. */
  plan: { targetHost: string; targetPort: number; targetUser: string; nixsealCommand: string };
  /** Lines the wrapper logged: one per run of `nixseal receive`. */
  receiveRuns(): number;
  /** Lines the recording systemctl logged. */
  systemctlCalls(): string[];
  /** sshd's log (LogLevel VERBOSE: one "Connection from" line per connection). */
  sshdLog(): string;
  /** Files under `dir` in the host's namespace (symlinks not followed, but `dir` itself is). */
  snapshot(dir: string): { target: string | null; files: Record<string, FileInfo> };
  /** lstat and stat of one path in the host's namespace (null if it does not exist). */
  inspect(p: string): PathInfo | null;
  /** Runs `sh -c script` in the host's mount namespace; throws if it fails. */
  shell(script: string): void;
}

/** Lists a directory inside a host's mount namespace, as JSON. */
const LISTER = `
const fs = require("fs");
const dir = process.argv[1];
const out = { target: null, files: {} };
try { out.target = fs.readlinkSync(dir); } catch {}
let names = [];
try { names = fs.readdirSync(dir); } catch {}
for (const n of names) {
  const p = dir + "/" + n;
  const st = fs.lstatSync(p);
  const info = { type: st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "dir" : "file", mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, ino: st.ino };
  if (info.type === "file") info.content = fs.readFileSync(p, "utf8");
  out.files[n] = info;
}
try { const st = fs.statSync(dir); out.dirMode = st.mode & 0o7777; out.dirGid = st.gid; } catch {}
process.stdout.write(JSON.stringify(out));
`;

export interface Fleet {
  dir: string;
  hosts: TestHost[];
  /** ssh arguments every push of the tests uses (-F a config naming the key and known_hosts). */
  sshConfig: string;
  knownHosts: string;
  clientKey: string;
  /** Stops every sshd (waiting for them) and removes the directory. */
  stop(): Promise<void>;
}

export interface HostOptions {
  /** The size of the host's /run tmpfs (mount -o size=), default 16m. */
  runSize?: string;
  /**
   * /run/keys a mount point as NixOS makes it (boot.specialFileSystems): a ramfs, mode 0750,
   * group keys (the group must exist before the fleet starts).
   */
  keysMount?: boolean;
}

/** What stat says of a path inside a host's namespace, with and without following symlinks. */
export interface PathInfo {
  /** lstat: the path itself. */
  type: "file" | "dir" | "symlink" | "other";
  link: string | null;
  /** stat (symlinks followed), or null if it does not resolve. */
  target: { type: "file" | "dir" | "other"; mode: number; uid: number; gid: number; ino: number } | null;
  content: string | null;
  /** Whether the path is a mount point (its device differs from its parent's). */
  mountPoint: boolean;
}

const INSPECTOR = `
const fs = require("fs");
const p = process.argv[1];
const kind = (st) => st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "dir" : st.isFile() ? "file" : "other";
const l = fs.lstatSync(p);
const out = { type: kind(l), link: null, target: null, content: null, mountPoint: false };
if (l.isSymbolicLink()) out.link = fs.readlinkSync(p);
try {
  const st = fs.statSync(p);
  out.target = { type: kind(st), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, ino: st.ino };
  if (st.isFile()) out.content = fs.readFileSync(p, "utf8");
} catch {}
out.mountPoint = !l.isSymbolicLink() && fs.statSync(require("path").dirname(p)).dev !== l.dev;
process.stdout.write(JSON.stringify(out));
`;

/**
 * A relay for ssh's ProxyCommand that forwards to PORT and cuts both ways after LIMIT bytes from
 * ssh; with a third argument, it keeps there how many bytes from ssh it forwarded so far (ssh ends
 * its ProxyCommand with a signal, so the count is written as it goes).
 */
export const RELAY = `
const net = require("net");
const [port, limit] = process.argv.slice(2, 4).map(Number);
const countFile = process.argv[4];
let sent = 0;
const sock = net.connect(port, "127.0.0.1");
const cut = () => { sock.destroy(); process.exit(0); };
process.stdin.on("data", (b) => {
  if (sent + b.length >= limit) { sock.write(b.subarray(0, limit - sent), cut); sent = limit; process.stdin.pause(); return; }
  sent += b.length; sock.write(b);
  if (countFile) require("fs").writeFileSync(countFile, String(sent));
});
process.stdin.on("end", () => sock.end());
sock.on("data", (b) => process.stdout.write(b));
sock.on("end", () => process.exit(0));
sock.on("error", () => process.exit(1));
`;

/** Starts `n` hosts. */
export async function startFleet(n: number, options: HostOptions[] = []): Promise<Fleet> {
  const { dir, cleanup } = tempDir("nixseal-push-");
  fs.chmodSync(dir, 0o755);
  const clientKey = path.join(dir, "client_key");
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "deployer", "-f", clientKey]);
  const knownHosts = path.join(dir, "known_hosts");
  const sshConfig = path.join(dir, "ssh_config");
  fs.writeFileSync(
    sshConfig,
    [
      "Host *",
      `  IdentityFile ${clientKey}`,
      "  IdentitiesOnly yes",
      "  BatchMode yes",
      `  UserKnownHostsFile ${knownHosts}`,
      "  GlobalKnownHostsFile /dev/null",
      "  StrictHostKeyChecking yes",
      "  LogLevel ERROR",
      "",
    ].join("\n"),
  );
  const hosts: TestHost[] = [];
  const known: string[] = [];
  const stopAll = () => {
    for (const h of hosts) if (h.sshd.exitCode === null) h.sshd.kill("SIGTERM");
  };
  try {
    for (let i = 0; i < n; i++)
      hosts.push(await startHost(dir, `host${i + 1}`, clientKey, options[i] ?? {}, known));
    fs.writeFileSync(knownHosts, known.join(""));
    await Promise.all(hosts.map((h) => waitForPort(h.port, 20_000)));
  } catch (e) {
    stopAll();
    cleanup();
    throw e;
  }
  return {
    dir,
    hosts,
    sshConfig,
    knownHosts,
    clientKey,
    async stop() {
      const exits = hosts.map(
        (h) =>
          new Promise<void>((resolve) => {
            if (h.sshd.exitCode !== null || h.sshd.signalCode !== null) resolve();
            else h.sshd.on("exit", () => resolve());
          }),
      );
      stopAll();
      await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 10_000))]);
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}

async function startHost(
  root: string,
  name: string,
  clientKey: string,
  options: HostOptions,
  known: string[],
): Promise<TestHost> {
  const dir = path.join(root, name);
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true, mode: 0o755 });
  const hostKey = path.join(dir, "ssh_host_ed25519_key");
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", hostKey]);
  fs.copyFileSync(`${clientKey}.pub`, path.join(dir, "authorized_keys"));
  const port = await freePort();
  known.push(
    `[127.0.0.1]:${port} ${fs.readFileSync(`${hostKey}.pub`, "utf8").split(" ").slice(0, 2).join(" ")}\n`,
  );
  const cfg = path.join(dir, "sshd_config");
  fs.writeFileSync(
    cfg,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "PidFile none",
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );
  const wrapper = path.join(dir, "nixseal");
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh\necho "$$ $*" >> ${dir}/receive.log\nPATH=${dir}/bin:$PATH\nexport PATH\nexec ${process.execPath} ${CLI} "$@"\n`,
    { mode: 0o755 },
  );
  fs.writeFileSync(
    path.join(dir, "bin", "systemctl"),
    `#!/bin/sh\necho "$*" >> ${dir}/systemctl.log\ncase " $* " in *" failing.service "*) echo "Job for failing.service failed because the control process exited with error code." >&2; exit 1;; esac\nexit 0\n`,
    { mode: 0o755 },
  );
  const log = path.join(dir, "sshd.log");
  const keys = options.keysMount
    ? "mkdir -m 0750 /run/keys && mount -t ramfs -o nosuid,nodev,mode=0750 ramfs /run/keys && chgrp keys /run/keys && "
    : "";
  const script = `mount -t tmpfs -o size=${options.runSize ?? "16m"},mode=0755 tmpfs /run && ${keys}mkdir -p -m 0755 /run/sshd && exec ${SSHD} -D -E ${log} -f ${cfg}`;
  const sshd = spawn("unshare", ["-m", "--propagation", "private", "--", "/bin/sh", "-c", script], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const read = (f: string) => {
    try {
      return fs.readFileSync(path.join(dir, f), "utf8");
    } catch {
      return "";
    }
  };
  return {
    name,
    port,
    dir,
    sshd,
    plan: { targetHost: "127.0.0.1", targetPort: port, targetUser: "root", nixsealCommand: wrapper },
    receiveRuns: () =>
      read("receive.log")
        .split("\n")
        .filter((l) => / receive$/.test(l)).length,
    systemctlCalls: () =>
      read("systemctl.log")
        .split("\n")
        .filter((l) => l !== ""),
    sshdLog: () => read("sshd.log"),
    snapshot(d: string) {
      const r = spawnSync(
        "nsenter",
        ["-t", String(sshd.pid), "-m", "--", process.execPath, "-e", LISTER, d],
        {
          encoding: "utf8",
        },
      );
      if (r.status !== 0) throw new Error(`snapshot of ${name}:${d}: ${r.stderr}`);
      return JSON.parse(r.stdout) as { target: string | null; files: Record<string, FileInfo> };
    },
    inspect(p: string) {
      const r = spawnSync(
        "nsenter",
        ["-t", String(sshd.pid), "-m", "--", process.execPath, "-e", INSPECTOR, p],
        { encoding: "utf8" },
      );
      if (r.status !== 0) {
        if (/ENOENT/.test(r.stderr)) return null;
        throw new Error(`inspect ${name}:${p}: ${r.stderr}`);
      }
      return JSON.parse(r.stdout) as PathInfo;
    },
    shell(script: string) {
      const r = spawnSync("nsenter", ["-t", String(sshd.pid), "-m", "--", "/bin/sh", "-c", script], {
        encoding: "utf8",
      });
      if (r.status !== 0) throw new Error(`${name}: ${script}: ${r.stderr}`);
    },
  };
}

/**
 * Test users and groups (created if missing, removed by the returned cleanup). The group `keys`
 * (the default group of every pushed key, as on NixOS) and the user `nspush` are used by several
 * test files, which may run at the same time: they are created if missing but never removed, or
 * one file would remove them from under another.
 */
export function ensurePrincipals(users: string[], groups: string[]): () => void {
  const made: (() => void)[] = [];
  for (const g of groups) {
    if (spawnSync("getent", ["group", g]).status !== 0) {
      const r = spawnSync("groupadd", ["--system", g], { encoding: "utf8" });
      // Another test file may have made it a moment ago.
      if (r.status !== 0 && spawnSync("getent", ["group", g]).status !== 0) sh("groupadd", ["--system", g]);
      if (g !== "keys") made.push(() => spawnSync("groupdel", [g]));
    }
  }
  for (const u of users) {
    if (spawnSync("getent", ["passwd", u]).status !== 0) {
      const r = spawnSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", u], {
        encoding: "utf8",
      });
      if (r.status !== 0 && spawnSync("getent", ["passwd", u]).status !== 0)
        throw new Error(`useradd ${u}: ${r.stderr}`);
      if (u !== "nspush") made.unshift(() => spawnSync("userdel", [u]));
    }
  }
  return () => {
    for (const f of made) f();
  };
}

/** The uid or gid of a name, as the host (same /etc) resolves it. */
export function idOf(db: "passwd" | "group", name: string): number {
  return Number(sh("getent", [db, name]).split(":")[2]);
}

/** One host in `nixseal push --json` (docs/push.md, "The report"). */
export interface HostJson {
  result: string;
  added: string[];
  changed: string[];
  removed: string[];
  kept: string[];
  bytesSent: number;
  restarted: string[];
  reloaded: string[];
  started: string[];
  stopped: string[];
  sealed: string[];
  unsealed: string[];
  problems: { message: string }[];
}

/**
 * Which user asked for the build the pre-build hook runs for.
 *
 * Nix gives the hook no client uid. But the hook is a child of the process that runs the build,
 * and in a daemon that is the per-connection worker, which nix-daemon forks after reading the
 * client's SO_PEERCRED; when the daemon was started with an argument (`nix-daemon --daemon`, as
 * the NixOS and Debian units do) the worker overwrites that argument with the client's pid
 * (checked with Nix 2.8: its cmdline reads "nix-daemon <pid>"). The hook reads it from
 * /proc/<ppid>/cmdline and takes that process's real uid. A pid can be reused: a process that
 * started after the worker was forked cannot be the client, so its start time must not be later
 * than the worker's. Without a daemon (a local build by root), the client is the hook's parent.
 */
import * as fs from "node:fs";
import type { BuildClient } from "./policy.js";

function readProc(pid: number, file: string): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, "latin1");
  } catch {
    return null;
  }
}

/** The real uid of a process, or null. */
export function uidOfProcess(pid: number): number | null {
  const status = readProc(pid, "status");
  const m = status === null ? null : /^Uid:\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : null;
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot), or null. */
export function startTimeOfProcess(pid: number): number | null {
  const stat = readProc(pid, "stat");
  if (stat === null) return null;
  // The command name (field 2) may contain spaces and parentheses: fields start after the last ")".
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const v = rest[19]; // field 22 is the 20th after field 2
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
}

/** Finds the client of the build whose hook runs in this process (parent pid `ppid`). */
export function buildClientOf(ppid: number): BuildClient {
  const parentUid = uidOfProcess(ppid);
  if (parentUid === null) return { uid: null, how: `the parent process ${ppid} is gone` };
  if (parentUid !== 0) return { uid: parentUid, how: `a build run by uid ${parentUid} without the daemon` };
  const cmdline = readProc(ppid, "cmdline");
  const argv = cmdline === null ? [] : cmdline.split("\0");
  const prog = (argv[0] ?? "").split("/").pop();
  if (prog !== "nix-daemon") return { uid: 0, how: "a build run by root without the daemon" };
  const pidText = argv[1] ?? "";
  if (!/^\d{1,10}$/.test(pidText)) {
    return {
      uid: null,
      how: "the daemon did not record the client pid (start nix-daemon with an argument, e.g. nix-daemon --daemon)",
    };
  }
  const clientPid = Number(pidText);
  const workerStart = startTimeOfProcess(ppid);
  const clientStart = startTimeOfProcess(clientPid);
  if (workerStart === null || clientStart === null) {
    return { uid: null, how: `the client process ${clientPid} is gone` };
  }
  if (clientStart > workerStart) {
    return { uid: null, how: `pid ${clientPid} was reused after the client connected` };
  }
  const uid = uidOfProcess(clientPid);
  if (uid === null) return { uid: null, how: `the client process ${clientPid} is gone` };
  return { uid, how: `daemon client pid ${clientPid}` };
}

/** A user name's uid from /etc/passwd (the hook runs without NSS helpers), or null. */
export function uidOfUser(name: string, passwdFile = "/etc/passwd"): number | null {
  let text: string;
  try {
    text = fs.readFileSync(passwdFile, "utf8");
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f[0] === name && f.length >= 7 && /^\d+$/.test(f[2]!)) return Number(f[2]);
  }
  return null;
}

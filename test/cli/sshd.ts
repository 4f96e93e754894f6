/**
 * A real OpenSSH server for CLI tests: `sshd -D` on 127.0.0.1 on a free port, with host keys
 * made in a temp dir, key-only login for a client key made there too, and the client options
 * that keep the user's own known_hosts and keys out of the test. Needs root (tests run as root)
 * and /run/sshd, sshd's privilege-separation directory, which is created if missing.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { run, which } from "../helpers.js";

export const SSHD = fs.existsSync("/usr/sbin/sshd") ? "/usr/sbin/sshd" : which("sshd");

/** Why sshd tests cannot run here, or null. */
export function sshdMissing(): string | null {
  if (SSHD === null) return "sshd (openssh-server) is not installed";
  for (const tool of ["ssh", "ssh-keygen", "ssh-keyscan"])
    if (!which(tool)) return `${tool} is not installed`;
  if (process.getuid?.() !== 0) return "sshd tests need root";
  return null;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export function sshKeygen(file: string, type = "ed25519"): string {
  const r = run(which("ssh-keygen")!, ["-q", "-t", type, "-N", "", "-C", path.basename(file), "-f", file]);
  assert.equal(r.status, 0, r.stderr);
  return fs.readFileSync(`${file}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
}

export interface Sshd {
  port: number;
  /** The host's ed25519 private key file and its "ssh-ed25519 AAAA..." line. */
  hostKey: string;
  hostPublic: string;
  /** -o options for the client: its key, this test's known_hosts, no prompts. */
  clientOptions: string[];
  /** The client's known_hosts file (empty at first). */
  knownHosts: string;
  /** What sshd has logged so far (LogLevel VERBOSE: every connection shows). */
  log(): string;
  /** The log once nothing was added to it for `quietMs` (late lines of earlier connections). */
  settledLog(quietMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/** Starts sshd in `dir` (its own subdirectory), and waits until it accepts connections. */
export async function startSshd(dir: string, label = "host", extraConfig: string[] = []): Promise<Sshd> {
  const base = path.join(dir, `sshd-${label}`);
  fs.mkdirSync(base, { mode: 0o700 });
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const hostKey = path.join(base, "ssh_host_ed25519_key");
  const hostPublic = sshKeygen(hostKey);
  const clientKey = path.join(base, "client_key");
  fs.writeFileSync(path.join(base, "authorized_keys"), `${sshKeygen(clientKey)}\n`, { mode: 0o600 });
  const knownHosts = path.join(base, "known_hosts");
  fs.writeFileSync(knownHosts, "");
  const port = await freePort();
  const config = path.join(base, "sshd_config");
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      "PidFile none",
      `AuthorizedKeysFile ${path.join(base, "authorized_keys")}`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "PrintMotd no",
      "LogLevel VERBOSE",
      ...extraConfig,
      "",
    ].join("\n"),
  );
  const child: ChildProcess = spawn(SSHD!, ["-D", "-e", "-f", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr!.on("data", (b: Buffer) => {
    log += b.toString();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`sshd exited: ${log}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (up) break;
    assert.ok(Date.now() < deadline, `sshd did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    hostKey,
    hostPublic,
    knownHosts,
    clientOptions: [
      `IdentityFile=${clientKey}`,
      "IdentitiesOnly=yes",
      `UserKnownHostsFile=${knownHosts}`,
      `GlobalKnownHostsFile=${path.join(base, "global_known_hosts")}`,
      "StrictHostKeyChecking=yes",
      "BatchMode=yes",
      "ConnectTimeout=30",
    ],
    log: () => log,
    async settledLog(quietMs = 1000) {
      for (let seen = log; ; seen = log) {
        await new Promise((r) => setTimeout(r, quietMs));
        if (log === seen) return log;
      }
    },
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

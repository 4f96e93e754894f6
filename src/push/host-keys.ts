/**
 * A host's recipient, read over the network for `nixseal host add`:
 * - its ed25519 host key, from `ssh-keyscan -t ed25519`, compared with every known_hosts file
 *   ssh would consult for it (`ssh -G` says which, and the name and port it looks up);
 *   a different key on record is an error, never silently trusted; no record: unverified;
 * - or a sealed identity created on the host by `nixseal host-key new`, over the user's own ssh
 *   (with its usual host key checking): the host prints only the recipient.
 */
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { NixsealError } from "../common/index.js";
import { parseRecipientString } from "../keys/index.js";
import {
  decodeSshPublicKeyLine,
  SSH_ED25519_STANZA,
  sshFingerprint,
  sshPublicKeyWire,
} from "../ssh/index.js";
import { lastLine, runCommand } from "./ssh-command.js";

const TIMEOUT_MS = 60_000;

/** Where and how to reach a host: ssh's own destination plus the user's extra options. */
export interface SshTarget {
  /** What the user passed to --ssh: [user@]host, or an alias of ~/.ssh/config. */
  destination: string;
  port?: number;
  /** Each given to ssh as `-o OPT`. */
  options: readonly string[];
}

/** The ssh arguments before the destination. */
export function sshArgs(target: SshTarget): string[] {
  const args: string[] = [];
  for (const o of target.options) args.push("-o", o);
  if (target.port !== undefined) args.push("-p", String(target.port));
  return args;
}

/** A destination ssh could mistake for an option, or that holds what no host name holds. */
export function destinationProblem(destination: string): string | null {
  if (destination === "" || destination.startsWith("-")) return "the ssh destination must not start with -";
  if (!/^[A-Za-z0-9._@:%[\]-]+$/.test(destination) || destination.length > 255)
    return "the ssh destination is [user@]host: letters, digits and . _ - @ : [ ] only";
  return null;
}

interface ResolvedTarget {
  hostname: string;
  port: number;
  /** The name known_hosts records the host under: HostKeyAlias, else host or [host]:port. */
  knownHostsName: string;
  knownHostsFiles: string[];
}

/** Expands ssh's `~` and the %d (home), %u (user) and %% tokens of a known_hosts path. */
function expandKnownHostsPath(p: string): string | null {
  const info = os.userInfo();
  // ssh expands ~ to the home directory of the passwd entry, not $HOME.
  let out = p.startsWith("~/") ? path.join(info.homedir, p.slice(2)) : p;
  if (/%[^du%]/.test(out)) return null;
  out = out.replace(/%(.)/g, (_, c: string) => (c === "d" ? info.homedir : c === "u" ? info.username : "%"));
  return path.isAbsolute(out) ? out : null;
}

/** What ssh would do for this destination (`ssh -G`): the real host name, port, known_hosts files. */
async function resolveTarget(target: SshTarget): Promise<ResolvedTarget> {
  const r = await runCommand("ssh", ["-G", ...sshArgs(target), "--", target.destination], TIMEOUT_MS);
  if (r.status !== 0) {
    throw new NixsealError(
      "HOST",
      `ssh cannot use the destination ${target.destination}: ${lastLine(r.stderr)}`,
      {
        hint: "check --ssh and the --ssh-option values (ssh -G shows what ssh makes of them)",
      },
    );
  }
  const config = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const m = /^(\S+) (.*)$/.exec(line);
    if (m && !config.has(m[1]!.toLowerCase())) config.set(m[1]!.toLowerCase(), m[2]!);
  }
  const hostname = config.get("hostname") ?? target.destination;
  const port = Number(config.get("port") ?? "22");
  const alias = config.get("hostkeyalias");
  const files = [
    ...(config.get("userknownhostsfile") ?? "").split(" "),
    ...(config.get("globalknownhostsfile") ?? "").split(" "),
  ]
    .filter((f) => f !== "" && f !== "none")
    .map(expandKnownHostsPath)
    .filter((f): f is string => f !== null);
  return {
    hostname,
    port,
    knownHostsName: alias && alias !== "none" ? alias : port === 22 ? hostname : `[${hostname}]:${port}`,
    knownHostsFiles: [...new Set(files)],
  };
}

export interface ScannedHostKey {
  /** "ssh-ed25519 AAAA..." (no comment): the recipient to record. */
  recipient: string;
  /** "SHA256:...", as ssh-keygen -l shows it. */
  fingerprint: string;
  /** The known_hosts file whose entry matched, or null if no file has an ed25519 entry. */
  verifiedBy: string | null;
  /** What was scanned, for messages: host:port. */
  address: string;
}

/** Every ed25519 key recorded for `name` in `file`, and those marked @revoked. */
async function knownKeys(file: string, name: string): Promise<{ keys: string[]; revoked: string[] }> {
  const r = await runCommand("ssh-keygen", ["-F", name, "-f", file], TIMEOUT_MS);
  const keys: string[] = [];
  const revoked: string[] = [];
  if (r.status !== 0) return { keys, revoked }; // 1: not found (or no such file)
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const tokens = line.trim().split(/\s+/);
    const marker = tokens[0]!.startsWith("@") ? tokens.shift()! : null;
    if (marker === "@cert-authority") continue;
    if (tokens[1] !== SSH_ED25519_STANZA || tokens[2] === undefined) continue;
    (marker === "@revoked" ? revoked : keys).push(`${tokens[1]} ${tokens[2]}`);
  }
  return { keys, revoked };
}

/** Why ssh-keyscan got nothing (it says nothing when a connection is refused). */
function probe(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 10_000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve("the port answers, but not with an ed25519 ssh host key");
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve("no answer (connection timed out)");
    });
    socket.once("error", (e: NodeJS.ErrnoException) => {
      resolve(e.code === "ECONNREFUSED" ? "connection refused" : `cannot connect (${e.code ?? e.message})`);
    });
  });
}

/** The host's ed25519 host key, checked against the user's known_hosts. */
export async function scanHostKey(target: SshTarget): Promise<ScannedHostKey> {
  const resolved = await resolveTarget(target);
  const address = `${resolved.hostname}:${resolved.port}`;
  const r = await runCommand(
    "ssh-keyscan",
    ["-T", "10", "-t", "ed25519", "-p", String(resolved.port), "--", resolved.hostname],
    TIMEOUT_MS,
  );
  const lines = r.stdout.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
  if (lines.length === 0) {
    const why =
      lastLine(
        r.stderr
          .split("\n")
          .filter((l) => !l.startsWith("#"))
          .join("\n"),
      ) || (await probe(resolved.hostname, resolved.port));
    throw new NixsealError(
      "HOST",
      `cannot read the ed25519 host key of ${target.destination} (${address}): ${why}`,
      {
        hint: "check the address and --port, that sshd runs there and has an ed25519 host key; through a jump host, use --sealed (it runs over ssh)",
      },
    );
  }
  const tokens = lines[0]!.trim().split(/\s+/);
  const { key } = decodeSshPublicKeyLine(`${tokens[1]} ${tokens[2]}`);
  if (key.type !== SSH_ED25519_STANZA) {
    throw new NixsealError("HOST", `${address} answered with a ${key.type} key, not ed25519`, {
      hint: "give the host an ed25519 host key (services.openssh.hostKeys)",
    });
  }
  const wire = sshPublicKeyWire(key);
  const recipient = `${SSH_ED25519_STANZA} ${Buffer.from(wire).toString("base64")}`;
  const fingerprint = sshFingerprint(wire);
  let verifiedBy: string | null = null;
  const recorded: string[] = [];
  for (const file of resolved.knownHostsFiles) {
    const { keys, revoked } = await knownKeys(file, resolved.knownHostsName);
    if (revoked.includes(recipient)) {
      throw new NixsealError(
        "HOST",
        `the host key of ${address} (${fingerprint}) is marked @revoked in ${file}`,
        {
          file,
          hint: "a revoked key is never recorded; find out why it was revoked",
        },
      );
    }
    if (keys.includes(recipient)) verifiedBy ??= file;
    else if (keys.length > 0) recorded.push(file);
  }
  if (verifiedBy === null && recorded.length > 0) {
    throw new NixsealError(
      "HOST",
      `the host key of ${address} (${fingerprint}) is not the one ${recorded[0]} records for ${resolved.knownHostsName}`,
      {
        file: recorded[0],
        hint: "someone may be impersonating the host, or its key changed: check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); if the change is expected, remove the old entry with ssh-keygen -R",
      },
    );
  }
  return { recipient, fingerprint, verifiedBy, address };
}

export const DEFAULT_SEALED_FILE = "/var/lib/nixseal/host-key.cred";
/** The nixseal of a NixOS system; elsewhere `nixseal` on the remote PATH. */
export const DEFAULT_REMOTE_NIXSEAL = ["/run/current-system/sw/bin/nixseal", "nixseal"] as const;

/** Quotes one word for the remote shell ssh hands its command line to. */
function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./=:@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs `nixseal host-key new -o FILE` on the host over ssh and returns the recipient it prints.
 * `commands`: the remote nixseal to try, in order; the next is tried only when the previous is
 * not found there (exit 127).
 */
export async function remoteSealedRecipient(
  target: SshTarget,
  commands: readonly string[],
  sealedFile: string,
): Promise<{ recipient: string; command: string }> {
  for (const command of commands) {
    const remote = [command, "host-key", "new", "-o", sealedFile].map(shellQuote).join(" ");
    const r = await runCommand(
      "ssh",
      // ssh asks at the terminal, if there is one (a password, an unknown host key).
      [...sshArgs(target), "--", target.destination, remote],
      TIMEOUT_MS,
    );
    if (r.status === 127) {
      continue; // not found there: the next one
    }
    if (r.status !== 0) {
      const why = lastLine(r.stderr) || (r.status === null ? "timed out" : `exit ${r.status}`);
      const existing = /refusing to overwrite|exists/.test(r.stderr);
      throw new NixsealError("HOST", `${command} host-key new on ${target.destination} failed: ${why}`, {
        hint: existing
          ? `the host already has a sealed key at ${sealedFile}: 'ssh ${target.destination} ${command} host-key recipient ${sealedFile}' prints its recipient, or choose another --sealed-file`
          : r.status === 255
            ? "ssh could not connect or authenticate (see its message above); nixseal never turns off host key checking"
            : "host-key new needs root and systemd-creds on the host",
      });
    }
    const out = r.stdout.split("\n").filter((l) => l.trim() !== "");
    if (out.length !== 1 || !/^age1[0-9a-z]+$/.test(out[0]!.trim())) {
      throw new NixsealError(
        "HOST",
        `${command} host-key new on ${target.destination} did not print one age1... recipient`,
        {
          hint: "is the remote nixseal the right program? pass it with --nixseal-command",
        },
      );
    }
    const recipient = out[0]!.trim();
    parseRecipientString(recipient, `the recipient printed by ${target.destination}`);
    return { recipient, command };
  }
  throw new NixsealError("HOST", `no nixseal on ${target.destination}: tried ${commands.join(", ")}`, {
    hint: "install nixseal on the host (the NixOS module does), or name it with --nixseal-command",
  });
}

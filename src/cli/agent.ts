/**
 * `nixseal agent`: answers the build-secret requests of the builds this user asks for. It
 * listens on <agentDir>/<uid> (see src/build-secrets/agent.ts) and, for each request, shows the
 * derivation, the URL and the secret's name; it approves (prompt = true secrets the host holds)
 * or supplies the value (source = "agent"): from the user's agent.json (an age file decrypted
 * with the user's identities, or a command), `--secrets DIR/<name>.age`, or typed at the prompt.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tty from "node:tty";
import { read } from "read";
import type { Identity } from "../age/index.js";
import {
  type AgentAnswer,
  type AgentPrompt,
  agentConfigPath,
  DEFAULT_POLICY_FILE,
  parseRemember,
  RememberedAnswers,
  readAgentConfig,
  readPolicy,
  serveAgent,
  socketAnswers,
  valueFromCommand,
  valueFromFile,
  valueSourceOf,
} from "../build-secrets/index.js";
import { NixsealError } from "../common/index.js";
import { loadDefaultIdentities } from "../keys/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { sanitize } from "./report.js";
import { keyContext } from "./vault-context.js";

const HELP = `Usage: nixseal agent [--remember DURATION] [--secrets DIR] [-i FILE]... [--agent-dir DIR]
                     [--policy FILE]

Runs until interrupted (Ctrl-C). When one of your builds needs a build secret that the host's
policy marks prompt = true, or whose source is "agent" (the host holds nothing; "host-or-agent":
when the host's file is missing or does not decrypt), nixseal's pre-build hook asks this agent.
It shows the derivation, the URL the secret goes to and its name, and
  - for a secret the host holds: asks you to approve;
  - for a value it supplies: takes it from ~/.config/nixseal/agent.json (XDG_CONFIG_HOME
    honoured): {"secrets": {"NAME": {"file": "~/secrets/NAME.age"}}} decrypts your own age
    file with your identities (as 'nixseal decrypt' finds them), {"command": ["pass", "show",
    "NAME"]} runs that command (no shell) and takes what it prints; else DIR/NAME.age of
    --secrets; else you type it (hidden). A value from a file or command is given without a
    question unless the policy says prompt = true.
Declining, or not answering within the policy's agentTimeoutSeconds, fails that build with a
clear message; without a running agent such builds fail at once (they never hang).

Options:
    --remember DURATION  Keep approvals and supplied values in memory for DURATION (90s, 15m,
                         2h; at most 24h) per secret name and URL origin (scheme, host, port):
                         a build with twenty downloads asks once. Wiped when they expire.
    --secrets DIR        Values of secrets not in agent.json from DIR/NAME.age.
    -i, --identity FILE  An identity to decrypt your age files with (repeatable; default: those
                         'nixseal decrypt' uses).
    --agent-dir DIR      Where agents listen (default: the policy's agentDir, /run/nixseal/agents).
    --policy FILE        The build-secrets policy (default ${DEFAULT_POLICY_FILE}).
    -h, --help           This help.

Example:
    $ nixseal agent --remember 15m &
    $ nix build .#modpack
    nixseal agent: build /nix/store/...-mod.zip.drv asks for the secret "mods-token"
      to send it to https://mods.example.com/api/mod.zip
    Value of "mods-token" (hidden; empty declines):

Exit codes: 0 success (stopped with Ctrl-C, SIGTERM or SIGHUP: its normal end), 1 failure (no
terminal, NO_TERMINAL; the agent directory is missing; another agent of yours is running,
AGENT_RUNNING; agent.json is invalid, AGENT_CONFIG), 2 usage error.
`;

const OPTIONS = {
  "agent-dir": { type: "string" },
  policy: { type: "string" },
  remember: { type: "string" },
  secrets: { type: "string" },
  identity: { type: "string", short: "i", multiple: true },
  help: { type: "boolean", short: "h" },
} as const;

function openTerminal(): { input: tty.ReadStream; output: tty.WriteStream; close(): void } | null {
  try {
    const rfd = fs.openSync("/dev/tty", "r");
    if (!tty.isatty(rfd)) {
      fs.closeSync(rfd);
      return null;
    }
    const input = new tty.ReadStream(rfd);
    const output = new tty.WriteStream(fs.openSync("/dev/tty", "w"));
    return {
      input,
      output,
      close() {
        input.destroy();
        output.destroy();
      },
    };
  } catch {
    return null;
  }
}

/** The agent directory: --agent-dir, else the policy's, else the default. */
export function agentDirOf(values: { "agent-dir"?: string; policy?: string }): string {
  if (values["agent-dir"] !== undefined) return values["agent-dir"];
  try {
    return readPolicy(values.policy ?? DEFAULT_POLICY_FILE).agentDir;
  } catch {
    return "/run/nixseal/agents";
  }
}

export interface AgentOptions {
  /** How long answers are remembered (0: never). */
  rememberMs: number;
  /** --secrets DIR, or null. */
  secretsDir: string | null;
  /** -i FILE...: the identities to decrypt the user's age files with ([]: the defaults). */
  identityFlags: string[];
}

/** --secrets DIR: an existing directory (relative to the current one). */
export function secretsDirOf(dir: string): string {
  const full = path.resolve(dir);
  if (!fs.statSync(full, { throwIfNoEntry: false })?.isDirectory()) {
    throw new NixsealError("IO", `--secrets ${dir}: no such directory`, {
      file: full,
      hint: "name the directory that holds your NAME.age files",
    });
  }
  return full;
}

/** The socket of this user's agent if one answers there, else null. */
export async function runningAgent(agentDir: string): Promise<string | null> {
  const socket = `${agentDir}/${process.getuid?.() ?? -1}`;
  return (await socketAnswers(socket)) ? socket : null;
}

/** Starts answering requests at this terminal; `close` stops listening and removes the socket. */
export async function startTerminalAgent(
  agentDir: string,
  options: AgentOptions = { rememberMs: 0, secretsDir: null, identityFlags: [] },
): Promise<{ socket: string; close: () => void }> {
  const home = process.env.HOME || os.homedir();
  // agent.json is read at the start, so a mistake in it is reported before any build asks.
  const config = readAgentConfig(agentConfigPath(process.env, home), home);
  const term = openTerminal();
  if (term === null) {
    throw new NixsealError("NO_TERMINAL", "nixseal agent needs a terminal to ask on", {
      hint: "run it in a terminal (or through 'nixseal build', which starts it)",
    });
  }
  if (!fs.existsSync(agentDir)) {
    term.close();
    throw new NixsealError("IO", `the agent directory ${agentDir} does not exist`, {
      file: agentDir,
      hint: "the NixOS module creates it; elsewhere: install -d -m 1733 /run/nixseal/agents (as root)",
    });
  }
  const uid = process.getuid?.() ?? -1;
  const remembered = new RememberedAnswers(options.rememberMs);
  let identities: Promise<Identity[]> | null = null;
  const myIdentities = () => {
    // Loaded once (identities keep what they unlock); a failure is retried at the next request.
    identities ??= loadDefaultIdentities({ flags: options.identityFlags }, keyContext()).catch((e) => {
      identities = null;
      throw e;
    });
    return identities;
  };
  const say = (text: string) => term.output.write(`nixseal agent: ${text}\n`);
  const ask = async (prompt: string, timeoutMs: number, silent = false): Promise<string> => {
    try {
      return String(
        await read({
          prompt,
          input: term.input,
          output: term.output,
          timeout: timeoutMs,
          ...(silent ? { silent: true, replace: "" } : {}),
        }),
      );
    } catch {
      term.output.write("\n");
      return "";
    }
  };
  const approved = async (p: AgentPrompt): Promise<boolean> => {
    const yes = /^(y|yes)$/i.test((await ask("Approve? [y/N] ", p.timeoutMs)).trim());
    say(yes ? "approved" : "declined");
    return yes;
  };
  const declined: AgentAnswer = { approved: false, reason: "declined at the terminal" };

  const answer = async (p: AgentPrompt, signal: AbortSignal): Promise<AgentAnswer> => {
    const name = `"${sanitize(p.secret)}"`;
    const key = RememberedAnswers.key(p.want, p.secret, p.url);
    const kept = remembered.get(key);
    if (kept !== undefined) {
      say(`gave the remembered ${p.want} for ${name} to ${sanitize(p.drv)}`);
      return { approved: true, plaintext: kept };
    }
    term.output.write(
      `nixseal agent: build ${sanitize(p.drv)} asks for the secret ${name}\n  to send it to ${sanitize(p.url)}\n`,
    );
    if (p.want === "approval") {
      if (!(await approved(p))) return declined;
      remembered.set(key, null);
      return { approved: true, plaintext: null };
    }
    const source = valueSourceOf(config, options.secretsDir, p.secret);
    let value: Uint8Array;
    if (source === null) {
      const typed = await ask(`Value of ${name} (hidden; empty declines): `, p.timeoutMs, true);
      if (typed.length === 0 || signal.aborted) {
        say("declined");
        return declined;
      }
      // JS strings cannot be wiped: the typed text is turned into bytes at once and dropped.
      value = Buffer.from(typed, "utf8");
      say(`gave the typed value of ${name}`);
    } else {
      const from =
        source.kind === "file"
          ? `your file ${sanitize(source.file)}`
          : `the command ${sanitize(JSON.stringify(source.argv[0]))}`;
      if (p.prompt) {
        term.output.write(`  (the value comes from ${from}; the host's policy asks you to confirm)\n`);
        if (!(await approved(p))) return declined;
      }
      try {
        value =
          source.kind === "file"
            ? await valueFromFile(source.file, myIdentities)
            : await valueFromCommand(source.argv, signal, (text) =>
                term.output.write(
                  text
                    .split("\n")
                    .filter((l) => l.length > 0)
                    .map((l) => `  | ${sanitize(l)}\n`)
                    .join(""),
                ),
              );
      } catch (e) {
        const err = e as NixsealError;
        say(`could not get ${name}: ${sanitize(err.message)}${err.hint ? ` (${sanitize(err.hint)})` : ""}`);
        throw e;
      }
      say(`gave ${name} from ${from}`);
    }
    remembered.set(key, value);
    return { approved: true, plaintext: value };
  };
  const served = await serveAgent(agentDir, uid, answer).catch((e) => {
    term.close();
    throw e;
  });
  const close = () => {
    served.close();
    remembered.clear();
  };
  // main.ts exits on signals; the socket goes with the process.
  process.once("exit", close);
  say(
    `listening on ${served.socket}${options.rememberMs > 0 ? ` (remembering answers for ${Math.round(options.rememberMs / 1000)} s)` : ""}`,
  );
  return {
    socket: served.socket,
    close: () => {
      close();
      term.close();
    },
  };
}

export const command: Command = {
  name: "agent",
  errorExitCode: 1,
  usageExitCode: 2,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal agent --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length > 0) {
      throw new NixsealError("USAGE", "agent takes no arguments", {
        hint: "nixseal agent [--remember DURATION] [--secrets DIR] [--agent-dir DIR]",
      });
    }
    const agentOptions: AgentOptions = {
      rememberMs: values.remember === undefined ? 0 : parseRemember(values.remember),
      secretsDir: values.secrets === undefined ? null : secretsDirOf(values.secrets),
      identityFlags: values.identity ?? [],
    };
    const agentDir = agentDirOf(values);
    // A signal is how the agent is meant to end: it replaces main.ts's handlers (which report an
    // interruption and exit 128+n) before the socket exists, so that a Ctrl-C typed as soon as the
    // agent listens is its normal end too, and the agent exits 0.
    // Ours is added before main.ts's are removed (and theirs back before ours goes): a signal with
    // no listener at all, even for an instant, would kill the process with the default action.
    const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
    let stop = () => {};
    const stopped = new Promise<void>((resolve) => {
      stop = resolve;
    });
    const onSignal = () => stop();
    const saved = signals.map((s) => [s, process.listeners(s)] as const);
    for (const [s, listeners] of saved) {
      process.on(s, onSignal);
      for (const l of listeners) process.removeListener(s, l);
    }
    const restore = () => {
      for (const [s, listeners] of saved) {
        for (const l of listeners) process.on(s, l);
        process.removeListener(s, onSignal);
      }
    };
    let agent: Awaited<ReturnType<typeof startTerminalAgent>>;
    try {
      agent = await startTerminalAgent(agentDir, agentOptions);
    } catch (e) {
      restore();
      throw e;
    }
    process.stderr.write("nixseal agent: Ctrl-C to stop\n");
    await stopped;
    restore();
    agent.close();
    return 0;
  },
};

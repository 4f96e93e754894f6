/**
 * `nixseal agent`: approves build secrets marked `prompt = true` for the builds this user asks
 * for. It listens on <agentDir>/<uid> (see src/build-secrets/agent.ts) and asks at the terminal for each
 * request, showing the derivation, the URL and the secret's name.
 */
import * as fs from "node:fs";
import * as tty from "node:tty";
import { read } from "read";
import {
  type AgentAnswer,
  type AgentPrompt,
  DEFAULT_POLICY_FILE,
  readPolicy,
  serveAgent,
} from "../build-secrets/index.js";
import { NixsealError } from "../common/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { sanitize } from "./report.js";

const HELP = `Usage: nixseal agent [--agent-dir DIR] [--policy FILE]

Runs until interrupted (Ctrl-C). When one of your builds needs a build secret whose policy says
prompt = true, nixseal's pre-build hook asks this agent, which shows the derivation, the URL the
secret goes to and its name, and asks you to approve. Declining, or not answering within the
policy's agentTimeoutSeconds, fails that build with a clear message; without a running agent
such builds fail at once (they never hang).

Options:
    --agent-dir DIR   Where agents listen (default: the policy's agentDir, /run/nixseal/agents).
    --policy FILE     The build-secrets policy (default ${DEFAULT_POLICY_FILE}).
    -h, --help        This help.

Example:
    $ nixseal agent &
    $ nix build .#modpack
    nixseal agent: build /nix/store/...-mod.zip.drv asks for the secret "mods-token"
      to send it to https://mods.example.com/api/mod.zip
    Approve? [y/N] y

Exit codes: 0 success (stopped with Ctrl-C, SIGTERM or SIGHUP: its normal end), 1 failure (no
terminal, NO_TERMINAL; the agent directory is missing), 2 usage error.
`;

const OPTIONS = {
  "agent-dir": { type: "string" },
  policy: { type: "string" },
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

/** Starts answering requests at this terminal; `close` stops listening and removes the socket. */
export async function startTerminalAgent(agentDir: string): Promise<{ socket: string; close: () => void }> {
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
  const approve = async (p: AgentPrompt): Promise<AgentAnswer> => {
    term.output.write(
      `nixseal agent: build ${sanitize(p.drv)} asks for the secret "${sanitize(p.secret)}"\n  to send it to ${sanitize(p.url)}\n`,
    );
    const answer = String(await read({ prompt: "Approve? [y/N] ", input: term.input, output: term.output }));
    const yes = /^(y|yes)$/i.test(answer.trim());
    term.output.write(yes ? "nixseal agent: approved\n" : "nixseal agent: declined\n");
    return yes
      ? { approved: true, plaintext: null }
      : { approved: false, reason: "declined at the terminal" };
  };
  const served = await serveAgent(agentDir, uid, approve);
  // main.ts exits on signals; the socket goes with the process.
  process.once("exit", () => served.close());
  term.output.write(`nixseal agent: listening on ${served.socket}\n`);
  return {
    socket: served.socket,
    close: () => {
      served.close();
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
        hint: "nixseal agent [--agent-dir DIR]",
      });
    }
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
      agent = await startTerminalAgent(agentDir);
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

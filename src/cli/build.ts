/**
 * `nixseal build ARGS...`: `nix build ARGS...` with a `nixseal agent` of this user: the one that
 * already runs (its socket answers), else one at this terminal for as long as the build, so
 * builds that need the user's approval or value can ask.
 */
import { spawn } from "node:child_process";
import { parseRemember } from "../build-secrets/index.js";
import { findExecutable, NixsealError } from "../common/index.js";
import { type AgentOptions, agentDirOf, runningAgent, secretsDirOf, startTerminalAgent } from "./agent.js";
import type { Command } from "./main.js";
import { printWarning } from "./report.js";

const HELP = `Usage: nixseal build [--agent-dir DIR] [--remember DURATION] [--secrets DIR] [--]
                     NIX-BUILD-ARGS...

Runs 'nix build NIX-BUILD-ARGS...' with your nixseal agent: the one already running (it answers
on its socket), else one listening at this terminal for the build's duration, so a build that
needs your approval or a value you supply asks you here (see 'nixseal agent --help').
Without a running agent and without a terminal the build runs without one: such secrets are then
refused at once.

Options:
    --agent-dir DIR      Where agents listen (default: the policy's agentDir, /run/nixseal/agents).
    --remember DURATION  How long the build's own agent keeps answers (default: the whole build,
                         so twenty downloads of one secret ask once; 0: ask every time).
    --secrets DIR        The build's own agent takes values of secrets not in agent.json from
                         DIR/NAME.age.
    -h, --help           This help (nix build's own: nixseal build -- --help).

Example:
    $ nixseal build .#modpack
    nixseal agent: build /nix/store/...-mod.zip.drv asks for the secret "mods-token"
      to send it to https://mods.example.com/api/mod.zip
    Approve? [y/N] y

Exit codes: 0 success, 1 failure (nix is not on PATH), 2 usage error; otherwise nix build's own
exit code.
`;

/** The build's own agent remembers for the whole build unless told otherwise. */
const WHOLE_BUILD_MS = 24 * 3600 * 1000;

export const command: Command = {
  name: "build",
  errorExitCode: 1,
  usageExitCode: 2,
  async run(argv) {
    let args = [...argv];
    if (args[0] === "-h" || args[0] === "--help") {
      process.stdout.write(HELP);
      return 0;
    }
    const flags: Record<string, string> = {};
    while (args[0] === "--agent-dir" || args[0] === "--remember" || args[0] === "--secrets") {
      const flag = args[0];
      if (args[1] === undefined) {
        throw new NixsealError(
          "USAGE",
          `${flag} needs ${flag === "--remember" ? "a duration" : "a directory"}`,
          {
            hint: `nixseal build ${flag} ${flag === "--remember" ? "DURATION" : "DIR"} ...`,
          },
        );
      }
      flags[flag] = args[1];
      args = args.slice(2);
    }
    if (args[0] === "--") args = args.slice(1);
    const options: AgentOptions = {
      rememberMs: flags["--remember"] === undefined ? WHOLE_BUILD_MS : parseRemember(flags["--remember"]),
      secretsDir: flags["--secrets"] === undefined ? null : secretsDirOf(flags["--secrets"]),
      identityFlags: [],
    };
    const nix = findExecutable("nix");
    if (nix === null) {
      throw new NixsealError("IO", "nix is not on PATH", { hint: "install Nix, or run nix build yourself" });
    }
    const agentDir = agentDirOf({ "agent-dir": flags["--agent-dir"] });
    let agent: { close(): void } | null = null;
    const running = await runningAgent(agentDir);
    if (running !== null) {
      process.stderr.write(`nixseal build: using your running agent on ${running}\n`);
    } else {
      try {
        agent = await startTerminalAgent(agentDir, options);
      } catch (e) {
        printWarning("nixseal build", `running without an agent: ${(e as Error).message}`);
      }
    }
    try {
      const child = spawn(nix, ["build", ...args], { stdio: "inherit" });
      return await new Promise<number>((resolve) => {
        child.on("error", () => resolve(127));
        child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
      });
    } finally {
      agent?.close();
    }
  },
};

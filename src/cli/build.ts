/**
 * `nixseal build ARGS...`: `nix build ARGS...` with a `nixseal agent` running at this terminal
 * for as long as the build, so builds that need a prompt = true secret can ask.
 */
import { spawn } from "node:child_process";
import { findExecutable, NixsealError } from "../common/index.js";
import { agentDirOf, startTerminalAgent } from "./agent.js";
import type { Command } from "./main.js";
import { printWarning } from "./report.js";

const HELP = `Usage: nixseal build [--agent-dir DIR] [--] NIX-BUILD-ARGS...

Runs 'nix build NIX-BUILD-ARGS...' with a nixseal agent listening at this terminal, so a build
that needs a build secret marked prompt = true asks you here (see 'nixseal agent --help').
Without a terminal the build runs without an agent: such secrets are then refused at once.

Options:
    --agent-dir DIR   Where agents listen (default: the policy's agentDir, /run/nixseal/agents).
    -h, --help        This help (nix build's own: nixseal build -- --help).

Example:
    $ nixseal build .#modpack
    nixseal agent: build /nix/store/...-mod.zip.drv asks for the secret "mods-token"
      to send it to https://mods.example.com/api/mod.zip
    Approve? [y/N] y

Exit codes: 0 success, 1 failure (nix is not on PATH), 2 usage error; otherwise nix build's own
exit code.
`;

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
    let agentDirFlag: string | undefined;
    if (args[0] === "--agent-dir") {
      if (args[1] === undefined) {
        throw new NixsealError("USAGE", "--agent-dir needs a directory", {
          hint: "nixseal build --agent-dir DIR ...",
        });
      }
      agentDirFlag = args[1];
      args = args.slice(2);
    }
    if (args[0] === "--") args = args.slice(1);
    const nix = findExecutable("nix");
    if (nix === null) {
      throw new NixsealError("IO", "nix is not on PATH", { hint: "install Nix, or run nix build yourself" });
    }
    let agent: { close(): void } | null = null;
    try {
      agent = await startTerminalAgent(agentDirOf({ "agent-dir": agentDirFlag }));
    } catch (e) {
      printWarning("nixseal build", `running without an agent: ${(e as Error).message}`);
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

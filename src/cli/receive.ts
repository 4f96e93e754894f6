/** `nixseal receive`: the host's side of `nixseal push`, run by it over ssh. */
import { NixsealError } from "../common/index.js";
import { receive } from "../push/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printError } from "./report.js";

const HELP = `Usage: nixseal receive

The host's side of 'nixseal push', which runs it over ssh as root: reads the push stream on
standard input and answers on standard output (not for people). It answers a keyed hash of each
key it holds, then reads the new and changed keys; only when the whole stream has arrived and
its checksum matches does it write them: a new generation of each destDir in RAM, files created
with their owner, group and mode, unchanged keys hard-linked, switched by one rename: destDir
itself a symlink into /run/nixseal-keys if it did not exist, or, if it is already a directory in
RAM (NixOS's /run/keys mount), destDir/.nixseal/current, each key destDir/NAME a symlink through
it. A file in destDir nixseal did not make is never replaced. A cut or altered stream changes
nothing. Then units: one
systemctl call per verb (stop, start, try-restart, try-reload-or-restart).

Example (what push runs):
    $ ssh root@host -- nixseal receive

Exit codes: 0 the keys are installed (or nothing to do), 1 failure (a cut stream, a problem on
the host: the previous keys stay; or a unit that failed), 2 usage error.
`;

export const command: Command = {
  name: "receive",
  errorExitCode: 1,
  usageExitCode: 2,
  async run(argv) {
    const { values, positionals } = parse(
      argv,
      { help: { type: "boolean", short: "h" } } as const,
      "run 'nixseal receive --help' for usage",
    );
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length > 0) {
      throw new NixsealError("USAGE", "receive takes no arguments", {
        hint: "push runs it: nixseal receive",
      });
    }
    if (process.stdin.isTTY) {
      throw new NixsealError("USAGE", "receive reads the push stream on standard input, not a terminal", {
        hint: "run nixseal push on the deployer; it starts receive over ssh",
      });
    }
    // Files and directories are created with their final modes (never chmod-ed after).
    process.umask(0);
    const result = await receive(process.stdin, process.stdout, {
      onCommit: () => {
        // The stream is complete: finish the switch even if the connection drops now.
        for (const s of ["SIGHUP", "SIGINT", "SIGTERM", "SIGPIPE"] as const) {
          process.removeAllListeners(s);
          process.on(s, () => {});
        }
      },
    });
    if (result.problems.length > 0) {
      printError("nixseal receive", NixsealError.many(result.problems));
      return 1;
    }
    return 0;
  },
};

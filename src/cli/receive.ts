/** `nixseal receive`: the host's side of `nixseal push`, run by it over ssh. */
import * as path from "node:path";
import { NixsealError } from "../common/index.js";
import { receive, restore } from "../push/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printError } from "./report.js";

const HELP = `Usage: nixseal receive [--credstore DIR]
       nixseal receive --restore [--credstore DIR]

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

Keys with persist = "credential" are also sealed with systemd-creds (credential name
nixseal-key-KEY) into a generation of DIR/nixseal-keys, switched before the keys in RAM; a key
that cannot be sealed fails the push and nothing changes. Removed keys' sealed files go.

--restore (at boot, by nixseal-restore-keys.service): unseals every persisted key of
DIR/nixseal-keys with systemd-creds decrypt and installs it in RAM as a push does; a key whose
sealed file does not decrypt (another host, tampered) is reported by name, the others are
restored. Starts no unit. Prints one line: what was restored.

Options:
    --credstore DIR   where persisted keys are sealed (default /etc/credstore.encrypted)
    --restore         restore the persisted keys into RAM (see above)

Example (what push runs):
    $ ssh root@host -- nixseal receive

Exit codes: 0 the keys are installed (or nothing to do), 1 failure (a cut stream, a problem on
the host, a key that cannot be sealed: the previous keys stay; or a unit that failed; with
--restore: a key that was not restored), 2 usage error.
`;

export const command: Command = {
  name: "receive",
  errorExitCode: 1,
  usageExitCode: 2,
  async run(argv) {
    const { values, positionals } = parse(
      argv,
      {
        help: { type: "boolean", short: "h" },
        restore: { type: "boolean" },
        credstore: { type: "string" },
      } as const,
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
    const credstore = values.credstore;
    if (credstore !== undefined && (!path.isAbsolute(credstore) || path.normalize(credstore) !== credstore)) {
      throw new NixsealError("USAGE", "--credstore must be an absolute, normalised path", {
        hint: "e.g. --credstore /etc/credstore.encrypted",
      });
    }
    // Files and directories are created with their final modes (never chmod-ed after).
    if (values.restore) {
      process.umask(0);
      const result = await restore({ credstore });
      const restored = [...result.added, ...result.changed];
      process.stdout.write(
        `nixseal receive --restore: ${restored.length} key(s) restored${restored.length > 0 ? `: ${restored.join(", ")}` : ""}\n`,
      );
      if (result.problems.length > 0) {
        printError("nixseal receive --restore", NixsealError.many(result.problems));
        return 1;
      }
      return 0;
    }
    if (process.stdin.isTTY) {
      throw new NixsealError("USAGE", "receive reads the push stream on standard input, not a terminal", {
        hint: "run nixseal push on the deployer; it starts receive over ssh",
      });
    }
    // Files and directories are created with their final modes (never chmod-ed after).
    process.umask(0);
    const result = await receive(process.stdin, process.stdout, {
      credstore,
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

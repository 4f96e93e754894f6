/**
 * `nixseal age-keygen`: a drop-in for age-keygen. New key files are created 0600 and never
 * overwrite an existing file.
 */
import * as tty from "node:tty";
import { PluginRecipient } from "../age/index.js";
import { NixsealError, writeAllSync, writeNewFileAtomic } from "../common/index.js";
import {
  generateIdentity,
  loadIdentitiesAsRecipients,
  looksLikeSshPublicKeys,
  readKeyFile,
  sshPublicKeysToAgeRecipients,
} from "../keys/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printWarning } from "./report.js";
import { askPassphrase, pluginUI } from "./terminal.js";
import { version } from "./version.js";

const HELP = `Usage:
    nixseal age-keygen [-o OUTPUT] [--pq]
    nixseal age-keygen -y [-o OUTPUT] [INPUT]

Options:
    -o, --output OUTPUT       Write the result to the file at path OUTPUT (created 0600,
                              never overwritten).
    -y                        Convert an identity file to a recipients file; or ssh public
                              keys to their age recipients (as ssh-to-age does).
    --pq                      Generate a post-quantum hybrid ML-KEM-768 + X25519 identity.

nixseal age-keygen generates a new native X25519 key pair (or a post-quantum one with --pq),
and outputs it to standard output or to the OUTPUT file. If an OUTPUT file is specified, the
public key is printed to standard error. If OUTPUT already exists, it is not overwritten.

In -y mode, nixseal age-keygen reads an identity file from INPUT or from standard input and
writes the corresponding recipient(s) to OUTPUT or to standard output, one per line.
Given ssh public keys instead (a .pub file, authorized_keys lines, ssh-keyscan or known_hosts
output), it prints one recipient per key: for an ssh-ed25519 key the age1... X25519 recipient
that ssh-to-age derives (the key's Montgomery form; the ssh private key decrypts for it, as
nixseal's ssh-to-age identity), for an ssh-rsa key its own "ssh-rsa AAAA..." line (age's
ssh-rsa recipient: RSA has no age1 form). Keys of other types (ecdsa, sk-...) have no age
recipient: they are skipped with a warning on standard error.

Examples:
    $ nixseal age-keygen
    # created: 2026-11-21T12:00:00Z
    # public key: age1lvyvwawkr0mcnnnncaghunadrqkmuf9e6507x9y920xxpp866cnql7dp2z
    AGE-SECRET-KEY-1...   (the secret key: keep it private)

    $ nixseal age-keygen -o key.txt
    Public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

    $ nixseal age-keygen -y key.txt
    age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

    $ ssh-keyscan -t ed25519 web1 | nixseal age-keygen -y
    age1...   (web1's host key as an age recipient)

Exit codes: 0 success, 1 any error (as age-keygen).
`;

const OPTIONS = {
  output: { type: "string", short: "o" },
  y: { type: "boolean", short: "y" },
  pq: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

function emit(output: string | undefined, data: Buffer, mode: number): void {
  try {
    if (output === undefined || output === "-") writeAllSync(1, data);
    else writeNewFileAtomic(output, data, mode);
  } finally {
    data.fill(0);
  }
}

async function convert(input: string | undefined, output: string | undefined): Promise<void> {
  const file = input ?? "-";
  // Read once: standard input cannot be read a second time.
  const data = readKeyFile(file);
  if (looksLikeSshPublicKeys(data.subarray(0, 4096).toString("utf8"))) {
    const source = file === "-" ? "standard input" : file;
    const { recipients, skipped } = sshPublicKeysToAgeRecipients(data.toString("utf8"), source);
    for (const s of skipped) {
      printWarning(
        "nixseal age-keygen",
        `${source}:${s.line}: skipped an ${s.type} key (age has no recipient for it)`,
      );
    }
    emit(output, Buffer.from(`${recipients.join("\n")}\n`, "utf8"), 0o644);
    return;
  }
  const recipients = await loadIdentitiesAsRecipients(
    [file],
    { passphrase: (w) => askPassphrase(w), pluginUI: pluginUI() },
    () => data,
  );
  if (recipients.some((r) => r instanceof PluginRecipient)) {
    throw new NixsealError("AGE_IDENTITY", "cannot derive the recipient of a plugin identity", {
      hint: "the plugin prints its recipient when it creates the identity (see age-plugin-NAME --help)",
    });
  }
  emit(output, Buffer.from(`${recipients.map(String).join("\n")}\n`, "utf8"), 0o644);
}

export const command: Command = {
  name: "age-keygen",
  errorExitCode: 1,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal age-keygen --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (values.version) {
      process.stdout.write(`${version()}\n`);
      return 0;
    }
    if (values.y) {
      if (values.pq) throw new NixsealError("USAGE", "--pq can't be used with -y", { hint: "remove --pq" });
      if (positionals.length > 1)
        throw new NixsealError("USAGE", "too many arguments", { hint: "one INPUT file" });
      await convert(positionals[0], values.output);
      return 0;
    }
    if (positionals.length > 0) {
      throw new NixsealError("USAGE", "too many arguments", {
        hint: "did you mean to use -y to convert INPUT?",
      });
    }
    const output = values.output;
    const toTerminal = (output === undefined || output === "-") && tty.isatty(1);
    const { identity, recipient } = await generateIdentity(values.pq === true);
    const created = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    const data = Buffer.from(`# created: ${created}\n# public key: ${recipient}\n${identity}\n`, "utf8");
    if (!toTerminal) process.stderr.write(`Public key: ${recipient}\n`);
    if (
      output !== undefined &&
      output !== "-" &&
      !output.includes("/") &&
      process.env.HOME === process.cwd()
    ) {
      printWarning("nixseal age-keygen", "writing the key into your home directory; keep it out of git");
    }
    emit(output, data, 0o600);
    return 0;
  },
};

/** `nixseal who NAME|RECIPIENT`: who can read a secret, or what a recipient can read. */
import * as fs from "node:fs";
import { NixsealError } from "../common/index.js";
import { describeRecipient, findSecret, normalizeRecipient } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal who NAME|RECIPIENT|FILE.pub [--rules FILE] [--json]

With a secret NAME: the recipients who can read it. With a recipient (age1..., "ssh-ed25519
AAAA...", or a .pub file): the secrets it can read. No key is needed.

${VAULT_OPTIONS_HELP}
Example:
    $ nixseal who db-password.age
    $ nixseal who ~/.ssh/id_ed25519.pub

Exit codes: 0 success, 1 nothing found, 2 usage or rules error.
`;

export const command: Command = {
  name: "who",
  errorExitCode: 1,
  usageExitCode: 2,
  async run(argv) {
    const { values, positionals } = parse(argv, VAULT_OPTIONS, "run 'nixseal who --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new NixsealError("USAGE", "expected one secret NAME or one RECIPIENT", {
        hint: "nixseal who NAME",
      });
    }
    const arg = positionals[0]!;
    const rules = rulesOf(values, arg);
    const rule = findSecret(rules, arg);
    if (rule) {
      const recipients = rule.publicKeys.map(describeRecipient);
      if (values.json) process.stdout.write(`${JSON.stringify({ secret: rule.name, recipients })}\n`);
      else for (const r of recipients) process.stdout.write(`${r.label}\t${r.kind}\t${r.recipient}\n`);
      return 0;
    }
    let recipient = arg;
    if (!arg.startsWith("age1") && !/^(ssh|ecdsa|sk)-/.test(arg) && fs.existsSync(arg)) {
      const st = fs.statSync(arg);
      if (!st.isFile() || st.size > 64 * 1024) {
        throw new NixsealError("USAGE", `${arg} is not a public key file`, {
          hint: "pass a .pub file or a key",
        });
      }
      recipient = fs.readFileSync(arg, "utf8").split("\n")[0] ?? "";
      if (recipient.includes("PRIVATE KEY") || recipient.startsWith("AGE-SECRET-KEY")) {
        throw new NixsealError("USAGE", `${arg} is a private key`, {
          hint: "pass its public key (.pub) instead",
        });
      }
    }
    const wanted = normalizeRecipient(recipient);
    const secrets = [...rules.secrets.values()]
      .filter((s) => s.publicKeys.some((k) => normalizeRecipient(k) === wanted))
      .map((s) => s.name)
      .sort();
    if (secrets.length === 0) {
      throw new NixsealError(
        "NOT_IN_RULES",
        `"${arg.slice(0, 60)}" is neither a secret nor a recipient in ${rules.file}`,
        {
          hint: "pass a secret name from 'nixseal list', or a recipient exactly as in secrets.nix",
        },
      );
    }
    if (values.json)
      process.stdout.write(`${JSON.stringify({ recipient: describeRecipient(recipient), secrets })}\n`);
    else for (const s of secrets) process.stdout.write(`${s}\n`);
    return 0;
  },
};

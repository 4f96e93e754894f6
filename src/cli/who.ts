/** `nixseal who NAME|RECIPIENT`: who can read a secret, or what a recipient can read. */
import * as fs from "node:fs";
import { NixsealError } from "../common/index.js";
import { looksLikeSecretKey, parseRecipientString, pluginNameOfRecipient } from "../keys/index.js";
import { findSecret, loadAgeSecrets } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { quoteArg, reportFailure } from "./report.js";
import { recipientShower, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal who NAME|RECIPIENT|FILE.pub [--rules FILE] [--json]

With a secret NAME: the recipients who can read it. With a recipient (age1..., "ssh-ed25519
AAAA...", or a .pub file): the secrets it can read. No key is needed.

${VAULT_OPTIONS_HELP}
Example:
    $ nixseal who db-password.age
    $ nixseal who ~/.ssh/id_ed25519.pub

Exit codes: 0 success, 1 nothing found (a valid recipient that no secret lists), 2 usage or
rules error (neither a secret NAME nor a recipient, no secrets.nix).
`;

/** Is this a recipient nixseal could encrypt to (parsed only: no plugin is run)? */
function isRecipient(s: string): boolean {
  if (pluginNameOfRecipient(s) !== null) return true;
  try {
    parseRecipientString(s, "who");
    return true;
  } catch {
    return false;
  }
}

/** The first key line of a public key file; a file holding a private key is refused. */
function recipientOfFile(file: string): string {
  const st = fs.statSync(file);
  if (!st.isFile() || st.size > 64 * 1024) {
    throw new NixsealError("USAGE", `${file} is not a public key file`, {
      hint: "pass a .pub file or a key",
    });
  }
  const text = fs.readFileSync(file, "utf8");
  if (looksLikeSecretKey(text) || text.includes("PRIVATE KEY")) {
    throw new NixsealError("USAGE", `${file} holds a private key`, {
      hint: "pass its public key (the .pub file, or age-keygen -y FILE) instead",
    });
  }
  const lines = text.split("\n").map((l) => l.trim());
  return lines.find((l) => l !== "" && !l.startsWith("#")) ?? "";
}

export const command: Command = {
  name: "who",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
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
    if (looksLikeSecretKey(arg)) {
      // Nothing of it is repeated: it is on the command line already, it must not reach a log too.
      throw new NixsealError("USAGE", "the argument looks like a secret key, not a recipient", {
        hint: "pass its public key (age-keygen -y prints it); never put a secret key on a command line",
      });
    }
    const rules = rulesOf(values, arg);
    const rule = findSecret(rules, arg);
    const [shownRecipient, { normalizeRecipient }] = await Promise.all([recipientShower(), loadAgeSecrets()]);
    if (rule) {
      const recipients = rule.publicKeys.map(shownRecipient);
      if (values.json) process.stdout.write(`${JSON.stringify({ secret: rule.name, recipients })}\n`);
      else for (const r of recipients) process.stdout.write(`${r.label}\t${r.kind}\t${r.recipient}\n`);
      return 0;
    }
    const fromFile = !arg.startsWith("age1") && !/^(ssh|ecdsa|sk)-/.test(arg) && fs.existsSync(arg);
    const recipient = fromFile ? recipientOfFile(arg) : arg;
    const wanted = normalizeRecipient(recipient);
    const secrets = [...rules.secrets.values()]
      .filter((s) => s.publicKeys.some((k) => normalizeRecipient(k) === wanted))
      .map((s) => s.name)
      .sort();
    if (secrets.length === 0) {
      if (!isRecipient(recipient)) {
        throw new NixsealError(
          "NOT_IN_RULES",
          `${quoteArg(arg, 60)} is neither a secret nor a recipient in ${rules.file}`,
          {
            hint: "pass a secret name from 'nixseal list', or a recipient exactly as in secrets.nix",
          },
        );
      }
      // A valid question with an empty answer: exit 1 ("nothing found"), not a usage error.
      reportFailure(
        "nixseal who",
        new NixsealError(
          "NOT_IN_RULES",
          `no secret in ${rules.file} is for ${fromFile ? arg : shownRecipient(recipient).label}`,
          {
            hint: "add the recipient to the publicKeys of a secret in secrets.nix, then run 'nixseal rekey'",
          },
        ),
        values.json === true,
      );
      return 1;
    }
    if (values.json)
      process.stdout.write(`${JSON.stringify({ recipient: shownRecipient(recipient), secrets })}\n`);
    else for (const s of secrets) process.stdout.write(`${s}\n`);
    return 0;
  },
};

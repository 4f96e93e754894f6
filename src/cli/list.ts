/** `nixseal list`: every secret with its recipients, size and last change in git. */
import * as fs from "node:fs";
import * as path from "node:path";
import { NixsealError } from "../common/index.js";
import { lastChanges } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { useColor } from "./report.js";
import { recipientShower, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal list [--rules FILE] [--json]

Lists every secret of the rules with its recipients (an ssh key by its comment or fingerprint,
an age key shortened), the size of its file and its last change in git. No key is needed.

${VAULT_OPTIONS_HELP}
Example:
    $ nixseal list
    db-password.age    412 B   2026-11-02  alice@laptop, web (ssh-ed25519)
    $ nixseal list --json | jq '.[] | select(.recipients | length < 2)'

Exit codes: 0 success, 1 failure (a file cannot be read), 2 usage or rules error.
`;

export const command: Command = {
  name: "list",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, VAULT_OPTIONS, "run 'nixseal list --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length > 0)
      throw new NixsealError("USAGE", "list takes no arguments", { hint: "nixseal list" });
    const rules = rulesOf(values);
    const changes = lastChanges(rules.dir);
    const shownRecipient = await recipientShower();
    const rows = [...rules.secrets.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((rule) => {
        let size: number | null = null;
        try {
          size = fs.lstatSync(rule.file).size;
        } catch {}
        const rel = path.relative(rules.dir, rule.file).split(path.sep).join("/");
        return {
          name: rule.name,
          file: rule.file,
          exists: size !== null,
          size,
          armor: rule.armor,
          lastChange: changes.get(rel) ?? null,
          recipients: rule.publicKeys.map(shownRecipient),
        };
      });
    if (values.json) {
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    const dim = (s: string) => (useColor(process.stdout) ? `\x1b[2m${s}\x1b[0m` : s);
    const width = Math.max(4, ...rows.map((r) => r.name.length));
    for (const r of rows) {
      const size = r.size === null ? "missing" : `${r.size} B`;
      const when = r.lastChange ? r.lastChange.slice(0, 10) : r.exists ? "uncommitted" : "";
      const who = r.recipients
        .map((x) => (x.kind.startsWith("ssh") ? `${x.label} (${x.kind})` : x.label))
        .join(", ");
      process.stdout.write(`${r.name.padEnd(width)}  ${size.padStart(9)}  ${dim(when.padEnd(11))}  ${who}\n`);
    }
    return 0;
  },
};

/** `nixseal check`: do the secret files agree with the rules? For CI: needs no private key. */
import { NixsealError } from "../common/index.js";
import { checkRepository } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { redactSecrets, safeText, useColor } from "./report.js";
import { repositoryOf, SOPS_OPTIONS } from "./sops-file.js";
import { VAULT_OPTIONS } from "./vault-context.js";

const HELP = `Usage: nixseal check [--rules FILE] [--config FILE] [--json]

Checks, without any private key, that the secret files agree with secrets.nix and .sops.yaml:
  - every secret in the rules has a file, and every *.age file is in the rules;
  - every file's header parses, is armored if and only if the rules say armor = true;
  - its recipient stanzas match the rules: count and types, the tags of ssh keys, and the
    nixseal recipients record (which names the exact recipient set).
Files written by agenix or age carry no record: for their age1... recipients check can only
count stanzas, and says so in a warning (run 'nixseal rekey' once to add the record).
sops files: every sops file under the .sops.yaml's directory must match a creation rule, and
its age recipients (read from its metadata) must be those the rule names, group by group; a
sops file secrets.nix lists must have exactly its publicKeys. Either file may be absent.

Output: one line per problem, naming the file and the secret; with --json one object
{"rules":FILE,"secrets":N,"problems":[{"severity","kind","secret","file","message"}]}.
Warnings don't fail the check.

Options:
    --rules FILE          The rules file (default: $RULES, else the first secrets.nix found
                          walking up from the current directory).
    --config FILE         The .sops.yaml (default: $SOPS_CONFIG, else the first found walking
                          up from the current directory).
    --json                Machine-readable output.
    --no-cache            Evaluate secrets.nix again instead of using the cache.

Example (CI):
    $ nixseal check
    drift: hosts/web/db.age (secret "hosts/web/db.age"): the recipients record differs from the rules (recipients were added or removed)
    nixseal check: 1 problem in 12 secrets; run 'nixseal rekey'

Exit codes: 0 clean (warnings allowed), 1 drift found, 2 usage or rules error.
`;

const OPTIONS = {
  rules: VAULT_OPTIONS.rules,
  json: VAULT_OPTIONS.json,
  "no-cache": VAULT_OPTIONS["no-cache"],
  config: SOPS_OPTIONS.config,
  help: VAULT_OPTIONS.help,
} as const;

export const command: Command = {
  name: "check",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal check --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length > 0) {
      throw new NixsealError("USAGE", "check takes no arguments", {
        hint: "nixseal check [--rules FILE] [--json]",
      });
    }
    const { rules, sopsConfig } = repositoryOf("nixseal check", values);
    const report = checkRepository(rules, sopsConfig);
    const drift = report.problems.filter((p) => p.severity === "drift").length;
    if (values.json) {
      const problems = report.problems.map((p) => ({ ...p, message: redactSecrets(p.message) }));
      process.stdout.write(`${JSON.stringify({ ...report, problems })}\n`);
    } else {
      const color = useColor(process.stdout);
      const paint = (code: string, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
      for (const p of report.problems) {
        const label = p.severity === "drift" ? paint("31", "drift:") : paint("33", "warning:");
        const who = p.secret === null ? "" : ` (secret "${p.secret}")`;
        process.stdout.write(`${label} ${safeText(`${p.file}${who}: ${p.message}`)}\n`);
      }
      const n = report.secrets;
      const summary =
        drift === 0
          ? n === 1
            ? "1 secret matches the rules"
            : `${n} secrets match the rules`
          : `${drift} problem${drift === 1 ? "" : "s"} in ${n} secret${n === 1 ? "" : "s"}; run 'nixseal rekey' for recipient drift`;
      const warnings = report.problems.length - drift;
      process.stderr.write(
        `nixseal check: ${summary}${warnings ? ` (${warnings} warning${warnings === 1 ? "" : "s"})` : ""}\n`,
      );
    }
    return drift === 0 ? 0 : 1;
  },
};

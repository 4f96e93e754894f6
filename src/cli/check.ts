/** `nixseal check`: do the secret files agree with the rules? For CI: needs no private key. */
import { NixsealError } from "../common/index.js";
import { type CheckReport, loadSopsAndRekey } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { redactSecrets, safeText, useColor } from "./report.js";
import { SOPS_OPTIONS } from "./sops-kind.js";
import { VAULT_OPTIONS } from "./vault-options.js";

const HELP = `Usage: nixseal check [--rules FILE] [--config FILE] [--json]

Checks, without any private key, that the secret files agree with secrets.nix and .sops.yaml:
  - every secret in the rules has a file, and every *.age file is in the rules;
  - every file's header parses, is armored if and only if the rules say armor = true;
  - its recipient stanzas match the rules: one per recipient, each of its recipient's type,
    the tags of ssh keys, and the nixseal recipients record if there is one (its digest, and
    one tag per stanza; what a tag says needs the file key, which check does not have).
What that proves: an ssh stanza names its key by a tag, so a file whose recipients are all ssh
keys is verified by its header alone. An X25519 (age1...), post-quantum or plugin stanza names
nobody: only the recipients record says who it is for, and the record is written by whoever
wrote the file, like the stanzas. check says for each file what it verified and what it takes
on the record's word. Files written by agenix or age carry no record: their age1... recipients
are not verified at all, and a warning says so (run 'nixseal rekey' once to add the record).
sops files: every sops file under the .sops.yaml's directory must match a creation rule, and
its age recipients (as its metadata lists them) must be those the rule names, group by group;
a sops file secrets.nix lists must have exactly its publicKeys. Either file may be absent.

Output: for each age file that matches, a line saying what was verified and what is claimed
by the record; one line per problem, naming the file and the secret. With --json one object
{"rules":FILE,"secrets":N,"problems":[{"severity","kind","secret","file","message"}],
 "files":[{"secret","file","verified":[...],"claimedByRecord":[...],"unverified":[...]}]}.
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
    checked: api.age (secret "api.age"): verified: stanza count and types, ssh key tags, the record names the rules' recipients; claimed by the record: 1 X25519 recipient
    ...
    drift: hosts/web/db.age (secret "hosts/web/db.age"): the recipients record differs from the rules (recipients were added or removed)
    nixseal check: 1 problem in 12 secrets; run 'nixseal rekey' for recipient drift

Exit codes: 0 clean (warnings allowed), 1 drift found, 2 usage or rules error.
`;

const OPTIONS = {
  rules: VAULT_OPTIONS.rules,
  json: VAULT_OPTIONS.json,
  "no-cache": VAULT_OPTIONS["no-cache"],
  config: SOPS_OPTIONS.config,
  help: VAULT_OPTIONS.help,
} as const;

/**
 * On what grounds the secrets match, when not every one is verified by its header alone:
 * "2 verified from their headers, 3 relying on the recipients record"; else "".
 */
function grounds(report: CheckReport): string {
  let proven = 0;
  let record = 0;
  let unverified = 0;
  for (const f of report.files) {
    if (f.unverified.length > 0) unverified++;
    else if (f.claimedByRecord.length > 0) record++;
    else proven++;
  }
  const sops = report.secrets - report.files.length;
  if (record + unverified + sops === 0) return "";
  const parts: string[] = [];
  if (proven > 0) parts.push(`${proven} verified from ${proven === 1 ? "its header" : "their headers"}`);
  if (record > 0) parts.push(`${record} relying on the recipients record`);
  if (unverified > 0) parts.push(`${unverified} not fully verified`);
  if (sops > 0)
    parts.push(`${sops} sops file${sops === 1 ? "" : "s"} as ${sops === 1 ? "its" : "their"} metadata lists`);
  return parts.join(", ");
}

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
    const [{ repositoryOf }, { checkRepository }] = await Promise.all([
      import("./sops-file.js"),
      loadSopsAndRekey(),
    ]);
    const { rules, sopsConfig } = repositoryOf("nixseal check", values);
    const report = checkRepository(rules, sopsConfig);
    const drift = report.problems.filter((p) => p.severity === "drift").length;
    if (values.json) {
      const problems = report.problems.map((p) => ({ ...p, message: redactSecrets(p.message) }));
      process.stdout.write(`${JSON.stringify({ ...report, problems })}\n`);
    } else {
      const color = useColor(process.stdout);
      const paint = (code: string, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
      for (const f of report.files) {
        const grounds = [`verified: ${f.verified.join(", ")}`];
        if (f.claimedByRecord.length > 0)
          grounds.push(`claimed by the record: ${f.claimedByRecord.join(", ")}`);
        if (f.unverified.length > 0) grounds.push(`not verified: ${f.unverified.join(", ")}`);
        process.stdout.write(
          `${paint("32", "checked:")} ${safeText(`${f.file} (secret "${f.secret}"): ${grounds.join("; ")}`)}\n`,
        );
      }
      for (const p of report.problems) {
        const label = p.severity === "drift" ? paint("31", "drift:") : paint("33", "warning:");
        const who = p.secret === null ? "" : ` (secret "${p.secret}")`;
        process.stdout.write(`${label} ${safeText(`${p.file}${who}: ${p.message}`)}\n`);
      }
      const n = report.secrets;
      const summary =
        drift === 0
          ? `${n === 1 ? "1 secret matches" : `${n} secrets match`} the rules`
          : `${drift} problem${drift === 1 ? "" : "s"} in ${n} secret${n === 1 ? "" : "s"}; run 'nixseal rekey' for recipient drift`;
      const warnings = report.problems.length - drift;
      const details = [
        drift === 0 ? grounds(report) : "",
        warnings ? `${warnings} warning${warnings === 1 ? "" : "s"}` : "",
      ].filter((d) => d !== "");
      process.stderr.write(`nixseal check: ${summary}${details.length ? ` (${details.join("; ")})` : ""}\n`);
    }
    return drift === 0 ? 0 : 1;
  },
};

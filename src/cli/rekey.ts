/** `nixseal rekey [NAME...]`: re-wrap secrets for the recipients the rules name now. */
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { NixsealError } from "../common/index.js";
import {
  loadRulesAsync,
  loadSopsAndRekey,
  type RekeyFailure,
  type RekeyProgress,
  type RekeyResult,
  type SopsTarget,
} from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printWarning, redactSecrets, safeText, useColor } from "./report.js";
import { SOPS_OPTIONS } from "./sops-kind.js";
import { identitiesOf, keyContext, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal rekey [NAME...] [--force] [--dry-run] [--rules FILE] [-i IDENTITY]... [--json]

Re-encrypts secrets for the recipients secrets.nix names now (all secrets, or the NAMEs given).
Which files need it is decided from their headers, without decrypting: only files whose
recipients differ from the rules are rewritten, the others stay byte-identical. Files written by
agenix or age (no nixseal recipients record) are rewritten once if they have age1... (or
post-quantum, plugin) recipients, whose stanzas don't say who they are for: the record then
names them. Files whose recipients are all ssh keys are verified by their stanzas' key tags and
left as they are.

All or nothing: every affected file is decrypted first; if any cannot be, nothing is written and
every failure is listed. Each file is then replaced atomically. Only the header is rewritten: the
encrypted content stays as it is (removing a recipient does not take back what they could read;
rotate the secret with 'nixseal edit' for that). In files nixseal wrote, the header's stanzas of
recipients who stay are kept byte for byte (the record tags them, readable only with the file
key): only new recipients are wrapped for, and removed ones' stanzas are dropped. Files written
by agenix, age or an older nixseal, and files with plugin recipients, are wrapped anew for
everyone once.

sops files are rekeyed too: those secrets.nix lists (to their publicKeys) and those under the
.sops.yaml's directory (to their creation rule's key groups). Their data key stays the same and
is re-wrapped for the recipients wanted now, as 'sops updatekeys' does; values, MAC and
lastmodified are untouched. They are part of the same all-or-nothing run.

Options:
    --force               Rewrite every selected file, even those already right, wrapping the
                          file key anew for every recipient (fresh ephemeral keys for everyone).
    --dry-run             Decrypt what would be rewritten and report it; write nothing.
    --config FILE         The .sops.yaml (default: $SOPS_CONFIG, else found walking up).
${VAULT_OPTIONS_HELP}
Example:
    $ $EDITOR secrets/secrets.nix          # add the new host's key to some secrets
    $ nixseal rekey
    rewritten hosts/web/db-password.age
    nixseal rekey: 1 rewritten, 11 unchanged

Output: one line per rewritten file on stdout; with --json one object
{"rewritten":[...],"unchanged":[...],"missing":[...],"failed":[{"secret","file","error","hint"}],...}.
Progress is shown on stderr when it is a terminal.

Exit codes: 0 success (also: nothing to do), 1 failure (a file can't be decrypted: nothing was
written), 2 usage or rules error (bad flags, no secrets.nix, NAME not in the rules, a bad key in
the rules).
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  config: SOPS_OPTIONS.config,
  force: { type: "boolean" },
  "dry-run": { type: "boolean" },
} as const;

/** A one-line progress display on a terminal's stderr, redrawn at most 20 times a second. */
function progressDisplay(): { update(p: RekeyProgress): void; clear(): void } {
  if (!process.stderr.isTTY) return { update() {}, clear() {} };
  let last = 0;
  let shown = false;
  return {
    update(p) {
      const now = Date.now();
      if (now - last < 50 && p.done !== p.total) return;
      last = now;
      shown = true;
      process.stderr.write(`\r\x1b[Knixseal rekey: ${p.phase} ${p.done}/${p.total}`);
    },
    clear() {
      if (shown) process.stderr.write("\r\x1b[K");
    },
  };
}

/**
 * Splits the NAMEs: those naming a sops file (by path, or by its name) select it; the rest are
 * age secrets. No NAMEs: every sops file and every age secret.
 */
function selectSops(
  all: SopsTarget[],
  names: readonly string[],
): { targets: SopsTarget[]; ageNames: string[] } {
  if (names.length === 0) return { targets: all, ageNames: [] };
  const targets = new Set<SopsTarget>();
  const ageNames: string[] = [];
  for (const n of names) {
    const abs = path.resolve(n);
    const t = all.find((x) => x.file === abs || x.name === n);
    if (t) targets.add(t);
    else ageNames.push(n);
  }
  return { targets: [...targets], ageNames };
}

export const command: Command = {
  name: "rekey",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal rekey --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const prog = "nixseal rekey";
    // Nix evaluates secrets.nix on the other core while this one loads rekey's modules.
    const loading = loadRulesAsync({
      rules: values.rules,
      noCache: values["no-cache"] === true,
      near: positionals[0],
    });
    // Awaited below (repositoryOfAsync); not an unhandled rejection meanwhile.
    loading.catch(() => {});
    const [{ repositoryOfAsync }, { findSopsTargets, prepareSopsRekey, rekeyRepository, writeSopsRekey }] =
      await Promise.all([import("./sops-file.js"), loadSopsAndRekey()]);
    const { rules, sopsConfig } = await repositoryOfAsync(prog, values, loading);
    const ctx = keyContext();
    let identities: Promise<Identity[]> | null = null;
    const getIdentities = () => (identities ??= identitiesOf(values, ctx));
    const dryRun = values["dry-run"] === true;

    // sops files: which, and what they should be (from their metadata, nothing decrypted yet).
    const found = findSopsTargets(rules, sopsConfig);
    for (const u of found.uncovered)
      printWarning(prog, `${u}: no creation rule matches this sops file: left alone`);
    const { targets, ageNames } = selectSops(found.targets, positionals);
    if (rules === null && ageNames.length > 0) {
      throw new NixsealError(
        "NOT_IN_RULES",
        `${ageNames.join(", ")}: not a sops file here, and there is no secrets.nix`,
        {
          hint: "name sops files by their path, or create a secrets.nix for age secrets",
        },
      );
    }
    const sops = await prepareSopsRekey(targets, getIdentities);
    const sopsFailed: RekeyFailure[] = [...(positionals.length === 0 ? found.failed : []), ...sops.failed];

    const display = progressDisplay();
    let result: RekeyResult;
    try {
      result =
        rules === null || (positionals.length > 0 && ageNames.length === 0)
          ? { rewritten: [], unchanged: [], missing: [], failed: [], dryRun, swept: [] }
          : await rekeyRepository(rules, {
              names: ageNames,
              force: values.force === true,
              // A sops failure means nothing is written: the age part only reports its own.
              dryRun: dryRun || sopsFailed.length > 0,
              identities: getIdentities,
              ctx,
              onProgress: (p) => display.update(p),
              exclude: new Set(found.targets.map((t) => t.file)),
            });
    } finally {
      display.clear();
    }
    if (sopsFailed.length > 0 && !dryRun) {
      result.dryRun = false;
      result.rewritten = [];
    }
    result.failed.push(...sopsFailed);
    if (result.failed.length === 0) {
      if (!dryRun) result.failed.push(...writeSopsRekey(sops.prepared));
      result.rewritten.push(...sops.prepared.map((p) => p.target.name));
    }
    result.unchanged.push(...sops.unchanged);
    result.rewritten.sort();
    if (values.json) {
      const out = {
        rewritten: result.rewritten,
        unchanged: result.unchanged,
        missing: result.missing,
        failed: result.failed.map((f) => ({
          secret: f.secret,
          file: f.file,
          error: redactSecrets(f.message),
          hint: f.hint === undefined ? undefined : redactSecrets(f.hint),
        })),
        swept: result.swept,
        dryRun: result.dryRun,
      };
      process.stdout.write(`${JSON.stringify(out)}\n`);
    }
    for (const s of result.swept) printWarning(prog, `removed ${s}, a temp file left by an interrupted run`);
    if (!values.json)
      for (const m of result.missing) printWarning(prog, `secret "${m}" has no file yet: skipped`);
    if (result.failed.length > 0) {
      const red = (s: string) => (useColor(process.stderr) ? `\x1b[31m${s}\x1b[0m` : s);
      for (const f of result.failed) {
        process.stderr.write(
          `${prog}: ${red("error:")} ${safeText(`${f.file} (secret "${f.secret}"): ${f.message}`)}\n`,
        );
      }
      const hints = [...new Set(result.failed.map((f) => f.hint).filter((h): h is string => !!h))];
      const written = result.rewritten.length;
      const outcome =
        written === 0 || result.dryRun
          ? "nothing was changed"
          : `${written} file${written === 1 ? " was" : "s were"} rewritten, the ${result.failed.length} above were left as they were`;
      process.stderr.write(`${prog}: hint: ${safeText([outcome, ...hints].join("; "))}\n`);
      return 1;
    }
    if (!values.json) {
      const verb = result.dryRun ? "would rewrite" : "rewritten";
      process.stdout.write(result.rewritten.map((n) => `${verb} ${safeText(n)}\n`).join(""));
      process.stderr.write(
        `${prog}: ${result.rewritten.length} ${result.dryRun ? "to rewrite" : "rewritten"}, ${result.unchanged.length} unchanged${
          result.missing.length ? `, ${result.missing.length} without a file` : ""
        }\n`,
      );
    }
    return 0;
  },
};

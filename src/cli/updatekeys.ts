/**
 * `nixseal updatekeys FILE...`: re-wraps each sops file's SAME data key for the age recipients
 * its `.sops.yaml` creation rule names now (sops updatekeys). Values, MAC and lastmodified are
 * untouched; only the metadata's age entries change (entries of recipients that stay are kept
 * byte for byte). pgp/kms/... entries cannot be wrapped by nixseal: with one key group they are
 * kept as they are (they wrap the same data key); re-splitting Shamir groups that hold them is
 * refused. Every file is handled on its own, all or nothing, and every problem is reported.
 */
import * as tty from "node:tty";
import type { Identity } from "../age/index.js";
import { isNixsealError, NixsealError } from "../common/index.js";
import { looksLikeSecretKey } from "../keys/index.js";
import { noMatchingRuleError, parseMetadata, ruleFor, type SopsConfig } from "../sops/index.js";
import { loadSopsAndRekey, type SopsExpectation } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { errorJson, printError, printWarning } from "./report.js";
import {
  displayPath,
  readSopsFile,
  requireSopsStore,
  SOPS_OPTIONS,
  SOPS_OPTIONS_HELP,
  sopsConfigOf,
  writeSopsFile,
} from "./sops-file.js";
import { identitiesOf, keyContext, VAULT_OPTIONS } from "./vault-context.js";

const PROG = "nixseal updatekeys";

const HELP = `Usage: nixseal updatekeys FILE... [--dry-run] [-i IDENTITY]... [--json]

Re-wraps the data key of each sops FILE for the age recipients its .sops.yaml creation rule
names now (after you added or removed a key there). The values, the MAC and lastmodified stay
as they are: only the sops metadata's age entries change. Recipients that stay keep their
entry byte for byte. pgp, kms and other non-age entries are kept unchanged (nixseal cannot wrap
for them; a warning says so when the rule names such keys).

Each file is updated on its own, all or nothing; every file's problem is reported.

Options:
    --dry-run             Show what would change; write nothing (no identity needed).
${SOPS_OPTIONS_HELP}    -i, --identity FILE   An identity to decrypt the data key with (repeatable).
    --json                One JSON object per file on standard output; a file that failed has
                          "error": {"code", "message", "hint", "file"}.
    -h, --help            This help.

Example:
    $ nixseal updatekeys secrets/*.yaml
    secrets/hosts.yaml: added age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

Exit codes: 0 success, 1 a file could not be updated, 2 usage or .sops.yaml error.
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  ...SOPS_OPTIONS,
  "dry-run": { type: "boolean" },
} as const;

interface FileReport {
  file: string;
  added: string[];
  removed: string[];
  changed: boolean;
  written: boolean;
}

/** The wanted recipients of a file's creation rule; non-age keys of the rule are warned about. */
async function expectationFor(config: SopsConfig, file: string, shown: string): Promise<SopsExpectation> {
  const rule = ruleFor(config, file);
  if (rule === null) throw noMatchingRuleError(config, file);
  const { expectationOfCreationRule } = await loadSopsAndRekey();
  const want = expectationOfCreationRule(rule, config.file);
  if (want.otherKeys.length > 0) {
    printWarning(
      PROG,
      `${shown}: the creation rule names ${want.otherKeys.join(", ")}; nixseal cannot wrap the data key for them: the file's existing entries of those types are kept unchanged`,
    );
  }
  return want;
}

async function updateFile(
  file: string,
  values: { "input-type"?: string; "dry-run"?: boolean },
  config: SopsConfig,
  identities: () => Promise<Identity[]>,
): Promise<FileReport> {
  const shown = displayPath(file);
  const store = requireSopsStore(file, values);
  const want = await expectationFor(config, file, shown);
  const { branches, metadata: raw } = store.parseEncrypted(await readSopsFile(file));
  if (raw === null) {
    throw new NixsealError("SOPS_METADATA", `${shown}: not a sops file: no sops metadata`, {
      hint: "encrypt it first (nixseal encrypt)",
      file: shown,
    });
  }
  const content = { file: shown, store, branches, metadata: parseMetadata(raw) };
  const { diffSopsRecipients, rewrappedKeyGroups, withKeyGroups } = await loadSopsAndRekey();
  const diff = diffSopsRecipients(content.metadata, want);
  const report: FileReport = {
    file: shown,
    added: diff.added,
    removed: diff.removed,
    changed: diff.changed,
    written: false,
  };
  if (!diff.changed || values["dry-run"]) return report;
  const groups = await rewrappedKeyGroups(content, want, diff.threshold, identities);
  writeSopsFile(file, withKeyGroups(content, groups, diff.threshold));
  report.written = true;
  return report;
}

const CONFIG_CODES = new Set(["USAGE", "SOPS_CONFIG"]);

/** A recipient in the output; a secret key written into .sops.yaml by mistake is not shown. */
function shownKey(r: string): string {
  return looksLikeSecretKey(r) ? "(a SECRET key, not shown: remove it from .sops.yaml)" : r;
}

export const command: Command = {
  name: "updatekeys",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  exitWhenDone: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal updatekeys --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length === 0) {
      throw new NixsealError("USAGE", "expected at least one sops FILE", {
        hint: "nixseal updatekeys secrets/*.yaml",
      });
    }
    const config = sopsConfigOf(PROG, values);
    let ids: Promise<Identity[]> | null = null;
    const identities = () => {
      ids ??= identitiesOf(values, keyContext());
      return ids;
    };
    let failures = 0;
    let configFailures = 0;
    for (const file of positionals) {
      let report: FileReport;
      try {
        report = await updateFile(file, values, config, identities);
      } catch (e) {
        printError(PROG, e);
        if (isNixsealError(e) && CONFIG_CODES.has(e.code)) configFailures++;
        else failures++;
        if (values.json) {
          const error = isNixsealError(e)
            ? errorJson(e)
            : { code: "INTERNAL", message: String((e as Error)?.message ?? e), hint: null, file: null };
          process.stdout.write(`${JSON.stringify({ file: displayPath(file), error })}\n`);
        }
        continue;
      }
      if (values.json) {
        const shown = { ...report, added: report.added.map(shownKey), removed: report.removed.map(shownKey) };
        process.stdout.write(`${JSON.stringify(shown)}\n`);
        continue;
      }
      const parts = [
        ...report.added.map((r) => `added ${shownKey(r)}`),
        ...report.removed.map((r) => `removed ${shownKey(r)}`),
      ];
      if (!report.changed) {
        process.stdout.write(`${report.file}: already up to date\n`);
      } else {
        const what = parts.length > 0 ? parts.join(", ") : "key groups rearranged";
        const prefix = values["dry-run"] ? "would update: " : "";
        process.stdout.write(`${report.file}: ${prefix}${what}\n`);
      }
    }
    if (failures + configFailures > 0 && tty.isatty(2)) {
      process.stderr.write(`${failures + configFailures} of ${positionals.length} file(s) not updated\n`);
    }
    return failures > 0 ? 1 : configFailures > 0 ? 2 : 0;
  },
};

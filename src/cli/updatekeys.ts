/**
 * `nixseal updatekeys FILE...`: re-wraps each sops file's SAME data key for the age recipients
 * its `.sops.yaml` creation rule names now (sops updatekeys). Values, MAC and lastmodified are
 * untouched; only the metadata's age entries change (entries of recipients that stay are kept
 * byte for byte). pgp/kms/... entries cannot be wrapped by nixseal: with one key group they are
 * kept as they are (they wrap the same data key); re-splitting Shamir groups that hold them is
 * refused. Every file is handled on its own, all or nothing, and every problem is reported.
 */
import * as tty from "node:tty";
import type { Identity } from "../age/types.js";
import { wipe } from "../common/bytes.js";
import { isNixsealError, NixsealError } from "../common/errors.js";
import {
  type AgeKeyEntry,
  type CreationRule,
  type KeyGroup,
  noMatchingRuleError,
  parseMetadata,
  ruleFor,
  type SopsConfig,
  type SopsMetadata,
  serializeMetadata,
  unwrapDataKey,
  wrapDataKey,
} from "../sops/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printError, printWarning } from "./report.js";
import {
  ageGroupsOf,
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
    --json                One JSON object per file on standard output.
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

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The age recipients each group gets now: the rule's, trimmed and deduplicated. */
function wantedGroups(rule: CreationRule, config: SopsConfig, file: string): string[][] {
  for (const [i, g] of rule.keyGroups.entries()) {
    if (g.other.length === 0) continue;
    const label = rule.keyGroups.length > 1 ? ` (key group ${i + 1})` : "";
    printWarning(
      PROG,
      `${file}: the creation rule names ${g.other.map((o) => `${o.type} ${o.id}`).join(", ")}${label}; nixseal cannot wrap the data key for them: the file's existing entries of those types are kept unchanged`,
    );
  }
  const quiet = { ...rule, keyGroups: rule.keyGroups.map((g) => ({ ...g, other: [] })) };
  return ageGroupsOf(PROG, quiet, config.file, file).map((g) => [...new Set(g.map((r) => r.trim()))]);
}

function otherEntries(g: KeyGroup): string[] {
  const out: string[] = [];
  for (const [type, list] of g.other) if (list.length > 0) out.push(`${list.length} ${type}`);
  return out;
}

/** The new key groups (re-wrapping the data key as needed), or null when nothing changes. */
async function newKeyGroups(
  meta: SopsMetadata,
  wanted: string[][],
  threshold: number,
  dataKey: () => Promise<Uint8Array>,
  file: string,
): Promise<KeyGroup[]> {
  const current = meta.keyGroups;
  if (current.length === 1 && wanted.length === 1) {
    // Same data key, one group: keep the entries of recipients that stay, wrap for the new ones.
    const kept = new Map(current[0]!.age.map((e) => [e.recipient.trim(), e]));
    const toWrap = wanted[0]!.filter((r) => !kept.has(r));
    const wrapped = new Map<string, AgeKeyEntry>();
    if (toWrap.length > 0) {
      const key = await dataKey();
      const [g] = await wrapDataKey(key, [toWrap]);
      for (const e of g!.age) wrapped.set(e.recipient, e);
    }
    const age = wanted[0]!.map((r) => kept.get(r) ?? wrapped.get(r)!);
    return [{ age, other: current[0]!.other }];
  }
  // Several groups: a new Shamir split, so every group's entries change.
  const stranded = current.flatMap((g, i) => otherEntries(g).map((o) => `${o} (group ${i + 1})`));
  if (stranded.length > 0) {
    throw new NixsealError(
      "SOPS_UNSUPPORTED",
      `${file}: the key groups must be split anew, and the file has ${stranded.join(", ")} entries nixseal cannot re-wrap`,
      {
        hint: "run sops updatekeys for this file, or remove those keys from the file first",
        file,
      },
    );
  }
  const key = await dataKey();
  return wrapDataKey(key, wanted, threshold);
}

async function updateFile(
  file: string,
  values: { "input-type"?: string; "dry-run"?: boolean },
  config: SopsConfig,
  identities: () => Promise<Identity[]>,
): Promise<FileReport> {
  const shown = displayPath(file);
  const store = requireSopsStore(file, values);
  const rule = ruleFor(config, file);
  if (rule === null) throw noMatchingRuleError(config, file);
  const input = readSopsFile(file);
  const { branches, metadata: raw } = store.parseEncrypted(input);
  if (raw === null) {
    throw new NixsealError("SOPS_METADATA", `${shown}: not a sops file: no sops metadata`, {
      hint: "encrypt it first (nixseal encrypt)",
      file: shown,
    });
  }
  const meta = parseMetadata(raw);
  const wanted = wantedGroups(rule, config, shown);
  const have = meta.keyGroups.map((g) => g.age.map((e) => e.recipient.trim()));
  const flatHave = new Set(have.flat());
  const flatWanted = new Set(wanted.flat());
  const report: FileReport = {
    file: shown,
    added: [...flatWanted].filter((r) => !flatHave.has(r)),
    removed: [...flatHave].filter((r) => !flatWanted.has(r)),
    changed: have.length !== wanted.length || have.some((g, i) => !sameList(g, wanted[i]!)),
    written: false,
  };
  const threshold = Math.min(
    rule.shamirThreshold > 0 ? rule.shamirThreshold : meta.shamirThreshold,
    wanted.length,
  );
  if (wanted.length > 1 && threshold !== meta.shamirThreshold) report.changed = true;
  if (!report.changed || values["dry-run"]) return report;
  let dataKey: Uint8Array | null = null;
  try {
    const groups = await newKeyGroups(
      meta,
      wanted,
      threshold,
      async () => {
        dataKey ??= await unwrapDataKey(meta, await identities(), shown);
        return dataKey;
      },
      shown,
    );
    const updated: SopsMetadata = {
      ...meta,
      keyGroups: groups,
      shamirThreshold: groups.length > 1 ? threshold : 0,
    };
    writeSopsFile(file, store.emitEncrypted(branches, serializeMetadata(updated)));
    report.written = true;
  } finally {
    if (dataKey !== null) wipe(dataKey);
  }
  return report;
}

const CONFIG_CODES = new Set(["USAGE", "SOPS_CONFIG"]);

export const command: Command = {
  name: "updatekeys",
  errorExitCode: 1,
  usageExitCode: 2,
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
          const code = isNixsealError(e) ? e.code : "INTERNAL";
          process.stdout.write(`${JSON.stringify({ file: displayPath(file), error: code })}\n`);
        }
        continue;
      }
      if (values.json) {
        process.stdout.write(`${JSON.stringify(report)}\n`);
        continue;
      }
      const parts = [...report.added.map((r) => `added ${r}`), ...report.removed.map((r) => `removed ${r}`)];
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

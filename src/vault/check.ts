/**
 * `nixseal check`: do the files and the rules agree? For CI: no private key, no plugin, no
 * decryption. Every rules entry has a file, every *.age file is in the rules, every header
 * parses, and its stanzas match its rules (types, count, ssh tags, the recipients record).
 * What that proves differs by recipient: an ssh stanza names its key (by tag); an X25519,
 * post-quantum or plugin stanza names nobody, and only the record, written by whoever wrote the
 * file, says who it is for. The report says which is which, file by file.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type ExtractedHeader, extractHeader } from "../age/index.js";
import { NixsealError, rethrowUnlessNixseal, walkFiles } from "../common/index.js";
import { ruleFor, type SopsConfig } from "../sops/index.js";
import { compareHeader, expectationOf, type HeaderExpectation } from "./recipients-record.js";
import { type Rules, relativeName, type SecretRule } from "./rules.js";
import { readSecretFile } from "./secrets.js";
import {
  diffSopsRecipients,
  expectationOfCreationRule,
  expectationOfPublicKeys,
  findSopsFiles,
  readRepositoryFile,
  type SopsExpectation,
  type SopsFileContent,
  sopsContentOf,
} from "./sops-files.js";

export type ProblemKind =
  /** A rules entry whose file does not exist. */
  | "missing-file"
  /** An *.age file the rules do not list. */
  | "not-in-rules"
  /** The file is not a readable regular file (symlink, directory, too large). */
  | "unreadable"
  /** The header does not parse. */
  | "bad-header"
  /** The stanzas or the recipients record contradict the rules. */
  | "recipients"
  /** armored where the rules say binary, or the other way round. */
  | "armor"
  /** No recipients record, and some recipients can't be verified without one (a warning). */
  | "unrecorded";

export interface CheckProblem {
  /** "drift" makes check fail; "warning" does not. */
  severity: "drift" | "warning";
  kind: ProblemKind;
  /** The secret's name in the rules, or null for a file the rules do not list. */
  secret: string | null;
  /** The file, relative to the rules directory. */
  file: string;
  message: string;
}

/**
 * What a check of one age file found to agree with the rules, and on what grounds: no header
 * can show who an X25519, post-quantum or plugin stanza is for, so for those recipients "match"
 * means that the recipients record, written by whoever wrote the file, says so.
 */
export interface FileStatement {
  secret: string;
  /** Relative to the rules directory. */
  file: string;
  /** Checked against the rules from the header: "stanza count and types", "ssh key tags", ... */
  verified: string[];
  /** Recipients only the record names ("2 X25519 recipients"). */
  claimedByRecord: string[];
  /** Not verified at all: recipients of a file without a record, unknown stanzas. */
  unverified: string[];
}

export interface CheckReport {
  /** The secrets.nix checked, or null (a sops-only repository). */
  rules: string | null;
  /** The .sops.yaml checked, or null. */
  sopsConfig: string | null;
  /** How many secrets were checked: rules entries plus sops files found under .sops.yaml. */
  secrets: number;
  problems: CheckProblem[];
  /** Every age file without drift: what its check verified and what it takes on the record's word. */
  files: FileStatement[];
}

/** How one secret file compares with its rule. */
export interface FileInspection {
  /** Ways the file contradicts its rule (empty: consistent). */
  mismatches: string[];
  armorMismatch: boolean;
  /** No recipients record in the header. */
  unrecorded: boolean;
  /** Recipients whose stanzas don't say who they are for: only a record names them. */
  unverifiable: number;
  /** What the header shows and was checked (see compareHeader). */
  verified: string[];
  /** Recipients only the record names. */
  claimedByRecord: string[];
  /** What nothing in the header shows (no record; stanzas nobody in the rules reads). */
  unverified: string[];
  /** Stanzas of a type nobody in the rules reads (rage's grease), in a file without a record. */
  unread: string | null;
  /** Every recipient identified by its stanza, and nothing else in the header: right as it is. */
  proven: boolean;
}

/** Compares one secret file's bytes with its rule (the expectation comes from the rule). */
export function inspectSecretFile(
  rule: SecretRule,
  data: Uint8Array,
  expect: HeaderExpectation,
): FileInspection & ExtractedHeader {
  const file = extractHeader(data);
  const c = compareHeader(file.header.stanzas, expect);
  return {
    ...file,
    mismatches: c.mismatches,
    armorMismatch: file.armored !== rule.armor,
    unrecorded: c.record.state === "absent",
    unverifiable: c.unverifiable,
    verified: c.verified,
    claimedByRecord: c.claimedByRecord,
    unverified: c.unverified,
    unread: c.unread,
    proven: c.proven,
  };
}

/** Every *.age file under `dir`, skipping dot directories (.git, ...) and never following links. */
export function findAgeFiles(dir: string): string[] {
  const out: string[] = [];
  walkFiles(
    dir,
    (name) => name.startsWith("."),
    (e, p) => {
      if (e.name.endsWith(".age") && (e.isFile() || e.isSymbolicLink())) out.push(p);
    },
  );
  return out.sort();
}

/**
 * The expectations of every rule. A rule with an unusable recipient (unknown type, damaged key)
 * is an error of the rules (code RULES: exit 2), all of them reported at once.
 */
export function expectationsOf(rules: Rules): Map<string, HeaderExpectation> {
  const out = new Map<string, HeaderExpectation>();
  const problems: NixsealError[] = [];
  // Secrets mostly share a few key lists (agenix's `users ++ systems`): parse each list once.
  const byKeys = new Map<string, HeaderExpectation>();
  for (const rule of rules.secrets.values()) {
    try {
      const id = rule.publicKeys.join("\n");
      let expect = byKeys.get(id);
      if (expect === undefined) {
        expect = expectationOf(rule.publicKeys, `${rules.file}: secret "${rule.name}"`);
        byKeys.set(id, expect);
      }
      out.set(rule.name, expect);
    } catch (e) {
      rethrowUnlessNixseal(e);
      for (const p of e.problems.length ? e.problems : [e]) {
        problems.push(new NixsealError("RULES", p.message, { file: rules.file, hint: p.hint }));
      }
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return out;
}

/** The drift messages of a sops file against what its rule wants (no key needed). */
function sopsMismatches(content: SopsFileContent, want: SopsExpectation): string[] {
  const diff = diffSopsRecipients(content.metadata, want);
  if (!diff.changed) return [];
  const parts: string[] = [];
  if (diff.added.length > 0) parts.push(`missing ${diff.added.join(", ")}`);
  if (diff.removed.length > 0) parts.push(`not in the rule: ${diff.removed.join(", ")}`);
  if (parts.length === 0) parts.push("key groups, their order or the Shamir threshold differ");
  return [`the sops file's age recipients differ from ${want.source}: ${parts.join("; ")}`];
}

/**
 * Checks the whole repository: the secrets of secrets.nix (age files, or sops files it lists),
 * and the sops files under the .sops.yaml's directory against its creation rules. Throws only
 * for configuration errors (bad recipients in the rules).
 */
export function checkRepository(rules: Rules | null, sopsConfig: SopsConfig | null = null): CheckReport {
  const problems: CheckProblem[] = [];
  const files: FileStatement[] = [];
  const listed = new Set<string>();
  let secrets = rules?.secrets.size ?? 0;
  if (rules !== null) checkRules(rules, problems, files, listed);
  if (sopsConfig !== null) secrets += checkSopsFiles(sopsConfig, problems, listed);
  return { rules: rules?.file ?? null, sopsConfig: sopsConfig?.file ?? null, secrets, problems, files };
}

function checkSopsFiles(config: SopsConfig, problems: CheckProblem[], listed: Set<string>): number {
  const dir = path.dirname(config.file);
  const rel = (f: string) => path.relative(dir, f).split(path.sep).join("/");
  let n = 0;
  for (const f of findSopsFiles(dir)) {
    if (listed.has(path.resolve(f))) continue;
    n++;
    const file = rel(f);
    const problem = (kind: ProblemKind, message: string) =>
      problems.push({ severity: "drift", kind, secret: file, file, message });
    try {
      const rule = ruleFor(config, f);
      if (rule === null) {
        problem("not-in-rules", `a sops file that no creation rule of ${path.basename(config.file)} matches`);
        continue;
      }
      const content = sopsContentOf(file, readRepositoryFile(f));
      if (content === null) continue;
      for (const m of sopsMismatches(content, expectationOfCreationRule(rule, config.file)))
        problem("recipients", m);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problem(
        e.code === "SOPS_UNSUPPORTED" || e.code === "SOPS_CONFIG" ? "recipients" : "bad-header",
        e.message,
      );
    }
  }
  return n;
}

function checkRules(
  rules: Rules,
  problems: CheckProblem[],
  files: FileStatement[],
  listed: Set<string>,
): void {
  const expectations = expectationsOf(rules);
  for (const rule of rules.secrets.values()) {
    listed.add(path.resolve(rule.file));
    const file = relativeName(rules, rule.file);
    const problem = (severity: CheckProblem["severity"], kind: ProblemKind, message: string) =>
      problems.push({ severity, kind, secret: rule.name, file, message });
    let data: Buffer;
    try {
      data = readSecretFile(rule);
    } catch (e) {
      rethrowUnlessNixseal(e);
      if (!fs.existsSync(rule.file) && !isSymlink(rule.file)) {
        problem("drift", "missing-file", "the rules list it but the file does not exist");
      } else {
        problem("drift", "unreadable", e.message.replace(`${rule.file} `, "").replace(`${rule.file}: `, ""));
      }
      continue;
    }
    // A sops file secrets.nix lists: its publicKeys are the one key group it should have.
    let sops: SopsFileContent | null = null;
    try {
      sops = sopsContentOf(rule.file, data);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problem("drift", "bad-header", e.message);
      continue;
    }
    if (sops !== null) {
      for (const m of sopsMismatches(sops, expectationOfPublicKeys(rule.publicKeys, rules.file))) {
        problem("drift", "recipients", m);
      }
      continue;
    }
    let inspection: FileInspection;
    try {
      inspection = inspectSecretFile(rule, data, expectations.get(rule.name)!);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problem("drift", "bad-header", e.message);
      continue;
    }
    for (const m of inspection.mismatches) problem("drift", "recipients", m);
    if (inspection.armorMismatch) {
      problem(
        "drift",
        "armor",
        rule.armor
          ? "the rules say armor = true but the file is binary"
          : "the file is armored but the rules say binary",
      );
    }
    if (inspection.mismatches.length > 0) continue;
    if (inspection.unrecorded && inspection.unverifiable > 0) {
      problem(
        "warning",
        "unrecorded",
        `no recipients record: ${inspection.unverifiable} of ${rule.publicKeys.length} recipients can't be verified from the header; run 'nixseal rekey' once to add the record`,
      );
    }
    if (inspection.unread !== null) {
      problem(
        "warning",
        "unrecorded",
        `${inspection.unread}: who can decrypt them can't be verified; run 'nixseal rekey' once to rewrite the file without them`,
      );
    }
    if (inspection.armorMismatch) continue;
    files.push({
      secret: rule.name,
      file,
      verified: inspection.verified,
      claimedByRecord: inspection.claimedByRecord,
      unverified: inspection.unverified,
    });
  }
  for (const f of findAgeFiles(rules.dir)) {
    if (listed.has(path.resolve(f))) continue;
    problems.push({
      severity: "drift",
      kind: "not-in-rules",
      secret: null,
      file: relativeName(rules, f),
      message: `not listed in ${path.basename(rules.file)}`,
    });
  }
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

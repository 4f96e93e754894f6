/**
 * What the sops commands share: is a path a sops file (by extension or --input-type), the
 * `.sops.yaml` creation rule for it, reading, decrypting and writing it back atomically with its
 * mode kept.
 */
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { nodeFs as fs, NixsealError, writeFileAtomic } from "../common/index.js";
import {
  type CreationRule,
  decryptDocument,
  type EncryptionRules,
  encryptNewDocument,
  findSopsConfig,
  loadSopsConfig,
  noMatchingRuleError,
  ruleFor,
  type SopsBranch,
  type SopsConfig,
  type SopsDocument,
  type SopsStore,
  type StoreName,
  storeByName,
  storeNameByExtension,
} from "../sops/index.js";
import { findRulesFile, findSecret, loadRules, loadSopsFiles, type Rules } from "../vault/index.js";
import { printWarning, quoteArg } from "./report.js";
import type { SopsValues } from "./sops-kind.js";

export { SOPS_OPTIONS, SOPS_OPTIONS_HELP, type SopsValues } from "./sops-kind.js";

const STORE_NAMES: readonly StoreName[] = ["yaml", "json", "dotenv", "ini", "binary"];

function inputType(values: SopsValues): StoreName | null {
  const t = values["input-type"];
  if (t === undefined) return null;
  if (!(STORE_NAMES as readonly string[]).includes(t)) {
    throw new NixsealError("USAGE", `unknown --input-type ${quoteArg(t, 20)}`, {
      hint: `use one of ${STORE_NAMES.join(", ")}`,
    });
  }
  return t as StoreName;
}

/**
 * Whether NAME is a sops file, and in which format: --input-type says so; else a sops extension,
 * unless secrets.nix lists NAME (then it stays an age secret, as before sops support).
 */
export function sopsStoreOf(name: string, values: SopsValues): SopsStore | null {
  const forced = inputType(values);
  if (forced !== null) return storeByName(forced);
  const byExtension = storeNameByExtension(name);
  if (byExtension === null) return null;
  const explicit = values.rules ?? process.env.RULES;
  let rulesFile: string | null = null;
  try {
    rulesFile = findRulesFile({ rules: values.rules, near: name });
  } catch (e) {
    // No secrets.nix at all: a sops file. A --rules/RULES that does not exist is still an error.
    if (explicit || !(e instanceof NixsealError && e.code === "RULES")) throw e;
  }
  if (rulesFile !== null) {
    const rules = loadRules({ rules: rulesFile, noCache: values["no-cache"] === true });
    if (findSecret(rules, name)) return null;
  }
  return storeByName(byExtension);
}

/** sops -> the store for a path that must be a sops file (set, updatekeys, rotate). */
export function requireSopsStore(name: string, values: SopsValues): SopsStore {
  const forced = inputType(values);
  if (forced !== null) return storeByName(forced);
  const byExtension = storeNameByExtension(name);
  if (byExtension === null) {
    throw new NixsealError(
      "USAGE",
      `${name} is not a sops file (no .yaml, .yml, .json, .env or .ini extension)`,
      {
        hint: "pass --input-type yaml|json|dotenv|ini|binary to say which format it is",
      },
    );
  }
  return storeByName(byExtension);
}

/** The `.sops.yaml` sops would use: --config, $SOPS_CONFIG, else found from the current directory. */
export function sopsConfigOf(prog: string, values: SopsValues): SopsConfig {
  const location = findSopsConfig(process.cwd(), values.config ?? process.env.SOPS_CONFIG);
  if (location.warning) printWarning(prog, location.warning);
  if (location.file === null) {
    throw new NixsealError("SOPS_CONFIG", `no .sops.yaml found in ${process.cwd()} or any parent directory`, {
      hint: "create a .sops.yaml with creation_rules (sops looks for it from the current directory upward), or pass --config FILE",
    });
  }
  const config = loadSopsConfig(location.file);
  for (const w of config.warnings) printWarning(prog, w.message);
  return config;
}

/**
 * What a repository command checks against: secrets.nix (if there is one) and the .sops.yaml (if
 * there is one). At least one must exist; a --rules/RULES/--config naming a missing file is an
 * error, as is a malformed one.
 */
export function repositoryOf(
  prog: string,
  values: SopsValues,
  near?: string,
): { rules: Rules | null; sopsConfig: SopsConfig | null } {
  let rules: Rules | null = null;
  let missingRules: NixsealError | null = null;
  try {
    rules = loadRules({ rules: values.rules, noCache: values["no-cache"] === true, near });
  } catch (e) {
    missingRules = noRulesHere(values, e);
  }
  return withSopsConfig(prog, values, rules, missingRules);
}

/**
 * repositoryOf with the rules already being loaded (loadRulesAsync, started before this module
 * was: Nix evaluates on another core while the command loads).
 */
export async function repositoryOfAsync(
  prog: string,
  values: SopsValues,
  loading: Promise<Rules>,
): Promise<{ rules: Rules | null; sopsConfig: SopsConfig | null }> {
  let rules: Rules | null = null;
  let missingRules: NixsealError | null = null;
  try {
    rules = await loading;
  } catch (e) {
    missingRules = noRulesHere(values, e);
  }
  return withSopsConfig(prog, values, rules, missingRules);
}

/** No secrets.nix found (and none named): returned, for a repository with sops files only; else thrown. */
function noRulesHere(values: SopsValues, e: unknown): NixsealError {
  const explicit = values.rules ?? process.env.RULES;
  if (
    explicit ||
    !(e instanceof NixsealError && e.code === "RULES" && /^no secrets\.nix found/.test(e.message))
  )
    throw e;
  return e;
}

function withSopsConfig(
  prog: string,
  values: SopsValues,
  rules: Rules | null,
  missingRules: NixsealError | null,
): { rules: Rules | null; sopsConfig: SopsConfig | null } {
  const location = findSopsConfig(process.cwd(), values.config ?? process.env.SOPS_CONFIG);
  if (location.warning) printWarning(prog, location.warning);
  let sopsConfig: SopsConfig | null = null;
  if (location.file !== null) {
    sopsConfig = loadSopsConfig(location.file);
    for (const w of sopsConfig.warnings) printWarning(prog, w.message);
  }
  if (rules === null && sopsConfig === null) throw missingRules!;
  return { rules, sopsConfig };
}

/** The creation rule for `file`; sops' "no matching creation rules" error when there is none. */
export function creationRuleOf(
  prog: string,
  file: string,
  values: SopsValues,
): { rule: CreationRule; config: SopsConfig } {
  const config = sopsConfigOf(prog, values);
  const rule = ruleFor(config, file);
  if (rule === null) throw noMatchingRuleError(config, file);
  return { rule, config };
}

/** The options of a creation rule that choose which values are encrypted. */
export function encryptionRulesOf(rule: CreationRule): EncryptionRules {
  const out: EncryptionRules = {};
  if (rule.unencryptedSuffix) out.unencryptedSuffix = rule.unencryptedSuffix;
  if (rule.encryptedSuffix) out.encryptedSuffix = rule.encryptedSuffix;
  if (rule.unencryptedRegex) out.unencryptedRegex = rule.unencryptedRegex;
  if (rule.encryptedRegex) out.encryptedRegex = rule.encryptedRegex;
  if (rule.unencryptedCommentRegex) out.unencryptedCommentRegex = rule.unencryptedCommentRegex;
  if (rule.encryptedCommentRegex) out.encryptedCommentRegex = rule.encryptedCommentRegex;
  return out;
}

/**
 * The age recipients of a rule, group by group. Keys of other types (pgp, kms, ...) cannot be
 * wrapped by nixseal: warned about, and a group with nothing else is an error.
 */
export function ageGroupsOf(prog: string, rule: CreationRule, configFile: string, file: string): string[][] {
  const groups: string[][] = [];
  rule.keyGroups.forEach((g, i) => {
    const label = rule.keyGroups.length > 1 ? ` (key group ${i + 1})` : "";
    if (g.other.length > 0) {
      printWarning(
        prog,
        `${file}: the creation rule names ${g.other.map((o) => `${o.type} ${o.id}`).join(", ")}${label}; nixseal cannot wrap the data key for them`,
      );
    }
    if (g.age.length === 0) {
      throw new NixsealError(
        "SOPS_UNSUPPORTED",
        `${file}: the creation rule in ${configFile}${label} names no age recipient`,
        {
          hint: "nixseal wraps data keys for age keys only: add an age recipient to the rule, or use sops for this file",
          file: configFile,
        },
      );
    }
    groups.push([...g.age]);
  });
  if (groups.length === 0) {
    throw new NixsealError("SOPS_CONFIG", `${file}: the creation rule in ${configFile} names no keys`, {
      hint: "add age recipients to the rule",
      file: configFile,
    });
  }
  return groups;
}

/**
 * Encrypts plaintext documents into a new sops file FILE for the keys of its .sops.yaml creation
 * rule (key groups, shamir_threshold, the (un)encrypted options), atomically.
 */
export async function encryptNewSopsFile(
  prog: string,
  file: string,
  store: SopsStore,
  branches: SopsBranch[],
  values: SopsValues,
): Promise<{ keyGroups: number; recipients: number }> {
  const { rule, config } = creationRuleOf(prog, file, values);
  const keyGroups = ageGroupsOf(prog, rule, config.file, displayPath(file));
  const out = await encryptNewDocument(branches, store, {
    keyGroups,
    shamirThreshold: rule.shamirThreshold,
    rules: encryptionRulesOf(rule),
    macOnlyEncrypted: rule.macOnlyEncrypted,
    file: displayPath(file),
  });
  writeSopsFile(file, out);
  return { keyGroups: keyGroups.length, recipients: keyGroups.reduce((n, g) => n + g.length, 0) };
}

/** Reads a sops file (size-limited, regular file; a symlink the user typed is followed). */
export async function readSopsFile(file: string): Promise<Buffer> {
  const { readRepositoryFile } = await loadSopsFiles();
  return readRepositoryFile(file, true);
}

/**
 * Reads and decrypts a sops file (MAC verified unless ignoreMac). The caller closes it.
 * `rememberOnly`: the key paths of the only values a write will splice in (DecryptOptions).
 */
export async function openSopsFile(
  file: string,
  store: SopsStore,
  identities: readonly Identity[],
  ignoreMac = false,
  readOnly = false,
  rememberOnly?: readonly (readonly string[])[],
): Promise<SopsDocument> {
  return decryptDocument(await readSopsFile(file), store, {
    identities,
    ignoreMac,
    file,
    readOnly,
    rememberOnly,
  });
}

/**
 * Replaces a sops file atomically, keeping its mode (new files: 0644 minus umask); `data` may
 * come in pieces (a spliced write: the file as read around the values written anew).
 */
export function writeSopsFile(file: string, data: Uint8Array | readonly Uint8Array[]): void {
  let mode = 0o644;
  try {
    mode = fs.statSync(file).mode & 0o7777;
  } catch {}
  writeFileAtomic(file, data, mode);
}

/** A file name for messages: relative to the current directory when inside it. */
export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), path.resolve(file));
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : path.resolve(file);
}

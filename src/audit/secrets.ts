/**
 * The secrets an audit compares the store against: every age file of the repository's rules
 * and every value of every sops file (those a `.sops.yaml` covers, and those named explicitly)
 * that the user's identities can decrypt. Files that cannot be decrypted are listed, not fatal.
 *
 * Plaintext lives in Uint8Arrays the caller wipes once the matcher is built. Decrypted sops
 * values pass through JavaScript strings on the way (the sops tree model holds strings), which
 * cannot be zeroed: they are dropped as soon as the values are copied out.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { ioError, NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import {
  closeDocument,
  decryptDocument,
  isEncryptedValue,
  MAX_DOCUMENT_SIZE,
  ruleFor,
  SopsBranch,
  SopsComment,
  type SopsConfig,
  SopsTime,
  type SopsValue,
  storeByName,
  storeNameByExtension,
} from "../sops/index.js";
import { loadAgeSecrets, type Rules } from "../vault/index.js";

export interface AuditSecret {
  /** How reports name it: the rules' name, or `FILE:["key"][0]` for a sops value. */
  name: string;
  /** The encrypted file it comes from. */
  file: string;
  /** The plaintext; wiped by the caller. */
  value: Uint8Array;
}

export interface UndecryptableFile {
  file: string;
  /** The rules' name of an age secret. */
  name?: string;
  error: NixsealError;
}

export interface LoadSecretsOptions {
  identities: readonly Identity[];
  /** The repository's rules (secrets.nix), or null when there is none. */
  rules: Rules | null;
  /** The `.sops.yaml` whose covered files are read, or null. */
  sopsConfig: SopsConfig | null;
  /** sops files named explicitly (--sops). */
  sopsFiles: readonly string[];
  /** How file names appear in names and messages (default: as given). */
  display?: (file: string) => string;
}

export interface LoadedSecrets {
  secrets: AuditSecret[];
  undecryptable: UndecryptableFile[];
  /** Encrypted files read: age secrets and sops files. */
  files: number;
  /** Problems that are errors (a --sops FILE that does not exist). */
  problems: NixsealError[];
}

/** Directories a repository walk does not enter. */
const SKIP_DIRS = new Set([".git", ".hg", ".jj", "node_modules", ".direnv", "result"]);
/** A repository walk stops after this many entries (a .sops.yaml in $HOME must not walk it all). */
const MAX_WALK_ENTRIES = 100_000;

export async function loadSecrets(options: LoadSecretsOptions): Promise<LoadedSecrets> {
  const display = options.display ?? ((f: string) => f);
  const out: LoadedSecrets = { secrets: [], undecryptable: [], files: 0, problems: [] };
  const seen = new Set<string>();

  if (options.rules !== null) {
    const { decryptSecret } = await loadAgeSecrets();
    for (const rule of options.rules.secrets.values()) {
      seen.add(path.resolve(rule.file));
      if (!fs.existsSync(rule.file)) continue; // listed in the rules, not written yet: nothing to leak
      out.files++;
      try {
        const value = await decryptSecret(rule, options.identities);
        out.secrets.push({ name: rule.name, file: rule.file, value });
      } catch (e) {
        rethrowUnlessNixseal(e);
        out.undecryptable.push({ file: rule.file, name: rule.name, error: e });
      }
    }
  }

  const sopsFiles: { file: string; explicit: boolean }[] = options.sopsFiles.map((f) => ({
    file: path.resolve(f),
    explicit: true,
  }));
  if (options.sopsConfig !== null) {
    for (const f of coveredFiles(options.sopsConfig)) sopsFiles.push({ file: f, explicit: false });
  }
  for (const { file, explicit } of sopsFiles) {
    if (seen.has(file)) continue;
    seen.add(file);
    let input: Buffer;
    try {
      const st = fs.lstatSync(file);
      if (!st.isFile() || st.size > MAX_DOCUMENT_SIZE) {
        if (explicit) {
          out.problems.push(
            new NixsealError(
              "IO",
              `${display(file)} is not a regular file of at most ${MAX_DOCUMENT_SIZE >> 20} MiB`,
              {
                file,
                hint: "give the path of a sops file",
              },
            ),
          );
        }
        continue;
      }
      input = fs.readFileSync(file);
    } catch (e) {
      if (explicit) out.problems.push(ioError("read", file, e));
      continue;
    }
    // A file a creation rule covers need not be a sops file (a rule without path_regex covers all).
    if (!explicit && !(input.includes("sops") && input.includes("mac"))) continue;
    try {
      const values = await sopsValues(input, file, display(file), options.identities);
      out.files++;
      out.secrets.push(...values);
    } catch (e) {
      rethrowUnlessNixseal(e);
      const notSops =
        e.code === "SOPS_FORMAT" || (e.code === "SOPS_METADATA" && /no sops metadata/.test(e.message));
      if (notSops && !explicit) continue;
      out.files++;
      out.undecryptable.push({ file, error: e });
    }
  }
  return out;
}

/** Every value of a sops file that was encrypted in it, each as its own secret. */
async function sopsValues(
  input: Uint8Array,
  file: string,
  shown: string,
  identities: readonly Identity[],
): Promise<AuditSecret[]> {
  const store = storeByName(storeNameByExtension(file) ?? "binary");
  // The encrypted tree says which values were encrypted (those under an unencrypted suffix are
  // public in git already); decryptDocument replaces the leaves of its own copy in place.
  const encrypted = store.parseEncrypted(input).branches;
  const doc = await decryptDocument(input, store, { identities, file });
  const out: AuditSecret[] = [];
  try {
    const multi = doc.branches.length > 1;
    doc.branches.forEach((b, i) => {
      walk(encrypted[i]!, b, multi ? `[document ${i}]` : "", (where, value) => {
        out.push({ name: `${shown}:${where}`, file, value });
      });
    });
  } finally {
    closeDocument(doc);
  }
  return out;
}

function leafBytes(v: SopsValue): Uint8Array | null {
  if (typeof v === "string") return Buffer.from(v, "utf8");
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return Buffer.from(String(v));
  if (v instanceof SopsTime) return Buffer.from(v.text);
  return null;
}

/** Walks the encrypted and the decrypted tree side by side; `emit` gets each encrypted leaf. */
function walk(
  enc: SopsValue | SopsComment | undefined,
  dec: SopsValue | SopsComment | undefined,
  where: string,
  emit: (where: string, value: Uint8Array) => void,
): void {
  if (enc instanceof SopsComment || dec instanceof SopsComment || dec === undefined) return;
  if (enc instanceof SopsBranch && dec instanceof SopsBranch) {
    enc.items.forEach((item, i) => {
      const d = dec.items[i];
      if (typeof item.key !== "string" || d === undefined) return;
      walk(item.value, d.value, `${where}[${JSON.stringify(item.key)}]`, emit);
    });
    return;
  }
  if (Array.isArray(enc) && Array.isArray(dec)) {
    let index = 0;
    enc.forEach((e, i) => {
      if (e instanceof SopsComment) return;
      walk(e, dec[i], `${where}[${index++}]`, emit);
    });
    return;
  }
  if (typeof enc === "string" && isEncryptedValue(enc)) {
    const bytes = leafBytes(dec);
    if (bytes !== null) emit(where || "[value]", bytes);
  }
}

/**
 * The files below a `.sops.yaml`'s directory that one of its creation rules covers (sops would
 * encrypt them with that rule), without following symlinks.
 */
export function coveredFiles(config: SopsConfig): string[] {
  const out: string[] = [];
  const stack = [config.dir];
  let entries = 0;
  while (stack.length > 0 && entries < MAX_WALK_ENTRIES) {
    const dir = stack.pop()!;
    let list: fs.Dirent[];
    try {
      list = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const d of list) {
      if (++entries > MAX_WALK_ENTRIES) break;
      const p = path.join(dir, d.name);
      if (d.isDirectory()) {
        if (!SKIP_DIRS.has(d.name)) stack.push(p);
      } else if (d.isFile() && p !== config.file) {
        try {
          if (ruleFor(config, p) !== null) out.push(p);
        } catch {
          // The rule that covers it has an error sops reports only when it is used: not a file to read.
        }
      }
    }
  }
  return out.sort();
}

/** Wipes every secret's plaintext. */
export function wipeSecrets(secrets: readonly AuditSecret[]): void {
  for (const s of secrets) wipe(s.value);
}

/**
 * Whole sops files: find the data key with the age engine, decrypt and verify every value and
 * the MAC; encrypt a document (new data key, or the file's own one with its IVs reused for
 * unchanged values), write the metadata as sops does.
 * sops: sops.go Tree.Encrypt/Decrypt, cmd/sops/common (MAC), stores/stores.go (metadata).
 */
import { randomBytes } from "node:crypto";
import { decrypt as ageDecrypt, encrypt as ageEncrypt, type Identity, type Recipient } from "../age/index.js";
import { NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import { parseRecipientString } from "../keys/index.js";
import { decryptMac, encryptMac, MacAccumulator, nowRfc3339, sameMac } from "./mac.js";
import {
  type AgeKeyEntry,
  type KeyGroup,
  parseMetadata,
  SOPS_FORMAT_VERSION,
  type SopsMetadata,
  serializeMetadata,
} from "./metadata.js";
import { isPgpIdentity, type PgpIdentity, pgpEntries } from "./pgp.js";
import { DOTENV_METADATA_PREFIX } from "./stores/dotenv.js";
import { METADATA_KEY, type NarrowText, type SopsStore } from "./stores/store.js";
import {
  cloneValue,
  SopsBranch,
  SopsComment,
  type SopsLeaf,
  type SopsValue,
  someString,
  walkBranches,
} from "./tree.js";
import {
  DATA_KEY_SIZE,
  type EncryptionRules,
  EncryptionSelector,
  goRegExp,
  isEncryptedValue,
  ValueCipher,
} from "./value-cipher.js";

/** A decrypted sops file, ready to be edited and written back with the same data key. */
export interface SopsDocument {
  store: SopsStore;
  /** The file as read, when it is in the store's narrow form (reencryptValues); else null. */
  source: { input: Uint8Array; narrow: NarrowText } | null;
  /** The plaintext documents (one unless multi-document YAML). */
  branches: SopsBranch[];
  metadata: SopsMetadata;
  /** 32 bytes; the caller wipes it (or calls `closeDocument`). */
  dataKey: Uint8Array;
  /** Holds the IVs of the decrypted values, reused for unchanged ones on re-encryption. */
  cipher: ValueCipher;
  /** false when the MAC did not verify and `ignoreMac` was set. */
  macVerified: boolean;
  /**
   * Every value's IV is remembered, as reencryptDocument needs to keep unchanged ciphertexts;
   * false after a read for decryption only (DecryptOptions.readOnly) or for a write of some
   * values (DecryptOptions.rememberOnly).
   */
  remembersAll: boolean;
}

export interface DecryptOptions {
  identities: readonly Identity[];
  /** Decrypt even if the MAC does not verify (sops --ignore-mac). */
  ignoreMac?: boolean;
  /** For error messages. */
  file?: string;
  /**
   * The document will not be written back (decrypt): skip remembering each value's IV, which
   * only serves keeping unchanged ciphertexts on re-encryption.
   */
  readOnly?: boolean;
  /**
   * The document will be written back by splicing only the values at these key paths into the
   * file as read (reencryptValues): when the file looks fit for that (spliceLooksFit), only their
   * values are remembered; remembering all 10 000 values of a large file for a write of one took
   * ~8 ms. `remembersAll` then says false, and such a document refuses a whole-tree write
   * (reencryptDocument): should the splice not apply after all, read the file again without this.
   */
  rememberOnly?: readonly (readonly string[])[];
}

/** A recipient of the data key: its string as written in the metadata, and optionally its key. */
export type AgeRecipientInput = string | { recipient: string; key: Recipient };

export interface NewDocumentOptions {
  /** Key groups of age recipients; one group is the usual case (every key wraps the data key). */
  keyGroups: AgeRecipientInput[][];
  /** With several groups: how many are needed (0: all). */
  shamirThreshold?: number;
  rules?: EncryptionRules;
  macOnlyEncrypted?: boolean;
  now?: Date;
}

function where(file: string | undefined): string {
  return file ? `${file}: ` : "";
}

// ---- the data key ------------------------------------------------------------------------------

function otherKeysLine(g: KeyGroup): string[] {
  const out: string[] = [];
  for (const [t, list] of g.other) {
    if (t !== "pgp") out.push(`${list.length}× ${t} (not supported by nixseal)`);
  }
  return out;
}

/** Where a group's entries are in the metadata, for messages. */
function groupPath(groups: readonly KeyGroup[], gi: number): string {
  return groups.length > 1 ? `sops.key_groups[${gi}]` : "sops";
}

/**
 * A group's pgp entries tried with the PGP identities (gpg), after every age entry failed: the
 * data key or share, or null with a line per fingerprint in `lines`. gpg's own failures (not
 * installed, broken home) go to `gpgProblems`.
 */
async function unwrapPgpEntries(
  g: KeyGroup,
  where: string,
  pgpIds: readonly PgpIdentity[],
  label: string,
  lines: string[],
  gpgProblems: NixsealError[],
): Promise<Uint8Array | null> {
  const list = g.other.get("pgp");
  if (list === undefined || list.length === 0) return null;
  const entries = pgpEntries(list, where);
  const problems: NixsealError[] = [];
  for (const id of pgpIds) {
    try {
      const got = await id.unwrapPgp(entries);
      if (got !== null) return got;
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(e);
    }
  }
  gpgProblems.push(...problems);
  const why =
    pgpIds.length === 0
      ? "no GnuPG identity given"
      : problems.length === pgpIds.length
        ? "gpg could not be asked (see below)"
        : "no secret key for it in the GnuPG identities";
  for (const fp of new Set(entries.map((e) => e.fp))) lines.push(`  pgp ${fp}${label}: ${why}`);
  return null;
}

/**
 * Unwraps the data key: per key group, the first age entry one of `identities` opens; with
 * several groups, Shamir-combines shares from at least `shamir_threshold` groups.
 */
export async function unwrapDataKey(
  meta: SopsMetadata,
  identities: readonly Identity[],
  file?: string,
): Promise<Uint8Array> {
  const groups = meta.keyGroups;
  const needed = groups.length === 1 ? 1 : meta.shamirThreshold > 0 ? meta.shamirThreshold : groups.length;
  const shares: Uint8Array[] = [];
  const lines: string[] = [];
  const damaged: string[] = [];
  // Identities that may ask for a passphrase (an encrypted ssh key's ssh-to-age identity) are
  // tried only after every age entry was tried with the others: a plain key that opens a later
  // entry must not cost the user a prompt.
  const isDeferred = (i: Identity) => (i as { deferred?: boolean }).deferred === true;
  const eager = identities.filter((i) => !isDeferred(i));
  const deferred = identities.filter(isDeferred);
  const passes = deferred.length > 0 ? [eager, deferred] : [eager];
  const pgpIds = identities.filter(isPgpIdentity);
  const gpgProblems: NixsealError[] = [];
  for (let gi = 0; gi < groups.length && shares.length < needed; gi++) {
    const g = groups[gi]!;
    const label = groups.length > 1 ? ` (group ${gi + 1})` : "";
    let got: Uint8Array | null = null;
    const outcome = new Map<string, string>();
    for (const pass of passes) {
      if (pass.length === 0) continue;
      for (const entry of g.age) {
        if (outcome.get(entry.recipient)?.startsWith("damaged")) continue;
        try {
          got = await ageDecrypt(Buffer.from(entry.enc, "utf8"), pass);
          break;
        } catch (e) {
          if (e instanceof NixsealError && e.code === "AGE_NO_MATCH") {
            outcome.set(entry.recipient, "no matching identity");
          } else if (e instanceof NixsealError) {
            outcome.set(entry.recipient, `damaged: its enc does not decrypt (${e.code})`);
          } else throw e;
        }
      }
      if (got !== null) break;
    }
    if (got === null) {
      for (const [recipient, what] of outcome) {
        const damagedEntry = what.startsWith("damaged: ");
        lines.push(`  ${recipient}${label}: ${damagedEntry ? what.slice("damaged: ".length) : what}`);
        if (damagedEntry) damaged.push(recipient);
      }
    }
    // pgp entries (sops: tried after age keys, as the key services' order in keysources).
    if (got === null)
      got = await unwrapPgpEntries(g, groupPath(groups, gi), pgpIds, label, lines, gpgProblems);
    if (got === null) {
      for (const l of otherKeysLine(g)) lines.push(`  ${l}${label}`);
      continue;
    }
    const want = groups.length === 1 ? DATA_KEY_SIZE : DATA_KEY_SIZE + 1;
    if (got.length !== want) {
      wipe(got);
      throw new NixsealError(
        "SOPS_METADATA",
        `${where(file)}the data key wrapped in the sops metadata has the wrong length`,
        {
          hint: "the file's metadata is damaged; restore it from version control",
          file,
        },
      );
    }
    shares.push(got);
  }
  if (shares.length < needed) {
    wipe(...shares);
    const tried =
      identities.length > 0 ? identities.map((i) => `  tried: ${i.description}`) : ["  tried: no identities"];
    if (damaged.length > 0) {
      throw new NixsealError(
        "SOPS_METADATA",
        `${where(file)}the wrapped data key does not decrypt (tampered or damaged enc):\n${lines.join("\n")}\n${tried.join("\n")}`,
        {
          hint: "restore the file from version control, or ask someone who can decrypt it to re-run updatekeys",
          file,
        },
      );
    }
    const head =
      groups.length > 1
        ? `${where(file)}${needed} key groups needed to decrypt the data key, got ${shares.length}:`
        : `${where(file)}no identity can decrypt the data key; the file's keys are:`;
    if (gpgProblems.length > 0) {
      // gpg itself failed (not installed, a broken home): that, not the keys, is what to fix.
      const first = gpgProblems[0]!;
      const why = [...new Set(gpgProblems.map((e) => `  ${e.message}`))];
      throw new NixsealError("GPG", `${head}\n${lines.join("\n")}\n${tried.join("\n")}\n${why.join("\n")}`, {
        hint: first.hint ?? "check gpg",
        file,
      });
    }
    const hasPgp = groups.some((g) => (g.other.get("pgp")?.length ?? 0) > 0);
    throw new NixsealError("SOPS_NO_KEY", `${head}\n${lines.join("\n")}\n${tried.join("\n")}`, {
      hint: hasPgp
        ? "pass an identity for one of these recipients (-i, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY), or use a GnuPG home holding one of the pgp keys"
        : "pass an identity for one of these recipients (-i, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY)",
      file,
    });
  }
  if (groups.length === 1) return shares[0]!;
  // Shamir's secret sharing is loaded only for a file with several key groups (most have one).
  const { combine } = await import("./shamir.js");
  try {
    return combine(shares);
  } finally {
    wipe(...shares);
  }
}

async function wrapFor(secret: Uint8Array, r: AgeRecipientInput): Promise<AgeKeyEntry> {
  const recipient = typeof r === "string" ? r : r.recipient;
  const key = typeof r === "string" ? parseRecipientString(r, "sops age recipient") : r.key;
  const armored = await ageEncrypt(secret, [key], { armor: true });
  return { recipient, enc: Buffer.from(armored).toString("utf8") };
}

/**
 * Wraps a data key for age key groups (sops UpdateMasterKeys): one group ⇒ every recipient wraps
 * the whole key; n groups ⇒ a Shamir split with `threshold` (0: n), group i wraps share i.
 */
export async function wrapDataKey(
  dataKey: Uint8Array,
  groups: AgeRecipientInput[][],
  threshold = 0,
): Promise<KeyGroup[]> {
  if (groups.length === 0 || groups.some((g) => g.length === 0)) {
    throw new NixsealError("SOPS_METADATA", "a sops file needs at least one recipient in every key group", {
      hint: "list age recipients in .sops.yaml or on the command line",
    });
  }
  if (groups.length === 1) {
    const age: AgeKeyEntry[] = [];
    for (const r of groups[0]!) age.push(await wrapFor(dataKey, r));
    return [{ age, other: new Map() }];
  }
  const { split } = await import("./shamir.js");
  const shares = split(dataKey, groups.length, threshold > 0 ? threshold : groups.length);
  try {
    const out: KeyGroup[] = [];
    for (let i = 0; i < groups.length; i++) {
      const age: AgeKeyEntry[] = [];
      for (const r of groups[i]!) age.push(await wrapFor(shares[i]!, r));
      out.push({ age, other: new Map() });
    }
    return out;
  } finally {
    wipe(...shares);
  }
}

// ---- decrypt -----------------------------------------------------------------------------------

/**
 * A value's additional data, sops's `strings.Join(path, ":") + ":"`: the walk's path text, which
 * is that already except at the top level (comments there), where sops's is ":".
 */
function aadOf(pathText: string): string {
  return pathText === "" ? ":" : pathText;
}

/** The additional data of the value at the mapping keys `keys`. */
function aadOfKeys(keys: readonly string[]): string {
  return aadOf(keys.map((k) => `${k}:`).join(""));
}

/** Rules on comments: whether a value is encrypted then depends on the comments above it. */
function hasCommentRules(rules: EncryptionRules): boolean {
  return Boolean(rules.encryptedCommentRegex || rules.unencryptedCommentRegex);
}

/**
 * Whether a write splicing the values at `paths` into the file as read (reencryptValues) will
 * likely apply, judged before anything is decrypted: the narrow form, one document, an encrypted
 * value at each path, no rules on comments, and the metadata of the version nixseal writes (a
 * block of another version is written whole). A new key, or a file last written by another sops
 * version, is thus read once, every value remembered, instead of twice.
 */
function spliceLooksFit(
  store: SopsStore,
  branches: readonly SopsBranch[],
  meta: SopsMetadata,
  selector: EncryptionSelector,
  narrow: NarrowText | undefined,
  paths: readonly (readonly string[])[],
): boolean {
  if (narrow === undefined || store.spliceScalars === undefined || branches.length !== 1) return false;
  if (paths.length === 0 || paths.length > MAX_SPLICED_VALUES) return false;
  if (meta.version !== SOPS_FORMAT_VERSION || hasCommentRules(selector.rules)) return false;
  return paths.every((keys) => {
    let v: SopsValue | undefined = keys.length > 0 ? branches[0] : undefined;
    for (const k of keys) v = v instanceof SopsBranch ? v.get(k) : undefined;
    return typeof v === "string" && isEncryptedValue(v);
  });
}

/** store.parseEncrypted, whose syntax errors name the file they are in. */
function parseNamingFile(input: Uint8Array, store: SopsStore, file: string | undefined) {
  try {
    return store.parseEncrypted(input);
  } catch (e) {
    if (e instanceof NixsealError && e.file === undefined && file !== undefined) {
      throw new NixsealError(e.code, e.message, { hint: e.hint, file, cause: e });
    }
    throw e;
  }
}

/** Parses and decrypts a sops file, verifying the MAC (unless ignoreMac). */
export async function decryptDocument(
  input: Uint8Array,
  store: SopsStore,
  options: DecryptOptions,
): Promise<SopsDocument> {
  const file = options.file;
  const { branches, metadata: raw, narrow } = parseNamingFile(input, store, file);
  if (raw === null) {
    throw new NixsealError("SOPS_METADATA", `${where(file)}not a sops file: no sops metadata`, {
      hint: "encrypt it first (nixseal encrypt), or check the file's format",
      file,
    });
  }
  const meta = parseMetadata(raw);
  const selector = new EncryptionSelector(meta.rules);
  const dataKey = await unwrapDataKey(meta, options.identities, file);
  const only =
    options.readOnly !== true &&
    options.rememberOnly !== undefined &&
    spliceLooksFit(store, branches, meta, selector, narrow, options.rememberOnly)
      ? options.rememberOnly
      : undefined;
  const cipher = new ValueCipher(
    dataKey,
    options.readOnly === true ? false : only === undefined ? true : new Set(only.map(aadOfKeys)),
  );
  const mac = new MacAccumulator(meta.macOnlyEncrypted);
  const raws = store.name === "binary";
  try {
    walkBranches(branches, (v, path, comments, pathText) => {
      const isComment = v instanceof SopsComment;
      const encrypted = selector.shouldEncrypt(path, comments, isComment);
      let out: SopsLeaf | SopsComment = v;
      if (encrypted) {
        const aad = aadOf(pathText);
        if (v instanceof SopsComment) {
          // sops: a comment that does not decrypt was never encrypted (older sops); keep it.
          try {
            out = cipher.decrypt(v.value, aad);
            if (out instanceof SopsComment && v.inline) out = new SopsComment(out.value, true);
          } catch {
            out = v;
          }
        } else if (typeof v === "string") {
          out = cipher.decrypt(v, aad, raws);
        } else {
          throw new NixsealError(
            "SOPS_DECRYPT",
            `${where(file)}the value at "${path.join(".")}" should be encrypted but is not`,
            {
              hint: "the file was edited by hand: re-encrypt it from its plaintext",
              file,
            },
          );
        }
      }
      // sops leaves comments out of the MAC (list comments that decrypt to one too): so must we.
      if ((!meta.macOnlyEncrypted || encrypted) && !(out instanceof SopsComment)) mac.add(out);
      return out;
    });
    const computed = mac.hex();
    let macVerified = false;
    try {
      macVerified = sameMac(decryptMac(meta.mac, cipher, meta.lastModified), computed);
    } catch (e) {
      if (!options.ignoreMac) throw e;
    }
    if (!macVerified && !options.ignoreMac) {
      throw new NixsealError(
        "SOPS_MAC",
        `${where(file)}MAC mismatch: the values do not match the file's MAC`,
        {
          hint: "a value was changed outside sops/nixseal or the file is damaged; restore it, or use --ignore-mac if you trust it",
          file,
        },
      );
    }
    const source = narrow !== undefined && options.readOnly !== true ? { input, narrow } : null;
    const remembersAll = options.readOnly !== true && only === undefined;
    return { store, source, branches, metadata: meta, dataKey, cipher, macVerified, remembersAll };
  } catch (e) {
    cipher.wipe();
    wipe(dataKey);
    throw e instanceof NixsealError && file ? e.withFile(file) : e;
  }
}

/** Wipes the data key of a decrypted document. */
export function closeDocument(doc: SopsDocument): void {
  doc.cipher.wipe();
  wipe(doc.dataKey);
}

// ---- encrypt -----------------------------------------------------------------------------------

/** Refuses documents sops refuses: a top-level `sops` key (`sops_` in dotenv), ENC values. */
export function checkEncryptable(branches: readonly SopsBranch[], store: SopsStore, file?: string): void {
  for (const b of branches) {
    for (const it of b.items) {
      if (typeof it.key !== "string") continue;
      const reserved =
        store.name === "dotenv" ? it.key.startsWith(DOTENV_METADATA_PREFIX) : it.key === METADATA_KEY;
      if (!reserved) continue;
      const looksEncrypted =
        store.name === "dotenv"
          ? it.key === "sops_mac" || it.key === "sops_lastmodified"
          : it.value instanceof SopsBranch && (it.value.has("mac") || it.value.has("lastmodified"));
      if (looksEncrypted) {
        throw new NixsealError(
          "SOPS_ENCRYPTED",
          `${where(file)}the file is already encrypted (it has sops metadata)`,
          {
            hint: "edit it with nixseal edit, or decrypt it first",
            file,
          },
        );
      }
      throw new NixsealError(
        "SOPS_RESERVED",
        `${where(file)}the key "${it.key}" is reserved for sops metadata and cannot be in the document`,
        {
          hint:
            store.name === "dotenv" ? "rename keys that start with sops_" : "rename the top-level sops key",
          file,
        },
      );
    }
  }
  if (someString(branches, isEncryptedValue)) {
    throw new NixsealError(
      "SOPS_ENCRYPTED",
      `${where(file)}the document already holds sops-encrypted values (ENC[...])`,
      {
        hint: "decrypt the file first, or edit it with nixseal edit",
        file,
      },
    );
  }
}

interface EncryptParams {
  store: SopsStore;
  cipher: ValueCipher;
  keyGroups: KeyGroup[];
  shamirThreshold: number;
  rules: EncryptionRules;
  macOnlyEncrypted: boolean;
  now?: Date;
  file?: string;
}

function encryptBranches(plain: readonly SopsBranch[], p: EncryptParams): Uint8Array {
  checkEncryptable(plain, p.store, p.file);
  const selector = new EncryptionSelector(p.rules);
  const unencComment = selector.rules.unencryptedCommentRegex;
  const unencCommentRe = unencComment ? goRegExp(unencComment, "unencrypted_comment_regex") : null;
  const branches = plain.map((b) => cloneValue(b));
  const mac = new MacAccumulator(p.macOnlyEncrypted);
  walkBranches(branches, (v, path, comments, pathText) => {
    const isComment = v instanceof SopsComment;
    const encrypted = selector.shouldEncrypt(path, comments, isComment);
    if ((!p.macOnlyEncrypted || encrypted) && !isComment) mac.add(v as SopsLeaf);
    if (!encrypted) return v;
    const out = p.cipher.encrypt(v, aadOf(pathText));
    if (isComment && unencCommentRe?.test(out)) {
      throw new NixsealError("SOPS_METADATA", "an encrypted comment matches unencrypted_comment_regex", {
        hint: "make unencrypted_comment_regex unable to match ENC[...] text",
      });
    }
    return out;
  });
  const meta = writtenMetadata(p, selector.rules, mac);
  return p.store.emitEncrypted(branches, serializeMetadata(meta));
}

/** The metadata of a file written now: its key groups and rules, a new lastmodified and the MAC. */
function writtenMetadata(
  p: Pick<EncryptParams, "keyGroups" | "shamirThreshold" | "macOnlyEncrypted" | "cipher" | "now">,
  rules: EncryptionRules,
  mac: MacAccumulator,
): SopsMetadata {
  const lastModified = nowRfc3339(p.now);
  return {
    keyGroups: p.keyGroups,
    shamirThreshold: p.keyGroups.length > 1 ? p.shamirThreshold : 0,
    lastModified,
    mac: encryptMac(mac.hex(), p.cipher, lastModified),
    rules,
    macOnlyEncrypted: p.macOnlyEncrypted,
    version: SOPS_FORMAT_VERSION,
  };
}

/** Encrypts plaintext documents into a new sops file: a fresh data key wrapped for the groups. */
export async function encryptNewDocument(
  branches: readonly SopsBranch[],
  store: SopsStore,
  options: NewDocumentOptions & { file?: string },
): Promise<Uint8Array> {
  checkEncryptable(branches, store, options.file);
  const dataKey = randomBytes(DATA_KEY_SIZE);
  const cipher = new ValueCipher(dataKey);
  try {
    const keyGroups = await wrapDataKey(dataKey, options.keyGroups, options.shamirThreshold ?? 0);
    return encryptBranches(branches, {
      store,
      cipher,
      keyGroups,
      shamirThreshold: options.shamirThreshold ?? 0,
      rules: options.rules ?? {},
      macOnlyEncrypted: options.macOnlyEncrypted ?? false,
      now: options.now,
      file: options.file,
    });
  } finally {
    cipher.wipe();
    wipe(dataKey);
  }
}

/** The most changed values a write splices into the file as read (each is looked up in the text). */
export const MAX_SPLICED_VALUES = 100;

/**
 * reencryptDocument after only the values at the mapping keys `changed` changed (nixseal set of
 * one value, nixseal edit when only values changed, see changedLeaves): the file as read with
 * those values' lines and the metadata's lastmodified and mac replaced (SopsStore.spliceScalars),
 * instead of every value's ciphertext taken back and the whole file written out again. The MAC
 * is computed over every value of `branches` as reencryptDocument does. Null when it does not
 * apply (the file not in the store's narrow form, more than one document, rules on comments,
 * more than MAX_SPLICED_VALUES changes, a value that is not a plain encrypted scalar, a metadata
 * block that would be written otherwise than it was read): the caller then calls
 * reencryptDocument. The file comes in pieces to write one after the other (see spliceScalars).
 */
export function reencryptValues(
  doc: SopsDocument,
  branches: readonly SopsBranch[],
  changed: readonly (readonly string[])[],
  options: { now?: Date } = {},
): Uint8Array[] | null {
  const src = doc.source;
  const splice = doc.store.spliceScalars?.bind(doc.store);
  if (src === null || splice === undefined || branches.length !== 1) return null;
  if (changed.length > MAX_SPLICED_VALUES || changed.some((keys) => keys.length === 0)) return null;
  const m = doc.metadata;
  const selector = new EncryptionSelector(m.rules);
  if (hasCommentRules(selector.rules)) return null;
  // By additional data ("a:b:"), then compared key by key (a key may hold a colon).
  const byAad = new Map<string, number[]>();
  changed.forEach((keys, i) => {
    const aad = aadOfKeys(keys);
    byAad.set(aad, [...(byAad.get(aad) ?? []), i]);
  });
  // Per change: the leaves at its keys (one, unless a list is on the way: the path holds map
  // keys only), and the value when it is to be encrypted.
  const matches = new Array<number>(changed.length).fill(0);
  const values = new Array<SopsLeaf | undefined>(changed.length);
  let ok = true;
  const mac = new MacAccumulator(m.macOnlyEncrypted);
  walkBranches(branches, (v, path, comments, pathText) => {
    if (v instanceof SopsComment) return v;
    // reencryptDocument refuses a document holding ENC[...] values (checkEncryptable).
    if (typeof v === "string" && isEncryptedValue(v)) ok = false;
    const encrypted = selector.shouldEncrypt(path, comments, false);
    if (!m.macOnlyEncrypted || encrypted) mac.add(v);
    const at = byAad.get(pathText);
    if (at !== undefined) {
      for (const i of at) {
        const keys = changed[i]!;
        if (path.length === keys.length && path.every((k, j) => k === keys[j])) {
          matches[i]!++;
          values[i] = encrypted ? v : undefined;
        }
      }
    }
    return v;
  });
  if (!ok) return null;
  const splices: { keys: readonly string[]; value: string }[] = [];
  for (let i = 0; i < changed.length; i++) {
    const value = values[i];
    if (
      matches[i] !== 1 ||
      value === undefined ||
      value === null ||
      value === "" ||
      value instanceof Uint8Array
    )
      return null;
    splices.push({ keys: changed[i]!, value: doc.cipher.encryptOne(value, aadOfKeys(changed[i]!)) });
  }
  const meta = writtenMetadata({ ...m, cipher: doc.cipher, now: options.now }, selector.rules, mac);
  return splice(src.input, src.narrow, splices, serializeMetadata(meta));
}

/** reencryptValues after the value at `keys` was set in the document's own tree (nixseal set). */
export function reencryptOneValue(
  doc: SopsDocument,
  keys: readonly string[],
  options: { now?: Date } = {},
): Uint8Array[] | null {
  return reencryptValues(doc, doc.branches, [keys], options);
}

/**
 * Writes an edited document back with its own data key and key groups (pgp/kms entries kept as
 * they are): unchanged values reuse their IVs, so they keep byte-identical ciphertext; a new
 * lastmodified and MAC.
 */
export function reencryptDocument(
  doc: SopsDocument,
  branches: readonly SopsBranch[] = doc.branches,
  options: { now?: Date; file?: string } = {},
): Uint8Array {
  // Without every IV, unchanged values would get new ciphertexts: a caller's mistake.
  if (!doc.remembersAll)
    throw new Error("reencryptDocument: the document was not read to be written back whole");
  return encryptBranches(branches, {
    store: doc.store,
    cipher: doc.cipher,
    keyGroups: doc.metadata.keyGroups,
    shamirThreshold: doc.metadata.shamirThreshold,
    rules: doc.metadata.rules,
    macOnlyEncrypted: doc.metadata.macOnlyEncrypted,
    now: options.now,
    file: options.file,
  });
}

/**
 * Re-activation with nothing to do: when the manifest asks for exactly what the active
 * generation holds, that generation stays active. No new generation, no file written, no switch,
 * no prune: activation stays idempotent, and its cost is reading and checking.
 *
 * It stays only after every file it holds is verified against its record: each secret's
 * encrypted file has the SHA-256 recorded (the same ciphertext, read now; or, for a file the
 * record says was read as a store file at this very path, inside the manifest's storeDir, known
 * without reading: a store path does not change, docs/architecture.md, "Store files are not read
 * again"), under the same identity set; each file in the active generation is a regular file (not followed if a
 * symlink) with the recorded owner, group and mode, and its content has the recorded keyed hash;
 * templates are rendered again from those values and must have the recorded hash too; and the
 * metadata the install would write is the one recorded, entry for entry (names, owners, modes,
 * hashes, paths, units, sources), and generationsDir is already what the mount policy asks for
 * (src/install/installer.ts checks that first). Anything else (a secret added, removed, changed, a file
 * altered or gone, a credential, an owner that no longer resolves) goes the usual way: a new
 * generation. The `path` links are then put in place by the caller (linkPaths: only links that
 * are missing or point elsewhere are made).
 */
import { hash } from "node:crypto";
import { rethrowUnlessNixseal, wipe } from "../../common/index.js";
import type { GenerationMeta, MetaEntry } from "../generations.js";
import type { Manifest } from "../manifest.js";
import { hasContentHash, type InstallEntry, readRecordedFile } from "../sink.js";
import { isInStore, readEncryptedFile, sourceKey } from "../sources.js";
import { PlaceholderScanner } from "../templates.js";
import { InstallProblems } from "./problems.js";
import { renderTemplates, secretsTemplatesNeed } from "./render-templates.js";
import { EntryWriter } from "./write-entries.js";

export interface KeepInput {
  m: Manifest;
  /** Resolved owners of every entry (an entry missing here: nothing is kept). */
  items: ReadonlyMap<string, InstallEntry>;
  /** The active generation's directory and metadata. */
  activeDir: string;
  previous: GenerationMeta;
  /** identitySetHash of the manifest's identities. */
  identities: string;
  /** The hash key of the metadata (read only; a fresh one can check nothing). */
  key: Uint8Array;
}

/** Whether the manifest's entries match the records before anything is read (cheap, by fields). */
function recordsMatch(input: KeepInput): Map<string, MetaEntry> | null {
  const { m, items, previous } = input;
  if (previous.identities !== input.identities) return null;
  if (
    previous.entries.length !== m.secrets.length + m.templates.length ||
    items.size !== previous.entries.length
  )
    return null;
  const byName = new Map<string, MetaEntry>();
  for (const e of previous.entries) byName.set(e.name, e);
  for (const s of m.secrets) {
    const old = byName.get(s.name);
    const item = items.get(s.name);
    if (
      old === undefined ||
      item === undefined ||
      old.kind !== "secret" ||
      old.credential ||
      s.credential !== null
    )
      return null;
    if (old.file !== s.file || old.format !== s.format || (old.key ?? null) !== s.key || !old.cipher)
      return null;
    if (old.uid !== item.uid || old.gid !== item.gid || old.mode !== item.mode) return null;
  }
  for (const t of m.templates) {
    const old = byName.get(t.name);
    if (old === undefined || old.kind !== "template" || old.credential || t.credential !== null) return null;
  }
  return byName;
}

/**
 * The active generation's metadata entries if it holds exactly what `input.m` asks for, all
 * verified (see the file comment); null otherwise. Reads only; never throws for a file's problem.
 */
export function verifyActive(input: KeepInput): MetaEntry[] | null {
  const { m, items, activeDir, key } = input;
  const byName = recordsMatch(input);
  if (byName === null) return null;
  const problems = new InstallProblems([]);
  const writer = new EntryWriter(null, key, [], problems);
  const scanner = m.templates.length > 0 ? new PlaceholderScanner(m.placeholders) : null;
  const needed = scanner === null ? new Set<string>() : secretsTemplatesNeed(m, scanner);
  const kept = new Map<string, Uint8Array>();
  const ciphers = new Map<string, string>(); // sourceKey -> SHA-256 of the encrypted file
  try {
    for (const s of m.secrets) {
      const old = byName.get(s.name)!;
      const k = sourceKey(s);
      let cipher = ciphers.get(k);
      // The record says this very path was a store file (recordsMatch checked old.file === s.file).
      if (cipher === undefined && old.storeFile === true && old.cipher && isInStore(s.file, m.storeDir)) {
        cipher = old.cipher;
        ciphers.set(k, cipher);
      }
      if (cipher === undefined) {
        let data: Buffer;
        try {
          data = readEncryptedFile(s.file);
        } catch (e) {
          rethrowUnlessNixseal(e);
          return null;
        }
        cipher = hash("sha256", data, "hex");
        ciphers.set(k, cipher);
      }
      if (cipher !== old.cipher) return null;
      const value = readRecordedFile(activeDir, s.name, old);
      if (value === null || !hasContentHash(key, value, old.hmac)) {
        wipe(value);
        return null;
      }
      try {
        if (needed.has(s.name)) kept.set(s.name, Uint8Array.from(value));
        writer.write(
          items.get(s.name),
          value,
          // The record as it is: the generation and its metadata stay.
          { file: s.file, format: s.format, key: s.key, cipher, storeFile: old.storeFile ?? null },
          old.hmac,
        );
      } finally {
        wipe(value);
      }
    }
    if (scanner !== null) {
      renderTemplates(m, scanner, items, writer, kept, problems);
      if (problems.any) return null;
      for (const t of m.templates) {
        const old = byName.get(t.name)!;
        const value = readRecordedFile(activeDir, t.name, old);
        const intact = value !== null && hasContentHash(key, value, old.hmac);
        wipe(value);
        if (!intact) return null;
      }
    }
  } finally {
    for (const v of kept.values()) wipe(v);
  }
  if (problems.any) return null;
  const meta = writer.meta;
  // Entry for entry what would be recorded now; both sides list every field in one order
  // (EntryWriter.record, and generations.ts's reading of the metadata).
  return JSON.stringify(meta) === JSON.stringify(input.previous.entries) ? meta : null;
}

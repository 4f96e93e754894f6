/**
 * Where each decrypted or rendered value goes (steps 5 and 6 hand every value here once): a file
 * in the new generation, or, for an entry with a `credential`, a copy kept for systemd-creds
 * (step 7). Each value also leaves one metadata entry: names, owners, mode, units, the encrypted
 * file's SHA-256 and a keyed hash of the content, never the content. Files the decrypt worker
 * wrote itself are only recorded (`record`). The metadata keeps the manifest's order, whichever
 * thread finished first.
 */
import { rethrowUnlessNixseal } from "../../common/index.js";
import type { CredentialItem } from "../../creds/index.js";
import type { MetaEntry } from "../generations.js";
import type { SecretFormat } from "../manifest.js";
import { contentHash, type GenerationWriter, type InstallEntry } from "../sink.js";
import type { InstallProblems } from "./problems.js";

export function union(a: readonly string[], b: readonly string[]): string[] {
  const out = [...a];
  for (const x of b) if (!out.includes(x)) out.push(x);
  return out;
}

/** Where a secret's value came from (recorded for the next install; null for templates). */
export interface SourceInfo {
  file: string;
  format: SecretFormat;
  key: string | null;
  /** SHA-256 (hex) of the encrypted file. */
  cipher: string;
  /**
   * It was read as a store file, no symlink followed (sources.ts, readSourceFile); null: not
   * known (kept as older metadata has it).
   */
  storeFile: boolean | null;
}

export class EntryWriter {
  /** Metadata by InstallEntry.slot. */
  private readonly slots: (MetaEntry | undefined)[] = [];
  /** The credentials to compare and seal (their plaintexts are copies in `plaintexts`). */
  readonly credentialItems: CredentialItem[] = [];

  constructor(
    /** The new generation's files; null: nothing is written (dry run, or the install failed). */
    readonly files: GenerationWriter | null,
    private readonly key: Uint8Array,
    /** Where copies of credential plaintexts are registered, to be wiped on every way out. */
    private readonly plaintexts: Uint8Array[],
    private readonly problems: InstallProblems,
  ) {}

  /** One metadata entry per value written (or sealed), in the manifest's order. */
  get meta(): MetaEntry[] {
    return this.slots.filter((e): e is MetaEntry => e !== undefined);
  }

  /**
   * Writes one value; `item` undefined: its owner problem is reported already. `hmac`: its keyed
   * hash when known (a value taken from the active generation); `replace`: a file the worker left
   * there is replaced.
   */
  write(
    item: InstallEntry | undefined,
    content: Uint8Array,
    source: SourceInfo | null,
    hmac: string | null = null,
    replace = false,
  ): void {
    if (item === undefined) return;
    const credential = item.entry.credential;
    if (credential !== null) {
      // Not a file anywhere: the plaintext goes to systemd-creds, through a pipe, later.
      const copy = Uint8Array.from(content);
      this.plaintexts.push(copy);
      this.credentialItems.push({
        name: credential.name,
        plaintext: copy,
        withKey: credential.withKey,
        ...(credential.tpm2Pcrs === null ? {} : { tpm2Pcrs: credential.tpm2Pcrs }),
      });
    } else if (this.files !== null) {
      try {
        this.files.write(item, content, replace);
      } catch (e) {
        rethrowUnlessNixseal(e);
        this.problems.about([item.entry], e);
        return;
      }
    }
    this.record(item, hmac ?? contentHash(this.key, content), source);
  }

  /** Records a value without writing it (the decrypt worker wrote its file). */
  record(item: InstallEntry, hmac: string, source: SourceInfo | null): void {
    const e = item.entry;
    const credential = e.credential;
    this.slots[item.slot] = {
      name: e.name,
      kind: e.kind,
      uid: item.uid,
      gid: item.gid,
      mode: item.mode,
      hmac,
      path: e.path,
      restartUnits: credential === null ? e.restartUnits : union(e.restartUnits, credential.services),
      reloadUnits: e.reloadUnits,
      credential: credential?.name ?? null,
      file: source?.file ?? null,
      format: source?.format ?? null,
      key: source?.key ?? null,
      cipher: source?.cipher ?? null,
      storeFile: source === null ? null : source.storeFile,
    };
  }
}

/**
 * Where each decrypted or rendered value goes (steps 5 and 6 hand every value here once): to the
 * sinks (a file in the new generation), or, for an entry with a `credential`, kept as a copy for
 * systemd-creds (step 7). Each value also leaves one metadata entry: names, owners, mode, units
 * and a keyed hash of the content, never the content.
 */
import { rethrowUnlessNixseal } from "../../common/index.js";
import type { CredentialItem } from "../../creds/index.js";
import { contentHash, type MetaEntry } from "../generations.js";
import type { InstallEntry, SecretSink } from "../sink.js";
import type { InstallProblems } from "./problems.js";

export function union(a: readonly string[], b: readonly string[]): string[] {
  const out = [...a];
  for (const x of b) if (!out.includes(x)) out.push(x);
  return out;
}

export class EntryWriter {
  /** One entry per value written (or sealed). */
  readonly meta: MetaEntry[] = [];
  /** The credentials to compare and seal (their plaintexts are copies in `plaintexts`). */
  readonly credentialItems: CredentialItem[] = [];

  constructor(
    private readonly sinks: readonly SecretSink[],
    private readonly key: Uint8Array,
    /** Where copies of credential plaintexts are registered, to be wiped on every way out. */
    private readonly plaintexts: Uint8Array[],
    private readonly problems: InstallProblems,
  ) {}

  /** Writes one value; `item` undefined: its owner problem is reported already. */
  write(item: InstallEntry | undefined, content: Uint8Array): void {
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
    }
    for (const sink of credential === null ? this.sinks : []) {
      try {
        sink.write(item, content);
      } catch (e) {
        rethrowUnlessNixseal(e);
        this.problems.about([item.entry], e);
        return;
      }
    }
    const e = item.entry;
    this.meta.push({
      name: e.name,
      kind: e.kind,
      uid: item.uid,
      gid: item.gid,
      mode: item.mode,
      hmac: contentHash(this.key, content),
      path: e.path,
      restartUnits: credential === null ? e.restartUnits : union(e.restartUnits, credential.services),
      reloadUnits: e.reloadUnits,
      credential: credential?.name ?? null,
    });
  }
}

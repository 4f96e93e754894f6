/** What every sops store (YAML, JSON, dotenv, INI, binary) does: sops stores/stores.go `Store`. */
import { isAscii } from "node:buffer";
import { NixsealError } from "../../common/index.js";
import { MAX_DOCUMENT_SIZE, type SopsBranch } from "../tree.js";

export type StoreName = "yaml" | "json" | "dotenv" | "ini" | "binary";

export interface SopsStore {
  readonly name: StoreName;
  /** A plaintext document: one branch per document (several only for multi-document YAML). */
  parsePlain(input: Uint8Array): SopsBranch[];
  /**
   * An encrypted document: its branches and its `sops` mapping (null when it has none); `narrow`
   * when the file is in the narrow form the store writes itself (see spliceScalars).
   */
  parseEncrypted(input: Uint8Array): {
    branches: SopsBranch[];
    metadata: SopsBranch | null;
    narrow?: NarrowText;
  };
  emitPlain(branches: SopsBranch[]): Uint8Array;
  /**
   * The document `edited` (a plaintext the user edited) when it differs from `shown`, what
   * emitPlain returned for `before`, in some values alone: its tree (`before` is left as it is)
   * and the mapping keys of each changed value, as parsePlain and changedLeaves would give them,
   * found line by line without reading `edited` whole. Null when that cannot be told so, or more
   * than `max` values changed: the caller then reads `edited` with parsePlain.
   */
  editedValues?(
    shown: Uint8Array,
    edited: Uint8Array,
    before: readonly SopsBranch[],
    max: number,
  ): { branches: SopsBranch[]; changed: string[][] } | null;
  emitEncrypted(branches: SopsBranch[], metadata: SopsBranch): Uint8Array;
  /**
   * What emitEncrypted would write after some values changed, made from the file as read
   * (`input`, whose text parseEncrypted returned as `narrow`) instead of from the whole tree: the
   * value at each change's mapping keys replaced by its `value` (an `ENC[...]` string), and the
   * metadata block written anew, where it may differ from the one read only in lastmodified and
   * mac. The file comes in pieces to write one after the other (most of them views of `input`:
   * no copy of a large file is made). Null when that cannot be done (the caller then writes the
   * whole tree).
   */
  spliceScalars?(
    input: Uint8Array,
    narrow: NarrowText,
    changes: readonly { keys: readonly string[]; value: string }[],
    metadata: SopsBranch,
  ): Uint8Array[] | null;
}

/** An encrypted file's text in the narrow form (the data, then the metadata block from dataEnd). */
export interface NarrowText {
  text: string;
  /** Where the metadata block starts (a character offset in text). */
  dataEnd: number;
}

/** stores.go SopsMetadataKey. */
export const METADATA_KEY = "sops";

export function formatError(store: StoreName, message: string, hint?: string): NixsealError {
  return new NixsealError(
    "SOPS_FORMAT",
    `invalid ${store === "yaml" ? "YAML" : store === "json" ? "JSON" : store === "ini" ? "INI" : store} document: ${message}`,
    {
      hint: hint ?? `fix the ${store} syntax`,
    },
  );
}

export function checkSize(store: StoreName, input: Uint8Array): void {
  if (input.length > MAX_DOCUMENT_SIZE) {
    throw formatError(
      store,
      `larger than ${MAX_DOCUMENT_SIZE / 1024 / 1024} MiB`,
      "sops files this large are not supported",
    );
  }
}

/** UTF-8 text, strictly (a sops document is text, except for the binary store). */
export function decodeUtf8(store: StoreName, input: Uint8Array): string {
  // ASCII (every sops file nixseal or sops writes, unless a key is not): the same string,
  // decoded without UTF-8's checks and kept one byte per character.
  if (isAscii(input)) {
    return Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString("latin1");
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(input);
  } catch {
    throw formatError(store, "not valid UTF-8", "save the file as UTF-8");
  }
}

/** Splits the `sops` key off the (first) branch. */
export function extractMetadata(branches: SopsBranch[]): {
  branches: SopsBranch[];
  metadata: SopsBranch | null;
} {
  let metadata: SopsBranch | null = null;
  for (let i = 0; i < branches.length; i++) {
    const b = branches[i]!;
    const m = b.get(METADATA_KEY);
    if (m === undefined) continue;
    b.delete(METADATA_KEY);
    // sops: metadata is written into every YAML document, only the first one's is read.
    if (metadata === null) {
      if (!(m instanceof Object) || !("items" in m)) {
        throw new NixsealError("SOPS_METADATA", "the top-level `sops` key is not a mapping", {
          hint: "the file is not a sops file, or its metadata was damaged",
        });
      }
      metadata = m as SopsBranch;
    }
  }
  return { branches, metadata };
}

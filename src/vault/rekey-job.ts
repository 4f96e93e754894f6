/** What the parts of `nixseal rekey` pass along: one file to rewrite, and a failure. */
import type * as fs from "node:fs";
import type { Header } from "../age/index.js";
import type { SecretRule } from "./rules.js";

/** One file to rewrite, from reading to writing. */
export interface Job {
  rule: SecretRule;
  /** The file, relative to the rules directory. */
  rel: string;
  /** Its recipient set (an index into the rekey's sets: rekey-sets.ts). */
  set: number;
  /** The file as it was read: it is only replaced if it is still the same (rekey-writer.ts). */
  stat: fs.Stats;
  header: Header;
  /** The payload nonce and the encrypted payload, kept as they are. */
  payload: Uint8Array;
  fileKey: Uint8Array | null;
  /**
   * The file has a version 2 recipients record and stanzas may be kept (not --force, no
   * plugins): decided from the header, before the file key is known.
   */
  keepable: boolean;
  newHeader: Uint8Array | null;
}

export interface RekeyFailure {
  secret: string;
  /** Relative to the rules directory. */
  file: string;
  message: string;
  hint?: string;
}

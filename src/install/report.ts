/** What `nixseal install` reports back to src/cli/install.ts: names only, never a value. */
import type { NixsealError } from "../common/index.js";
import type { Manifest } from "./manifest.js";
import type { Changes } from "./steps/diff.js";

/** What happened in the credential store (names are credential IDs). */
export interface CredentialsReport {
  /** The store's directory, or null if this install did not touch it. */
  store: string | null;
  created: string[];
  updated: string[];
  unchanged: number;
  removed: string[];
  /** The store's key no longer unsealed (new host key or TPM2): every credential was redone. */
  keyRenewed: boolean;
}

/**
 * Changes: secret and template names by what happened to them (compared with the previous
 * generation), and the units appended to the restart/reload list files (the dry ones in a dry
 * run).
 */
export interface InstallReport extends Changes {
  stage: Manifest["stage"];
  dryRun: boolean;
  /** The generation now active (null: dry run, or the install failed). */
  generation: number | null;
  /** The generation active before (null: none). */
  previousGeneration: number | null;
  /** Generations removed by pruning. */
  pruned: number[];
  /** True if this install mounted the ramfs/tmpfs on generationsDir. */
  mounted: boolean;
  credentials: CredentialsReport;
  /**
   * Where the secrets' values came from: decrypted, or taken from the active generation (same
   * encrypted file, identities, owner, group and mode; its copy checked against the recorded
   * keyed hash). `repaired`: secrets whose copy there was altered or gone, decrypted again.
   */
  decrypted: number;
  reused: number;
  repaired: string[];
  /** Problems that did not stop the install (e.g. an identity file missing but not needed). */
  warnings: NixsealError[];
  /** Non-empty means the install failed (exit 1); the previous generation is still active. */
  problems: NixsealError[];
}

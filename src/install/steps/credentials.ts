/**
 * Step 7 and its half after the switch: the systemd credential store (this module, and src/creds
 * with it, is loaded only when the manifest has credentials or names a credstoreDir). Before the switch each
 * credential is compared with the store and, if changed, encrypted (not written): run even when
 * something else failed already (read-only then), so that every problem is found. After the
 * switch the prepared files are written and the credentials no longer listed removed. Why the
 * write comes after the switch: see the comment of installer.ts.
 */
import * as fs from "node:fs";
import { rethrowUnlessNixseal, wipe } from "../../common/index.js";
import {
  type CredentialItem,
  type Credstore,
  closeCredstore,
  commitCredentials,
  DEFAULT_CREDSTORE_DIR,
  openCredstore,
  type PreparedCredential,
  prepareCredentials,
  removeStale,
  type SyncStatus,
  storedCredentials,
} from "../../creds/index.js";
import type { Manifest, ManifestEntry } from "../manifest.js";
import type { CredentialsReport } from "../report.js";
import type { InstallProblems } from "./problems.js";

/** What step 7 leaves for the switch and the diff. */
export interface CredentialPlan {
  /** The store, open (closed by the installer on every way out), or null if not needed. */
  store: Credstore | null;
  /** The credential IDs the manifest lists. */
  wanted: Set<string>;
  /** Encrypted files to write after the switch. */
  prepared: PreparedCredential[];
  /** Credential ID -> created/updated/unchanged. */
  status: Map<string, SyncStatus>;
  /** Credentials in the store that the manifest no longer lists (a dry run's "removed"). */
  stale: string[];
}

/**
 * Compares and encrypts; `plaintexts` (the copies EntryWriter registered) are wiped here as
 * soon as systemd-creds has them. `report` gets the store's name and the counts.
 */
export async function encryptCredentials(
  m: Manifest,
  entries: readonly ManifestEntry[],
  items: readonly CredentialItem[],
  plaintexts: Uint8Array[],
  dry: boolean,
  report: CredentialsReport,
  problems: InstallProblems,
  /** Called with what closes the store once it is open (the installer calls it on every way out). */
  onOpen: (close: () => void) => void,
): Promise<CredentialPlan> {
  const credentialEntries = entries.filter((e) => e.credential !== null);
  const plan: CredentialPlan = {
    store: null,
    wanted: new Set(credentialEntries.map((e) => e.credential!.name)),
    prepared: [],
    status: new Map(),
    stale: [],
  };
  const storeDir = m.credstoreDir ?? DEFAULT_CREDSTORE_DIR;
  try {
    if (m.stage === "system" && credentialEntries.length > 0) {
      const readOnly = dry || problems.any;
      const store = await openCredstore(storeDir, {}, { readOnly });
      plan.store = store;
      onOpen(() => closeCredstore(store));
      report.store = plan.store.dir;
      report.keyRenewed = plan.store.keyRenewed;
      const r = await prepareCredentials(plan.store, [...items], { encrypt: !dry });
      problems.add(...r.problems);
      plan.prepared = r.prepared;
      for (const [name, status] of r.results) {
        plan.status.set(name, status);
        if (status === "unchanged") report.unchanged++;
        else report[status].push(name);
      }
    } else if (m.stage === "system" && m.credstoreDir !== null && fs.existsSync(storeDir)) {
      // No credential any more: only stale ones to remove, no key needed (nor systemd-creds).
      const store = await openCredstore(storeDir, {}, { readOnly: true, withoutKey: true });
      plan.store = store;
      onOpen(() => closeCredstore(store));
      report.store = plan.store.dir;
    }
    if (plan.store !== null) plan.stale = storedCredentials(plan.store).filter((n) => !plan.wanted.has(n));
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
  } finally {
    for (const p of plaintexts) wipe(p);
    plaintexts.length = 0;
  }
  return plan;
}

/** After the switch: writes the prepared credentials, removes the stale ones. */
export function commitCredentialPlan(
  plan: CredentialPlan,
  report: CredentialsReport,
  problems: InstallProblems,
): void {
  const store = plan.store;
  if (store === null) return;
  if (plan.prepared.length > 0) problems.add(...commitCredentials(store, plan.prepared).problems);
  try {
    const r = removeStale(store, plan.wanted);
    report.removed = r.removed;
    problems.add(...r.problems);
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
  }
}

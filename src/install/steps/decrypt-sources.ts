/**
 * Step 5: every encrypted file is opened once (many small age files decrypted on both cores
 * first, parallel-sources.ts) and each of its secrets' values handed to the EntryWriter. Values
 * a template needs are kept (copies, wiped by the caller) until step 6 renders the templates.
 */
import * as fs from "node:fs";
import type { Identity } from "../../age/index.js";
import { rethrowUnlessNixseal, wipe } from "../../common/index.js";
import type { Manifest, ManifestSecret } from "../manifest.js";
import { prefetchAgeFiles } from "../parallel-sources.js";
import type { InstallEntry } from "../sink.js";
import { openSource, sourceKey } from "../sources.js";
import type { InstallProblems } from "./problems.js";
import type { EntryWriter } from "./write-entries.js";

/** The size of a file (following symlinks: store paths), or null if it cannot be stat-ed. */
function fileSize(file: string): number | null {
  try {
    return fs.statSync(file).size;
  } catch {
    return null;
  }
}

/** Secrets grouped by the encrypted file (and format) they come from, in manifest order. */
function bySource(secrets: readonly ManifestSecret[]): ManifestSecret[][] {
  const groups = new Map<string, ManifestSecret[]>();
  for (const s of secrets) {
    const k = sourceKey(s);
    const g = groups.get(k);
    if (g === undefined) groups.set(k, [s]);
    else g.push(s);
  }
  return [...groups.values()];
}

/**
 * Decrypts every secret; `needed` names the secrets templates use, whose values go to `kept`.
 * Returns true if some file had no matching identity (then the identities that failed to load
 * may be why).
 */
export async function decryptSources(
  m: Manifest,
  identities: readonly Identity[],
  items: ReadonlyMap<string, InstallEntry>,
  writer: EntryWriter,
  needed: ReadonlySet<string>,
  kept: Map<string, Uint8Array>,
  problems: InstallProblems,
): Promise<boolean> {
  if (identities.length === 0) return false;
  const groups = bySource(m.secrets);
  let noMatch = false;
  const prefetched = await prefetchAgeFiles(
    groups.filter((g) => g[0]!.format === "age").map((g) => g[0]!.file),
    m.identities,
    [...identities],
    fileSize,
  );
  try {
    for (const group of groups) {
      const { file, format } = group[0]!;
      let source: Awaited<ReturnType<typeof openSource>>;
      try {
        const plain = format === "age" ? (prefetched?.take(file) ?? null) : null;
        source =
          plain !== null
            ? { valueOf: () => ({ value: plain, owned: false }), close: () => wipe(plain) }
            : await openSource(file, format, [...identities]);
      } catch (e) {
        rethrowUnlessNixseal(e);
        if (e.code === "AGE_NO_MATCH" || e.code === "SOPS_NO_KEY") noMatch = true;
        problems.about(group, e, file);
        continue;
      }
      try {
        for (const s of group) {
          let v: { value: Uint8Array; owned: boolean };
          try {
            v = source.valueOf(s);
          } catch (e) {
            rethrowUnlessNixseal(e);
            problems.about([s], e, file);
            continue;
          }
          try {
            writer.write(items.get(s.name), v.value);
            if (needed.has(s.name)) kept.set(s.name, Uint8Array.from(v.value));
          } finally {
            if (v.owned) wipe(v.value);
          }
        }
      } finally {
        source.close();
      }
    }
  } finally {
    prefetched?.close();
  }
  return noMatch;
}

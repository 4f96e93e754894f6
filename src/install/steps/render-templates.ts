/** Step 6: templates. Every placeholder replaced, or the template fails with its secrets. */
import { wipe } from "../../common/index.js";
import type { Manifest } from "../manifest.js";
import type { InstallEntry } from "../sink.js";
import type { PlaceholderScanner } from "../templates.js";
import type { InstallProblems } from "./problems.js";
import type { EntryWriter } from "./write-entries.js";

/** The secrets the templates use (their values are kept while decrypting). */
export function secretsTemplatesNeed(m: Manifest, scanner: PlaceholderScanner): Set<string> {
  const needed = new Set<string>();
  for (const t of m.templates) for (const n of scanner.secretsIn(t.content)) needed.add(n);
  return needed;
}

export function renderTemplates(
  m: Manifest,
  scanner: PlaceholderScanner,
  items: ReadonlyMap<string, InstallEntry>,
  writer: EntryWriter,
  kept: ReadonlyMap<string, Uint8Array>,
  problems: InstallProblems,
): void {
  for (const t of m.templates) {
    const r = scanner.render(t.content, kept);
    if ("missing" in r) {
      problems.install(
        t,
        `uses ${r.missing.map((n) => `secret "${n}"`).join(", ")}, which could not be decrypted`,
        "fix the problems of those secrets (reported above)",
      );
      continue;
    }
    try {
      writer.write(items.get(t.name), r.bytes, null);
    } finally {
      wipe(r.bytes);
    }
  }
}

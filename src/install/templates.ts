/**
 * Templates: text from the manifest with placeholders standing for secrets, rendered at install
 * time into bytes (secrets are bytes, not necessarily text). The placeholders are the only
 * thing of a secret the Nix store ever sees.
 */
import { concatBytes, utf8 } from "../common/index.js";

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Finds every placeholder of a manifest in template text, longest first when one contains another. */
export class PlaceholderScanner {
  private readonly pattern: RegExp | null;
  private readonly nameOf = new Map<string, string>();

  /** `placeholders`: secret name -> placeholder. */
  constructor(placeholders: ReadonlyMap<string, string>) {
    for (const [name, ph] of placeholders) this.nameOf.set(ph, name);
    const all = [...this.nameOf.keys()].sort((a, b) => b.length - a.length);
    this.pattern = all.length === 0 ? null : new RegExp(all.map(escapeRegExp).join("|"), "g");
  }

  /** The secret names a text uses, in order of first use. */
  secretsIn(content: string): string[] {
    if (this.pattern === null) return [];
    const out = new Set<string>();
    for (const m of content.matchAll(this.pattern)) out.add(this.nameOf.get(m[0])!);
    return [...out];
  }

  /**
   * Renders `content` with each placeholder replaced by its secret's bytes. Returns the names of
   * the secrets `values` lacks (failed ones) instead when there are any: a template is never
   * written with a placeholder left in it.
   */
  render(
    content: string,
    values: ReadonlyMap<string, Uint8Array>,
  ): { bytes: Uint8Array } | { missing: string[] } {
    if (this.pattern === null) return { bytes: utf8(content) };
    const parts: Uint8Array[] = [];
    const missing = new Set<string>();
    let last = 0;
    for (const m of content.matchAll(this.pattern)) {
      const name = this.nameOf.get(m[0])!;
      const value = values.get(name);
      if (value === undefined) missing.add(name);
      else {
        parts.push(utf8(content.slice(last, m.index)), value);
      }
      last = m.index + m[0].length;
    }
    if (missing.size > 0) return { missing: [...missing] };
    parts.push(utf8(content.slice(last)));
    return { bytes: concatBytes(...parts) };
  }
}

/**
 * `nixseal install --check`: what can be known at build time, without any key: the manifest is
 * valid (done by parseManifest) and every encrypted file has the structure its secrets need (an
 * age header that parses; a sops file with its metadata and every requested key). Nothing is
 * decrypted, so this runs in the Nix sandbox.
 */
import type { NixsealError } from "../common/index.js";
import type { Manifest, ManifestSecret } from "./manifest.js";
import { checkSource, sourceKey } from "./sources.js";

export interface CheckReport {
  secrets: number;
  templates: number;
  files: number;
  problems: NixsealError[];
}

export async function checkManifestFiles(m: Manifest): Promise<CheckReport> {
  const groups = new Map<string, ManifestSecret[]>();
  for (const s of m.secrets) {
    const g = groups.get(sourceKey(s));
    if (g === undefined) groups.set(sourceKey(s), [s]);
    else g.push(s);
  }
  const problems: NixsealError[] = [];
  for (const group of groups.values()) {
    problems.push(...(await checkSource(group[0]!.file, group[0]!.format, group)));
  }
  return { secrets: m.secrets.length, templates: m.templates.length, files: groups.size, problems };
}

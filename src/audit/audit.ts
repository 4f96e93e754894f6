/**
 * An audit: the patterns of every secret, one matcher for all of them, one scan of the paths,
 * and the matches turned into leaks that name the secret, the file, the byte offset and the
 * encoding — never the value or the bytes around it.
 */
import type { NixsealError } from "../common/index.js";
import { describeSkip, encodingLabel, patternsFor } from "./encodings.js";
import { Matcher } from "./matcher.js";
import { type HitPlace, type ScanOptions, type ScanStats, scanPaths } from "./scan.js";
import { type AuditSecret, wipeSecrets } from "./secrets.js";

export interface SkippedSecret {
  secret: string;
  file: string;
  reason: string;
}

export interface Leak {
  /** The secret's name (rules name, or `FILE:["key"]` of a sops value). */
  secret: string;
  /** The encrypted file the secret comes from. */
  secretFile: string;
  /** Where it was found. */
  file: string;
  offset: number;
  /** e.g. "raw", "base64", "json/nix-string/drv-string" (the encodings giving those bytes). */
  encoding: string;
  /** In the file's contents, its name, or its symlink target. */
  place: HitPlace;
}

export interface PreparedSecrets {
  /** null when no secret is worth looking for. */
  matcher: Matcher | null;
  /** Per pattern id: which secret (index into `secrets`) and in which encoding. */
  owners: { secret: number; encoding: string }[][];
  /** Secrets looked for. */
  checked: number;
  skipped: SkippedSecret[];
}

export interface AuditOptions {
  /** Values shorter than this are not looked for (default DEFAULT_MIN_LENGTH). */
  minLength?: number;
  scan?: ScanOptions;
}

export interface AuditReport {
  checked: number;
  patterns: number;
  skipped: SkippedSecret[];
  leaks: Leak[];
  problems: NixsealError[];
  stats: ScanStats;
}

/** Builds the matcher for every secret's encodings; identical patterns are shared. */
export function prepareSecrets(
  secrets: readonly AuditSecret[],
  options: { minLength?: number } = {},
): PreparedSecrets {
  const ids = new Map<string, number>();
  const patterns: Uint8Array[] = [];
  const owners: { secret: number; encoding: string }[][] = [];
  const skipped: SkippedSecret[] = [];
  let checked = 0;
  secrets.forEach((s, index) => {
    const r = patternsFor(s.value, { minLength: options.minLength });
    if (r.skipped !== null) {
      skipped.push({ secret: s.name, file: s.file, reason: describeSkip(r.skipped) });
      return;
    }
    checked++;
    for (const p of r.patterns) {
      const key = Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength).toString("latin1");
      let id = ids.get(key);
      if (id === undefined) {
        id = patterns.length;
        ids.set(key, id);
        patterns.push(p.bytes);
        owners.push([]);
      } else {
        p.bytes.fill(0);
      }
      owners[id]!.push({ secret: index, encoding: encodingLabel(p) });
    }
  });
  ids.clear();
  return { matcher: patterns.length > 0 ? new Matcher(patterns) : null, owners, checked, skipped };
}

/**
 * Looks for every secret in `paths`. The secrets' plaintexts are wiped once the matcher is built;
 * the matcher's patterns (derived from them) are zeroed when the scan ends.
 */
export async function auditPaths(
  secrets: readonly AuditSecret[],
  paths: readonly string[],
  options: AuditOptions = {},
): Promise<AuditReport> {
  let prepared: PreparedSecrets;
  try {
    prepared = prepareSecrets(secrets, options);
  } finally {
    wipeSecrets(secrets);
  }
  const { matcher, owners, checked, skipped } = prepared;
  if (matcher === null) {
    return {
      checked,
      patterns: 0,
      skipped,
      leaks: [],
      problems: [],
      stats: { files: 0, bytes: 0, directories: 0, symlinks: 0, special: 0, hardLinks: 0, unlistedHits: 0 },
    };
  }
  try {
    const result = await scanPaths(paths, matcher, options.scan);
    const leaks: Leak[] = [];
    for (const h of result.hits) {
      for (const o of owners[h.patternId]!) {
        const s = secrets[o.secret]!;
        leaks.push({
          secret: s.name,
          secretFile: s.file,
          file: h.file,
          offset: h.offset,
          encoding: o.encoding,
          place: h.place,
        });
      }
    }
    return {
      checked,
      patterns: matcher.patterns.length,
      skipped,
      leaks,
      problems: result.problems,
      stats: result.stats,
    };
  } finally {
    matcher.dispose();
  }
}

/**
 * `nixseal rekey` for sops files: each sops file secrets.nix lists (its publicKeys are the one
 * key group) or that lies under the .sops.yaml's directory (its creation rule's groups) gets its
 * SAME data key re-wrapped for the recipients wanted now, as sops updatekeys does. Like the age
 * rekey it is in two steps, so the command stays all or nothing: prepare (decide from the
 * metadata, unwrap and re-wrap in memory, collect every failure), then write.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { NixsealError, rethrowUnlessNixseal, writeFileAtomic } from "../common/index.js";
import type { KeyGroup, SopsConfig } from "../sops/index.js";
import { ruleFor, storeNameByExtension } from "../sops/index.js";
import type { RekeyFailure } from "./rekey-job.js";
import type { Rules } from "./rules.js";
import {
  diffSopsRecipients,
  expectationOfCreationRule,
  expectationOfPublicKeys,
  findSopsFiles,
  readRepositoryFile,
  rewrappedKeyGroups,
  type SopsExpectation,
  type SopsFileContent,
  sopsContentOf,
  withKeyGroups,
} from "./sops-files.js";

/** A sops file and the rule it answers to. */
export interface SopsTarget {
  /** Absolute path. */
  file: string;
  /** For messages: the secrets.nix name, or the path relative to the .sops.yaml. */
  name: string;
  content: SopsFileContent;
  want: SopsExpectation;
}

export interface SopsTargets {
  targets: SopsTarget[];
  /** Sops files that could not be read or that no creation rule covers. */
  failed: RekeyFailure[];
  /** Files no creation rule matches: left alone (nixseal check reports them). */
  uncovered: string[];
}

function failureOf(name: string, file: string, e: unknown): RekeyFailure {
  rethrowUnlessNixseal(e);
  return { secret: name, file, message: e.message, hint: e.hint };
}

/** Every sops file of the repository with what it should be. Nothing is decrypted. */
export function findSopsTargets(rules: Rules | null, config: SopsConfig | null): SopsTargets {
  const out: SopsTargets = { targets: [], failed: [], uncovered: [] };
  const listed = new Set<string>();
  if (rules !== null) {
    for (const rule of rules.secrets.values()) {
      // Only a sops extension can make a sops file (sopsContentOf): an age secret is not read
      // here (rekey reads it once, for its header).
      if (storeNameByExtension(rule.file) === null) continue;
      const abs = path.resolve(rule.file);
      if (!fs.existsSync(abs)) continue;
      const rel = path.relative(rules.dir, abs).split(path.sep).join("/");
      try {
        const content = sopsContentOf(rel, readRepositoryFile(abs));
        if (content === null) continue;
        listed.add(abs);
        out.targets.push({
          file: abs,
          name: rule.name,
          content,
          want: expectationOfPublicKeys(rule.publicKeys, rules.file),
        });
      } catch (e) {
        // An age file that fails here is the age rekey's business; only sops-looking ones count.
        if (e instanceof NixsealError && e.code.startsWith("SOPS")) {
          listed.add(abs);
          out.failed.push(failureOf(rule.name, rel, e));
        } else rethrowUnlessNixseal(e);
      }
    }
  }
  if (config !== null) {
    const dir = path.dirname(config.file);
    for (const abs of findSopsFiles(dir)) {
      if (listed.has(abs)) continue;
      const rel = path.relative(dir, abs).split(path.sep).join("/");
      try {
        const rule = ruleFor(config, abs);
        if (rule === null) {
          out.uncovered.push(rel);
          continue;
        }
        const content = sopsContentOf(rel, readRepositoryFile(abs));
        if (content === null) continue;
        out.targets.push({
          file: abs,
          name: rel,
          content,
          want: expectationOfCreationRule(rule, config.file),
        });
      } catch (e) {
        out.failed.push(failureOf(rel, rel, e));
      }
    }
  }
  return out;
}

/** A sops file ready to be written: its new key groups, wrapped in memory. */
export interface PreparedSopsRekey {
  target: SopsTarget;
  groups: KeyGroup[];
  threshold: number;
}

/**
 * Decides which targets drifted and re-wraps their data keys in memory (the data key is unwrapped
 * only when a recipient is added or groups are split anew). Every failure is collected.
 */
export async function prepareSopsRekey(
  targets: readonly SopsTarget[],
  identities: () => Promise<readonly Identity[]>,
): Promise<{ prepared: PreparedSopsRekey[]; unchanged: string[]; failed: RekeyFailure[] }> {
  const prepared: PreparedSopsRekey[] = [];
  const unchanged: string[] = [];
  const failed: RekeyFailure[] = [];
  for (const target of targets) {
    const diff = diffSopsRecipients(target.content.metadata, target.want);
    if (!diff.changed) {
      unchanged.push(target.name);
      continue;
    }
    try {
      const groups = await rewrapGroups(target, diff.threshold, identities);
      prepared.push({ target, groups, threshold: diff.threshold });
    } catch (e) {
      failed.push(failureOf(target.name, target.content.file, e));
    }
  }
  return { prepared, unchanged, failed };
}

async function rewrapGroups(
  target: SopsTarget,
  threshold: number,
  identities: () => Promise<readonly Identity[]>,
): Promise<KeyGroup[]> {
  return rewrappedKeyGroups(target.content, target.want, threshold, identities);
}

/** Writes prepared files, each atomically with its mode kept; write failures are returned. */
export function writeSopsRekey(prepared: readonly PreparedSopsRekey[]): RekeyFailure[] {
  const failed: RekeyFailure[] = [];
  for (const p of prepared) {
    try {
      const mode = fs.statSync(p.target.file).mode & 0o7777;
      writeFileAtomic(p.target.file, withKeyGroups(p.target.content, p.groups, p.threshold), mode);
    } catch (e) {
      failed.push(failureOf(p.target.name, p.target.content.file, e));
    }
  }
  return failed;
}

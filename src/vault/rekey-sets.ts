/**
 * Recipient sets of `nixseal rekey`: the secrets whose rules name the same publicKeys share one
 * set, wrapped for by workers (rekey-pool.ts) or, for sets with plugins, here on the main thread
 * with one plugin run per plugin for all of the set's files.
 */
import { PluginRecipient, type Recipient, type Stanza } from "../age/index.js";
import type { KeyContext } from "../keys/index.js";
import type { HeaderExpectation } from "./recipients-record.js";
import type { Job, RekeyFailure } from "./rekey-job.js";
import { buildHeader, type WrapSet } from "./rekey-worker.js";
import type { SecretRule } from "./rules.js";
import { recipientsFor } from "./secrets.js";

/** A recipient set: the recipients of a group of secrets with the same publicKeys. */
export interface RecipientSet {
  wrap: WrapSet;
  /** Made on the main thread: plugins run here; also used when no workers run. */
  recipients: Recipient[];
  hasPlugins: boolean;
  rule: SecretRule;
}

/** The recipient sets of a rekey, in the order first seen; a job names its set by index. */
export class RecipientSets {
  readonly list: RecipientSet[] = [];
  private readonly byKeys = new Map<string, number>();

  /** The set of `rule`'s publicKeys (made on first use; its recipients are made later). */
  indexOf(rule: SecretRule, expect: HeaderExpectation): number {
    const key = rule.publicKeys.join("\n");
    let index = this.byKeys.get(key);
    if (index === undefined) {
      index = this.list.length;
      this.byKeys.set(key, index);
      const hasPlugins = expect.recipients.some((r) => r.expected.kind === "plugin");
      this.list.push({
        wrap: {
          strings: rule.publicKeys.map((k) => k.trim()),
          digest: expect.digest,
          normalised: hasPlugins ? null : expect.recipients.map((r) => r.normalised),
          types: expect.recipients.map((r) => (r.expected.kind === "plugin" ? "" : r.expected.type)),
        },
        recipients: [],
        hasPlugins,
        rule,
      });
    }
    return index;
  }

  /**
   * Makes every set's recipients (plugins are found, not run); returns the jobs of sets whose
   * recipients can't be mixed. Throws a rules error for a key that can't be used.
   */
  makeRecipients(jobs: readonly Job[], rulesFile: string, ctx: KeyContext): RekeyFailure[] {
    const failed: RekeyFailure[] = [];
    for (const [index, s] of this.list.entries()) {
      s.recipients = recipientsFor(s.rule, rulesFile, ctx);
      if (!s.hasPlugins && mixedLabels(s.recipients)) {
        failed.push(...jobs.filter((j) => j.set === index).map(mixedLabelsFailure));
      }
    }
    return failed;
  }
}

function labelsKey(r: Recipient): string {
  return [...(r.labels ?? [])].sort().join(",");
}

function mixedLabels(recipients: readonly Recipient[]): boolean {
  return new Set(recipients.map(labelsKey)).size > 1;
}

/**
 * Stanzas already wrapped for a file (plugins wrap a whole set's file keys in one run) as one
 * recipient, with the labels its recipients share.
 */
function prewrapped(stanzas: Stanza[], labels: readonly string[] | undefined): Recipient {
  return { labels, wrapFileKey: () => stanzas };
}

function mixedLabelsFailure(job: Job): RekeyFailure {
  return {
    secret: job.rule.name,
    file: job.rel,
    message: "its recipients can't be mixed: post-quantum recipients can't be mixed with classic ones",
    hint: `give the secret only age1pq1... recipients, or none, in the rules`,
  };
}

/**
 * Wraps the headers of every file of the plugin sets: one run per plugin for all files of a set,
 * before anything is written (a plugin may fail; nothing must be half done because of it).
 * Returns the files whose recipients can't be mixed (known only once the plugins wrapped).
 */
export async function wrapPluginSets(
  jobs: readonly Job[],
  sets: readonly RecipientSet[],
): Promise<RekeyFailure[]> {
  const failed: RekeyFailure[] = [];
  for (const [index, s] of sets.entries()) {
    if (!s.hasPlugins) continue;
    const mine = jobs.filter((j) => j.set === index);
    const perFile: Stanza[][] = mine.map(() => []);
    for (const r of s.recipients) {
      if (r instanceof PluginRecipient) {
        const stanzas = await r.wrapFileKeys(mine.map((j) => j.fileKey!));
        for (const [i, st] of stanzas.entries()) perFile[i]!.push(...st);
      } else {
        for (const [i, j] of mine.entries()) perFile[i]!.push(...(await r.wrapFileKey(j.fileKey!)));
      }
    }
    if (mixedLabels(s.recipients)) {
      failed.push(...mine.map(mixedLabelsFailure));
      continue;
    }
    const labels = s.recipients[0]?.labels;
    for (const [i, j] of mine.entries()) {
      j.newHeader = await buildHeader(j.fileKey!, [prewrapped(perFile[i]!, labels)], s.wrap.digest, null);
    }
  }
  return failed;
}

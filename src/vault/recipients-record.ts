/**
 * What a secret file was encrypted to, and whether that matches the rules, from its header alone.
 *
 * X25519 and post-quantum stanzas do not say who they are for (age spec: recipient privacy), so
 * nixseal records the recipient set in the file itself, as one extra header stanza, the last:
 *
 *     -> nixseal-recipients <digest> v2
 *     <base64 body: one 8-byte tag per stanza before the record, in their order>
 *
 * The digest is the base64 (unpadded) SHA-256 of the sorted, de-duplicated, normalised
 * recipients (recipientsDigest). Every conforming age implementation ignores the stanza (age
 * spec: "Recipient stanzas": an identity skips stanzas of types it does not know; the CCTV grease
 * vectors test exactly that), and it is covered by the header MAC like every stanza. The digest
 * only speaks about public keys that the repository's secrets.nix lists anyway.
 *
 * Version 2 maps stanzas to recipients for whoever holds the file key, and for nobody else:
 *
 *     tag key = HKDF-SHA-256(ikm = file key, salt = empty, info = "nixseal.org/recipients/v2 tags")
 *     tag     = first 8 bytes of HMAC-SHA-256(tag key, the recipient's normalised string)
 *
 * so `rekey`, which unwraps the file key anyway, keeps the stanzas of recipients who stay byte
 * for byte and wraps only for the new ones. Without the file key the tags are random-looking
 * bytes: the header still hides who each anonymous stanza is for (docs/threat-model.md, "The
 * recipients record"). Files with a plugin recipient (a plugin may write several stanzas) and
 * files of older nixseal versions carry version 1: `-> nixseal-recipients <digest>`, empty body;
 * both are read and checked the same way, and `rekey` re-wraps a version 1 file fully.
 *
 * ssh stanzas carry a 4-byte tag of their key, so those are checked even without a record: a
 * file whose every recipient is an ssh key is verified by its stanzas alone. The record, like
 * every stanza, is written by whoever wrote the file: it says who the anonymous stanzas are for,
 * it does not prove it (docs/threat-model.md, "What check verifies").
 */
import { createHash, createHmac } from "node:crypto";
import {
  HYBRID_STANZA,
  HybridRecipient,
  hkdfSha256,
  type Recipient,
  type Stanza,
  X25519_STANZA,
  X25519Recipient,
} from "../age/index.js";
import { NixsealError, wipe } from "../common/index.js";
import { parseRecipientString, pluginNameOfRecipient } from "../keys/index.js";
import { SSH_ED25519_STANZA, SSH_RSA_STANZA, SshEd25519Recipient, SshRsaRecipient } from "../ssh/index.js";

export const RECIPIENTS_RECORD_STANZA = "nixseal-recipients";
/** Domain separation: a digest of this kind can never be confused with another SHA-256. */
const DIGEST_CONTEXT = "nixseal.org/recipients/v1\n";
/** The record's second argument in version 2 (version 1 has none). */
export const RECORD_V2 = "v2";
/** HKDF info of the key the version 2 tags are made with. */
const TAG_KEY_INFO = "nixseal.org/recipients/v2 tags";
/** Bytes of a version 2 tag. */
export const TAG_SIZE = 8;
/** A header with more stanzas than this is not one nixseal wrote (bounds a record's body). */
const MAX_TAGGED_STANZAS = 4096;

/** What a recipient string implies for a header: the stanza it wraps to. */
export type ExpectedStanza =
  /** X25519 or post-quantum: the type is known, the recipient is not visible. */
  | { kind: "anonymous"; type: string }
  /** ssh-ed25519 / ssh-rsa: type and the key's tag (the first argument). */
  | { kind: "tagged"; type: string; tag: string }
  /** A plugin recipient: one or more stanzas of a type only the plugin knows. */
  | { kind: "plugin"; plugin: string };

export interface RecipientClass {
  /** The recipient as written in the rules (trimmed). */
  text: string;
  /** Canonical form: ssh keys as "type base64" (comment dropped), age keys as they are. */
  normalised: string;
  expected: ExpectedStanza;
}

/**
 * Classifies and normalises one recipient string without running anything (plugins are not
 * started: `check` must work with nothing but the repository). Throws AGE_RECIPIENT.
 */
export function classifyRecipient(s: string, where: string): RecipientClass {
  const text = s.trim();
  const plugin = pluginNameOfRecipient(text);
  if (plugin !== null) return { text, normalised: text, expected: { kind: "plugin", plugin } };
  const r = parseRecipientString(text, where);
  if (r instanceof SshEd25519Recipient) {
    return {
      text,
      normalised: r.toString(),
      expected: { kind: "tagged", type: SSH_ED25519_STANZA, tag: r.tag },
    };
  }
  if (r instanceof SshRsaRecipient) {
    return { text, normalised: r.toString(), expected: { kind: "tagged", type: SSH_RSA_STANZA, tag: r.tag } };
  }
  if (r instanceof X25519Recipient) {
    return { text, normalised: r.toString(), expected: { kind: "anonymous", type: X25519_STANZA } };
  }
  if (r instanceof HybridRecipient) {
    return { text, normalised: r.toString(), expected: { kind: "anonymous", type: HYBRID_STANZA } };
  }
  throw new NixsealError("INTERNAL", `${where}: recipient type without a stanza profile`);
}

/**
 * The record's argument for a set of recipients: base64 (unpadded) SHA-256 over the sorted,
 * de-duplicated normalised strings, one per line.
 */
export function recipientsDigest(normalised: readonly string[]): string {
  const unique = [...new Set(normalised)].sort();
  const h = createHash("sha256").update(DIGEST_CONTEXT);
  for (const s of unique) h.update(`${s}\n`);
  return h.digest("base64").replace(/=+$/, "");
}

/**
 * The tags of `normalised` recipients for a file key, concatenated (TAG_SIZE bytes each, in
 * order): what a version 2 record's body holds.
 */
export function recipientTags(fileKey: Uint8Array, normalised: readonly string[]): Uint8Array {
  const key = hkdfSha256(fileKey, new Uint8Array(0), TAG_KEY_INFO);
  try {
    const out = new Uint8Array(normalised.length * TAG_SIZE);
    for (const [i, s] of normalised.entries()) {
      const mac = createHmac("sha256", key).update(s, "utf8").digest();
      out.set(mac.subarray(0, TAG_SIZE), i * TAG_SIZE);
    }
    return out;
  } finally {
    wipe(key);
  }
}

/** The record stanza: version 1 without tags, version 2 with them (possibly none). */
export function recordStanza(digest: string, tags: Uint8Array | null = null): Stanza {
  if (tags === null) return { type: RECIPIENTS_RECORD_STANZA, args: [digest], body: new Uint8Array(0) };
  return { type: RECIPIENTS_RECORD_STANZA, args: [digest, RECORD_V2], body: tags };
}

/**
 * The record as a Recipient, added last to a file's recipients. It wraps nothing. Its labels
 * are those of the recipients it sits beside (read after they wrapped, as age does for
 * plugins), so it never changes which recipients may be mixed: post-quantum files stay
 * post-quantum-only.
 *
 * With `normalised` (one string per recipient beside it, in order, each of which makes exactly
 * one stanza: no plugins), it writes version 2 with the tags of the file key it is given;
 * without, version 1.
 */
export class RecipientsRecord implements Recipient {
  readonly digest: string;
  private readonly beside: readonly Recipient[];
  private readonly normalised: readonly string[] | null;

  constructor(
    digest: string,
    beside: readonly Recipient[] = [],
    normalised: readonly string[] | null = null,
  ) {
    if (normalised !== null && normalised.length !== beside.length) {
      throw new NixsealError("INTERNAL", "recipients record: one normalised string per recipient expected");
    }
    this.digest = digest;
    this.beside = beside;
    this.normalised = normalised;
  }

  get labels(): readonly string[] {
    return this.beside[0]?.labels ?? [];
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    return [recordStanza(this.digest, this.normalised && recipientTags(fileKey, this.normalised))];
  }
}

/** What a list of publicKeys gives a record: its digest, and the strings tags are made of. */
export interface RecordSubject {
  digest: string;
  /** One per key, in order; null when a key is a plugin's (version 1 record). */
  normalised: string[] | null;
}

/** The record subject of a rule's publicKeys. Throws AGE_RECIPIENT for a bad key. */
export function recordSubjectOf(publicKeys: readonly string[], where: string): RecordSubject {
  const classes = publicKeys.map((k) => classifyRecipient(k, where));
  const normalised = classes.map((c) => c.normalised);
  return {
    digest: recipientsDigest(normalised),
    normalised: classes.some((c) => c.expected.kind === "plugin") ? null : normalised,
  };
}

/**
 * Record subjects of the recipient lists seen in this process (public keys only): `generate` and
 * `rekey` encrypt many files to the same few lists, and parsing every key again for every file
 * was a quarter of the cost of encrypting a small one. Bounded; a list that fails to parse is
 * not kept.
 */
const subjectCache = new Map<string, RecordSubject>();
const MAX_SUBJECT_CACHE = 4096;

/**
 * `recipients` (made from `publicKeys`, in order, as loadRecipients makes them) followed by the
 * record of `publicKeys`: version 2 when every key makes one stanza, else version 1.
 */
export function withRecipientsRecord(
  recipients: readonly Recipient[],
  publicKeys: readonly string[],
  where: string,
): Recipient[] {
  const key = JSON.stringify(publicKeys);
  let subject = subjectCache.get(key);
  if (subject === undefined) {
    subject = recordSubjectOf(publicKeys, where);
    if (subjectCache.size >= MAX_SUBJECT_CACHE) subjectCache.clear();
    subjectCache.set(key, subject);
  }
  const normalised =
    subject.normalised !== null && subject.normalised.length === recipients.length
      ? subject.normalised
      : null;
  return [...recipients, new RecipientsRecord(subject.digest, recipients, normalised)];
}

export type RecordState =
  | { state: "absent" }
  /**
   * `tags`: version 2, the tag of each stanza before the record (which is the last stanza);
   * null: version 1, or a version 2 record whose tags don't fit the header (`problem` says how:
   * the digest is still read and compared).
   */
  | { state: "present"; digest: string; tags: Uint8Array[] | null; problem?: string }
  | { state: "malformed"; reason: string };

/** Reads the record from a header's stanzas. */
export function readRecipientsRecord(stanzas: readonly Stanza[]): RecordState {
  const records = stanzas.filter((s) => s.type === RECIPIENTS_RECORD_STANZA);
  if (records.length === 0) return { state: "absent" };
  if (records.length > 1) return { state: "malformed", reason: `${records.length} recipients records` };
  const r = records[0]!;
  if (r.args.length < 1 || r.args.length > 2 || !/^[A-Za-z0-9+/]{43}$/.test(r.args[0]!)) {
    return { state: "malformed", reason: "the recipients record is malformed" };
  }
  if (r.args.length === 1) {
    if (r.body.length !== 0) return { state: "malformed", reason: "the recipients record is malformed" };
    return { state: "present", digest: r.args[0]!, tags: null };
  }
  if (r.args[1] !== RECORD_V2) {
    return {
      state: "malformed",
      reason: `the recipients record has an unknown version ("${r.args[1]!.slice(0, 16)}")`,
    };
  }
  const digest = r.args[0]!;
  const position = stanzas.indexOf(r);
  if (position !== stanzas.length - 1) {
    const after = plural(stanzas.length - 1 - position, "stanza");
    return { state: "present", digest, tags: null, problem: `${after} after the recipients record` };
  }
  if (r.body.length !== position * TAG_SIZE || position > MAX_TAGGED_STANZAS) {
    return {
      state: "present",
      digest,
      tags: null,
      problem: `the recipients record has ${r.body.length} bytes of tags for ${plural(position, "stanza")} (${TAG_SIZE} bytes each expected)`,
    };
  }
  const tags: Uint8Array[] = [];
  for (let i = 0; i < position; i++) tags.push(r.body.subarray(i * TAG_SIZE, (i + 1) * TAG_SIZE));
  return { state: "present", digest, tags };
}

/** What rekey keeps of a version 2 file (keepableStanzas). */
export interface Keepable {
  /** Per recipient: the old stanza to keep, or null (wrap it anew). */
  kept: (Stanza | null)[];
  /** The recipients' tags under the file key (recipientTags): the new record's body. */
  tags: Uint8Array;
}

/**
 * The stanzas of a version 2 file that `rekey` may keep for `normalised` recipients (one
 * stanza each, of the type `types[i]`): for recipient i, the old stanza whose tag under the file
 * key is the recipient's and whose type is the same, or null (wrap it anew). Each old stanza is
 * kept at most once. The caller has verified the header MAC under `fileKey`, which covers the
 * tags. Returns null when the file has no version 2 tags.
 */
export function keepableStanzas(
  fileKey: Uint8Array,
  stanzas: readonly Stanza[],
  normalised: readonly string[],
  types: readonly string[],
): Keepable | null {
  const record = readRecipientsRecord(stanzas);
  if (record.state !== "present" || record.tags === null) return null;
  const oldTags = record.tags.map((t) => Buffer.from(t.buffer, t.byteOffset, t.byteLength));
  const used = new Set<number>();
  const newTags = recipientTags(fileKey, normalised);
  const kept = normalised.map((_, i) => {
    const tag = newTags.subarray(i * TAG_SIZE, (i + 1) * TAG_SIZE);
    const found = oldTags.findIndex((t, j) => !used.has(j) && stanzas[j]!.type === types[i] && t.equals(tag));
    if (found < 0) return null;
    used.add(found);
    return stanzas[found]!;
  });
  return { kept, tags: newTags };
}

/** rage adds one random "grease" stanza (type "<random>-grease") to every header it writes. */
function isGrease(s: Stanza): boolean {
  return s.type.endsWith("-grease");
}

/** What the rules say a secret's header must hold. */
export interface HeaderExpectation {
  recipients: RecipientClass[];
  digest: string;
}

export function expectationOf(publicKeys: readonly string[], where: string): HeaderExpectation {
  const problems: NixsealError[] = [];
  const recipients: RecipientClass[] = [];
  for (const k of publicKeys) {
    try {
      recipients.push(classifyRecipient(k, where));
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e);
      else throw e;
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return { recipients, digest: recipientsDigest(recipients.map((r) => r.normalised)) };
}

export interface HeaderComparison {
  /** Ways the header contradicts the rules, one sentence each (empty: consistent). */
  mismatches: string[];
  record: RecordState;
  /**
   * Recipients whose stanzas do not say who they are for (X25519, post-quantum, plugins): only
   * the record names them, and it is a claim by whoever wrote the file.
   */
  unverifiable: number;
  /** What the header shows and was checked against the rules (when there is no mismatch). */
  verified: string[];
  /** Recipients only the record names, by kind ("2 X25519 recipients"); empty without a record. */
  claimedByRecord: string[];
  /** What nothing in the header shows: the anonymous recipients of a file without a record, and `unread`. */
  unverified: string[];
  /**
   * Stanzas of a type nobody in the rules reads, as rage adds one ("grease") to every file it
   * writes: tolerated in a file without a record (drift beside one), but nobody can tell whether
   * someone else can read them. null if there are none.
   */
  unread: string | null;
  /**
   * Every recipient is identified by its stanza (ssh key tags) and the header holds exactly the
   * rules' stanzas: the file is right whether or not it carries a record.
   */
  proven: boolean;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** How to name an ssh key of the rules in a message: its comment, else the start of the key. */
function shownKey(r: RecipientClass): string {
  const comment = r.text.split(/\s+/).slice(2).join(" ");
  return comment !== "" ? `"${comment}"` : `${r.normalised.slice(0, 32)}...`;
}

/**
 * Compares a header's stanzas with what the rules expect, and says what that comparison is worth.
 * Needs no key: this is what `check` runs and how `rekey` decides.
 *
 * Verified from the header: one stanza per recipient (count), each of the recipient's type, and
 * for ssh keys the key's tag; a record must name the rules' recipients. Not verifiable from any
 * header: who an X25519, post-quantum or plugin stanza is for (age spec: recipient privacy). The
 * record names them, but it is written by whoever wrote the file, like the stanzas.
 */
export function compareHeader(stanzas: readonly Stanza[], expect: HeaderExpectation): HeaderComparison {
  const mismatches: string[] = [];
  const record = readRecipientsRecord(stanzas);
  if (record.state === "malformed") mismatches.push(record.reason);
  if (record.state === "present" && record.problem !== undefined) mismatches.push(record.problem);
  if (record.state === "present" && record.digest !== expect.digest) {
    mismatches.push("the recipients record differs from the rules (recipients were added or removed)");
  }
  const others = stanzas.filter((s) => s.type !== RECIPIENTS_RECORD_STANZA);
  const grease = others.filter(isGrease);
  const left = others.filter((s) => !isGrease(s));
  const plugins = expect.recipients.filter((r) => r.expected.kind === "plugin").length;
  let tagged = 0;
  // ssh keys: each must have a stanza with its tag.
  for (const r of expect.recipients) {
    const e = r.expected;
    if (e.kind !== "tagged") continue;
    tagged++;
    const i = left.findIndex((s) => s.type === e.type && s.args[0] === e.tag);
    if (i >= 0) left.splice(i, 1);
    else mismatches.push(`no ${e.type} stanza for the key ${shownKey(r)} of the rules (tag ${e.tag})`);
  }
  // X25519 and post-quantum: one stanza of the type each; who it is for, no header can show.
  const anonymous = new Map<string, number>();
  for (const r of expect.recipients) {
    if (r.expected.kind === "anonymous")
      anonymous.set(r.expected.type, (anonymous.get(r.expected.type) ?? 0) + 1);
  }
  for (const [type, want] of anonymous) {
    const have = left.filter((s) => s.type === type).length;
    // With plugins, stanzas of the type beyond `want` may be theirs: counted with them below.
    if (have < want || (have > want && plugins === 0)) {
      mismatches.push(
        `${plural(have, `${type} stanza`)} for ${plural(want, `${type} recipient`)} in the rules`,
      );
    }
    for (let n = 0, i = 0; n < Math.min(have, want); ) {
      if (left[i]!.type === type) {
        left.splice(i, 1);
        n++;
      } else i++;
    }
  }
  if (plugins === 0) {
    const extraTagged = left.filter((s) => s.type === SSH_ED25519_STANZA || s.type === SSH_RSA_STANZA);
    if (extraTagged.length > 0) {
      const tags = extraTagged.map((s) => `${s.type} ${s.args[0] ?? "?"}`).join(", ");
      mismatches.push(
        `${plural(extraTagged.length, "ssh stanza")} for keys not in the rules (tags: ${tags})`,
      );
    }
    const unknown = left.filter((s) => !extraTagged.includes(s) && !anonymous.has(s.type));
    if (unknown.length > 0) {
      const types = [...new Set(unknown.map((s) => s.type))].join(", ");
      mismatches.push(`${plural(unknown.length, "stanza")} of a type the rules don't use (${types})`);
    }
  } else if (left.length !== plugins) {
    // age-plugin spec: a plugin writes at most one stanza per recipient; nixseal asks at least one.
    mismatches.push(
      `${plural(plugins, "plugin recipient")} in the rules but ${plural(left.length, "stanza")} left for them`,
    );
  }
  const greaseTypes = [...new Set(grease.map((s) => s.type))].join(", ");
  if (grease.length > 0 && record.state === "present") {
    // nixseal never writes them: beside a record, they were added by someone else.
    mismatches.push(`${plural(grease.length, "stanza")} of a type the rules don't use (${greaseTypes})`);
  }

  const verified = [
    plugins === 0 ? "stanza count and types" : "stanza count and types (of plugin stanzas: count only)",
  ];
  if (tagged > 0) verified.push("ssh key tags");
  if (record.state === "present") verified.push("the record names the rules' recipients");
  const kinds: string[] = [];
  for (const [type, n] of anonymous) kinds.push(plural(n, `${type} recipient`));
  if (plugins > 0) kinds.push(plural(plugins, "plugin recipient"));
  const unverifiable = expect.recipients.length - tagged;
  const unread =
    grease.length > 0 && record.state !== "present"
      ? `${plural(grease.length, "stanza")} of a type nobody in the rules reads (${greaseTypes})`
      : null;
  const unverified = record.state === "present" ? [] : [...kinds];
  if (unread !== null) unverified.push(unread);
  return {
    mismatches,
    record,
    unverifiable,
    verified,
    claimedByRecord: record.state === "present" ? kinds : [],
    unverified,
    unread,
    proven: mismatches.length === 0 && unverifiable === 0 && grease.length === 0,
  };
}

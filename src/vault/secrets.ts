/**
 * Reading and writing the secret files a repository's rules list. Plaintext stays in memory
 * (Uint8Array, wiped by the caller); files are replaced atomically.
 */
import * as path from "node:path";
import { encrypt, parseHeader, type Recipient } from "../age/index.js";
import { nodeFs as fs, ioError, NixsealError, writeFileAtomic } from "../common/index.js";
import { type KeyContext, loadRecipients } from "../keys/index.js";
import {
  classifyRecipient,
  readRecipientsRecord,
  recipientsDigest,
  withRecipientsRecord,
} from "./recipients-record.js";
import type { SecretRule } from "./rules.js";
import { readSecretFile } from "./secret-reader.js";

export { decryptSecret, readSecretFile } from "./secret-reader.js";

/** The recipients the rules name for a secret; every bad key is reported. */
export function recipientsFor(rule: SecretRule, rulesFile: string, ctx: KeyContext): Recipient[] {
  try {
    return loadRecipients({ strings: rule.publicKeys }, ctx);
  } catch (e) {
    if (e instanceof NixsealError) {
      const problems = e.problems.length ? e.problems : [e];
      throw NixsealError.many(
        problems.map(
          (p) =>
            // A key the rules name that can't be used is a rules error (exit 2), as in check.
            new NixsealError(
              p.code === "AGE_PLUGIN" ? p.code : "RULES",
              `${rulesFile}: secret "${rule.name}": ${p.message.replace(/^-r: /, "")}`,
              {
                file: rulesFile,
                hint: p.hint,
              },
            ),
        ),
      );
    }
    throw e;
  }
}

/**
 * The encrypted file for plaintext, in memory: encrypted to `recipients` (those of
 * `rule.publicKeys`, as recipientsFor makes them) with the recipients record.
 */
export function encryptSecret(
  rule: SecretRule,
  plaintext: Uint8Array,
  recipients: readonly Recipient[],
): Promise<Uint8Array> {
  // The recipients record (recipients-record.ts) lets `check` and `rekey` see from the header
  // alone that the file is encrypted to exactly the rules' recipients; age ignores it.
  const withRecord = withRecipientsRecord(recipients, rule.publicKeys, `secret "${rule.name}"`);
  return encrypt(plaintext, withRecord, { armor: rule.armor });
}

/**
 * Encrypts plaintext to the rules' recipients (`recipients` are those of `rule.publicKeys`, as
 * recipientsFor makes them) and replaces the file atomically.
 */
export async function writeSecret(
  rule: SecretRule,
  plaintext: Uint8Array,
  recipients: readonly Recipient[],
): Promise<void> {
  const file = await encryptSecret(rule, plaintext, recipients);
  try {
    fs.mkdirSync(path.dirname(rule.file), { recursive: true });
  } catch (e) {
    throw ioError("create the directory of", rule.file, e);
  }
  // Ciphertext: mode 0666 less the umask, as git checkouts have it.
  writeFileAtomic(rule.file, file, 0o666);
}

/**
 * Whether a secret file's recipients record names exactly its rule's publicKeys: from the header
 * alone, no key needed. False for a file without a record, or one that cannot be read.
 */
export function recordNamesRule(rule: SecretRule): boolean {
  try {
    const header = parseHeader(readSecretFile(rule));
    if (header === null) return false;
    const record = readRecipientsRecord(header.stanzas);
    if (record.state !== "present") return false;
    const where = `secret "${rule.name}"`;
    return (
      record.digest === recipientsDigest(rule.publicKeys.map((k) => classifyRecipient(k, where).normalised))
    );
  } catch {
    return false;
  }
}

/**
 * Reading and writing the secret files a repository's rules list. Plaintext stays in memory
 * (Uint8Array, wiped by the caller); files are replaced atomically.
 */

import * as path from "node:path";
import { decrypt, encrypt, type Identity, parseHeader, type Recipient } from "../age/index.js";
import { nodeFs as fs, ioError, NixsealError, writeFileAtomic } from "../common/index.js";
import { type KeyContext, loadRecipients } from "../keys/index.js";
import {
  classifyRecipient,
  readRecipientsRecord,
  recipientsDigest,
  withRecipientsRecord,
} from "./recipients-record.js";
import { MAX_SECRET_FILE_SIZE, type SecretRule } from "./rules.js";

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

/** Reads an encrypted secret file (refusing symlinks that lead elsewhere and huge files). */
export function readSecretFile(rule: SecretRule): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(rule.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP") {
      throw new NixsealError("IO", `${rule.file} is a symbolic link`, {
        file: rule.file,
        hint: "secret files must be regular files inside the repository",
      });
    }
    if (code === "ENOENT") {
      throw new NixsealError("IO", `secret "${rule.name}" has no file yet (${rule.file})`, {
        file: rule.file,
        hint: `create it with 'nixseal edit ${rule.name}' or 'nixseal encrypt ${rule.name}'`,
      });
    }
    throw ioError("read", rule.file, e);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new NixsealError("IO", `${rule.file} is not a regular file`, { file: rule.file });
    if (st.size > MAX_SECRET_FILE_SIZE) {
      throw new NixsealError("IO", `${rule.file} is too large for a secret`, { file: rule.file });
    }
    return fs.readFileSync(fd);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read", rule.file, e);
  } finally {
    fs.closeSync(fd);
  }
}

/** Decrypts a secret; errors name the file. The caller wipes the result. */
export async function decryptSecret(rule: SecretRule, identities: readonly Identity[]): Promise<Uint8Array> {
  const data = readSecretFile(rule);
  try {
    return await decrypt(data, identities);
  } catch (e) {
    if (e instanceof NixsealError) throw e.withFile(rule.file);
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

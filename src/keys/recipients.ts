/**
 * Recipients from the command line and from recipients files (one per line, `#` comments), as
 * `age -r` / `age -R` accept them: age1... (X25519), age1pq1... (hybrid), age1<plugin>1...
 * (plugins, grouped so each plugin runs once), ssh-ed25519 / ssh-rsa public keys.
 */
import { type Recipient, X25519Recipient } from "../age/index.js";
import { nodeFs as fs, ioError, NixsealError } from "../common/index.js";
import {
  type KeyContext,
  parseRecipientString as parseOne,
  pluginNameOfRecipient,
  resolvePluginRecipients,
} from "./key-types.js";

/** A recipients file larger than this is refused (hostile or mistaken input). */
export const MAX_KEY_FILE_SIZE = 16 * 1024 * 1024;

export interface RecipientSources {
  /** -r values */
  strings?: readonly string[];
  /** -R paths */
  files?: readonly string[];
}

/** Parses every source; every problem is reported at once. Plugins are grouped per plugin. */
export function loadRecipients(sources: RecipientSources, ctx: KeyContext): Recipient[] {
  const recipients: Recipient[] = [];
  const plugin: string[] = [];
  const problems: NixsealError[] = [];
  const add = (s: string, where: string) => {
    try {
      if (pluginNameOfRecipient(s) !== null) plugin.push(s);
      else recipients.push(parseOne(s, where));
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e);
      else throw e;
    }
  };
  for (const s of sources.strings ?? []) add(s.trim(), "-r");
  for (const file of sources.files ?? []) {
    let text: string;
    try {
      text = readKeyFileText(file);
    } catch (e) {
      if (e instanceof NixsealError) {
        problems.push(e);
        continue;
      }
      throw e;
    }
    const lines = text.split("\n");
    let n = 0;
    lines.forEach((raw, i) => {
      const line = raw.replace(/\r$/, "").trim();
      if (line === "" || line.startsWith("#")) return;
      n++;
      add(line, `${file}:${i + 1}`);
    });
    if (n === 0) {
      problems.push(
        new NixsealError("AGE_RECIPIENT", `no recipients found in ${file}`, {
          file,
          hint: "a recipients file has one age1... or ssh public key per line",
        }),
      );
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  recipients.push(...resolvePluginRecipients(plugin, ctx));
  return recipients;
}

/** Reads a key file as text with a size limit; "-" is standard input. */
export function readKeyFileText(file: string): string {
  return readKeyFile(file).toString("utf8");
}

/** Reads a key file's bytes with a size limit; "-" is standard input. */
export function readKeyFile(file: string): Buffer {
  let data: Buffer;
  try {
    const fd = file === "-" ? 0 : fs.openSync(file, "r");
    try {
      const st = fs.fstatSync(fd);
      if (st.isFile() && st.size > MAX_KEY_FILE_SIZE) {
        throw new NixsealError("KEY_FORMAT", `${file} is too large to be a key file`, {
          file,
          hint: "pass a recipients or identity file, not an encrypted file or data",
        });
      }
      data = fs.readFileSync(fd);
    } finally {
      if (fd !== 0) fs.closeSync(fd);
    }
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read", file, e);
  }
  if (data.length > MAX_KEY_FILE_SIZE) {
    throw new NixsealError("KEY_FORMAT", `${file} is too large to be a key file`, { file });
  }
  return data;
}

export { X25519Recipient };

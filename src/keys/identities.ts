/**
 * Identities from identity files, as `age -i` reads them: lines of AGE-SECRET-KEY-1... /
 * AGE-SECRET-KEY-PQ-1... / AGE-PLUGIN-... with `#` comments; an OpenSSH or PEM private key;
 * or a passphrase-encrypted age file holding such lines.
 */
import {
  decrypt,
  type Identity,
  looksArmored,
  looksLikeAgeBinary,
  nonInteractivePluginUI,
  pluginRecipients,
  type Recipient,
  ScryptIdentity,
} from "../age/index.js";
import { NixsealError, wipe } from "../common/index.js";
import {
  type KeyContext,
  parseIdentityString,
  parseSshPrivateKeyFile,
  pluginNameOfIdentity,
  recipientOfIdentity,
  resolvePluginIdentities,
} from "./key-types.js";
import { readKeyFile } from "./recipients.js";

/** The first line of every binary age file. */
const AGE_INTRO = "age-encryption.org/v1\n";

function looksLikePem(text: string): boolean {
  return /^\s*-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text);
}

/** Parses identity lines; plugin lines are collected in `plugin` for grouping. */
function parseIdentityLines(
  text: string,
  source: string,
  plugin: string[],
  problems: NixsealError[],
): Identity[] {
  const out: Identity[] = [];
  let n = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) return;
    n++;
    try {
      if (pluginNameOfIdentity(line) !== null) plugin.push(line);
      else out.push(parseIdentityString(line, `${source}:${i + 1}`));
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e);
      else throw e;
    }
  });
  if (n === 0) {
    const what = text.trim() === "" ? "it is empty" : "only comments";
    problems.push(
      new NixsealError("AGE_IDENTITY", `no identity in ${source} (${what})`, {
        file: source,
        hint: "an identity file holds AGE-SECRET-KEY-1... lines (age-keygen makes one) or an ssh private key; check the path given with -i",
      }),
    );
  }
  return out;
}

/** Parses every identity file; plugin identity lines are returned unresolved. */
async function loadIdentityParts(
  files: readonly string[],
  ctx: KeyContext,
  read: (file: string) => Buffer = readKeyFile,
): Promise<{ identities: Identity[]; plugin: string[] }> {
  const identities: Identity[] = [];
  const plugin: string[] = [];
  const problems: NixsealError[] = [];
  for (const file of files) {
    try {
      const data = read(file);
      const source = file === "-" ? "standard input" : file;
      const head = data.subarray(0, 2048);
      if (looksLikePem(head.toString("latin1")) && !head.includes("AGE ENCRYPTED FILE")) {
        identities.push(parseSshPrivateKeyFile(data, source, ctx));
      } else if (looksArmored(head) || (head.length >= AGE_INTRO.length && looksLikeAgeBinary(head))) {
        // (An empty file is a prefix of every age file: it goes to the line parser, which says
        // that it holds no identity.)
        identities.push(...(await decryptIdentityFile(data, source, ctx, plugin, problems)));
      } else {
        identities.push(...parseIdentityLines(data.toString("utf8"), source, plugin, problems));
      }
      data.fill(0);
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e.file ? e : e.withFile(file));
      else throw e;
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return { identities, plugin };
}

/** Loads every identity file; every problem is reported at once. Plugins run once each. */
export async function loadIdentities(files: readonly string[], ctx: KeyContext): Promise<Identity[]> {
  const { identities, plugin } = await loadIdentityParts(files, ctx);
  return [...identities, ...resolvePluginIdentities(plugin, ctx)];
}

/**
 * The recipients of the identities in these files (`age -e -i`, `age-keygen -y`). `read` gives a
 * file's bytes (default: readKeyFile), for a caller that has already read standard input.
 */
export async function loadIdentitiesAsRecipients(
  files: readonly string[],
  ctx: KeyContext,
  read?: (file: string) => Buffer,
): Promise<Recipient[]> {
  const { identities, plugin } = await loadIdentityParts(files, ctx, read);
  const recipients: Recipient[] = [];
  for (const id of identities) {
    const r = await recipientOfIdentity(id);
    if (r === null) {
      throw new NixsealError("AGE_IDENTITY", `cannot derive a recipient from ${id.description}`, {
        hint: "pass its public key with -r or -R instead",
      });
    }
    recipients.push(r);
  }
  // Plugins wrap for their own identities (age-plugin spec: add-identity).
  if (plugin.length > 0) recipients.push(...pluginRecipients(plugin, ctx.pluginUI ?? nonInteractivePluginUI));
  return recipients;
}

/** An identity file that is itself age-encrypted with a passphrase (age supports this). */
async function decryptIdentityFile(
  data: Buffer,
  source: string,
  ctx: KeyContext,
  plugin: string[],
  problems: NixsealError[],
): Promise<Identity[]> {
  if (!ctx.passphrase) {
    throw new NixsealError("KEY_ENCRYPTED", `identity file ${source} is passphrase-protected`, {
      file: source,
      hint: "run in a terminal, or set NIXSEAL_PASSPHRASE_FILE to a file holding the passphrase",
    });
  }
  const pass = await ctx.passphrase(`identity file ${source}`);
  const id = new ScryptIdentity(pass);
  wipe(pass);
  let plain: Uint8Array;
  try {
    plain = await decrypt(data, [id]);
  } catch (e) {
    if (e instanceof NixsealError && e.code === "AGE_NO_MATCH") {
      throw new NixsealError("AGE_IDENTITY", `cannot decrypt identity file ${source}: ${e.message}`, {
        file: source,
        hint: "check the passphrase; the identity file must be encrypted with a passphrase (age -p)",
      });
    }
    throw e;
  } finally {
    id.wipe();
  }
  const text = Buffer.from(plain).toString("utf8");
  wipe(plain);
  return parseIdentityLines(text, source, plugin, problems);
}

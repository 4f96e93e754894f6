/**
 * The one place that knows every key type nixseal supports, by its text form. Everything that
 * reads keys (CLI flags, identity files, rules files) goes through here.
 */

import {
  decodeBech32,
  HybridIdentity,
  HybridRecipient,
  type Identity,
  isPluginIdentity,
  isPluginRecipient,
  loadMlKem,
  nonInteractivePluginUI,
  type PluginUI,
  pluginIdentities,
  pluginNameOf,
  pluginRecipients,
  type Recipient,
  X25519Identity,
  X25519Recipient,
} from "../age/index.js";
import { nodeFs as fs, NixsealError } from "../common/index.js";
import {
  looksLikeSshPublicKey,
  parseSshPrivateKey,
  parseSshPublicKey,
  type SshKeyIdentity,
} from "../ssh/index.js";

function isSshKeyIdentity(id: Identity): id is SshKeyIdentity {
  return typeof (id as Partial<SshKeyIdentity>).unlock === "function" && "keyType" in id;
}

/** What reading keys may need from the user. Absent members mean "not available" (no TTY). */
export interface KeyContext {
  /** Asks for a passphrase; `what` names the key file or purpose. Never logged. */
  passphrase?: (what: string) => Promise<Uint8Array>;
  /** How plugins talk to the user; without one, plugins that ask anything fail cleanly. */
  pluginUI?: PluginUI;
}

/**
 * Marks of a secret key on a line: age and plugin identities, PEM/OpenSSH private keys. Checked
 * without regard to case (a lowercased key is still the key).
 */
const SECRET_KEY_MARK = /AGE-SECRET-KEY-|AGE-PLUGIN-|-----BEGIN/i;

/**
 * Does this text look like (part of) a secret key? Nothing of such a text may appear in a
 * message (docs/threat-model.md, "What errors show").
 */
export function looksLikeSecretKey(text: string): boolean {
  return SECRET_KEY_MARK.test(text);
}

/**
 * All that an error may quote of a key line: its type prefix ("ssh-dss", "pgp:", "age1yubikey1"),
 * at most 20 characters; null for a line that looks like a secret key or has no such prefix (a
 * line of base64, which may be a piece of a private key).
 */
export function typePrefixOf(line: string): string | null {
  const t = line.trim();
  if (looksLikeSecretKey(t)) return null;
  const word = /^[A-Za-z][A-Za-z0-9._+-]{0,18}(?::|(?=\s))/.exec(t);
  if (word) return word[0];
  if (/^age/i.test(t)) {
    // Bech32: the human-readable part ends at the last "1" (the data part has none).
    const sep = t.lastIndexOf("1");
    if (sep >= 3 && sep < 20) return t.slice(0, sep + 1);
  }
  return null;
}

function unknownRecipient(s: string, where: string): NixsealError {
  const prefix = typePrefixOf(s);
  const shown = prefix === null ? "" : ` "${prefix}..."`;
  return new NixsealError("AGE_RECIPIENT", `${where}: unknown recipient type${shown}`, {
    hint: "recipients look like age1..., age1pq1..., age1<plugin>1..., ssh-ed25519 AAAA... or ssh-rsa AAAA...",
  });
}

function secretKeyAsRecipient(s: string, where: string): NixsealError {
  const pem = /-----BEGIN/i.test(s);
  return new NixsealError(
    "AGE_RECIPIENT",
    `${where}: this looks like ${pem ? "a private key" : "an identity (a secret key)"}, not a recipient`,
    {
      hint: pem
        ? "use the public key (the .pub file, or ssh-keygen -y -f KEY); and keep the private key out of recipient lists"
        : "use the public key (age-keygen -y prints it); and keep that secret key out of recipient lists",
    },
  );
}

/** Parses one recipient string (not a plugin one: see pluginNameOfRecipient). */
export function parseRecipientString(s: string, where: string): Recipient {
  // First: a secret key must never reach a parser whose error might quote it.
  if (looksLikeSecretKey(s)) throw secretKeyAsRecipient(s, where);
  try {
    if (s.startsWith("age1pq1")) return HybridRecipient.parse(s);
    if (s.startsWith("age1") && !s.includes(" ")) return X25519Recipient.parse(s);
  } catch (e) {
    if (e instanceof NixsealError) throw new NixsealError(e.code, `${where}: ${e.message}`, { hint: e.hint });
    throw e;
  }
  if (looksLikeSshPublicKey(s)) {
    try {
      return parseSshPublicKey(s);
    } catch (e) {
      if (e instanceof NixsealError)
        throw new NixsealError(e.code, `${where}: ${e.message}`, { hint: e.hint });
      throw e;
    }
  }
  throw unknownRecipient(s, where);
}

/**
 * The plugin name if `s` is a plugin recipient (age1<name>1...), else null. Native types are
 * recognised first, as age does: age1pq1... is the hybrid type, not a plugin called "pq".
 */
export function pluginNameOfRecipient(s: string): string | null {
  if (s.startsWith("age1pq1")) return null;
  if (decodeBech32(s)?.hrp === "age") return null;
  return isPluginRecipient(s) ? pluginNameOf(s) : null;
}

/** Plugin recipients grouped so each plugin runs once for all of its recipients. */
export function resolvePluginRecipients(strings: readonly string[], ctx: KeyContext): Recipient[] {
  if (strings.length === 0) return [];
  return pluginRecipients([...strings], ctx.pluginUI ?? nonInteractivePluginUI);
}

/** Parses one identity line (not a plugin one: see pluginNameOfIdentity). */
export function parseIdentityString(s: string, where: string): Identity {
  if (s.startsWith("AGE-SECRET-KEY-1") || s.startsWith("AGE-SECRET-KEY-PQ-1")) {
    try {
      if (s.startsWith("AGE-SECRET-KEY-PQ-1"))
        return HybridIdentity.parse(s, `post-quantum identity from ${where}`);
      return X25519Identity.parse(s, `age identity from ${where}`);
    } catch (e) {
      if (e instanceof NixsealError)
        throw new NixsealError(e.code, `${where}: ${e.message}`, { hint: e.hint });
      throw e;
    }
  }
  // Never echo the line: it may be a mangled secret key.
  throw new NixsealError("AGE_IDENTITY", `${where}: not an identity line`, {
    hint: /^age-(secret-key|plugin)-/.test(s)
      ? "age secret keys are written in upper case (AGE-SECRET-KEY-1...); restore the key from a good copy"
      : "identity lines start with AGE-SECRET-KEY-1, AGE-SECRET-KEY-PQ-1 or AGE-PLUGIN-; comments start with #",
  });
}

/** The plugin name if `s` is a plugin identity (AGE-PLUGIN-NAME-1...), else null. */
export function pluginNameOfIdentity(s: string): string | null {
  return isPluginIdentity(s) ? pluginNameOf(s) : null;
}

/** Plugin identities grouped so each plugin runs once for all of its identities. */
export function resolvePluginIdentities(strings: readonly string[], ctx: KeyContext): Identity[] {
  if (strings.length === 0) return [];
  return pluginIdentities([...strings], ctx.pluginUI ?? nonInteractivePluginUI);
}

/** The recipient that belongs to an identity, for `age -e -i` and `age-keygen -y`. */
export async function recipientOfIdentity(id: Identity): Promise<Recipient | null> {
  if (id instanceof HybridIdentity) {
    await loadMlKem();
    return id.recipient();
  }
  if (id instanceof X25519Identity) return id.recipient();
  if (isSshKeyIdentity(id)) return id.recipient();
  return null;
}

/**
 * An ssh private key file (OpenSSH or PEM) as an identity. Encrypted keys are lazy: the
 * passphrase is asked only when a file is for this key, and once. A FILE.pub beside an
 * encrypted PEM key tells which files are for it without asking.
 */
export function parseSshPrivateKeyFile(data: Uint8Array, source: string, ctx: KeyContext): Identity {
  let publicKey: string | undefined;
  try {
    const pub = `${source}.pub`;
    if (fs.statSync(pub).size < 64 * 1024) publicKey = fs.readFileSync(pub, "utf8");
  } catch {}
  const ask = ctx.passphrase;
  return parseSshPrivateKey(data, {
    file: source,
    passphrase: ask ? () => ask(`ssh key ${source}`) : undefined,
    publicKey,
  });
}

/**
 * A fresh identity and its recipient, as strings for a new key file. The identity string is
 * secret: the caller writes it to a 0600 file and drops it.
 */
export async function generateIdentity(pq: boolean): Promise<{ identity: string; recipient: string }> {
  if (pq) await loadMlKem();
  const id = pq ? HybridIdentity.generate() : X25519Identity.generate();
  return { identity: id.encode(), recipient: id.recipient().toString() };
}

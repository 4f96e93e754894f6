/**
 * ssh public key lines (a `.pub` file, authorized_keys, `ssh-keyscan` or known_hosts output) as
 * the age recipients `nixseal age-keygen -y` prints for them: an ssh-ed25519 key as the X25519
 * recipient `ssh-to-age` derives (`age1...`, the Montgomery form of the key's point), an ssh-rsa
 * key as its own `ssh-rsa AAAA...` line, which is age's ssh-rsa recipient (RSA has no `age1`
 * form). Other ssh key types have no age form: they are skipped and named, as ssh-to-age does, so
 * `ssh-keyscan HOST | nixseal age-keygen -y` works on a host with ecdsa keys too.
 */
import { NixsealError } from "../common/index.js";
import {
  isKnownUnsupportedSshType,
  parseSshPublicKey,
  SSH_ED25519_STANZA,
  sshPublicKeyToAgeRecipient,
} from "../ssh/index.js";

export interface SshKeyRecipients {
  /** One recipient string per usable key, in input order. */
  recipients: string[];
  /** Keys of a type age cannot use (line number, key type), skipped. */
  skipped: { line: number; type: string }[];
}

const KEY_TYPE = /^(ssh-|ecdsa-|sk-)/;

/** Where a line's key type is: first (authorized_keys, .pub), second (known_hosts), or -1. */
function keyTypeIndex(tokens: readonly string[]): number {
  if (KEY_TYPE.test(tokens[0] ?? "")) return 0;
  if (KEY_TYPE.test(tokens[1] ?? "")) return 1;
  return -1;
}

function meaningfulLines(text: string): { line: number; tokens: string[] }[] {
  const out: { line: number; tokens: string[] }[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) return;
    out.push({ line: i + 1, tokens: line.split(/\s+/) });
  });
  return out;
}

/**
 * Does this text hold ssh public keys rather than age identities? Decided by its first line that
 * is neither empty nor a comment (an identity line is a single `AGE-...` word).
 */
export function looksLikeSshPublicKeys(text: string): boolean {
  const first = meaningfulLines(text)[0];
  if (first === undefined) return false;
  return keyTypeIndex(first.tokens) >= 0 || (first.tokens[0]?.startsWith("@") ?? false);
}

/** The age recipients of the ssh public keys in `text`; every bad line is reported at once. */
export function sshPublicKeysToAgeRecipients(text: string, source: string): SshKeyRecipients {
  const recipients: string[] = [];
  const skipped: { line: number; type: string }[] = [];
  const problems: NixsealError[] = [];
  const at = (line: number) => `${source}:${line}`;
  for (const { line, tokens } of meaningfulLines(text)) {
    if (tokens[0]!.startsWith("@")) {
      problems.push(
        new NixsealError(
          "AGE_RECIPIENT",
          `${at(line)}: a known_hosts marker line (${tokens[0]!.slice(0, 20)})`,
          {
            file: source,
            hint: "@cert-authority and @revoked lines name no host key; pass the host's own key line",
          },
        ),
      );
      continue;
    }
    const index = keyTypeIndex(tokens);
    if (index < 0) {
      problems.push(
        new NixsealError("AGE_RECIPIENT", `${at(line)}: not an ssh public key line`, {
          file: source,
          hint: "expected 'ssh-ed25519 AAAA... comment' (a .pub file) or 'HOST ssh-ed25519 AAAA...' (ssh-keyscan)",
        }),
      );
      continue;
    }
    const type = tokens[index]!;
    if (isKnownUnsupportedSshType(type)) {
      skipped.push({ line, type: type.slice(0, 60) });
      continue;
    }
    const keyLine = tokens.slice(index).join(" ");
    try {
      recipients.push(
        type === SSH_ED25519_STANZA
          ? sshPublicKeyToAgeRecipient(keyLine).toString()
          : // Canonical form, without the comment: what age takes with -r.
            parseSshPublicKey(keyLine).toString(),
      );
    } catch (e) {
      if (!(e instanceof NixsealError)) throw e;
      problems.push(new NixsealError(e.code, `${at(line)}: ${e.message}`, { hint: e.hint, file: source }));
    }
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  if (recipients.length === 0) {
    const types = [...new Set(skipped.map((s) => s.type))].join(", ");
    throw new NixsealError(
      "AGE_RECIPIENT",
      `no ssh-ed25519 or ssh-rsa key in ${source}${types === "" ? "" : ` (only ${types})`}`,
      {
        file: source,
        hint: "age recipients exist for ssh-ed25519 and ssh-rsa keys; for a host: ssh-keyscan -t ed25519 HOST",
      },
    );
  }
  return { recipients, skipped };
}

/**
 * Identities sealed as systemd credentials (`nixseal host-key seal / new`), and the manifest's
 * identity type `{ "type": "systemd-creds", "path": FILE }`: the file is decrypted by
 * systemd-creds in memory and parsed as an age identity file or an OpenSSH/PEM private key.
 * A copied disk image without the host's key (or its TPM2) yields no identity.
 */
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { NixsealError, wipe } from "../common/index.js";
import { parseIdentityString, recipientOfIdentity } from "../keys/index.js";
import { looksLikeSshPrivateKey, parseSshPrivateKey, SshEd25519Identity } from "../ssh/index.js";
import { decryptCredential, type SystemdCredsOptions } from "./systemd-creds.js";

/** The manifest's identity entry for a sealed key. */
export interface SealedIdentitySource {
  type: "systemd-creds";
  /** The encrypted credential file. */
  path: string;
  /** The name it was sealed under (default: the file's name, as `systemd-creds decrypt FILE` expects). */
  name?: string;
}

export interface KeyMaterial {
  identities: Identity[];
  /** What to encrypt to for these identities: age1... and/or ssh public keys. */
  recipients: string[];
  /** "age" (identity lines) or "ssh" (a private key file). */
  kind: "age" | "ssh";
}

/**
 * Parses a key as `age -i` reads an identity file: AGE-SECRET-KEY-1... / -PQ-1... lines with
 * `#` comments, or an unencrypted OpenSSH/PEM private key (ed25519 also acting as the X25519
 * identity ssh-to-age derives, as host keys do for sops-nix files). `source` names it in errors;
 * the key material itself never appears in one.
 */
export async function parseKeyMaterial(data: Uint8Array, source: string): Promise<KeyMaterial> {
  if (looksLikeSshPrivateKey(data)) {
    const parsed = parseSshPrivateKey(data, { file: source });
    if (parsed.encrypted) {
      throw new NixsealError("KEY_ENCRYPTED", `${source}: the ssh key is passphrase-protected`, {
        file: source,
        hint: "a sealed key is opened unattended, at boot: remove the passphrase from a copy first (ssh-keygen -p -N '' -f COPY)",
      });
    }
    const ssh = await parsed.unlock();
    const identities: Identity[] = [ssh];
    const recipients: string[] = [];
    const r = ssh.recipient();
    if (r !== null) recipients.push(String(r));
    if (ssh instanceof SshEd25519Identity) {
      const x = ssh.toX25519Identity(
        `age X25519 identity derived from the ssh-ed25519 key in ${source} (ssh-to-age)`,
      );
      identities.push(x);
      recipients.push(String(x.recipient()));
    }
    return { identities, recipients, kind: "ssh" };
  }
  const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("utf8");
  const identities: Identity[] = [];
  const recipients: string[] = [];
  const problems: NixsealError[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("AGE-PLUGIN-")) {
      problems.push(
        new NixsealError("KEY_UNSUPPORTED", `${source}:${i + 1}: a plugin identity cannot be sealed`, {
          file: source,
          hint: "plugin identities are bound to their hardware already; give them to nixseal as an age identity file",
        }),
      );
      continue;
    }
    try {
      const id = parseIdentityString(line, `${source}:${i + 1}`);
      identities.push(id);
      const r = await recipientOfIdentity(id);
      if (r !== null) recipients.push(String(r));
    } catch (e) {
      if (e instanceof NixsealError) problems.push(e.file ? e : e.withFile(source));
      else throw e;
    }
  }
  if (identities.length === 0 && problems.length === 0) {
    problems.push(
      new NixsealError("AGE_IDENTITY", `no identity found in ${source}`, {
        file: source,
        hint: "give an age identity file (AGE-SECRET-KEY-1... lines, from age-keygen) or an ssh private key",
      }),
    );
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return { identities, recipients, kind: "age" };
}

/**
 * The identities in a sealed credential file: decrypted in memory with systemd-creds, parsed,
 * and the plaintext wiped. A corrupted or foreign file gives one CREDS_DECRYPT error naming it.
 */
export async function loadSealedIdentities(
  source: Omit<SealedIdentitySource, "type">,
  options: SystemdCredsOptions = {},
): Promise<KeyMaterial> {
  const name = source.name ?? path.basename(source.path);
  const plain = await decryptCredential(name, source.path, options);
  try {
    return await parseKeyMaterial(plain, `sealed key ${source.path}`);
  } catch (e) {
    if (e instanceof NixsealError) {
      // It decrypted, so it is ours and intact: what is inside is not a key.
      throw new NixsealError(e.code, e.message, {
        file: source.path,
        hint: `${e.hint ?? "seal a valid key"}; seal the right key again with nixseal host-key seal`,
      });
    }
    throw e;
  } finally {
    wipe(plain);
  }
}

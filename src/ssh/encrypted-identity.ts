/**
 * The identity of a passphrase-protected key, lazy as age's agessh.EncryptedSSHIdentity: its
 * public key is known without the passphrase (OpenSSH keeps it in clear; for PEM the caller may
 * give the .pub file), and the passphrase is asked only when a stanza is for this key, at most
 * once per identity object; the decrypted key is kept for the next files.
 */
import type { Recipient, Stanza } from "../age/index.js";
import { NixsealError, wipe } from "../common/index.js";
import { checkSshEd25519Stanza, SSH_ED25519_STANZA } from "./ed25519.js";
import { noPassphrase } from "./key-file-errors.js";
import { describe, type SshKeyIdentity, sameKey } from "./key-identity.js";
import { type SshKeyType, type SshPublicKeyData, sshPublicKeyTag, sshRecipientOf } from "./public-key.js";
import { checkSshRsaStanza, SSH_RSA_STANZA } from "./rsa.js";

interface KnownPublicKey {
  data: SshPublicKeyData;
  tag: string;
}

/**
 * A passphrase-protected key (agessh.EncryptedSSHIdentity): asks for the passphrase only when
 * a stanza is for this key, once; keeps the decrypted key for the files that follow.
 */
export class EncryptedSshIdentity implements SshKeyIdentity {
  readonly description: string;
  readonly encrypted = true;
  private readonly file: string;
  private readonly known: KnownPublicKey | null;
  /** The stanza types this key may answer (one when the public key is known). */
  private readonly candidateTypes: readonly SshKeyType[];
  private readonly askPassphrase: (() => Promise<Uint8Array>) | undefined;
  private readonly decryptWith: (passphrase: Uint8Array) => Promise<SshKeyIdentity>;
  private decrypted: SshKeyIdentity | null = null;
  private decrypting: Promise<SshKeyIdentity> | null = null;

  constructor(args: {
    file: string;
    known: SshPublicKeyData | null;
    candidateTypes: readonly SshKeyType[];
    passphrase: (() => Promise<Uint8Array>) | undefined;
    decryptWith: (passphrase: Uint8Array) => Promise<SshKeyIdentity>;
  }) {
    this.file = args.file;
    this.known = args.known === null ? null : { data: args.known, tag: sshPublicKeyTag(args.known) };
    this.candidateTypes = this.known === null ? args.candidateTypes : [this.known.data.type];
    this.askPassphrase = args.passphrase;
    this.decryptWith = args.decryptWith;
    this.description = describe(this.keyType, this.file, true);
  }

  get keyType(): SshKeyType | null {
    if (this.decrypted !== null) return this.decrypted.keyType;
    return this.candidateTypes.length === 1 ? this.candidateTypes[0]! : null;
  }

  recipient(): Recipient | null {
    if (this.decrypted !== null) return this.decrypted.recipient();
    return this.known === null ? null : sshRecipientOf(this.known.data);
  }

  /** Is one of the stanzas for this key? Malformed stanzas of our types are refused here too. */
  private matches(stanzas: readonly Stanza[]): boolean {
    let match = false;
    for (const s of stanzas) {
      if (s.type === SSH_ED25519_STANZA && this.candidateTypes.includes(SSH_ED25519_STANZA))
        checkSshEd25519Stanza(s);
      else if (s.type === SSH_RSA_STANZA && this.candidateTypes.includes(SSH_RSA_STANZA))
        checkSshRsaStanza(s);
      else continue;
      if (this.known === null || s.args[0] === this.known.tag) match = true;
    }
    return match;
  }

  private async decrypt(): Promise<SshKeyIdentity> {
    if (this.askPassphrase === undefined) throw noPassphrase(this.file);
    let passphrase: Uint8Array;
    try {
      passphrase = await this.askPassphrase();
    } catch (e) {
      if (e instanceof NixsealError) throw e.withFile(this.file);
      throw new NixsealError("KEY_ENCRYPTED", `could not read the passphrase for the ssh key ${this.file}`, {
        file: this.file,
        hint: "the key is passphrase-protected; run in a terminal or set NIXSEAL_PASSPHRASE_FILE",
        cause: e,
      });
    }
    try {
      const id = await this.decryptWith(passphrase);
      if (this.known !== null && !sameKey(id, this.known.data)) {
        throw new NixsealError(
          "KEY_FORMAT",
          `the ssh key ${this.file} does not match the public key given for it`,
          {
            file: this.file,
            hint: `check that ${this.file}.pub belongs to ${this.file}`,
          },
        );
      }
      this.decrypted = id;
      return id;
    } finally {
      wipe(passphrase);
    }
  }

  unlock(): Promise<SshKeyIdentity> {
    // One passphrase request per identity, even for concurrent files; a failure is remembered
    // too, so a wrong passphrase is not asked again for every file.
    this.decrypting ??= this.decrypt();
    return this.decrypting;
  }

  async unwrapFileKey(stanzas: readonly Stanza[]): Promise<Uint8Array | null> {
    if (this.decrypted !== null) return this.decrypted.unwrapFileKey(stanzas);
    if (!this.matches(stanzas)) return null;
    const id = await this.unlock();
    return id.unwrapFileKey(stanzas);
  }
}

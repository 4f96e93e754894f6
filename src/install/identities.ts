/**
 * The identities a host decrypts its secrets with, from the manifest: ssh host keys (an ed25519
 * one also as the X25519 identity ssh-to-age derives from it, for files sops-nix users encrypted
 * to that recipient), age identity files, and keys sealed as systemd credentials (`nixseal
 * host-key seal/new`), decrypted by systemd-creds in memory; for sops files' pgp entries, GnuPG
 * homes and RSA ssh keys as the PGP keys sops-nix makes of them (src/sops/gpg.ts). Nothing can
 * ask for a passphrase here: activation has no terminal.
 *
 * A key that cannot be loaded is not fatal by itself (a host may list an rsa key it does not
 * have): its problem is reported when no identity loads at all, or when a secret finds no
 * identity that opens it.
 */
import * as fs from "node:fs";
import type { Identity } from "../age/index.js";
import { ioError, NixsealError, rethrowUnlessNixseal } from "../common/index.js";
import {
  MAX_SSH_KEY_FILE_SIZE,
  parseSshPrivateKey,
  SshEd25519Identity,
  type SshKeyIdentity,
  SshRsaIdentity,
} from "../ssh/index.js";
import type { ManifestIdentity } from "./manifest.js";

export interface LoadedIdentities {
  /** In the order to try: ssh keys and age keys as listed, then the ssh-to-age identities. */
  identities: Identity[];
  /** One per identity entry that could not be loaded. */
  problems: NixsealError[];
}

function readSshKey(file: string): Buffer {
  const fd = (() => {
    try {
      return fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (e) {
      // A host key may be a symlink (impermanence setups): then open it normally.
      if ((e as NodeJS.ErrnoException).code === "ELOOP") return fs.openSync(file, fs.constants.O_RDONLY);
      throw e;
    }
  })();
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > MAX_SSH_KEY_FILE_SIZE) {
      throw new NixsealError("KEY_FORMAT", `${file} is not an ssh private key file`, {
        file,
        hint: "identities of type ssh are OpenSSH private keys such as /etc/ssh/ssh_host_ed25519_key",
      });
    }
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

async function loadSsh(file: string): Promise<{ key: SshKeyIdentity; derived: Identity | null }> {
  let data: Buffer;
  try {
    data = readSshKey(file);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read the ssh key", file, e);
  }
  try {
    const key = parseSshPrivateKey(data, { file });
    if (key.encrypted) {
      throw new NixsealError("KEY_ENCRYPTED", `${file} is passphrase-protected`, {
        file,
        hint: "a host key used at activation cannot have a passphrase (there is no one to type it)",
      });
    }
    const unlocked = await key.unlock();
    // Made now, from the key already unlocked (src/keys' SshDerivedX25519Identity would unlock it
    // again on first use): src/keys is then not loaded for a host with only ssh keys.
    return {
      key: unlocked,
      derived:
        unlocked instanceof SshEd25519Identity
          ? unlocked.toX25519Identity(
              `age X25519 identity derived from the ${unlocked.description} (ssh-to-age)`,
            )
          : null,
    };
  } finally {
    data.fill(0);
  }
}

/**
 * sops-nix's `sops.gnupg.home`: gpg decrypts sops files' pgp entries with the keys there. src/sops
 * is loaded only for such a host. Nothing runs until a file's pgp entry must be opened.
 */
async function loadGpgHome(home: string): Promise<Identity> {
  let st: fs.Stats;
  try {
    st = fs.statSync(home);
  } catch (e) {
    throw ioError("use the GnuPG home", home, e);
  }
  if (!st.isDirectory()) {
    throw new NixsealError("GPG", `${home} is not a GnuPG home directory`, {
      file: home,
      hint: "a gpg identity's path is a GnuPG home (a directory such as /var/lib/sops or /root/.gnupg)",
    });
  }
  const { GpgHomeIdentity } = await import("../sops/index.js");
  return new GpgHomeIdentity(home);
}

/**
 * sops-nix's `sops.gnupg.sshKeyPaths`: an RSA ssh key as the PGP key sops-nix's ssh-to-pgp makes
 * of it (src/sops/ssh-to-pgp.ts). Only its fingerprint is computed now; gpg runs only when a
 * file's pgp entry names it.
 */
async function loadGpgSsh(file: string): Promise<Identity> {
  const { key } = await loadSsh(file);
  if (!(key instanceof SshRsaIdentity)) {
    throw new NixsealError("KEY_UNSUPPORTED", `${file} is not an RSA key`, {
      file,
      hint: "sops-nix's gnupg.sshKeyPaths takes RSA keys (such as /etc/ssh/ssh_host_rsa_key); list ed25519 keys in age.sshKeyPaths",
    });
  }
  const der = key.exportPkcs1();
  try {
    const { GpgSshIdentity } = await import("../sops/index.js");
    return new GpgSshIdentity(der, { file });
  } finally {
    der.fill(0);
  }
}

/** Loads every identity of the manifest; problems are returned, not thrown. */
export async function loadManifestIdentities(
  entries: readonly ManifestIdentity[],
): Promise<LoadedIdentities> {
  const direct: Identity[] = [];
  const derived: Identity[] = [];
  const problems: NixsealError[] = [];
  for (const entry of entries) {
    try {
      if (entry.type === "ssh") {
        const { key, derived: x } = await loadSsh(entry.path);
        direct.push(key);
        if (x !== null) derived.push(x);
      } else if (entry.type === "systemd-creds") {
        // An ssh-ed25519 key sealed this way brings its ssh-to-age identity along. src/creds is
        // loaded only for such a host: installs (and the decrypt worker) start faster without it.
        const { loadSealedIdentities } = await import("../creds/index.js");
        const sealed = await loadSealedIdentities({
          path: entry.path,
          ...(entry.name === null ? {} : { name: entry.name }),
        });
        direct.push(...sealed.identities);
      } else if (entry.type === "gpg") {
        direct.push(await loadGpgHome(entry.path));
      } else if (entry.type === "gpg-ssh") {
        direct.push(await loadGpgSsh(entry.path));
      } else {
        // No passphrase callback and no plugin UI: a plugin that must ask fails cleanly. src/keys
        // (identity files, plugins) is loaded only for a host that lists one.
        const { loadIdentities } = await import("../keys/index.js");
        direct.push(...(await loadIdentities([entry.path], {})));
      }
    } catch (e) {
      rethrowUnlessNixseal(e);
      const list = e.problems.length > 0 ? e.problems : [e];
      for (const p of list) problems.push(p.withFile(entry.path));
    }
  }
  return { identities: [...direct, ...derived], problems };
}

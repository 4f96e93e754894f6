/**
 * sops' pgp entries opened by the real gpg, as sops itself does (pgp/keysource.go: `gpg
 * --decrypt` of the armored data key): the ciphertext goes in on stdin, the data key comes back
 * on stdout (bounded), never through argv, the environment or a file. What gpg says about the
 * message is read from its status lines on a separate pipe (fd 3), not from its messages.
 *
 * Two identities: a GnuPG home as it is (sops-nix's `sops.gnupg.home`, or the user's own), and
 * an RSA ssh key made into the PGP key sops-nix makes of it (src/sops/ssh-to-pgp.ts), imported
 * into a fresh 0700 GnuPG home on a RAM-backed filesystem that is removed when the process ends
 * (docs/architecture.md, invariant 2). Processes (docs/architecture.md, invariant 6): one
 * listing of a home's secret keys per run, then one `gpg --decrypt` per wrapped data key that
 * names one of those keys; a data key already unwrapped (a file read twice) is taken from memory.
 */
import * as path from "node:path";
import {
  type Captured,
  captureOutput,
  childProcess,
  findExecutable,
  nodeFs as fs,
  NixsealError,
  rethrowUnlessNixseal,
  wipe,
} from "../common/index.js";
import type { PgpIdentity, PgpKeyEntry } from "./pgp.js";
import { sshRsaPgpFingerprint, sshRsaToPgp } from "./ssh-to-pgp.js";

/** A data key is 32 bytes (33 for a Shamir share); anything much longer is not one. */
const MAX_DATA_KEY_OUTPUT = 1024;
const MAX_LISTING_OUTPUT = 4 * 1024 * 1024;
const MAX_STATUS_OUTPUT = 256 * 1024;

export interface GpgOptions {
  /** The gpg program (default: `gpg` on PATH). */
  program?: string;
  /** May gpg ask for a passphrase through its pinentry? false at activation (no one to ask). */
  interactive?: boolean;
  /** The environment gpg runs in (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

function missingGpg(): NixsealError {
  return new NixsealError("GPG", "gpg is not installed (not found on PATH)", {
    hint: "install GnuPG (Debian: apt-get install gnupg; NixOS: the nixseal module adds it for gpg identities)",
  });
}

function gpgProgram(options: GpgOptions): string {
  if (options.program !== undefined) return options.program;
  const found = findExecutable("gpg", (options.env ?? process.env).PATH);
  if (found === null) throw missingGpg();
  return found;
}

interface GpgRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  /** gpg's messages (its last lines, for errors). */
  stderr: string;
  /** Status lines (--status-fd 3). */
  status: string[];
}

/** Runs gpg with `input` on stdin; stdout is bounded (a longer output fails the run). */
async function runGpg(
  program: string,
  args: string[],
  input: Uint8Array,
  maxOutput: number,
  options: GpgOptions,
): Promise<GpgRun> {
  let r: Captured;
  try {
    r = await captureOutput(program, ["--status-fd", "3", ...args], {
      input,
      env: { ...(options.env ?? process.env), LC_ALL: "C", LANGUAGE: "C" },
      maxStdout: maxOutput,
      fd3: MAX_STATUS_OUTPUT,
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw missingGpg();
    throw new NixsealError("GPG", `cannot run ${program}: ${code ?? (e as Error).message}`, {
      hint: "check that gpg is installed and executable",
    });
  }
  if (r.stopped !== null) {
    throw new NixsealError("GPG", `gpg printed more than ${maxOutput} bytes`, {
      hint: "the pgp entry does not hold a sops data key: the file is damaged",
    });
  }
  const status = r.fd3
    .split("\n")
    .filter((l) => l.startsWith("[GNUPG:] "))
    .map((l) => l.slice("[GNUPG:] ".length));
  return { code: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr, status };
}

/** gpg's last message line, without control characters, for an error. */
function lastMessage(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.replace(/[\x00-\x1f\x7f]/g, "").trim())
    .filter((l) => l !== "");
  const last = lines[lines.length - 1] ?? "no message";
  return last.length > 200 ? `${last.slice(0, 200)}...` : last;
}

function baseArgs(home: string, options: GpgOptions): string[] {
  const args = ["--homedir", home, "--batch", "--no-tty", "--quiet", "--no-permission-warning"];
  // At activation a passphrase-protected key fails at once instead of waiting for a pinentry.
  if (options.interactive !== true) args.push("--pinentry-mode", "error");
  return args;
}

/** The fingerprints of the secret keys (and their subkeys) a GnuPG home holds. */
async function secretKeyFingerprints(
  program: string,
  home: string,
  options: GpgOptions,
): Promise<Set<string>> {
  const r = await runGpg(
    program,
    [...baseArgs(home, options), "--with-colons", "--list-secret-keys"],
    new Uint8Array(0),
    MAX_LISTING_OUTPUT,
    options,
  );
  // An empty home lists nothing and exits 0; a missing or unreadable one fails.
  if (r.signal !== null || r.code !== 0) {
    throw new NixsealError("GPG", `gpg cannot list the secret keys of ${home}: ${lastMessage(r.stderr)}`, {
      hint: "check the GnuPG home (it must exist, belong to this user and be readable only by it)",
      file: home,
    });
  }
  const fps = new Set<string>();
  for (const line of r.stdout.toString("utf8").split("\n")) {
    const f = line.split(":");
    if (f[0] === "fpr" && f[9]) fps.add(f[9].toUpperCase());
  }
  return fps;
}

/** Whether a home's key fingerprint is the one a sops entry names (a full fingerprint, or its end). */
function names(have: Set<string>, fp: string): boolean {
  if (have.has(fp)) return true;
  for (const h of have) if (h.endsWith(fp)) return true;
  return false;
}

/**
 * Decrypts one armored data key in `home`; null if gpg has no key for it: it says so, or the
 * message is encrypted to none of `ownKeyIds` (the home's keys, as 16-digit key IDs) whatever
 * its `fp` claims.
 */
async function decryptEntry(
  program: string,
  home: string,
  entry: PgpKeyEntry,
  options: GpgOptions,
  ownKeyIds: ReadonlySet<string>,
): Promise<Uint8Array | null> {
  const r = await runGpg(
    program,
    [...baseArgs(home, options), "--decrypt"],
    Buffer.from(entry.enc, "utf8"),
    MAX_DATA_KEY_OUTPUT,
    options,
  );
  const has = (s: string) => r.status.some((l) => l === s || l.startsWith(`${s} `));
  if (
    r.code === 0 &&
    r.signal === null &&
    has("DECRYPTION_OKAY") &&
    has("BEGIN_DECRYPTION") &&
    !has("DECRYPTION_FAILED")
  ) {
    return r.stdout;
  }
  wipe(r.stdout);
  const encryptedTo = r.status
    .filter((l) => l.startsWith("ENC_TO "))
    .map((l) => (l.split(" ")[1] ?? "").toUpperCase());
  if (has("NO_SECKEY") || !encryptedTo.some((k) => ownKeyIds.has(k))) return null;
  throw new NixsealError(
    "GPG",
    `gpg cannot decrypt the data key of pgp ${entry.fp}: ${lastMessage(r.stderr)}`,
    {
      hint:
        options.interactive === true
          ? "check the key's passphrase and gpg-agent's pinentry; otherwise the file's pgp entry is damaged"
          : "a passphrase-protected key cannot be used at activation (no one to type it); otherwise the file's pgp entry is damaged",
    },
  );
}

/** Unwrapped data keys by (fingerprint, enc): a file read twice does not run gpg twice. */
class DataKeyCache {
  private readonly keys = new Map<string, Uint8Array>();

  get(entries: readonly PgpKeyEntry[]): Uint8Array | null {
    for (const e of entries) {
      const k = this.keys.get(`${e.fp}\0${e.enc}`);
      if (k !== undefined) return Uint8Array.from(k);
    }
    return null;
  }

  put(e: PgpKeyEntry, key: Uint8Array): void {
    this.keys.set(`${e.fp}\0${e.enc}`, Uint8Array.from(key));
  }

  wipe(): void {
    for (const k of this.keys.values()) wipe(k);
    this.keys.clear();
  }
}

/** A GnuPG home as it is (sops-nix's `sops.gnupg.home`, or the user's ~/.gnupg). */
export class GpgHomeIdentity implements PgpIdentity {
  readonly pgp = true as const;
  readonly description: string;
  private listing: Promise<Set<string>> | null = null;
  private readonly cache = new DataKeyCache();

  constructor(
    readonly home: string,
    private readonly options: GpgOptions = {},
  ) {
    this.description = `GnuPG home ${home}`;
  }

  /** Opens no age stanza: this identity is for sops' pgp entries only. */
  unwrapFileKey(): null {
    return null;
  }

  async unwrapPgp(entries: readonly PgpKeyEntry[]): Promise<Uint8Array | null> {
    const cached = this.cache.get(entries);
    if (cached !== null) return cached;
    const program = gpgProgram(this.options);
    this.listing ??= secretKeyFingerprints(program, this.home, this.options);
    const have = await this.listing;
    const keyIds = new Set([...have].map((f) => f.slice(-16)));
    // One try per fingerprint: a file repeating an entry cannot make gpg run more often.
    const tried = new Set<string>();
    for (const e of entries) {
      if (!names(have, e.fp) || tried.has(e.fp)) continue;
      tried.add(e.fp);
      const key = await decryptEntry(program, this.home, e, this.options, keyIds);
      if (key === null) continue;
      this.cache.put(e, key);
      return key;
    }
    return null;
  }

  close(): void {
    this.cache.wipe();
  }
}

// ---- an RSA ssh key as the PGP key sops-nix makes of it ---------------------------------------

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/** A fresh 0700 directory on a RAM-backed filesystem (never a disk: it holds a secret key). */
function ramDirectory(env: NodeJS.ProcessEnv): string {
  const bases = [env.XDG_RUNTIME_DIR, "/dev/shm", "/run"].filter(
    (d): d is string => !!d && path.isAbsolute(d),
  );
  for (const base of bases) {
    try {
      const type = Number(fs.statfsSync(base).type);
      if (type !== TMPFS_MAGIC && type !== RAMFS_MAGIC) continue;
      // mkdtemp makes the directory 0700.
      return fs.mkdtempSync(path.join(base, "nixseal-gpg-"));
    } catch {
      // Not writable here: the next one.
    }
  }
  throw new NixsealError("GPG", "no RAM-backed directory for a temporary GnuPG home", {
    hint: "the ssh key is imported into gpg in a tmpfs directory: mount /dev/shm or /run as tmpfs",
  });
}

/** The directories to remove when this process ends, whichever way (the CLI turns signals into exits). */
const liveHomes = new Set<string>();
let exitHookSet = false;

function removeHome(home: string, program: string | null): void {
  if (!liveHomes.delete(home)) return;
  if (program !== null) {
    // The agent gpg started for the home goes with it.
    const gpgconf = path.join(path.dirname(program), "gpgconf");
    childProcess().spawnSync(
      fs.existsSync(gpgconf) ? gpgconf : "gpgconf",
      ["--homedir", home, "--kill", "gpg-agent"],
      {
        stdio: "ignore",
        timeout: 10_000,
      },
    );
  }
  fs.rmSync(home, { recursive: true, force: true });
}

export interface GpgSshOptions extends GpgOptions {
  /** The key file, for messages. */
  file: string;
}

/**
 * sops-nix's `sops.gnupg.sshKeyPaths`: an RSA ssh key (given as PKCS#1 DER: the caller wipes
 * its copy) used as the PGP key of fingerprint `fingerprint`. Nothing is run until a file names
 * that fingerprint; then the key is imported into a temporary home once for the whole run.
 */
export class GpgSshIdentity implements PgpIdentity {
  readonly pgp = true as const;
  readonly description: string;
  readonly fingerprint: string;
  private pkcs1: Buffer | null;
  private home: Promise<{ home: string; program: string }> | null = null;
  private readonly cache = new DataKeyCache();

  constructor(
    pkcs1: Uint8Array,
    private readonly options: GpgSshOptions,
  ) {
    this.fingerprint = sshRsaPgpFingerprint(pkcs1);
    this.pkcs1 = Buffer.from(pkcs1);
    this.description = `ssh-rsa key ${options.file} as PGP key ${this.fingerprint}`;
  }

  unwrapFileKey(): null {
    return null;
  }

  private async setUp(): Promise<{ home: string; program: string }> {
    const program = gpgProgram(this.options);
    if (this.pkcs1 === null)
      throw new NixsealError("INTERNAL", "the GnuPG identity was closed", { hint: "" });
    const key = sshRsaToPgp(this.pkcs1);
    const home = ramDirectory(this.options.env ?? process.env);
    liveHomes.add(home);
    if (!exitHookSet) {
      exitHookSet = true;
      process.on("exit", () => {
        for (const h of [...liveHomes]) removeHome(h, program);
      });
    }
    try {
      const r = await runGpg(
        program,
        [...baseArgs(home, this.options), "--import"],
        key.secretKey,
        MAX_LISTING_OUTPUT,
        this.options,
      );
      if (r.code !== 0 || !r.status.some((l) => l.startsWith("IMPORT_OK "))) {
        throw new NixsealError(
          "GPG",
          `gpg cannot import ${this.options.file} as a PGP key: ${lastMessage(r.stderr)}`,
          {
            hint: "check the gpg version (GnuPG 2.1 or later is needed)",
            file: this.options.file,
          },
        );
      }
    } catch (e) {
      removeHome(home, program);
      throw e;
    } finally {
      wipe(key.secretKey);
    }
    return { home, program };
  }

  async unwrapPgp(entries: readonly PgpKeyEntry[]): Promise<Uint8Array | null> {
    // Only the first entry for this key: a file repeating it cannot make gpg run more often.
    const mine = entries.filter((e) => this.fingerprint.endsWith(e.fp)).slice(0, 1);
    if (mine.length === 0) return null;
    const cached = this.cache.get(mine);
    if (cached !== null) return cached;
    this.home ??= this.setUp();
    let at: { home: string; program: string };
    try {
      at = await this.home;
    } catch (e) {
      this.home = null;
      rethrowUnlessNixseal(e);
      throw e;
    }
    for (const e of mine) {
      const key = await decryptEntry(
        at.program,
        at.home,
        e,
        this.options,
        new Set([this.fingerprint.slice(-16)]),
      );
      if (key === null) continue;
      this.cache.put(e, key);
      return key;
    }
    return null;
  }

  /** Removes the temporary home and forgets the key. */
  async close(): Promise<void> {
    this.cache.wipe();
    if (this.pkcs1 !== null) wipe(this.pkcs1);
    this.pkcs1 = null;
    const h = this.home;
    this.home = null;
    if (h !== null) {
      try {
        const at = await h;
        removeHome(at.home, at.program);
      } catch {
        // It was never made.
      }
    }
  }
}

/**
 * systemd credentials through the real `systemd-creds` program (systemd >= 250): encrypt a
 * plaintext with the host key and/or the TPM2 into a credential file that a unit loads with
 * `LoadCredentialEncrypted=`, and decrypt one in memory.
 *
 * The plaintext only ever travels through a pipe (the child's standard input or output), never a
 * file or argv. The ciphertext comes back on standard output and nixseal writes it itself, with
 * AtomicFile: created with its final mode in the target's directory, fsync, rename (systemd-creds
 * writing OUTPUT itself would create it with the umask's mode). systemd-creds offers no batch mode,
 * so this is one process per credential (about 10 ms each with the host key); callers run it only
 * for credentials that changed (see credstore.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  AtomicFile,
  asBuffer,
  type Captured,
  CREDENTIAL_KEYS,
  type CredentialKey,
  captureOutput,
  findExecutable,
  ioError,
  NixsealError,
  validateCredentialName,
  wipe,
} from "../common/index.js";

// The rules of names and keys live in the validation kit, so that the activation manifest checks
// them without loading this folder (src/common/validation.ts).
export { CREDENTIAL_KEYS, type CredentialKey, validateCredentialName };

/** systemd's CREDENTIAL_SIZE_MAX: the most plaintext a credential may hold (1 MiB). */
export const MAX_CREDENTIAL_SIZE = 1024 * 1024;
/**
 * systemd's CREDENTIAL_ENCRYPTED_SIZE_MAX (1 MiB + 128 KiB): the most the service manager and
 * `systemd-creds decrypt` read of an encrypted credential file. The file is base64, so in practice
 * a credential holds at most about 850 KiB (873 587 bytes with the host key, systemd 252).
 */
export const MAX_ENCRYPTED_CREDENTIAL_SIZE = 1024 * 1024 + 128 * 1024;

/** Where systemd-creds is looked for when it is not on PATH (NixOS activation, minimal PATHs). */
const FALLBACK_LOCATIONS = [
  "/run/current-system/sw/bin/systemd-creds",
  "/usr/bin/systemd-creds",
  "/bin/systemd-creds",
];

export interface SystemdCredsOptions {
  /** The systemd-creds program (default: found on PATH, else the usual locations). */
  program?: string;
  /**
   * --tpm2-device=: a device path (/dev/tpmrm0) or a TCTI spec such as "swtpm:port=2321"
   * (default: systemd's choice, the first /dev/tpmrm* device).
   */
  tpm2Device?: string;
  /** The environment of systemd-creds (default: ours). It never holds a secret. */
  env?: NodeJS.ProcessEnv;
}

export interface EncryptCredentialOptions extends SystemdCredsOptions {
  withKey: CredentialKey;
  /** --tpm2-pcrs=: PCRs the TPM2 binding is sealed against, "7" or "0+7" (default: systemd's). */
  tpm2Pcrs?: string;
}

export interface WriteCredentialOptions extends EncryptCredentialOptions {
  /** The credential file to write (atomically). */
  output: string;
  /** Its mode, set at creation (default 0o600). */
  mode?: number;
  /** Refuse to replace an existing file (for sealed keys: never destroy the only copy). */
  noClobber?: boolean;
}

/** What a credential file says about the keys it is sealed with (its first 16 bytes). */
export type SealedWith = "host" | "tpm2" | "host+tpm2" | "tpm2-with-public-key" | "host+tpm2-with-public-key";

// systemd src/shared/creds-util.h: the 128-bit ids that open an encrypted credential.
const SEAL_IDS: ReadonlyMap<string, SealedWith | "none"> = new Map([
  ["5a1c6a86df9d4096b1d5a65e0862f19a", "host"],
  ["0c7cc07b117645919c4b0bea08bc20fe", "tpm2"],
  ["93a894094874449090caf2fc93cab553", "host+tpm2"],
  ["faf7eb9341e3412ca1a436f95a29362f", "tpm2-with-public-key"],
  ["af49501ef08b4b5a9cbdb6f12ce6e9a1", "host+tpm2-with-public-key"],
  // --with-key=tpm2-absent / auto-initrd without a TPM: a fixed zero key, no secrecy at all.
  ["058469daf6f54324800549da0f8ea2fb", "none"],
]);

export function isCredentialKey(s: string): s is CredentialKey {
  return (CREDENTIAL_KEYS as readonly string[]).includes(s);
}

/** The path of systemd-creds, or a clear error saying how to get it. */
export function systemdCredsProgram(options: SystemdCredsOptions = {}): string {
  if (options.program !== undefined) return options.program;
  const found =
    findExecutable("systemd-creds", (options.env ?? process.env).PATH) ??
    FALLBACK_LOCATIONS.find((p) => {
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  if (found === undefined) throw missingProgram();
  return found;
}

function missingProgram(): NixsealError {
  return new NixsealError("CREDS_UNAVAILABLE", "systemd-creds is not installed", {
    hint: "systemd credentials need systemd >= 250 (Debian: the systemd package); without it use the plain services wiring (LoadCredential=)",
  });
}

/** Which keys a credential file's content is sealed with, or null if it is not a credential. */
export function sealedWith(credential: Uint8Array): SealedWith | "none" | null {
  const head = asBuffer(credential).subarray(0, 64).toString("latin1").replace(/\s/g, "");
  let id: Buffer;
  try {
    id = Buffer.from(head.slice(0, 24), "base64");
  } catch {
    return null;
  }
  if (id.length < 16) return null;
  return SEAL_IDS.get(id.subarray(0, 16).toString("hex")) ?? null;
}

type RunResult = Pick<Captured, "code" | "signal" | "stdout" | "stderr">;

/**
 * Runs systemd-creds with `input` on its standard input and collects its standard output (at
 * most maxOutput bytes; a longer output is an error).
 */
async function runSystemdCreds(
  args: string[],
  input: Uint8Array,
  maxOutput: number,
  options: SystemdCredsOptions,
): Promise<RunResult> {
  const program = systemdCredsProgram(options);
  let r: Captured;
  try {
    r = await captureOutput(program, args, { input, env: options.env, maxStdout: maxOutput });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw missingProgram();
    throw new NixsealError("CREDS_UNAVAILABLE", `cannot run ${program}: ${code ?? (e as Error).message}`, {
      hint: "check that systemd-creds is installed and executable",
    });
  }
  if (r.stopped !== null) {
    throw new NixsealError("CREDS_TOO_LARGE", `systemd-creds printed more than ${maxOutput} bytes`, {
      hint: "credentials hold at most 1 MiB",
    });
  }
  return r;
}

/** systemd-creds' messages, without the warnings it prints on success too. */
function messagesOf(stderr: string): string[] {
  return stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .filter(
      (l) =>
        !/not located on encrypted media|PCR policy|PCRs are not initialized|selected PCRs are valid/i.test(
          l,
        ),
    );
}

/** A failed systemd-creds run as a NixsealError with a hint; `what` names the credential. */
function failure(r: RunResult, what: string, operation: "encrypt" | "decrypt", file?: string): NixsealError {
  if (r.signal) {
    return new NixsealError("CREDS_UNAVAILABLE", `systemd-creds was killed by ${r.signal} (${what})`, {
      file,
      hint: "run it again; check the system log if it keeps failing",
    });
  }
  const messages = messagesOf(r.stderr);
  const all = messages.join("\n");
  const last = messages.at(-1) ?? "no error message";
  const reason = last.length > 200 ? `${last.slice(0, 200)}...` : last;
  const said = `systemd-creds: ${reason}`;
  if (
    operation === "decrypt" &&
    /in TPM|integrity check failed|policy check failed|Failed to unseal/i.test(all)
  ) {
    return new NixsealError("CREDS_DECRYPT", `${what}: the TPM2 refuses to unseal it (${said})`, {
      file,
      hint: "it was sealed with another TPM2, or the PCR state it is bound to changed (firmware or Secure Boot update); seal it again on this host",
    });
  }
  if (/temporary file system/i.test(all)) {
    return new NixsealError(
      "CREDS_UNAVAILABLE",
      `${what}: no TPM2, and the host key is on a temporary file system (${said})`,
      {
        file,
        hint: "keep /var/lib/systemd/credential.secret on persistent storage (impermanence: persist it), or seal with --with-key=host knowing it is lost at reboot",
      },
    );
  }
  if (
    /TPM2 support not installed|Failed to initialize TCTI|TPM2 not supported|No TPM2|Failed to find TPM2|TPM2 .*not available/i.test(
      all,
    )
  ) {
    return new NixsealError("CREDS_NO_TPM", `${what}: no usable TPM2 (${said})`, {
      file,
      hint:
        operation === "encrypt"
          ? "this host has no TPM2 (or systemd lacks its tpm2-tss libraries): use --with-key=host or auto"
          : "the credential is bound to a TPM2 that is not available here; it only decrypts on the machine that sealed it",
    });
  }
  if (/Plaintext too long|Data too long|too large/i.test(all)) {
    return new NixsealError("CREDS_TOO_LARGE", `${what}: too large for a systemd credential (${said})`, {
      file,
      hint: "systemd credentials hold at most about 850 KiB once encrypted; pass large data as a file secret instead",
    });
  }
  if (/Permission denied|Operation not permitted|Access denied/i.test(all)) {
    return new NixsealError("CREDS_UNAVAILABLE", `${what}: permission denied (${said})`, {
      file,
      hint: "systemd credentials with the host key need root (the key is /var/lib/systemd/credential.secret, 0400 root)",
    });
  }
  if (operation === "decrypt") {
    if (/Embedded credential name .* does not match/i.test(all)) {
      return new NixsealError("CREDS_DECRYPT", `${what}: sealed under another name (${said})`, {
        file,
        hint: "a credential only decrypts under the name it was sealed with: use that name, or seal it again under this one",
      });
    }
    if (/Failed to determine local credential key|credential\.secret/i.test(all)) {
      return new NixsealError("CREDS_DECRYPT", `${what}: this host has no credential host key (${said})`, {
        file,
        hint: "the credential was sealed on another host, or /var/lib/systemd/credential.secret was removed; seal it again on this host",
      });
    }
    if (/Decryption failed|incorrect key|authentication/i.test(all)) {
      return new NixsealError("CREDS_DECRYPT", `${what}: does not decrypt with this host's keys (${said})`, {
        file,
        hint: "it was sealed on another host or with another TPM, the host key changed, or the file was modified; seal it again on this host",
      });
    }
    if (
      /Unknown encryption format|corrupted|too short|Failed to read encrypted credential|Invalid argument|Bad message|base64/i.test(
        all,
      )
    ) {
      return new NixsealError(
        "CREDS_DECRYPT",
        `${what}: not a valid encrypted credential, corrupted or truncated (${said})`,
        {
          file,
          hint: "restore the file from a backup or seal the credential again (nixseal host-key seal / new)",
        },
      );
    }
  }
  return new NixsealError(
    "CREDS_UNAVAILABLE",
    `${what}: systemd-creds ${operation} failed with status ${r.code} (${said})`,
    {
      file,
      hint: "run 'systemd-creds has-tpm2' and check that systemd >= 250 is installed and this runs as root",
    },
  );
}

function checkPlaintextSize(name: string, plaintext: Uint8Array): void {
  if (plaintext.length > MAX_CREDENTIAL_SIZE) {
    throw new NixsealError(
      "CREDS_TOO_LARGE",
      `credential ${name} is ${plaintext.length} bytes, more than systemd's limit of 1 MiB`,
      {
        hint: "systemd credentials hold at most about 850 KiB once encrypted; pass large data as a file secret instead",
      },
    );
  }
}

function tpmArgs(options: EncryptCredentialOptions | SystemdCredsOptions): string[] {
  const args: string[] = [];
  if (options.tpm2Device !== undefined) {
    if (options.tpm2Device === "" || /[\n\0]/.test(options.tpm2Device)) {
      throw new NixsealError("USAGE", "invalid TPM2 device", { hint: "a device path such as /dev/tpmrm0" });
    }
    args.push(`--tpm2-device=${options.tpm2Device}`);
  }
  const pcrs = (options as EncryptCredentialOptions).tpm2Pcrs;
  if (pcrs !== undefined) {
    if (!/^\d{1,2}(\+\d{1,2})*$/.test(pcrs)) {
      throw new NixsealError("USAGE", `invalid TPM2 PCR list "${pcrs.slice(0, 40)}"`, {
        hint: 'PCR indexes joined by "+", such as "7" or "0+7"',
      });
    }
    args.push(`--tpm2-pcrs=${pcrs}`);
  }
  return args;
}

/**
 * Encrypts `plaintext` as credential `name` and returns the credential (base64 text, as
 * `systemd-creds encrypt` writes it; not secret). The plaintext goes through a pipe; the caller
 * still owns it and wipes it.
 */
export async function encryptCredentialBytes(
  name: string,
  plaintext: Uint8Array,
  options: EncryptCredentialOptions,
): Promise<Buffer> {
  validateCredentialName(name);
  if (!isCredentialKey(options.withKey)) {
    throw new NixsealError("USAGE", `unknown key type "${String(options.withKey).slice(0, 20)}"`, {
      hint: `one of ${CREDENTIAL_KEYS.join(", ")}`,
    });
  }
  checkPlaintextSize(name, plaintext);
  const args = ["encrypt", `--name=${name}`, `--with-key=${options.withKey}`, ...tpmArgs(options), "-", "-"];
  const r = await runSystemdCreds(args, plaintext, 4 * MAX_CREDENTIAL_SIZE, options);
  if (r.code !== 0) throw failure(r, `credential ${name}`, "encrypt");
  const kind = sealedWith(r.stdout);
  if (kind === null || kind === "none") {
    // A zero key (tpm2-absent) protects nothing: never store a plaintext in disguise.
    throw new NixsealError(
      "CREDS_UNAVAILABLE",
      `credential ${name}: systemd-creds did not seal it with a real key (${kind ?? "unknown format"})`,
      { hint: "use --with-key=host or tpm2 on a host with /var/lib/systemd on persistent storage" },
    );
  }
  if (r.stdout.length > MAX_ENCRYPTED_CREDENTIAL_SIZE) {
    throw new NixsealError(
      "CREDS_TOO_LARGE",
      `credential ${name}: ${plaintext.length} bytes encrypt to ${r.stdout.length}, more than the ${MAX_ENCRYPTED_CREDENTIAL_SIZE} bytes systemd reads`,
      {
        hint: "systemd credentials hold at most about 850 KiB once encrypted; pass large data as a file secret instead",
      },
    );
  }
  return r.stdout;
}

/**
 * Encrypts `plaintext` as credential `name` into `options.output`: written atomically, created
 * with its final mode (default 0600). Returns the keys it is sealed with.
 */
export async function encryptCredential(
  name: string,
  plaintext: Uint8Array,
  options: WriteCredentialOptions,
): Promise<SealedWith> {
  const credential = await encryptCredentialBytes(name, plaintext, options);
  const file = AtomicFile.open(options.output, options.mode ?? 0o600);
  file.write(credential);
  if (options.noClobber) file.commitNoClobber();
  else file.commit();
  return sealedWith(credential) as SealedWith;
}

/** Reads a credential file (size-limited, not through a symlink). */
export function readCredentialFile(file: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ELOOP") {
      throw new NixsealError("CREDS_STORE", `${file} is a symbolic link`, {
        file,
        hint: "point at the credential file itself",
      });
    }
    throw ioError("read", file, e);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      throw new NixsealError("IO", `${file} is not a regular file`, { file, hint: "check the path" });
    }
    if (st.size > MAX_ENCRYPTED_CREDENTIAL_SIZE) {
      throw new NixsealError("CREDS_DECRYPT", `${file} is larger than any systemd credential`, {
        file,
        hint: "check the path: this is not an encrypted credential",
      });
    }
    return fs.readFileSync(fd);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read", file, e);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Decrypts an encrypted credential in memory: `systemd-creds decrypt --name=NAME - -`, the
 * credential on standard input, the plaintext from standard output. The caller wipes the result.
 */
export async function decryptCredentialBytes(
  name: string,
  credential: Uint8Array,
  options: SystemdCredsOptions & { file?: string } = {},
): Promise<Uint8Array> {
  validateCredentialName(name);
  const what = options.file ?? `credential ${name}`;
  if (sealedWith(credential) === null) {
    throw new NixsealError("CREDS_DECRYPT", `${what}: not an encrypted systemd credential`, {
      file: options.file,
      hint: "restore the file from a backup or seal the credential again (nixseal host-key seal / new)",
    });
  }
  const args = ["decrypt", `--name=${name}`, "--newline=no", ...tpmArgs(options), "-", "-"];
  const r = await runSystemdCreds(args, credential, MAX_CREDENTIAL_SIZE, options);
  if (r.code !== 0) {
    wipe(r.stdout);
    throw failure(r, what, "decrypt", options.file);
  }
  return r.stdout;
}

/** Decrypts the credential file `file`, sealed under `name` (default: the file's name). */
export async function decryptCredential(
  name: string | undefined,
  file: string,
  options: SystemdCredsOptions = {},
): Promise<Uint8Array> {
  const credential = readCredentialFile(file);
  return decryptCredentialBytes(name ?? path.basename(file), credential, { ...options, file });
}

/**
 * The one error family of nixseal. Lower layers throw these; only `src/cli/` turns them into
 * text and exit codes. A message never contains secret material: callers pass file names,
 * secret names and recipient strings, never plaintext or key bytes.
 */

/** Stable machine-readable codes. Keep in sync with the table in README.md. */
export type ErrorCode =
  // age format
  | "AGE_HEADER" // the header does not parse (not an age file, truncated, non-canonical)
  | "AGE_ARMOR" // the ASCII armor does not parse
  | "AGE_NO_MATCH" // no identity could unwrap any recipient stanza
  | "AGE_HMAC" // a file key was unwrapped but the header MAC does not verify
  | "AGE_PAYLOAD" // the STREAM payload is truncated, tampered or has trailing data
  | "AGE_STANZA" // a stanza of a known type is malformed
  | "AGE_RECIPIENT" // a recipient string/file cannot be parsed or used
  | "AGE_IDENTITY" // an identity string/file cannot be parsed or used
  | "AGE_PASSPHRASE" // passphrase missing, wrong or work factor too high
  | "AGE_PLUGIN" // an age-plugin-* program failed or misbehaved
  // keys
  | "KEY_FORMAT" // an ssh/age key file is malformed
  | "KEY_ENCRYPTED" // a key is passphrase-protected and no passphrase is available
  | "KEY_UNSUPPORTED" // a key type we do not support
  // the secrets repository
  | "RULES" // no rules file, or it does not evaluate / validate
  | "NOT_IN_RULES" // a secret name that the rules do not list
  | "DRIFT" // files and rules disagree (nixseal check)
  // sops
  | "SOPS_SHAMIR" // Shamir split/combine of a sops data key: bad parameters or malformed shares
  | "SOPS_CONFIG" // a .sops.yaml is missing, malformed, or has no rule for the file
  // sops files
  | "SOPS_FORMAT" // a sops document (YAML, JSON, dotenv, INI, binary) does not parse or has a bad shape
  | "SOPS_METADATA" // the `sops` metadata block is missing, malformed or inconsistent
  | "SOPS_MAC" // the MAC over the values does not verify (tampered values, MAC or lastmodified)
  | "SOPS_DECRYPT" // a value does not decrypt (tampered, or encrypted with another data key)
  | "SOPS_NO_KEY" // no identity could unwrap the data key from any key group
  | "SOPS_ENCRYPTED" // encrypt was given a file that is already encrypted
  | "SOPS_RESERVED" // the document uses the reserved top-level key `sops` (or `sops_` in dotenv)
  | "GPG" // gpg is missing, failed, or its home has none of a sops file's pgp keys
  | "SOPS_UNSUPPORTED" // a feature of the file nixseal cannot handle (e.g. only PGP/KMS keys)
  // systemd credentials
  | "CREDS_UNAVAILABLE" // systemd-creds is missing, not permitted, or failed for a reason of its own
  | "CREDS_NO_TPM" // a TPM2 binding was asked for and no usable TPM2 is there
  | "CREDS_DECRYPT" // a credential does not decrypt: other host key or TPM, other name, corrupted
  | "CREDS_TOO_LARGE" // a credential over systemd's size limit
  | "CREDS_NAME" // not a valid credential name
  | "CREDS_STORE" // the credential store directory is unsafe or its records are malformed
  // activation (nixseal install)
  | "MANIFEST" // the activation manifest is malformed or invalid
  | "INSTALL" // a secret cannot be installed (unknown owner, a path in the way, a template's secret failed)
  // audit
  | "AUDIT_NO_SECRETS" // no secret could be decrypted: nothing to compare the store against
  | "AUDIT_STORE" // nix-store could not list a closure or its derivations
  // build-time secrets
  | "DRV_FORMAT" // a .drv file does not parse (ATerm) or is too large
  | "BUILD_POLICY" // the build-secrets policy file is missing or invalid
  | "BUILD_SECRET" // a build secret cannot be provided (refused, not decryptable, hook not set up)
  | "AGENT_CONFIG" // the user's agent.json (where `nixseal agent` gets build secrets) is invalid
  | "AGENT_RUNNING" // another `nixseal agent` of this user already answers on its socket
  // host bootstrap (nixseal host add)
  | "HOST" // a host cannot be added: unreachable, its host key contradicts known_hosts, the remote command failed
  // generated secrets (nixseal generate)
  | "GENERATORS" // generators.nix (or the module's generators JSON) is malformed or invalid
  | "GENERATE" // a generator failed (its script, its import command, its outputs) or a prompt has no answer
  // deploy-time keys (nixseal push / receive)
  | "PUSH_PLAN" // the push plan is malformed or invalid
  | "PUSH" // a key's source failed, a host could not be pushed to, or a pushed stream is bad
  // general
  | "IO" // a file could not be read or written
  | "USAGE" // the command line is wrong
  | "NO_TERMINAL" // the command needs a terminal (to ask, or to run the default editor) and has none
  | "INTERNAL";

export interface NixsealErrorOptions {
  /** What the user can do about it, one short sentence. */
  hint?: string;
  /** The file the problem is about, if any. */
  file?: string;
  cause?: unknown;
}

export class NixsealError extends Error {
  override readonly name = "NixsealError";
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly file: string | undefined;

  constructor(code: ErrorCode, message: string, options: NixsealErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
    this.file = options.file;
  }

  /**
   * Several problems found in one run (docs/architecture.md, invariant 4: report all, not just the first).
   * The CLI prints each of `problems`; with one problem, that problem itself is returned.
   */
  static many(problems: NixsealError[]): NixsealError {
    if (problems.length === 1) return problems[0]!;
    const e = new NixsealError(problems[0]!.code, `${problems.length} problems found`, {
      hint: problems[0]!.hint,
    });
    e.problems = problems;
    return e;
  }

  /** Set by many(): the individual problems. */
  problems: NixsealError[] = [];

  /** A copy of this error that names the file it is about (if it does not name one yet). */
  withFile(file: string): NixsealError {
    if (this.file !== undefined) return this;
    const e = new NixsealError(this.code, this.message, { hint: this.hint, file, cause: this.cause });
    return e;
  }
}

export function isNixsealError(e: unknown): e is NixsealError {
  return e instanceof NixsealError;
}

/**
 * For `catch (e)` blocks that handle nixseal's own errors (report, collect, go on) and let
 * anything else, a bug, propagate unchanged: after this call `e` is a NixsealError.
 */
export function rethrowUnlessNixseal(e: unknown): asserts e is NixsealError {
  if (!(e instanceof NixsealError)) throw e;
}

/** Wraps a Node.js system error (ENOENT, EACCES, ...) into a NixsealError naming the file. */
export function ioError(action: string, file: string, cause: unknown): NixsealError {
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  const what =
    errno === "ENOENT"
      ? "no such file"
      : errno === "EACCES" || errno === "EPERM"
        ? "permission denied"
        : errno === "EISDIR"
          ? "is a directory"
          : errno === "ENOSPC"
            ? "no space left on device"
            : errno === "EROFS"
              ? "read-only file system"
              : errno === "EDQUOT"
                ? "disk quota exceeded"
                : (errno ?? "I/O error");
  const hint =
    errno === "ENOENT"
      ? "check the path"
      : errno === "EACCES" || errno === "EPERM"
        ? "check the file's owner and mode"
        : errno === "EROFS"
          ? "the file system is mounted read-only: remount it read-write or work in a writable copy"
          : undefined;
  return new NixsealError("IO", `cannot ${action} ${file}: ${what}`, { file, hint, cause });
}

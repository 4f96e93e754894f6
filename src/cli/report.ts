/**
 * How errors reach people: one line per problem naming the file and what went wrong, then a
 * hint line. The only place (with the commands) that writes to the terminal.
 */
import { isNixsealError, type NixsealError } from "../common/index.js";

export function useColor(stream: NodeJS.WriteStream): boolean {
  return !process.env.NO_COLOR && stream.isTTY === true && process.env.TERM !== "dumb";
}

function paint(code: string, s: string): string {
  return useColor(process.stderr) ? `\x1b[${code}m${s}\x1b[0m` : s;
}

/** Control characters from file contents or plugins must not drive the terminal. */
export function sanitize(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, "?");
}

/**
 * The last line of defence for "never echo key material" (docs/threat-model.md): an age or
 * plugin secret key in any case, with at least 8 characters of key data, is replaced wherever it
 * shows up in a message. (The messages themselves quote no more than a key's type prefix; this
 * catches what a future message might let through. "AGE-SECRET-KEY-1..." in a hint stays.)
 */
export function redactSecrets(s: string): string {
  return s.replace(
    /(AGE-SECRET-KEY-|AGE-PLUGIN-)[A-Za-z0-9_+-]*1[A-Za-z0-9]{8,}/gi,
    "[secret key not shown]",
  );
}

/**
 * A command-line argument quoted in a message: shortened, and not at all when it looks like a
 * secret key (the marks of src/keys/key-types.ts, looksLikeSecretKey; repeated here so that
 * main.ts need not load the key code to report a typo).
 */
export function quoteArg(s: string, max = 40): string {
  if (/AGE-SECRET-KEY-|AGE-PLUGIN-|-----BEGIN/i.test(s)) return "(not shown: it looks like a secret key)";
  return sanitize(JSON.stringify(s.length > max ? `${s.slice(0, max)}...` : s));
}

/** What reaches a person or a log: no secret key, no control character. */
export function safeText(s: string): string {
  return sanitize(redactSecrets(s));
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function lineOf(e: NixsealError): string {
  const named =
    e.file !== undefined && new RegExp(`(^|[\\s"'])${escapeRegExp(e.file)}($|[\\s"':,])`).test(e.message);
  const msg = e.file !== undefined && !named ? `${e.file}: ${e.message}` : e.message;
  return safeText(msg);
}

export function printError(prog: string, err: unknown): void {
  if (!isNixsealError(err)) {
    const e = err as Error;
    process.stderr.write(
      `${prog}: ${paint("31", "internal error:")} ${safeText(String(e?.message ?? err))}\n`,
    );
    if (process.env.NIXSEAL_DEBUG) process.stderr.write(`${String(e?.stack)}\n`);
    process.stderr.write(
      `${prog}: hint: this is a bug in nixseal; please report it with the command you ran\n`,
    );
    return;
  }
  const list = err.problems.length > 0 ? err.problems : [err];
  for (const p of list) {
    process.stderr.write(`${prog}: ${paint("31", "error:")} ${lineOf(p)}\n`);
    if (p.hint) process.stderr.write(`${prog}: ${paint("33", "hint:")} ${safeText(p.hint)}\n`);
  }
}

export function printWarning(prog: string, message: string): void {
  process.stderr.write(`${prog}: ${paint("33", "warning:")} ${safeText(message)}\n`);
}

export interface ErrorJson {
  code: string;
  message: string;
  hint: string | null;
  file: string | null;
}

/** One problem as --json shows it (the same redaction as on the terminal). */
export function errorJson(e: NixsealError): ErrorJson {
  return {
    code: e.code,
    message: redactSecrets(e.message),
    hint: e.hint === undefined ? null : redactSecrets(e.hint),
    file: e.file ?? null,
  };
}

/**
 * The --json form of a failure: one line on stdout, `{"error": {"code", "message", "hint",
 * "file"}}`, plus `"problems": [...]` (each in the same form) when one run found several.
 * Anything but a NixsealError is a bug: code INTERNAL.
 */
export function failureJson(err: unknown): string {
  return `${JSON.stringify({ error: failureObject(err) })}\n`;
}

/** The object under "error" in failureJson. */
export function failureObject(err: unknown): ErrorJson & { problems?: ErrorJson[] } {
  let error: ErrorJson & { problems?: ErrorJson[] };
  if (isNixsealError(err)) {
    const list = err.problems.length > 0 ? err.problems : [err];
    error = errorJson(list.length === 1 ? list[0]! : err);
    if (list.length > 1) error.problems = list.map(errorJson);
  } else {
    error = {
      code: "INTERNAL",
      message: redactSecrets(String((err as Error)?.message ?? err)),
      hint: "this is a bug in nixseal; please report it with the command you ran",
      file: null,
    };
  }
  return error;
}

/**
 * Reports a failure: the error lines on stderr and, with --json, the JSON form on stdout (so a
 * script reading stdout always gets one object).
 */
export function reportFailure(prog: string, err: unknown, json: boolean): void {
  printError(prog, err);
  if (json) process.stdout.write(failureJson(err));
}

/** Did the user ask for --json (before any "--")? */
export function wantsJson(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === "--") return false;
    if (a === "--json") return true;
  }
  return false;
}

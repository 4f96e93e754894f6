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

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function lineOf(e: NixsealError): string {
  const named =
    e.file !== undefined && new RegExp(`(^|[\\s"'])${escapeRegExp(e.file)}($|[\\s"':,])`).test(e.message);
  const msg = e.file !== undefined && !named ? `${e.file}: ${e.message}` : e.message;
  return sanitize(msg);
}

export function printError(prog: string, err: unknown): void {
  if (!isNixsealError(err)) {
    const e = err as Error;
    process.stderr.write(
      `${prog}: ${paint("31", "internal error:")} ${sanitize(String(e?.message ?? err))}\n`,
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
    if (p.hint) process.stderr.write(`${prog}: ${paint("33", "hint:")} ${sanitize(p.hint)}\n`);
  }
}

export function printWarning(prog: string, message: string): void {
  process.stderr.write(`${prog}: ${paint("33", "warning:")} ${sanitize(message)}\n`);
}

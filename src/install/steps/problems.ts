/**
 * The one problems collector an install's steps share. Every step adds what went wrong and goes
 * on where it can, so that one run reports every problem; the installer looks at `any` between
 * steps to decide whether the new generation may become active. The list is the report's own
 * (InstallReport.problems), so nothing needs copying at the end.
 */
import { NixsealError } from "../../common/index.js";
import type { ManifestEntry } from "../manifest.js";

export function labelOf(e: { kind: string; name: string }): string {
  return `${e.kind} "${e.name}"`;
}

export class InstallProblems {
  constructor(readonly list: NixsealError[] = []) {}

  get any(): boolean {
    return this.list.length > 0;
  }

  add(...problems: NixsealError[]): void {
    this.list.push(...problems);
  }

  /** A problem of the install itself (entry null) or of one entry, with its hint. */
  install(entry: ManifestEntry | null, message: string, hint: string, file?: string): void {
    this.list.push(
      new NixsealError("INSTALL", entry === null ? message : `${labelOf(entry)}: ${message}`, {
        hint,
        file,
      }),
    );
  }

  /** A problem about one entry (or several sharing a file): names them, the file, and the cause. */
  about(entries: readonly ManifestEntry[], e: NixsealError, file?: string): void {
    const who = entries.map(labelOf).join(", ");
    let message = e.message;
    if (file !== undefined && message.startsWith(`${file}: `)) message = message.slice(file.length + 2);
    const where = file === undefined ? "" : ` from ${file}`;
    this.list.push(
      new NixsealError(e.code, `${who}${where}: ${message}`, {
        hint: e.hint ?? "see the message above",
        file: file ?? e.file,
      }),
    );
  }
}

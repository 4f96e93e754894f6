/**
 * Running the system's OpenSSH programs (ssh, ssh-keyscan, ssh-keygen) for host bootstrap: argv
 * only (no shell on this side), bounded output, a time limit, and what went wrong as one line.
 * Host key checking is never turned off: the user's ssh configuration and known_hosts decide.
 */
import { spawn } from "node:child_process";
import { NixsealError } from "../common/index.js";

const MAX_OUTPUT = 256 * 1024;

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `program args`, stdin closed; ENOENT is an error naming the program. */
export function runCommand(
  program: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outSize = 0;
    let errSize = 0;
    child.stdout.on("data", (b: Buffer) => {
      outSize += b.length;
      if (outSize <= MAX_OUTPUT) out.push(b);
      else child.kill("SIGKILL");
    });
    child.stderr.on("data", (b: Buffer) => {
      errSize += b.length;
      if (errSize <= MAX_OUTPUT) err.push(b);
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new NixsealError(
          "HOST",
          e.code === "ENOENT" ? `${program} not found` : `cannot run ${program}: ${e.message}`,
          { hint: `install OpenSSH's client tools (${program} must be on PATH)` },
        ),
      );
    });
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString("utf8");
      if (outSize > MAX_OUTPUT) {
        reject(new NixsealError("HOST", `${program} printed more than ${MAX_OUTPUT} bytes`));
        return;
      }
      resolve({
        status: signal === "SIGKILL" ? null : status,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr,
      });
    });
  });
}

/** The last meaningful line of a program's stderr, shortened and without control characters. */
export function lastLine(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.replace(/[\x00-\x1f\x7f]/g, "").trim())
    .filter((l) => l !== "" && !l.startsWith("Warning: Permanently added"));
  const last = lines.at(-1) ?? "";
  return last.length > 200 ? `${last.slice(0, 200)}...` : last;
}

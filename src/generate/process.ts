/**
 * Running one process of a generator (a script's sh, an import command) in its own process
 * group, with a time limit and bounded output: used by nixseal itself and by the script runner
 * (runner.ts), so it imports nothing but Node's own modules.
 */
import { spawn } from "node:child_process";

/** An output file larger than this is refused (generated secrets are keys and passwords). */
export const MAX_OUTPUT_SIZE = 16 * 1024 * 1024;
/** What a failing generator wrote on stderr is kept up to this size, for the user to read. */
const MAX_STDERR = 16 * 1024;

export interface RunResult {
  ok: boolean;
  /** Why it failed (no secret: an exit status, a signal, the time limit). */
  message: string;
  /** What it wrote on stderr (bounded), for the user; never put into an error message. */
  stderr: string;
  stdout: Buffer;
}

/** The groups of the processes running now: killAll ends them. */
const running = new Set<() => void>();

/** Kills every process group runProcess started that is still running. */
export function killAll(): void {
  for (const kill of running) kill();
}

/** Runs a process in its own process group; kills the whole group at the time limit. */
export function runProcess(
  program: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
  timeoutSeconds: number,
  keepStdout: boolean,
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(program, args, {
      env,
      cwd,
      detached: true,
      stdio: ["ignore", keepStdout ? "pipe" : "ignore", "pipe"],
    });
    const out: Buffer[] = [];
    let outSize = 0;
    let tooLarge = false;
    let err = "";
    let timedOut = false;
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {}
    };
    // Whatever ends nixseal (a signal: main's handlers call process.exit), the group goes too.
    process.on("exit", killGroup);
    running.add(killGroup);
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutSeconds * 1000);
    child.stdout?.on("data", (b: Buffer) => {
      outSize += b.length;
      if (outSize > MAX_OUTPUT_SIZE) {
        tooLarge = true;
        killGroup();
        return;
      }
      out.push(b);
    });
    child.stderr?.on("data", (b: Buffer) => {
      if (err.length < MAX_STDERR) err += b.toString("utf8").slice(0, MAX_STDERR - err.length);
    });
    const finish = (message: string | null) => {
      clearTimeout(timer);
      process.removeListener("exit", killGroup);
      running.delete(killGroup);
      // Anything the script left running in its group ends with it.
      killGroup();
      const stdout = Buffer.concat(out);
      for (const b of out) b.fill(0);
      resolve({ ok: message === null, message: message ?? "", stderr: err, stdout });
    };
    child.on("error", (e) => finish(`cannot run ${program}: ${e.message}`));
    child.on("close", (code, signal) => {
      if (timedOut) finish(`killed after the time limit of ${timeoutSeconds} s`);
      else if (tooLarge) finish(`its output is larger than ${MAX_OUTPUT_SIZE} bytes`);
      else if (code === 0) finish(null);
      else finish(signal ? `killed by ${signal}` : `exited with status ${code}`);
    });
  });
}

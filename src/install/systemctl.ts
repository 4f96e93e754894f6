/**
 * restartMode "systemctl": the units of changed secrets restarted by systemctl itself.
 *
 * Needed where the installer runs from a unit (systemd-sysusers / userborn activation): there,
 * switch-to-configuration has already read its restart lists when nixseal-install.service runs
 * (through sysinit-reactivation.target), so a unit written to a list would be restarted at the
 * next switch, not this one. One systemctl process per verb for all units (never one per secret):
 * `try-restart` (only units that are running: nothing is started that was stopped, and at boot,
 * before services start, it does nothing) and `try-reload-or-restart` for the reload units that
 * are not restarted anyway. `--no-block` queues the jobs and returns: waiting for a service's
 * restart from inside a unit that a running transaction is starting could deadlock.
 */
import * as fs from "node:fs";
import { childProcess, findExecutable, NixsealError } from "../common/index.js";

/** Where systemctl is looked for when it is not on PATH (NixOS activation, minimal PATHs). */
const FALLBACK_LOCATIONS = ["/run/current-system/sw/bin/systemctl", "/usr/bin/systemctl", "/bin/systemctl"];

function systemctlProgram(): string | null {
  return (
    findExecutable("systemctl") ??
    FALLBACK_LOCATIONS.find((p) => {
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    }) ??
    null
  );
}

/** The systemctl calls for these units: at most one per verb. */
export function systemctlCalls(restart: readonly string[], reload: readonly string[]): string[][] {
  const calls: string[][] = [];
  if (restart.length > 0) calls.push(["--no-block", "try-restart", "--", ...restart]);
  const onlyReload = reload.filter((u) => !restart.includes(u));
  if (onlyReload.length > 0) calls.push(["--no-block", "try-reload-or-restart", "--", ...onlyReload]);
  return calls;
}

/** Runs the calls; returns their problems (the install itself is done by then). */
export function restartWithSystemctl(restart: readonly string[], reload: readonly string[]): NixsealError[] {
  const calls = systemctlCalls(restart, reload);
  if (calls.length === 0) return [];
  const program = systemctlProgram();
  if (program === null) {
    return [
      new NixsealError(
        "INSTALL",
        `systemctl not found: ${[...restart, ...reload].join(", ")} not restarted`,
        {
          hint: "restart them by hand; the install unit needs systemd on its PATH",
        },
      ),
    ];
  }
  const problems: NixsealError[] = [];
  for (const args of calls) {
    const r = childProcess().spawnSync(program, args, {
      encoding: "utf8",
      stdio: ["ignore", "ignore", "pipe"],
    });
    if (r.status !== 0) {
      const said =
        r.error?.message ??
        r.stderr
          .split("\n")
          .filter((l) => l.trim() !== "")
          .at(-1)
          ?.slice(0, 200) ??
        `status ${r.status}`;
      problems.push(
        new NixsealError("INSTALL", `systemctl ${args[1]} ${args.slice(3).join(" ")} failed: ${said}`, {
          hint: "check the units with systemctl status; restart them by hand once fixed",
        }),
      );
    }
  }
  return problems;
}

/**
 * One blocking systemctl call (`systemctl VERB -- UNITS`) for `nixseal receive`, which runs from
 * an ssh session, not inside a systemd transaction, so it can wait and report a unit that fails.
 * Returns the problem, or null.
 */
export function systemctlVerb(verb: string, units: readonly string[]): NixsealError | null {
  if (units.length === 0) return null;
  const program = systemctlProgram();
  if (program === null) {
    return new NixsealError("INSTALL", `systemctl not found: ${verb} ${units.join(" ")} not done`, {
      hint: "run it by hand; receive needs systemd's systemctl on PATH",
    });
  }
  const r = childProcess().spawnSync(program, [verb, "--", ...units], {
    encoding: "utf8",
    stdio: ["ignore", "ignore", "pipe"],
  });
  if (r.status === 0) return null;
  const said =
    r.error?.message ??
    r.stderr
      .split("\n")
      .filter((l) => l.trim() !== "")
      .at(-1)
      ?.slice(0, 200) ??
    `status ${r.status}`;
  return new NixsealError("INSTALL", `systemctl ${verb} ${units.join(" ")} failed: ${said}`, {
    hint: "check the units with systemctl status; the keys are in place",
  });
}

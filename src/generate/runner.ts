/**
 * The script runner: one process for a whole `nixseal generate` run that starts each
 * generator's script (`sh -c`, exactly the environment and directories nixseal gives it, its
 * time limit, its own process group). As root, sandbox.ts starts it under `unshare` with a
 * private tmpfs on /tmp, so every script of the run is in those private mount and network
 * namespaces and costs one fork and exec of sh, not an `unshare`, a `mount` and a sh. It talks
 * to nixseal over Node's IPC channel (never to a terminal) and holds no secret: a script's
 * inputs and outputs are files in its own RAM directory. When nixseal goes away (the channel
 * closes, SIGTERM, SIGHUP), it kills every script's process group.
 */
import { spawnSync } from "node:child_process";
import { killAll, runProcess } from "./process.js";

/** The runner's uncaught error when its private /tmp cannot be mounted. */
class MountFailed extends Error {
  override name = "MountFailed";
}

// In its namespaces (sandbox.ts), the runner mounts the private /tmp itself, once Node and its
// modules are loaded: mounted before, it would hide a nixseal (or a Node) that lives under /tmp.
const mount = process.env.NIXSEAL_MOUNT;
if (mount !== undefined) {
  delete process.env.NIXSEAL_MOUNT;
  const r = spawnSync(
    mount,
    ["-t", "tmpfs", "-o", "mode=1777,size=256m,nosuid,nodev", "nixseal-tmp", "/tmp"],
    {
      stdio: "ignore",
    },
  );
  // No script may run without it: the runner tells sandbox.ts why, and ends.
  if (r.status !== 0) {
    process.send?.({ id: -1, ok: false, message: "cannot mount a private /tmp", stderr: "" });
    throw new MountFailed();
  }
}

interface Job {
  id: number;
  sh: string;
  script: string;
  env: Record<string, string>;
  cwd: string;
  timeout: number;
}

function isJob(m: unknown): m is Job {
  const j = m as Job;
  return (
    typeof j === "object" &&
    j !== null &&
    Number.isInteger(j.id) &&
    typeof j.sh === "string" &&
    typeof j.script === "string" &&
    typeof j.cwd === "string" &&
    Number.isInteger(j.timeout) &&
    typeof j.env === "object" &&
    j.env !== null &&
    Object.values(j.env).every((v) => typeof v === "string")
  );
}

process.on("message", (m: unknown) => {
  if (!isJob(m)) return;
  // Node marks its IPC descriptor close-on-exec: no script inherits the channel to nixseal.
  const args = ["-c", m.script];
  void runProcess(m.sh, args, { ...m.env }, m.cwd, m.timeout, false).then((r) => {
    if (process.connected) process.send?.({ id: m.id, ok: r.ok, message: r.message, stderr: r.stderr });
  });
});
process.on("disconnect", killAll);
for (const signal of ["SIGTERM", "SIGHUP", "SIGINT"] as const) {
  process.once(signal, () => {
    killAll();
    process.disconnect?.();
    process.kill(process.pid, signal);
  });
}

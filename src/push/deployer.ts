/**
 * The deployer's side of `nixseal push`: one ssh connection per host (the system's ssh client, its
 * host key checking as configured: never turned off), the keys through ssh's stdin (never argv or
 * the environment), only what the host lacks (src/push/protocol.ts). Hosts run in parallel; a
 * failing host does not stop the others.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { isObject, type Json, NixsealError, Problems, rethrowUnlessNixseal } from "../common/index.js";
import { type PlanHost, readWireKey, type UploadAt, type WireKey, wireKey } from "./plan.js";
import {
  FRAME,
  FrameReader,
  FrameWriter,
  type KeyOutcome,
  keyDigest,
  noKeyOutcome,
  PROTOCOL_VERSION,
} from "./protocol.js";
import { newNonce } from "./receiver.js";
import type { ResolvedValues } from "./sources.js";

export interface HostReport extends KeyOutcome {
  host: string;
  result: "ok" | "failed" | "planned";
  /** Bytes of the push stream the deployer wrote (keys sent, metadata, framing). */
  bytesSent: number;
}

export interface PushOptions {
  dryRun: boolean;
  /** How many hosts at once. */
  parallel: number;
  /** ssh arguments before the plan's own (NIX_SSHOPTS, then -o for each --ssh-option). */
  sshArgs: string[];
  /** Only the keys pushed at this point (null: all). */
  uploadAt: UploadAt | null;
  /** The ssh program (default "ssh", from PATH). */
  ssh?: string;
}

function emptyReport(host: string): HostReport {
  return { host, result: "failed", bytesSent: 0, ...noKeyOutcome() };
}

/**
 * The ssh command line for a host: options, then `--`, the destination and the remote command.
 * First `-T -a -x`: the stream is binary, so no terminal (a `RequestTTY force` in the user's
 * config would mangle it), and the host that receives the keys gets no forwarded agent or X
 * display (a `ForwardAgent yes` would lend it the user's keys for the push's duration). Given
 * first, they win over the user's config and over --ssh-option, as ssh takes an option's first value.
 */
export function sshArgv(h: PlanHost, options: Pick<PushOptions, "sshArgs">): string[] {
  const args = ["-T", "-a", "-x", ...options.sshArgs, ...h.sshOptions];
  if (h.targetPort !== null) args.push("-p", String(h.targetPort));
  args.push("--", h.targetUser === null ? h.targetHost : `${h.targetUser}@${h.targetHost}`);
  args.push(`${h.nixsealCommand} receive`);
  return args;
}

interface HeldState extends WireKey {
  digest: string;
}

function readState(v: unknown): { keys: HeldState[]; problems: NixsealError[] } {
  const bad = () =>
    new NixsealError("PUSH", "the host's answer is malformed", {
      hint: "use the same nixseal version on both sides",
    });
  if (!isObject(v) || v.version !== PROTOCOL_VERSION || !Array.isArray(v.keys) || !Array.isArray(v.problems))
    throw bad();
  const p = new Problems("PUSH", "the host's state");
  const keys: HeldState[] = [];
  for (let i = 0; i < v.keys.length; i++) {
    const k = readWireKey(v.keys[i]!, `keys[${i}]`, p, {
      digest: { required: true, read: (d) => (typeof d === "string" ? d : undefined) },
    });
    if (k === null) continue;
    const { extra, ...meta } = k;
    keys.push({ ...meta, digest: extra.get("digest") as string });
  }
  if (p.list.length > 0) throw bad();
  const problems = v.problems.map((x) => {
    const o = isObject(x) ? x : {};
    return new NixsealError("PUSH", String(o.message ?? "a problem on the host"), {
      hint: String(o.hint ?? ""),
    });
  });
  return { keys, problems };
}

function stringList(v: Json | undefined): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

/** Pushes one host; never throws (a problem is in the report). */
export async function pushHost(
  h: PlanHost,
  values: ResolvedValues,
  options: PushOptions,
): Promise<HostReport> {
  const report = emptyReport(h.host);
  const child = spawn(options.ssh ?? "ssh", sshArgv(h, options), { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => {
    stderr = (stderr + b.toString("utf8")).slice(-8192);
  });
  child.stdin!.on("error", () => {});
  const exited = new Promise<number | null>((resolve) => {
    child.on("close", (code) => resolve(code));
    child.on("error", () => resolve(null));
  });
  const writer = new FrameWriter(child.stdin!);
  const reader = new FrameReader(child.stdout!, `host ${h.host}`);
  let started = false;
  try {
    const inScope = h.keys.filter((k) => options.uploadAt === null || k.uploadAt === options.uploadAt);
    const nonce = newNonce();
    await writer.magic();
    await writer.json(FRAME.hello, {
      version: PROTOCOL_VERSION,
      nonce: nonce.toString("hex"),
      destDirs: [...new Set(inScope.map((k) => k.destDir))],
      files: inScope.map((k) => [k.destDir, k.name]),
      dryRun: options.dryRun,
    });
    await reader.magic();
    started = true;
    const state = readState(await reader.json(FRAME.state, "the host's state"));
    if (state.problems.length > 0) {
      report.problems = state.problems;
      report.bytesSent = writer.bytes;
      child.stdin!.end();
      await exited;
      return report;
    }
    // What changes: the digest of what we would send against what the host holds.
    const held = new Map(state.keys.map((k) => [k.key, k]));
    const planned = new Set(inScope.map((k) => k.key));
    const entries: { meta: WireKey; send: boolean; value: Uint8Array | null }[] = [];
    for (const k of inScope) {
      const value = values.get(k.source);
      const have = held.get(k.key);
      const same = have !== undefined && have.digest !== "" && have.digest === keyDigest(nonce, k, value);
      const meta: WireKey = {
        key: k.key,
        destDir: k.destDir,
        name: k.name,
        owner: k.owner,
        group: k.group,
        mode: k.mode,
        restartUnits: k.restartUnits,
        reloadUnits: k.reloadUnits,
        keyUnit: k.keyUnit,
        uploadAt: k.uploadAt,
        persist: k.persist,
      };
      entries.push({ meta, send: !same, value: same ? null : value });
      if (have === undefined) report.added.push(k.key);
      else if (same) report.kept.push(k.key);
      else report.changed.push(k.key);
    }
    for (const k of state.keys) {
      if (planned.has(k.key)) continue;
      if (options.uploadAt !== null && k.uploadAt !== options.uploadAt) {
        // Pushed at the other point of a deployment: not this run's to remove.
        const { digest: _, ...meta } = k;
        entries.push({ meta, send: false, value: null });
      } else report.removed.push(k.key);
    }
    if (options.dryRun) {
      const sent = entries.filter((e) => e.send).map((e) => e.meta);
      report.restarted = [...new Set(sent.flatMap((k) => k.restartUnits))];
      report.reloaded = [...new Set(sent.flatMap((k) => k.reloadUnits))].filter(
        (u) => !report.restarted.includes(u),
      );
      report.started = [
        ...new Set(
          entries.filter((e) => !held.has(e.meta.key) && e.meta.keyUnit).map((e) => e.meta.keyUnit!),
        ),
      ];
      report.stopped = [
        ...new Set(
          state.keys.filter((k) => report.removed.includes(k.key) && k.keyUnit).map((k) => k.keyUnit!),
        ),
      ];
      child.stdin!.end();
      report.bytesSent = writer.bytes;
      const code = await exited;
      if (code !== 0)
        throw new NixsealError("PUSH", `the host's receive exited with ${code}`, {
          hint: "see the host's messages above",
        });
      report.result = "planned";
      return report;
    }
    await writer.json(FRAME.apply, { keys: entries.map((e) => ({ ...wireKey(e.meta), send: e.send })) });
    for (const e of entries) if (e.send) await writer.frame(FRAME.data, e.value!);
    await writer.end();
    child.stdin!.end();
    report.bytesSent = writer.bytes;
    const r = await reader.json(FRAME.result, "the host's result");
    if (!isObject(r)) throw new NixsealError("PUSH", "the host's result is malformed", { hint: "" });
    report.added = stringList(r.added);
    report.changed = stringList(r.changed);
    report.removed = stringList(r.removed);
    report.kept = stringList(r.kept);
    report.restarted = stringList(r.restarted);
    report.reloaded = stringList(r.reloaded);
    report.started = stringList(r.started);
    report.stopped = stringList(r.stopped);
    report.sealed = stringList(r.sealed);
    report.unsealed = stringList(r.unsealed);
    report.problems = (Array.isArray(r.problems) ? r.problems : []).map((x) => {
      const o = isObject(x) ? x : {};
      return new NixsealError("PUSH", String(o.message ?? "a problem on the host"), {
        hint: String(o.hint ?? ""),
      });
    });
    await exited;
    report.result = r.ok === true && report.problems.length === 0 ? "ok" : "failed";
    return report;
  } catch (e) {
    if (!(e instanceof NixsealError) && !(e instanceof Error && "code" in e)) {
      kill(child);
      throw e;
    }
    kill(child);
    const code = await exited;
    const said = lastLines(stderr);
    if (!started) {
      report.problems = [
        new NixsealError(
          "PUSH",
          `ssh to ${h.targetHost} failed${code === null ? "" : ` (exit ${code})`}${said === "" ? "" : `: ${said}`}`,
          {
            hint: "check that the host is reachable, its host key is known (known_hosts), and nixseal is installed there",
          },
        ),
      ];
    } else {
      const err = e as NixsealError;
      report.problems = [
        new NixsealError("PUSH", `${err.message}${said === "" ? "" : ` (${said})`}`, {
          hint: err.hint ?? "the host keeps its previous keys; push again",
        }),
      ];
    }
    report.result = "failed";
    report.bytesSent = writer.bytes;
    return report;
  }
}

function kill(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill();
}

/** The last meaningful line ssh or the remote side wrote on stderr. */
function lastLines(text: string): string {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("Warning: Permanently added"));
  const line = lines.at(-1) ?? "";
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
}

/** Pushes every host, `parallel` at a time; the reports in the plan's order. */
export async function pushFleet(
  hosts: PlanHost[],
  values: ResolvedValues,
  options: PushOptions,
): Promise<HostReport[]> {
  const reports: HostReport[] = new Array(hosts.length);
  let next = 0;
  const worker = async () => {
    while (next < hosts.length) {
      const i = next++;
      try {
        reports[i] = await pushHost(hosts[i]!, values, options);
      } catch (e) {
        rethrowUnlessNixseal(e);
        reports[i] = { ...emptyReport(hosts[i]!.host), problems: [e] };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.parallel, hosts.length)) }, worker));
  return reports;
}

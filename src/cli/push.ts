/** `nixseal push`: deploy-time keys to hosts over ssh (one connection per host, only what changed). */
import { NixsealError, Problems, rethrowUnlessNixseal } from "../common/index.js";
import {
  type HostReport,
  type Plan,
  type PlanHost,
  plansFromFlake,
  pushFleet,
  readPlanFile,
  resolveSources,
  UPLOAD_AT,
  type UploadAt,
} from "../push/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { errorJson, printError, safeText } from "./report.js";
import { identitiesOf, keyContext } from "./vault-context.js";

const HELP = `Usage: nixseal push --plan FILE [--host NAME]... [options]
       nixseal push --flake FLAKE#HOST... | --flake FLAKE [options]

Pushes deploy-time keys (NixOps deployment.keys, colmena keys, /run/keys) to hosts: every key of
a host in one stream over ONE ssh connection, installed atomically there by 'nixseal receive'
(a generation in RAM, the whole set switched by one rename per directory), and only
what changed: the host answers a keyed hash (HMAC under a fresh nonce) of each key it holds, and
only new and changed keys are sent. Units of added and changed keys are restarted or reloaded
(one systemctl call per verb), keyUnits of new keys started, of removed keys stopped.

Each source is read once per run however many hosts use it: an encrypted file (age, or a sops
file with "key") is decrypted once with your identities, a command ({"command": [...]}, or
{"pass": NAME} for 'pass show NAME') run once, its standard output the key. The plan is checked,
and every source resolved, before any connection; every problem is reported together. Keys go
through ssh's standard input only, never its command line or environment.

Options:
    --plan FILE             The plan (JSON; docs/push.md, "The plan"). Relative file
                            sources are relative to it.
    --flake REF             FLAKE#HOST: that NixOS configuration's
                            config.system.build.nixsealPushPlan (repeatable); FLAKE alone:
                            every configuration whose plan has keys. Evaluated with nix eval.
    --host NAME             Only this host of the plan (repeatable).
    --dry-run               Connect and show per host what would be added, changed, removed,
                            kept and which units would restart; send no key.
    --upload-at WHEN        Only keys pushed at this point: pre-activation or post-activation.
    --parallel N            Hosts at once (default 8).
    --ssh-option OPT        Passed to ssh as -o OPT (repeatable). NIX_SSHOPTS is honoured too
                            (split on whitespace, as nixos-rebuild does). Host key checking
                            stays as ssh is configured.
    -i, --identity FILE     An identity to decrypt with (repeatable); without -i, the default
                            order of 'nixseal decrypt'.
    --json                  One JSON object on stdout: per host its result, keys added,
                            changed, removed and kept, bytes sent and units restarted.

Example:
    $ nixseal push --plan deploy/keys.json --ssh-option StrictHostKeyChecking=yes
    $ nixseal push --flake .#web1 .#db1 --dry-run

Exit codes: 0 every host done (or planned, with --dry-run), 1 a host failed or a source failed
(nothing was sent), 2 usage error or an invalid plan.
`;

const OPTIONS = {
  plan: { type: "string" },
  flake: { type: "string", multiple: true },
  host: { type: "string", multiple: true },
  "dry-run": { type: "boolean" },
  "upload-at": { type: "string" },
  parallel: { type: "string" },
  "ssh-option": { type: "string", multiple: true },
  identity: { type: "string", short: "i", multiple: true },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function list(xs: readonly string[]): string {
  return xs.length === 0 ? "-" : xs.join(", ");
}

function hostLine(r: HostReport): string {
  const what =
    r.result === "failed"
      ? "FAILED"
      : `${r.result}: ${r.added.length} added, ${r.changed.length} changed, ${r.removed.length} removed, ${r.kept.length} kept; ${r.bytesSent} bytes sent`;
  const units: string[] = [];
  if (r.restarted.length > 0) units.push(`restart ${list(r.restarted)}`);
  if (r.reloaded.length > 0) units.push(`reload ${list(r.reloaded)}`);
  if (r.started.length > 0) units.push(`start ${list(r.started)}`);
  if (r.stopped.length > 0) units.push(`stop ${list(r.stopped)}`);
  const keys =
    r.result === "failed"
      ? ""
      : [
          r.added.length > 0 ? `\n  added: ${list(r.added)}` : "",
          r.changed.length > 0 ? `\n  changed: ${list(r.changed)}` : "",
          r.removed.length > 0 ? `\n  removed: ${list(r.removed)}` : "",
          r.sealed.length > 0 ? `\n  sealed: ${list(r.sealed)}` : "",
          r.unsealed.length > 0 ? `\n  unsealed: ${list(r.unsealed)}` : "",
        ].join("");
  return (
    safeText(`${r.host}: ${what}${units.length > 0 ? `; ${units.join("; ")}` : ""}`) +
    safeText(keys).replace(/\\n/g, "\n")
  );
}

export const command: Command = {
  name: "push",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal push --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    // `--flake .#a .#b`: further references follow the first as positionals.
    const flakes = [...(values.flake ?? [])];
    if (positionals.length > 0) {
      if (flakes.length === 0)
        throw new NixsealError("USAGE", `unexpected argument ${JSON.stringify(positionals[0])}`, {
          hint: "nixseal push --plan FILE, or --flake FLAKE#HOST...",
        });
      flakes.push(...positionals);
    }
    if ((values.plan === undefined) === (flakes.length === 0)) {
      throw new NixsealError("USAGE", "give either --plan FILE or --flake REF", {
        hint: "nixseal push --plan keys.json, or nixseal push --flake .#host",
      });
    }
    let uploadAt: UploadAt | null = null;
    if (values["upload-at"] !== undefined) {
      if (!(UPLOAD_AT as readonly string[]).includes(values["upload-at"]))
        throw new NixsealError("USAGE", `--upload-at must be ${UPLOAD_AT.join(" or ")}`, {
          hint: "or leave it out: all keys",
        });
      uploadAt = values["upload-at"] as UploadAt;
    }
    let parallel = 8;
    if (values.parallel !== undefined) {
      if (!/^[1-9][0-9]{0,3}$/.test(values.parallel))
        throw new NixsealError("USAGE", "--parallel needs a number from 1 to 9999", {
          hint: "e.g. --parallel 16",
        });
      parallel = Number(values.parallel);
    }
    const sshArgs = (process.env.NIX_SSHOPTS ?? "").split(/\s+/).filter((s) => s !== "");
    for (const o of values["ssh-option"] ?? []) sshArgs.push("-o", o);

    // The plan(s): every problem of every plan, then of every source, before any connection.
    const plans: Plan[] = [];
    const problems: NixsealError[] = [];
    if (values.plan !== undefined) {
      const p = new Problems("PUSH_PLAN", values.plan);
      plans.push(readPlanFile(values.plan, p));
      problems.push(...p.list);
    }
    for (const ref of flakes) {
      const p = new Problems("PUSH_PLAN", ref);
      plans.push(...plansFromFlake(ref, p));
      problems.push(...p.list);
    }
    const hosts = new Map<string, PlanHost>();
    for (const plan of plans) {
      for (const [name, h] of plan.hosts) {
        if (hosts.has(name)) {
          problems.push(
            new NixsealError("PUSH_PLAN", `host ${name} is in more than one plan`, {
              hint: "name each host once",
            }),
          );
        }
        hosts.set(name, h);
      }
    }
    for (const name of values.host ?? []) {
      if (!hosts.has(name))
        problems.push(
          new NixsealError("USAGE", `--host ${JSON.stringify(name)}: no such host in the plan`, {
            hint: `the plan's hosts: ${[...hosts.keys()].join(", ") || "none"}`,
          }),
        );
    }
    const chosen =
      values.host === undefined
        ? [...hosts.values()]
        : values.host.filter((n) => hosts.has(n)).map((n) => hosts.get(n)!);
    const inScope = (h: PlanHost): PlanHost => ({
      ...h,
      keys: h.keys.filter((k) => uploadAt === null || k.uploadAt === uploadAt),
    });
    const resolvedPlan: Plan = { hosts: new Map(chosen.map((h) => [h.host, inScope(h)])) };
    const ctx = keyContext();
    // The sources of the valid part of the plan are resolved even when the plan has problems:
    // one run reports them all, and nothing is sent.
    let resolved: Awaited<ReturnType<typeof resolveSources>>;
    try {
      resolved = await resolveSources(resolvedPlan, () => identitiesOf(values, ctx));
    } catch (e) {
      rethrowUnlessNixseal(e);
      throw NixsealError.many([...problems, ...(e.problems.length > 0 ? e.problems : [e])]);
    }
    if (problems.length > 0) {
      resolved.close();
      throw NixsealError.many(problems);
    }
    let reports: HostReport[];
    try {
      reports = await pushFleet(chosen, resolved, {
        dryRun: values["dry-run"] === true,
        parallel,
        sshArgs,
        uploadAt,
      });
    } finally {
      resolved.close();
    }
    const failed = reports.filter((r) => r.result === "failed");
    if (values.json) {
      const out: Record<string, unknown> = {};
      for (const r of reports) {
        out[r.host] = {
          result: r.result,
          added: r.added,
          changed: r.changed,
          removed: r.removed,
          kept: r.kept,
          bytesSent: r.bytesSent,
          restarted: r.restarted,
          reloaded: r.reloaded,
          started: r.started,
          stopped: r.stopped,
          sealed: r.sealed,
          unsealed: r.unsealed,
          problems: r.problems.map(errorJson),
        };
      }
      process.stdout.write(`${JSON.stringify({ dryRun: values["dry-run"] === true, hosts: out })}\n`);
    } else {
      for (const r of reports) process.stdout.write(`${hostLine(r)}\n`);
    }
    for (const r of failed)
      printError(
        `nixseal push: ${r.host}`,
        NixsealError.many(
          r.problems.length > 0 ? r.problems : [new NixsealError("PUSH", "failed", { hint: "" })],
        ),
      );
    if (failed.length > 0) {
      process.stderr.write(
        `nixseal push: ${failed.length} of ${reports.length} hosts failed: ${failed.map((r) => r.host).join(", ")}\n`,
      );
      return 1;
    }
    return 0;
  },
};

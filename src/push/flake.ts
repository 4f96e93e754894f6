/**
 * Plans from a flake: each NixOS configuration's `config.system.build.nixsealPushPlan` (written
 * by the NixOS module), through the real `nix eval --json`: one process per `--flake` argument.
 */
import { spawnSync } from "node:child_process";
import { findExecutable, type Json, NixsealError, Problems } from "../common/index.js";
import { keyNameProblem, type Plan, validatePlan } from "./plan.js";

const NIX_FLAGS = ["--extra-experimental-features", "nix-command flakes"];

function nixEval(installable: string, apply: string | null): unknown {
  const nix = findExecutable("nix");
  if (nix === null) {
    throw new NixsealError("PUSH_PLAN", "nix is not on PATH: a flake's plans cannot be evaluated", {
      hint: "install Nix, or give the plan as a file with --plan",
    });
  }
  const args = [...NIX_FLAGS, "eval", "--json", installable];
  if (apply !== null) args.push("--apply", apply);
  const r = spawnSync(nix, args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    const said =
      r.error?.message ??
      r.stderr
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l !== "")
        .find((l) => /^error:/.test(l)) ??
      `exit ${r.status}`;
    throw new NixsealError("PUSH_PLAN", `nix eval ${installable} failed: ${said.slice(0, 300)}`, {
      hint: "check that the configuration imports nixseal's module and evaluates (nix eval shows the whole error)",
    });
  }
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    throw new NixsealError("PUSH_PLAN", `nix eval ${installable} printed no JSON`, {
      hint: "check the flake",
    });
  }
}

/** `.#host` (one configuration; problems go to `p`, named after the reference) or `.` (every configuration whose plan has keys). */
export function plansFromFlake(ref: string, p: Problems): Plan[] {
  const hash = ref.indexOf("#");
  const flake = hash === -1 ? ref : ref.slice(0, hash);
  const host = hash === -1 ? null : ref.slice(hash + 1);
  const out: Plan[] = [];
  try {
    if (host !== null) {
      const why = keyNameProblem(host);
      if (why !== null) {
        p.add(
          "",
          `--flake ${ref}: the host name ${why}`,
          "write --flake FLAKE#HOST, HOST a nixosConfigurations attribute",
        );
        return out;
      }
      const json = nixEval(
        `${flake}#nixosConfigurations."${host}".config.system.build.nixsealPushPlan`,
        null,
      );
      out.push(validatePlan(json, ref, null, p));
      return out;
    }
    const all = nixEval(
      `${flake}#nixosConfigurations`,
      "cs: builtins.mapAttrs (n: c: c.config.system.build.nixsealPushPlan or null) cs",
    ) as Record<string, Json>;
    for (const [name, plan] of Object.entries(all ?? {})) {
      if (plan === null) continue;
      const own = new Problems("PUSH_PLAN", `${flake}#${name}`);
      const parsed = validatePlan(plan, own.file, null, own);
      p.list.push(...own.list);
      for (const [h, hp] of parsed.hosts) if (hp.keys.length === 0) parsed.hosts.delete(h);
      out.push(parsed);
    }
  } catch (e) {
    if (e instanceof NixsealError) p.list.push(e);
    else throw e;
  }
  return out;
}

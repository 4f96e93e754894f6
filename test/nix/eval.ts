/** Evaluating our modules with the real nix-instantiate and nixpkgs's lib (NIXPKGS_LIB). */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { REPO, which } from "../helpers.js";

export const NIX = which("nix-instantiate");
export const NIXPKGS_LIB = process.env.NIXPKGS_LIB;

export type EvalResult = { ok: true; value: unknown } | { ok: false; stderr: string };

/** `attr` of test/nix/<evaluator> (eval-nixos.nix, ...) with `modules` (paths of .nix files). */
export function nixEval(evaluator: string, modules: string[], attr: string): EvalResult {
  const r = spawnSync(
    NIX!,
    [
      "--read-write-mode",
      "--eval",
      "--strict",
      "--json",
      "--option",
      "substituters",
      "",
      path.join(REPO, "test", "nix", evaluator),
      "--argstr",
      "nixpkgsLib",
      NIXPKGS_LIB!,
      "--arg",
      "modules",
      `[ ${modules.map((m) => JSON.stringify(m)).join(" ")} ]`,
      "-A",
      attr,
    ],
    { encoding: "utf8", timeout: 120_000 },
  );
  if (r.error) throw r.error;
  return r.status === 0 ? { ok: true, value: JSON.parse(r.stdout) } : { ok: false, stderr: r.stderr };
}

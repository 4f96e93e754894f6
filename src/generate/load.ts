/**
 * Where the generators come from: generators.nix beside the repository's secrets.nix (evaluated
 * as the rules are: real Nix, restricted, cached by content), or a NixOS configuration's
 * `config.system.build.nixsealGenerators` (`--flake .#host`, through `nix eval --json`).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { NixsealError } from "../common/index.js";
import { compactNixError, loadNixValue } from "../vault/index.js";
import { OUTPUT_DIR } from "./plan.js";
import { GENERATORS_FILE, type Generators, MAX_GENERATORS_SIZE, parseGenerators } from "./spec.js";

/** generators.nix of the repository whose rules file is `rulesFile`. */
export function loadGeneratorsFile(rulesFile: string, options: { noCache?: boolean } = {}): Generators {
  const file = path.join(path.dirname(rulesFile), GENERATORS_FILE);
  if (!fs.existsSync(file)) {
    throw new NixsealError("GENERATORS", `no ${GENERATORS_FILE} beside ${rulesFile}`, {
      file,
      hint: "write one (see docs/generators.md), or use --flake .#HOST",
    });
  }
  let value: unknown;
  try {
    value = loadNixValue(file, {
      noCache: options.noCache,
      maxSize: MAX_GENERATORS_SIZE,
      what: GENERATORS_FILE,
      // What generate writes does not change generators.nix's value: a run with nothing to do
      // after one that wrote must not evaluate it again (docs/generators.md).
      skipDirs: [OUTPUT_DIR],
    });
  } catch (e) {
    if (e instanceof NixsealError && e.code === "RULES")
      throw new NixsealError("GENERATORS", e.message, { file, hint: e.hint ?? "fix the Nix expression" });
    throw e;
  }
  return parseGenerators(file, value);
}

/** `FLAKE#HOST` as flake reference and host name. */
export function parseFlakeTarget(target: string): { flake: string; host: string } {
  const i = target.lastIndexOf("#");
  const flake = i < 0 ? "" : target.slice(0, i);
  const host = i < 0 ? "" : target.slice(i + 1);
  if (flake === "" || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(host)) {
    throw new NixsealError("USAGE", `--flake ${JSON.stringify(target)} is not FLAKE#HOST`, {
      hint: "write --flake .#myhost (the host of nixosConfigurations)",
    });
  }
  return { flake, host };
}

/**
 * Beside the generators' JSON, the derivations each generator's runtimeInputs come from (their
 * string context): `nix eval` does not build them, so they are realised before a script runs
 * (realiseRuntimeInputs in sandbox.ts).
 */
const WITH_DERIVATIONS = `g: let
  gens = if builtins.isAttrs g && builtins.isAttrs (g.generators or null) then g.generators else { };
  ctx = x: if builtins.isString x then builtins.attrNames (builtins.getContext x) else [ ];
  inputs = v: if builtins.isAttrs v && builtins.isList (v.runtimeInputs or null) then v.runtimeInputs else [ ];
in { spec = g; derivations = builtins.mapAttrs (_: v: builtins.concatMap ctx (inputs v)) gens; }`;

/** The generators of one NixOS configuration of a flake. */
export function loadFlakeGenerators(target: string): Generators {
  const { flake, host } = parseFlakeTarget(target);
  const attr = `${flake}#nixosConfigurations.${JSON.stringify(host)}.config.system.build.nixsealGenerators`;
  const r = spawnSync(
    "nix",
    [
      "--extra-experimental-features",
      "nix-command flakes",
      "eval",
      "--json",
      attr,
      "--apply",
      WITH_DERIVATIONS,
    ],
    { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, env: process.env },
  );
  if (r.error) {
    throw new NixsealError("GENERATORS", `cannot run nix: ${r.error.message}`, {
      hint: "install Nix (nix must be on PATH) to read a flake",
    });
  }
  if (r.status !== 0) {
    throw new NixsealError("GENERATORS", `cannot evaluate ${attr}: ${compactNixError(r.stderr)}`, {
      hint: "import nixseal's NixOS module in that host and define nixseal.generators",
    });
  }
  let value: { spec: unknown; derivations: Record<string, unknown> };
  try {
    value = JSON.parse(r.stdout);
  } catch {
    throw new NixsealError("GENERATORS", `${attr} did not evaluate to JSON`, {
      hint: "it must be the module's JSON",
    });
  }
  const spec = parseGenerators(attr, value.spec);
  spec.runtimeDerivations = new Map();
  for (const [name, list] of Object.entries(value.derivations ?? {})) {
    if (!spec.generators.has(name) || !Array.isArray(list)) continue;
    const drvs = list.filter(
      (d): d is string =>
        typeof d === "string" && d.endsWith(".drv") && path.isAbsolute(d) && !d.includes("\n"),
    );
    if (drvs.length > 0) spec.runtimeDerivations.set(name, drvs);
  }
  return spec;
}

/**
 * nix-eval: evaluating the NixOS module with 1000 and 10 000 secrets (and one template per 100
 * secrets), as a `nixos-rebuild` does: every assertion, then the manifest written to the store.
 * Anchor, in the same run: the module system's own floor, the same entries declared as a plain
 * `attrsOf (submodule { file; owner; group; mode; path; restartUnits; })` and written out with
 * builtins.toJSON, without nixseal's checks. The ratio is what nixseal's validation costs.
 * Needs NIXPKGS_LIB (nixpkgs's lib) and nix-instantiate.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  interleaved,
  REPO,
  type ResultRow,
  scratchDir,
  which,
} from "./common.js";

function secretsText(n: number, attrs: (i: number) => string): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`"app${i % 100}/secret${i}" = { ${attrs(i)} };`);
  return lines.join("\n");
}

const FLOOR = `{ nixpkgsLib, config }:
let
  lib = import (nixpkgsLib + "/lib");
  inherit (lib) mkOption types;
  eval = lib.evalModules {
    modules = [
      {
        options.secrets = mkOption {
          type = types.attrsOf (types.submodule {
            options = {
              file = mkOption { type = types.path; };
              owner = mkOption { type = types.str; default = "root"; };
              group = mkOption { type = types.str; default = "root"; };
              mode = mkOption { type = types.str; default = "0400"; };
              path = mkOption { type = types.nullOr types.str; default = null; };
              restartUnits = mkOption { type = types.listOf types.str; default = [ ]; };
            };
          });
          default = { };
        };
      }
      (/. + config)
    ];
  };
in
builtins.toFile "floor.json" (builtins.toJSON (lib.mapAttrsToList (name: s: s // { inherit name; file = "\${s.file}"; }) eval.config.secrets))
`;

export const nixEval: Benchmark = {
  name: "nix-eval",
  description: "evaluating the NixOS module with 1000 / 10 000 secrets vs the module system's floor",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const nix = which("nix-instantiate");
    const lib = process.env.NIXPKGS_LIB;
    if (!nix || !lib) {
      ctx.log("nix-eval: skipped: needs nix-instantiate and NIXPKGS_LIB");
      return null;
    }
    const { dir, remove } = scratchDir(ctx.scratch, "nix-eval");
    try {
      fs.writeFileSync(path.join(dir, "db.age"), "age-encryption.org/v1\n(stand-in: never read)\n");
      fs.writeFileSync(path.join(dir, "floor.nix"), FLOOR);
      const rows: ResultRow[] = [];
      for (const n of [1000, 10_000]) {
        const attrs = (i: number) => `file = ./db.age; restartUnits = [ "app${i % 100}.service" ];`;
        const nixsealModule = path.join(dir, `nixseal-${n}.nix`);
        const templates: string[] = [];
        for (let t = 0; t < n / 100; t++) {
          templates.push(`"app${t}.conf".content = "a=\${config.nixseal.placeholder."app${t}/secret${t}"}";`);
        }
        fs.writeFileSync(
          nixsealModule,
          `{ config, ... }: {\n nixseal.ageKeyFile = "/var/lib/nixseal/key.txt";\n nixseal.secrets = {\n${secretsText(n, attrs)}\n};\n nixseal.templates = {\n${templates.join("\n")}\n};\n}\n`,
        );
        const floorModule = path.join(dir, `floor-${n}.nix`);
        fs.writeFileSync(floorModule, `{ ... }: {\n secrets = {\n${secretsText(n, attrs)}\n};\n}\n`);
        const common = ["--read-write-mode", "--eval", "--strict", "--option", "substituters", ""];
        const times = interleaved(ctx, [
          {
            name: `nixseal-${n}`,
            argv: [
              nix,
              ...common,
              path.join(REPO, "test", "nix", "eval-nixos.nix"),
              "--argstr",
              "nixpkgsLib",
              lib,
              "--arg",
              "modules",
              `[ "${nixsealModule}" ]`,
              "-A",
              "checkedManifest",
            ],
          },
          {
            name: `floor-${n}`,
            argv: [
              nix,
              ...common,
              path.join(dir, "floor.nix"),
              "--argstr",
              "nixpkgsLib",
              lib,
              "--argstr",
              "config",
              floorModule,
            ],
          },
        ]);
        rows.push({
          name: `${n} secrets, ${n / 100} templates`,
          nixseal: times.get(`nixseal-${n}`)!,
          anchorName: "module system floor (attrsOf submodule + toJSON)",
          anchor: times.get(`floor-${n}`)!,
        });
      }
      return {
        title: "nix-eval: the NixOS module evaluated with many secrets",
        rows,
        notes: [
          "nix-instantiate --eval --strict (Debian nix 2.8) with nixpkgs's lib, on the test stub of the NixOS " +
            "options (test/nix/nixos-stub.nix): every assertion of the module, then the system and users " +
            "manifests written with builtins.toFile. One encrypted file shared by all secrets (copied to the " +
            "store once). The floor declares the same entries with no validation and writes their JSON.",
        ],
      };
    } finally {
      remove();
    }
  },
};

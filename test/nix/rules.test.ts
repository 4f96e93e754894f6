/**
 * nix/modules/shared.nix's rules, evaluated by the real Nix, against the table the TypeScript
 * side is held to (test/common/shared-rules.ts): a value the modules accept is one the manifest
 * and the build-secrets policy accept, and the other way round.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";
import { type Cases, MODES, PATHS, PRINCIPALS, UNITS } from "../common/shared-rules.js";
import { REPO } from "../helpers.js";
import { NIX, NIXPKGS_LIB } from "./eval.js";

const missing = !NIXPKGS_LIB
  ? "needs NIXPKGS_LIB (a checkout of nixpkgs's lib)"
  : !NIX
    ? "needs nix-instantiate (Debian nix-bin)"
    : false;

/** Each helper of shared.nix applied to its cases, in one evaluation. */
function evaluate(table: Record<string, { helper: string; cases: Cases }>): Record<string, boolean[]> {
  const input = Object.fromEntries(Object.entries(table).map(([k, v]) => [k, v.cases.map((c) => c[0])]));
  const helpers = Object.entries(table)
    .map(([k, v]) => `${k} = map s.${v.helper} t.${k};`)
    .join(" ");
  const expr = `{ table, lib, shared }: let s = import shared { lib = import (lib + "/lib"); }; t = builtins.fromJSON table; in { ${helpers} }`;
  const r = spawnSync(
    NIX!,
    [
      "--eval",
      "--strict",
      "--json",
      "--expr",
      expr,
      "--argstr",
      "table",
      JSON.stringify(input),
      "--argstr",
      "lib",
      NIXPKGS_LIB!,
      "--arg",
      "shared",
      path.join(REPO, "nix", "modules", "shared.nix"),
    ],
    { encoding: "utf8", timeout: 120_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, boolean[]>;
}

test("shared.nix accepts and refuses what the manifest and the policy do", { skip: missing }, () => {
  const table = {
    principals: { helper: "validPrincipal", cases: PRINCIPALS },
    paths: { helper: "isNormalisedAbsolute", cases: PATHS },
    modes: { helper: "validMode", cases: MODES },
    units: { helper: "validUnitName", cases: UNITS },
  };
  const got = evaluate(table);
  for (const [k, { cases }] of Object.entries(table)) {
    cases.forEach(([v, ok], i) => {
      assert.equal(got[k]![i], ok, `${k}: ${JSON.stringify(v.length > 80 ? `${v.slice(0, 40)}...` : v)}`);
    });
  }
});

test("the option types use the same rules", { skip: missing }, () => {
  const got = evaluate({
    principals: { helper: "principal.check", cases: PRINCIPALS },
    units: { helper: "unitName.check", cases: UNITS },
    modes: { helper: "mode.check", cases: MODES },
  });
  for (const [k, cases] of [
    ["principals", PRINCIPALS],
    ["units", UNITS],
    ["modes", MODES],
  ] as const) {
    cases.forEach(([v, ok], i) => {
      assert.equal(got[k]![i], ok, `${k}: ${JSON.stringify(v)}`);
    });
  }
});

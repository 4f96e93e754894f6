/**
 * The .drv parser against real derivations written by nix-instantiate, checked field by field
 * against `nix show-derivation` (Nix's own reading of the same file), and against damaged input.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import {
  isFixedOutput,
  MAX_DRV_BYTES,
  parseDerivation,
  readDerivationFile,
} from "../../src/build-secrets/drv.js";
import { isError, tempDir, which } from "../helpers.js";

const NIX_INSTANTIATE = which("nix-instantiate");
const NIX = which("nix");

function instantiate(dir: string, expr: string): string {
  const file = path.join(dir, "default.nix");
  fs.writeFileSync(file, expr);
  const r = spawnSync(NIX_INSTANTIATE!, [file], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

interface ShowDerivation {
  outputs: Record<string, { path: string; hashAlgo?: string; hash?: string }>;
  inputSrcs: string[];
  inputDrvs: Record<string, string[]>;
  system: string;
  builder: string;
  args: string[];
  env: Record<string, string>;
}

function showDerivation(drvPath: string): ShowDerivation {
  const r = spawnSync(NIX!, ["--extra-experimental-features", "nix-command", "show-derivation", drvPath], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as Record<string, ShowDerivation>)[drvPath]!;
}

const EXPR = String.raw`
let
  dep = derivation {
    name = "nxs-drv-dep"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" "echo > $out; echo > $dev" ]; outputs = [ "out" "dev" ];
  };
in {
  fod = derivation {
    name = "nxs-drv-fod"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" "quote\" backslash\\ newline\n tab\t cr\r end" "" ];
    mixed = "${"${"}dep.dev} ${"${"}builtins.toFile "nxs-src" "x"} é ✓ \"q\"";
    empty = "";
    nixsealSecret = "mods-token";
    outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; outputHashMode = "flat";
  };
  multi = dep;
}`;

test("real .drv files parse exactly as nix show-derivation reads them", {
  skip: !NIX_INSTANTIATE || !NIX ? "needs nix-instantiate and nix" : false,
}, () => {
  const { dir, cleanup } = tempDir();
  try {
    const expr = EXPR;
    for (const attr of ["fod", "multi"]) {
      const drvPath = instantiate(dir, `(${expr}).${attr}`);
      const drv = readDerivationFile(drvPath);
      const nix = showDerivation(drvPath);
      assert.deepEqual(
        Object.fromEntries([...drv.outputs].map(([k, o]) => [k, o.hashAlgo ? o : { path: o.path }])),
        nix.outputs,
      );
      assert.deepEqual(drv.inputSrcs, nix.inputSrcs);
      assert.deepEqual(Object.fromEntries(drv.inputDrvs), nix.inputDrvs);
      assert.equal(drv.platform, nix.system);
      assert.equal(drv.builder, nix.builder);
      assert.deepEqual(drv.args, nix.args);
      assert.deepEqual(Object.fromEntries(drv.env), nix.env);
      assert.equal(isFixedOutput(drv), attr === "fod");
    }
    const fod = readDerivationFile(instantiate(dir, `(${expr}).fod`));
    assert.equal(fod.args[0], "-c");
    assert.equal(fod.args[1], 'quote" backslash\\ newline\n tab\t cr\r end');
    assert.equal(fod.env.get("nixsealSecret"), "mods-token");
    assert.match(fod.env.get("mixed")!, / é ✓ "q"$/);
  } finally {
    cleanup();
  }
});

const GOOD =
  'Derive([("out","/nix/store/a-x","sha256","00")],[("/nix/store/b.drv",["out"])],["/nix/store/c"],' +
  '"x86_64-linux","/bin/sh",["-c","e\\"x"],[("k","v"),("out","/nix/store/a-x")])';

test("a hand-written derivation parses; every truncation of it is refused", () => {
  const drv = parseDerivation(Buffer.from(GOOD), "good.drv");
  assert.equal(drv.args[1], 'e"x');
  assert.equal(isFixedOutput(drv), true);
  for (let n = 0; n < GOOD.length; n++) {
    assert.throws(() => parseDerivation(Buffer.from(GOOD.slice(0, n)), "cut.drv"), isError("DRV_FORMAT"));
  }
});

test("damaged and hostile derivations are refused with the file named", () => {
  const bad: [string, RegExp][] = [
    [`${GOOD} `, /trailing data/],
    [GOOD.replace("Derive(", "DrvWithVersion("), /expected "Derive\("/],
    [GOOD.replace('("k","v")', '("k","v"),("k","w")'), /duplicate environment variable "k"/],
    [
      GOOD.replace('[("out","/nix/store/a-x","sha256","00")]', '[("out","/a","",""),("out","/b","","")]'),
      /duplicate or empty output/,
    ],
    [GOOD.replace('[("out","/nix/store/a-x","sha256","00")]', "[]"), /at least one output/],
    [GOOD.replace('["/nix/store/c"]', '["relative"]'), /not an absolute path/],
    [GOOD.replace('"k","v"', '"k" ,"v"'), /expected ","/],
  ];
  for (const [text, pattern] of bad) {
    assert.throws(
      () => parseDerivation(Buffer.from(text), "/nix/store/x.drv"),
      isError("DRV_FORMAT", new RegExp(`^/nix/store/x\\.drv: .*${pattern.source}`)),
      text,
    );
  }
  const invalidUtf8 = Buffer.concat([
    Buffer.from(GOOD.slice(0, -4)),
    Buffer.from([0xff]),
    Buffer.from('")])'),
  ]);
  assert.throws(() => parseDerivation(invalidUtf8, "u.drv"), isError("DRV_FORMAT", /not valid UTF-8/));
  assert.throws(
    () => parseDerivation(new Uint8Array(MAX_DRV_BYTES + 1), "big.drv"),
    isError("DRV_FORMAT", /larger than/),
  );
});

test("readDerivationFile refuses symlinks and non-files, and names a missing file", () => {
  const { dir, cleanup } = tempDir();
  try {
    const real = path.join(dir, "x.drv");
    fs.writeFileSync(real, GOOD);
    fs.symlinkSync(real, path.join(dir, "link.drv"));
    assert.equal(readDerivationFile(real).builder, "/bin/sh");
    assert.throws(() => readDerivationFile(path.join(dir, "link.drv")), isError("IO"));
    assert.throws(() => readDerivationFile(dir), isError("DRV_FORMAT", /not a regular file/));
    assert.throws(() => readDerivationFile(path.join(dir, "none.drv")), isError("IO", /no such file/));
  } finally {
    cleanup();
  }
});

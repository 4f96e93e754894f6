/**
 * `nixseal build-hook` exit codes: --sweep, which a timer runs, fails visibly (exit 1) when the
 * policy is missing or invalid; the pre- and post-build hooks themselves never fail (a failing
 * hook would stop Nix's builds).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { nixseal, tempDir } from "../helpers.js";

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir("nixseal-hook-"));
});
after(() => cleanup());

test("--sweep without a usable policy exits 1 with the error, so a timer shows the failure", () => {
  const missing = path.join(dir, "missing.json");
  const r = nixseal(["build-hook", "--sweep", "--policy", missing]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /nixseal build-hook: error: cannot read the build-secrets policy .*missing\.json/);
  assert.match(r.stderr, /nixseal build-hook: hint: /);

  const invalid = path.join(dir, "invalid.json");
  fs.writeFileSync(invalid, "{ not json", { mode: 0o644 });
  const bad = nixseal(["build-hook", "--sweep", "--policy", invalid]);
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /invalid\.json/);
});

test("the hooks never fail: --post and the pre-build hook exit 0 even without a policy", () => {
  const policy = path.join(dir, "none.json");
  const post = nixseal(["build-hook", "--post", "--policy", policy], {
    env: { DRV_PATH: "/nix/store/00000000000000000000000000000000-x.drv" },
  });
  assert.equal(post.status, 0, post.stderr);
  const pre = nixseal(["build-hook", "--policy", policy, path.join(dir, "missing.drv")]);
  assert.equal(pre.status, 0, pre.stderr);
  assert.equal(pre.stdout.length, 0, "nothing for Nix to read");
});

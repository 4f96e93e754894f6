/**
 * A nearly full generations dir (a size-limited tmpfs, mounted by the test in its private mount
 * namespace and used with mount "existing"): an identical or smaller install still succeeds,
 * because the generations that pruning would remove after the switch go before writing.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import {
  ageFile,
  installOk,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  runPlan,
  secret,
  snap,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason();

test("a full tmpfs: identical and smaller installs succeed, the active generation is never removed first", {
  skip: skip ?? false,
}, async () => {
  const host = makeHost();
  try {
    // 1 MiB of tmpfs, a 400 KiB secret: two generations fit, three do not.
    const big = uniqueSecret("big") + "x".repeat(400 * 1024);
    const small = uniqueSecret("small") + "y".repeat(300 * 1024);
    const bigFile = await ageFile(host, "big", big);
    const smallFile = await ageFile(host, "small", small);
    const extra = { mount: "existing", keepGenerations: 1 };
    const same = writeManifest(host, [secret("blob", bigFile)], [], extra);
    const smaller = writeManifest(host, [secret("blob", smallFile)], [], extra);
    const install = (m: string) => ({ op: "install" as const, args: ["--manifest", m, "--json"] });
    const results = runPlan(host, [
      { op: "mountTmpfs", dir: host.generationsDir, size: "1m" },
      install(same),
      install(same),
      install(same), // generations 1 and 2 fill it: 1 must go before 3 is written
      install(smaller),
      { op: "snapshot", dir: host.generationsDir },
    ]);
    assert.deepEqual(results[0], { op: "mountTmpfs", ok: true });
    for (const [i, r] of results.slice(1, 5).entries()) {
      installOk(r);
      assert.equal(jsonOf(r).generation, i + 1, `install ${i + 1}`);
    }
    assert.deepEqual(jsonOf(results[3]).pruned, [1]);
    assert.deepEqual(jsonOf(results[4]).pruned, [2]);
    const files = snap(results[5]).files;
    assert.equal(files["4/blob"]?.content, small);
    assert.equal(files["3/blob"]?.content, big, "the one before the active is kept (keepGenerations 1)");
    assert.equal(files["2/blob"], undefined);
    assert.equal(fs.existsSync(path.join(host.generationsDir, "4")), false, "the tmpfs was the test's own");
  } finally {
    host.cleanup();
  }
});

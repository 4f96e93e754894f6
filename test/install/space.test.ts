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

test("a full tmpfs: installs of the same size and smaller succeed, the active generation is never removed first", {
  skip: skip ?? false,
}, async () => {
  const host = makeHost();
  try {
    // 1 MiB of tmpfs, a 400 KiB secret: two generations fit, three do not. Each install of that
    // size has another value (an identical one keeps the active generation: no room needed).
    const bigs = ["big1", "big2", "big3"].map((l) => uniqueSecret(l) + "x".repeat(400 * 1024));
    const small = uniqueSecret("small") + "y".repeat(300 * 1024);
    const bigFiles = await Promise.all(bigs.map((v, i) => ageFile(host, `big${i}`, v)));
    const smallFile = await ageFile(host, "small", small);
    const extra = { mount: "existing", keepGenerations: 1 };
    const sameSize = bigFiles.map((f) => writeManifest(host, [secret("blob", f)], [], extra));
    const smaller = writeManifest(host, [secret("blob", smallFile)], [], extra);
    const install = (m: string) => ({ op: "install" as const, args: ["--manifest", m, "--json"] });
    const results = runPlan(host, [
      { op: "mountTmpfs", dir: host.generationsDir, size: "1m" },
      install(sameSize[0]!),
      install(sameSize[1]!),
      install(sameSize[1]!), // nothing changed: generation 2 stays, nothing is written
      install(sameSize[2]!), // generations 1 and 2 fill it: 1 must go before 3 is written
      install(smaller),
      { op: "snapshot", dir: host.generationsDir },
    ]);
    assert.deepEqual(results[0], { op: "mountTmpfs", ok: true });
    for (const r of results.slice(1, 6)) installOk(r);
    assert.deepEqual(
      results.slice(1, 6).map((r) => jsonOf(r).generation),
      [1, 2, 2, 3, 4],
    );
    assert.deepEqual(jsonOf(results[3]).pruned, []);
    assert.deepEqual(jsonOf(results[4]).pruned, [1]);
    assert.deepEqual(jsonOf(results[5]).pruned, [2]);
    const files = snap(results[6]).files;
    assert.equal(files["4/blob"]?.content, small);
    assert.equal(files["3/blob"]?.content, bigs[2], "the one before the active is kept (keepGenerations 1)");
    assert.equal(files["2/blob"], undefined);
    assert.equal(fs.existsSync(path.join(host.generationsDir, "4")), false, "the tmpfs was the test's own");
  } finally {
    host.cleanup();
  }
});

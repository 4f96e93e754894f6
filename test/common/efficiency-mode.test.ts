/**
 * enterEfficiencyMode (src/common/efficiency-mode.ts) switches V8 to efficiency mode in a running
 * process, for the thread that calls it and for threads started after, as the install's decrypt
 * worker relies on. V8's own answer (%IsEfficiencyModeEnabled, a
 * natives-syntax call for tests) is asked in a child process.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { REPO } from "../helpers.js";

const MODULE = pathToFileURL(path.join(REPO, "dist", "src", "common", "efficiency-mode.js")).href;

test("enterEfficiencyMode puts V8 in efficiency mode, on this thread and on threads started after", () => {
  const script = `
    // The worker's source is a module too (it inherits --input-type).
    import { Worker } from "node:worker_threads";
    const { enterEfficiencyMode } = await import(${JSON.stringify(MODULE)});
    const before = %IsEfficiencyModeEnabled();
    const first = enterEfficiencyMode();
    const again = enterEfficiencyMode();
    const after = %IsEfficiencyModeEnabled();
    const w = new Worker("import { parentPort } from 'node:worker_threads'; parentPort.postMessage(%IsEfficiencyModeEnabled());", { eval: true });
    w.once("message", (inWorker) => {
      process.stdout.write(JSON.stringify({ before, first, again, after, inWorker }));
      w.terminate();
    });
  `;
  const r = spawnSync(process.execPath, ["--allow-natives-syntax", "--input-type=module", "-e", script], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    before: false,
    first: true,
    again: true,
    after: true,
    inWorker: true,
  });
});

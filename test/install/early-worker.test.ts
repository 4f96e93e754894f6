/**
 * The decrypt worker started before the manifest is parsed (src/install/early-worker.ts): the
 * guess made from the text, and a worker that the install takes or closes.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import {
  ageFormatsNamed,
  firstInstall,
  PARALLEL_MIN_DECRYPTS,
  startEarlyWorker,
} from "../../src/install/early-worker.js";
import { tempDir } from "../helpers.js";

test("the guess counts the age format as JSON writes it, compact or with spaces, up to the limit, and not inside a string", () => {
  const compact = JSON.stringify({ secrets: [{ format: "age" }, { format: "yaml" }, { format: "age" }] });
  assert.equal(ageFormatsNamed(compact, 10), 2);
  const spaced = JSON.stringify(
    { secrets: [{ format: "age" }, { format: "age" }, { format: "age" }] },
    null,
    2,
  );
  assert.equal(ageFormatsNamed(spaced, 10), 3);
  assert.equal(ageFormatsNamed(spaced, 2), 2, "stops at the limit");
  // A name that spells it: its quotes are escaped in the JSON text.
  assert.equal(ageFormatsNamed(JSON.stringify({ name: '"format":"age"' }), 10), 0);
  // Counted again from the start at each call (the pattern is global).
  assert.equal(ageFormatsNamed(compact, 10), 2);
});

test("a first install: the manifest's secretsDir does not exist; anything there, or no absolute secretsDir, is not one", () => {
  const { dir, cleanup } = tempDir();
  try {
    const text = (secretsDir: unknown) => JSON.stringify({ version: 1, secrets: [], secretsDir }, null, 2);
    const missing = path.join(dir, "run", "secrets");
    assert.equal(firstInstall(text(missing)), true);
    fs.mkdirSync(missing, { recursive: true });
    assert.equal(firstInstall(text(missing)), false, "a directory");
    const link = path.join(dir, "link");
    fs.symlinkSync(path.join(dir, "gone"), link);
    assert.equal(firstInstall(text(link)), false, "a dangling symlink: a generation was active there");
    // Escapes in the path are read as JSON reads them.
    const quoted = path.join(dir, 'with "quotes"');
    assert.equal(firstInstall(text(quoted)), true);
    fs.mkdirSync(quoted);
    assert.equal(firstInstall(text(quoted)), false);
    assert.equal(firstInstall(text("relative/secrets")), false);
    assert.equal(firstInstall(text(42)), false);
    assert.equal(firstInstall(JSON.stringify({ version: 1 })), false, "no secretsDir");
    assert.equal(
      firstInstall(JSON.stringify({ name: `"secretsDir":"${missing}-x"` })),
      false,
      "only a key, not a string that spells one",
    );
  } finally {
    cleanup();
  }
});

test("startEarlyWorker: none for a small manifest or a re-activation; for a first install of many, a worker taken once or closed", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const manifest = (n: number, secretsDir: string) =>
      JSON.stringify({
        secretsDir,
        secrets: Array.from({ length: n }, (_, i) => ({ name: `s${i}`, file: `/x/${i}.age`, format: "age" })),
      });
    const missing = path.join(dir, "secrets");
    assert.equal(await startEarlyWorker(manifest(PARALLEL_MIN_DECRYPTS - 1, missing)), null, "too few");
    assert.equal(await startEarlyWorker(manifest(PARALLEL_MIN_DECRYPTS, dir)), null, "a re-activation");

    const early = await startEarlyWorker(manifest(PARALLEL_MIN_DECRYPTS, missing));
    assert.ok(early !== null, "a first install of many age files");
    const { worker, gone } = early.take();
    assert.equal(gone, false);
    assert.throws(() => early.take(), /already taken/);
    await early.close(); // taken: its user stops it
    const exited = new Promise<number>((resolve) => worker.once("exit", resolve));
    // It waits for its first message (WorkerStart) and keeps running until stopped.
    assert.equal(
      await Promise.race([exited, new Promise((r) => setTimeout(() => r("running"), 200))]),
      "running",
    );
    await worker.terminate();
    await exited;

    const unused = await startEarlyWorker(manifest(PARALLEL_MIN_DECRYPTS, missing));
    assert.ok(unused !== null);
    await unused.close();
    assert.throws(() => unused.take(), /already taken/, "a closed worker is not used");
  } finally {
    cleanup();
  }
});

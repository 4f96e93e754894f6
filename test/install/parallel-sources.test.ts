/** The decryption worker of nixseal install, driven directly (the installer uses it only when it pays). */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { encrypt } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import type { WorkerInput, WorkerOutcome } from "../../src/install/parallel-sources.js";
import { parseRecipientString } from "../../src/keys/key-types.js";
import { tempDir, which } from "../helpers.js";

const WORKER = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "src",
  "install",
  "decrypt-worker.js",
);

test("decrypt worker: loads the host key itself, claims files from the shared counter, returns plaintexts and errors with their file", async (t) => {
  if (!which("ssh-keygen")) return t.skip("needs ssh-keygen");
  const { dir, cleanup } = tempDir();
  try {
    const key = path.join(dir, "ssh_host_ed25519_key");
    assert.equal(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]).status, 0);
    const host = parseRecipientString(fs.readFileSync(`${key}.pub`, "utf8").trim(), "host");
    const stranger = parseRecipientString(X25519Identity.generate().recipient().toString(), "stranger");
    const files: string[] = [];
    for (let i = 0; i < 6; i++) {
      const f = path.join(dir, `s${i}.age`);
      fs.writeFileSync(f, await encrypt(Buffer.from(`value ${i}`), [i === 4 ? stranger : host]));
      files.push(f);
    }
    const counter = new SharedArrayBuffer(4);
    // The main thread has already claimed the first two files.
    Atomics.store(new Int32Array(counter), 0, 2);
    const input: WorkerInput = { files, identities: [{ type: "ssh", path: key, name: null }], counter };
    const outcomes = await new Promise<WorkerOutcome[]>((resolve, reject) => {
      const w = new Worker(WORKER, { workerData: input });
      w.once("message", resolve);
      w.once("error", reject);
    });
    assert.deepEqual(
      outcomes.map((o) => o.index),
      [2, 3, 4, 5],
      "only the unclaimed files, each once",
    );
    for (const o of outcomes) {
      if (o.index === 4) {
        assert.ok("error" in o);
        assert.equal(o.error.code, "AGE_NO_MATCH");
        assert.equal(o.error.file, files[4]);
        assert.ok(o.error.hint);
      } else {
        assert.ok("plain" in o);
        assert.equal(Buffer.from(o.plain).toString(), `value ${o.index}`);
      }
    }
    assert.equal(Atomics.load(new Int32Array(counter), 0) >= files.length, true);
  } finally {
    cleanup();
  }
});

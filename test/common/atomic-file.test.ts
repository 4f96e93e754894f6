/** AtomicFile's thread-pool path (openAsync, writeAsync, syncAsync, commitAsync), used by nixseal rekey. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { AtomicFile, NixsealError } from "../../src/common/index.js";
import { tempDir } from "../helpers.js";

test("openAsync + writeAsync + commitAsync: the target holds the new bytes, with the mode asked for", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "secret.age");
    fs.writeFileSync(target, "old");
    // Large enough that write() may return early: every byte must still arrive.
    const data = randomBytes(8 * 1024 * 1024 + 17);
    const f = await AtomicFile.openAsync(target, 0o640);
    // Until commit the target is untouched, and the temp file already has its final mode.
    assert.equal(fs.readFileSync(target, "utf8"), "old");
    assert.equal(fs.statSync(f.tempPath).mode & 0o777, 0o640 & ~process.umask());
    await f.writeAsync(data);
    await f.commitAsync();
    assert.deepEqual(fs.readFileSync(target), data);
    assert.equal(fs.statSync(target).mode & 0o777, 0o640 & ~process.umask());
    assert.deepEqual(fs.readdirSync(dir), ["secret.age"]);
  } finally {
    cleanup();
  }
});

test("an async temp file that is aborted, or whose commit is vetoed, leaves the target as it was", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "s");
    fs.writeFileSync(target, "old");
    const a = await AtomicFile.openAsync(target, 0o600);
    await a.writeAsync(Buffer.from("new"));
    a.abort();
    const b = await AtomicFile.openAsync(target, 0o600);
    await b.writeAsync(Buffer.from("new"));
    await assert.rejects(
      b.commitAsync(() => {
        throw new NixsealError("IO", "changed meanwhile");
      }),
      /changed meanwhile/,
    );
    assert.equal(fs.readFileSync(target, "utf8"), "old");
    assert.deepEqual(fs.readdirSync(dir), ["s"]);
  } finally {
    cleanup();
  }
});

test("openAsync in a directory that does not exist: a NixsealError naming the directory", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const missing = path.join(dir, "no-such-dir");
    await assert.rejects(AtomicFile.openAsync(path.join(missing, "f"), 0o600), (e: unknown) => {
      assert.ok(e instanceof NixsealError);
      assert.equal(e.code, "IO");
      assert.match(e.message, /no-such-dir/);
      return true;
    });
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    cleanup();
  }
});

test("syncAsync makes the temp file durable without touching the target; commitAsync then renames it, also after more writes", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "s");
    fs.writeFileSync(target, "old");
    const f = await AtomicFile.openAsync(target, 0o600);
    await f.writeAsync(Buffer.from("new "));
    await f.syncAsync();
    assert.equal(fs.readFileSync(target, "utf8"), "old");
    assert.equal(fs.readFileSync(f.tempPath, "utf8"), "new ");
    // The file stays open for writing after a sync, and the commit takes everything written.
    await f.writeAsync(Buffer.from("content"));
    await f.commitAsync();
    assert.equal(fs.readFileSync(target, "utf8"), "new content");
    assert.deepEqual(fs.readdirSync(dir), ["s"]);
  } finally {
    cleanup();
  }
});

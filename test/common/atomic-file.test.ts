/** AtomicFile's path for many files at once (open, write, syncAsync, commitSynced), used by nixseal rekey. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { AtomicFile, NixsealError } from "../../src/common/index.js";
import { tempDir } from "../helpers.js";

test("open + write + syncAsync + commitSynced: the target holds the new bytes, with the mode asked for", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "secret.age");
    fs.writeFileSync(target, "old");
    // Large enough that one write() may not take it all: every byte must still arrive.
    const data = randomBytes(8 * 1024 * 1024 + 17);
    const f = AtomicFile.open(target, 0o640);
    // Until the commit the target is untouched, and the temp file already has its final mode.
    assert.equal(fs.statSync(f.tempPath).mode & 0o777, 0o640 & ~process.umask());
    f.write([data.subarray(0, 5), data.subarray(5)]);
    await f.syncAsync({ close: true });
    assert.equal(fs.readFileSync(target, "utf8"), "old");
    assert.deepEqual(fs.readFileSync(f.tempPath), data);
    f.commitSynced();
    assert.deepEqual(fs.readFileSync(target), data);
    assert.equal(fs.statSync(target).mode & 0o777, 0o640 & ~process.umask());
    assert.deepEqual(fs.readdirSync(dir), ["secret.age"]);
  } finally {
    cleanup();
  }
});

test("a synced temp file that is aborted, or whose commit is vetoed, leaves the target as it was", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "s");
    fs.writeFileSync(target, "old");
    const a = AtomicFile.open(target, 0o600);
    a.write(Buffer.from("new"));
    await a.syncAsync({ close: true });
    a.abort();
    const b = AtomicFile.open(target, 0o600);
    b.write(Buffer.from("new"));
    await b.syncAsync();
    assert.throws(
      () =>
        b.commitSynced(() => {
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

test("a file still open after syncAsync takes more writes, and commitSynced takes everything written", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "s");
    const f = AtomicFile.open(target, 0o600);
    f.write(Buffer.from("new "));
    await f.syncAsync();
    f.write(Buffer.from("content"));
    f.commitSynced();
    assert.equal(fs.readFileSync(target, "utf8"), "new content");
    assert.deepEqual(fs.readdirSync(dir), ["s"]);
  } finally {
    cleanup();
  }
});

test("temp files beside one target get distinct names across refills of the name pool", () => {
  const { dir, cleanup } = tempDir();
  try {
    const target = path.join(dir, "s");
    const files = Array.from({ length: 600 }, () => AtomicFile.open(target, 0o600));
    assert.equal(new Set(files.map((f) => f.tempPath)).size, 600);
    for (const f of files) f.abort();
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    cleanup();
  }
});

test("open in a directory that does not exist: a NixsealError naming the directory", () => {
  const { dir, cleanup } = tempDir();
  try {
    const missing = path.join(dir, "no-such-dir");
    assert.throws(
      () => AtomicFile.open(path.join(missing, "f"), 0o600),
      (e: unknown) => {
        assert.ok(e instanceof NixsealError);
        assert.equal(e.code, "IO");
        assert.match(e.message, /no-such-dir/);
        return true;
      },
    );
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    cleanup();
  }
});

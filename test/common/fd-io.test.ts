/** readAllSync: the one read-a-whole-file loop of install and build-secrets. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { readAllSync } from "../../src/common/fd-io.js";
import { tempDir } from "../helpers.js";

test("readAllSync: the whole file, from its start, whatever the descriptor's position", () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = path.join(dir, "f");
    const data = randomBytes(300_000);
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, "r");
    try {
      fs.readSync(fd, Buffer.alloc(10), 0, 10, null); // moves the position: must not matter
      assert.deepEqual(readAllSync(fd, fs.fstatSync(fd).size), data);
      assert.equal(readAllSync(fd, 0).length, 0);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    cleanup();
  }
});

test("readAllSync: a file that shrank after fstat gives what is there, nothing more", () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = path.join(dir, "f");
    fs.writeFileSync(file, "0123456789");
    const fd = fs.openSync(file, "r+");
    try {
      const size = fs.fstatSync(fd).size;
      fs.ftruncateSync(fd, 4);
      assert.equal(readAllSync(fd, size).toString(), "0123");
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    cleanup();
  }
});

/**
 * Walking trees with the matcher: offsets in big files read in small chunks, symlinks not
 * followed, FIFOs and sockets skipped (no hang), hard links scanned once but reported at each
 * name, names and link targets checked, missing paths reported.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { test } from "node:test";
import { Matcher } from "../../src/audit/matcher.js";
import { type ScanOptions, scanPaths } from "../../src/audit/scan.js";
import { prng, tempDir } from "../helpers.js";

const enc = new TextEncoder();

function randomText(rand: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x20 + Math.floor(rand() * 0x5f);
  return b;
}

// Each runs twice: on the main thread, and with scanning threads from the first byte (a large
// scan's way: src/audit/scan-pool.ts).
const MODES: [string, ScanOptions][] = [
  ["(main thread)", { threads: 1 }],
  ["(scanning threads)", { threads: 2, threadsAfterBytes: 0 }],
];
for (const [mode, threads] of MODES) {
  test(`scan ${mode}: matches in nested files at their offsets, across chunk boundaries of a large file`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const rand = prng(1);
      const secret = enc.encode("Zr7#qW2!vN9xLp0m");
      const big = Buffer.alloc(3 * 65536 + 100, 0x41);
      // One occurrence straddles the first 64 KiB read boundary, one is at the very end.
      const at1 = 65536 - 5;
      const at2 = big.length - secret.length;
      big.set(secret, at1);
      big.set(secret, at2);
      fs.mkdirSync(path.join(dir, "a", "b", "c"), { recursive: true });
      fs.writeFileSync(path.join(dir, "a", "b", "c", "big.bin"), big);
      const small = Buffer.concat([randomText(rand, 1000), Buffer.from(secret), randomText(rand, 50)]);
      fs.writeFileSync(path.join(dir, "a", "small.txt"), small);
      fs.writeFileSync(path.join(dir, "a", "clean.txt"), randomText(rand, 5000));
      fs.writeFileSync(path.join(dir, "empty"), "");
      const m = new Matcher([Uint8Array.from(secret)]);
      const r = await scanPaths([dir], m, { chunkSize: 65536, concurrency: 2, ...threads });
      assert.deepEqual(r.problems, []);
      assert.deepEqual(
        r.hits.map((h) => [path.relative(dir, h.file), h.offset, h.place]),
        [
          ["a/b/c/big.bin", at1, "content"],
          ["a/b/c/big.bin", at2, "content"],
          ["a/small.txt", 1000, "content"],
        ],
      );
      assert.equal(r.stats.files, 4);
      assert.equal(r.stats.bytes, big.length + small.length + 5000);
      assert.equal(r.stats.directories, 4);
    } finally {
      cleanup();
    }
  });

  test(`scan ${mode}: symlinks are not followed (their target text is checked); FIFOs and sockets are skipped`, async () => {
    const { dir, cleanup } = tempDir();
    const server = net.createServer();
    try {
      const secret = enc.encode("s3cr3t-Value-77");
      const tree = path.join(dir, "tree");
      const outside = path.join(dir, "outside");
      fs.mkdirSync(tree);
      fs.mkdirSync(outside);
      fs.writeFileSync(
        path.join(outside, "leak.txt"),
        Buffer.concat([Buffer.from("x="), Buffer.from(secret)]),
      );
      fs.writeFileSync(
        path.join(tree, "inside.txt"),
        Buffer.concat([Buffer.from("y="), Buffer.from(secret)]),
      );
      fs.symlinkSync(path.join(outside, "leak.txt"), path.join(tree, "to-outside"));
      fs.symlinkSync(outside, path.join(tree, "dir-outside"));
      fs.symlinkSync("inside.txt", path.join(tree, "to-inside"));
      fs.symlinkSync(`/run/${Buffer.from(secret).toString()}`, path.join(tree, "named-by-target"));
      fs.symlinkSync(tree, path.join(tree, "loop"));
      const { execFileSync } = await import("node:child_process");
      execFileSync("mkfifo", [path.join(tree, "fifo")]);
      await new Promise<void>((resolve) => server.listen(path.join(tree, "socket"), resolve));
      const m = new Matcher([Uint8Array.from(secret)]);
      const r = await scanPaths([tree], m, threads);
      assert.deepEqual(r.problems, []);
      assert.deepEqual(
        r.hits.map((h) => [path.relative(dir, h.file), h.offset, h.place]),
        [
          ["tree/inside.txt", 2, "content"],
          ["tree/named-by-target", 5, "link-target"],
        ],
      );
      assert.equal(r.stats.symlinks, 5);
      assert.equal(r.stats.special, 2);
      assert.equal(r.stats.files, 1);
    } finally {
      server.close();
      cleanup();
    }
  });

  test(`scan ${mode}: a symlink given as a path is followed (./result); names are checked; hard links read once`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const secret = enc.encode("Token_9f8e7d6c5b");
      const real = path.join(dir, "real");
      fs.mkdirSync(real);
      fs.writeFileSync(path.join(real, "a.conf"), Buffer.concat([Buffer.from("k: "), Buffer.from(secret)]));
      fs.linkSync(path.join(real, "a.conf"), path.join(real, "b.conf"));
      fs.writeFileSync(path.join(real, `cfg-${Buffer.from(secret).toString()}`), "nothing here");
      fs.symlinkSync(real, path.join(dir, "result"));
      const m = new Matcher([Uint8Array.from(secret)]);
      const r = await scanPaths([path.join(dir, "result")], m, { concurrency: 1, ...threads });
      assert.deepEqual(r.problems, []);
      assert.deepEqual(
        r.hits.map((h) => [path.basename(h.file), h.offset, h.place]),
        [
          ["a.conf", 3, "content"],
          ["b.conf", 3, "content"],
          [`cfg-${Buffer.from(secret).toString()}`, 4, "name"],
        ],
      );
      assert.equal(r.stats.hardLinks, 1);
      assert.equal(r.stats.files, 2);
    } finally {
      cleanup();
    }
  });
}

test("scan: threads that start mid-scan find exactly what the main thread alone finds", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const rand = prng(7);
    const secrets = ["Alpha-secret-0001", "Bravo-secret-0002", "Charlie-secret-03"].map((x) => enc.encode(x));
    for (let i = 0; i < 40; i++) {
      const sub = path.join(dir, `d${i % 5}`);
      fs.mkdirSync(sub, { recursive: true });
      const body = randomText(rand, 8000 + i * 97);
      const secret = secrets[i % 3]!;
      if (i % 4 !== 0) body.set(secret, (i * 131) % (body.length - secret.length));
      fs.writeFileSync(path.join(sub, `f${i}`), body);
      if (i % 10 === 0) fs.linkSync(path.join(sub, `f${i}`), path.join(sub, `link${i}`));
    }
    const m = new Matcher(secrets.map((x) => Uint8Array.from(x)));
    const alone = await scanPaths([dir], m, { threads: 1 });
    // About ten files on the main thread, the rest on two threads.
    const mixed = await scanPaths([dir], m, { threads: 2, threadsAfterBytes: 80_000 });
    assert.deepEqual(mixed.problems, []);
    // 30 files hold a secret; of the 4 hard links, those of f10 and f30 do.
    assert.equal(alone.hits.length, 30 + 2);
    assert.deepEqual(mixed.hits, alone.hits);
    assert.deepEqual(mixed.stats, alone.stats);
    assert.equal(mixed.stats.hardLinks, 4);
  } finally {
    cleanup();
  }
});

test("scan: a path that does not exist is a problem naming it; the other paths are still scanned", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const secret = enc.encode("another-Secret-1");
    fs.writeFileSync(path.join(dir, "f"), secret);
    const m = new Matcher([Uint8Array.from(secret)]);
    const r = await scanPaths([path.join(dir, "nope"), path.join(dir, "f")], m);
    assert.equal(r.problems.length, 1);
    assert.equal(r.problems[0]!.code, "IO");
    assert.match(r.problems[0]!.message, /nope: no such file/);
    assert.ok(r.problems[0]!.hint);
    assert.equal(r.hits.length, 1);
  } finally {
    cleanup();
  }
});

test("scan: matches per file are capped and the rest counted, on the main thread and on threads", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const secret = "abcdefgh1234";
    fs.writeFileSync(path.join(dir, "many"), secret.repeat(250));
    fs.linkSync(path.join(dir, "many"), path.join(dir, "many-again"));
    const m = new Matcher([enc.encode(secret)]);
    for (const threads of MODES.map(([, t]) => t)) {
      const r = await scanPaths([dir], m, { maxHitsPerFile: 100, ...threads });
      // 100 listed per name (the first ones, in order), the other 150 of each counted.
      assert.equal(r.hits.length, 200);
      assert.deepEqual(
        r.hits.filter((h) => h.file.endsWith("/many")).map((h) => h.offset),
        Array.from({ length: 100 }, (_, i) => i * secret.length),
      );
      assert.equal(r.stats.unlistedHits, 300);
      assert.equal(r.stats.hardLinks, 1);
    }
  } finally {
    cleanup();
  }
});

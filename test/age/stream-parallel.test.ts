/**
 * The parallel STREAM engine (src/age/stream-parallel.ts) against the sequential one
 * (src/age/stream.ts): byte-identical ciphertext, and on every kind of damaged payload the same
 * released plaintext and the same error (truncation at every chunk boundary, a flipped bit in
 * every chunk, trailing data, two final chunks, an empty final chunk). Small batches and jobs
 * make a 1 MiB payload cross every batch and job boundary. Also: workers start only past the
 * threshold, end with finish()/destroy(), never keep a process alive, and a file big enough for
 * the default settings round-trips with the real `age` binary.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { AgeDecryptor, AgeEncryptor } from "../../src/age/age.js";
import {
  CHUNK_SIZE,
  ENCRYPTED_CHUNK_SIZE,
  PayloadDecryptor,
  PayloadEncryptor,
  sealChunkAt,
  TAG_SIZE,
} from "../../src/age/stream.js";
import {
  type ParallelOptions,
  ParallelPayloadDecryptor,
  ParallelPayloadEncryptor,
  StreamWorkerPool,
} from "../../src/age/stream-parallel.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";

const E = ENCRYPTED_CHUNK_SIZE;
const C = CHUNK_SIZE;

/** Workers from the first byte, batches of 2 chunks, jobs of 6: every boundary is crossed. */
const SMALL: ParallelOptions = { threshold: 0, workers: 1, batchChunks: 2, jobChunks: 6 };
/** The same, but the main thread takes no batch: everything goes through the worker. */
const WORKERS_ONLY: ParallelOptions = { ...SMALL, mainThreadHelps: false };
/** Each configuration shares one pool between its many payloads (a pool per payload is slow). */
const CONFIGS: [string, ParallelOptions, number][] = [
  ["worker only", WORKERS_ONLY, 1],
  ["worker and main thread", SMALL, 1],
  ["two workers and main thread", SMALL, 2],
];

/** A payload from explicit chunks: each is sealed at its index, with its own last flag. */
function sealChunks(key: Uint8Array, chunks: { plain: Buffer; last: boolean }[]): Buffer {
  const out: Buffer[] = [];
  const nonce = Buffer.alloc(12);
  chunks.forEach((c, i) => {
    sealChunkAt(key, i, c.last, c.plain, nonce, out);
  });
  return Buffer.concat(out);
}

/** Copies into shared memory (read in place by the workers) or ordinary memory (copied). */
function place(data: Buffer, shared: boolean): Buffer {
  const b = shared ? Buffer.from(new SharedArrayBuffer(data.length)) : Buffer.alloc(data.length);
  data.copy(b);
  return b;
}

interface Outcome {
  released: Buffer;
  error: { code: string; message: string; hint: string | undefined } | null;
}

/** Feeds `payload` in pieces of the given sizes (the last size repeats); returns what came out. */
function runDecryptor(dec: PayloadDecryptor, payload: Buffer, pieces: number[], shared: boolean): Outcome {
  const out: Buffer[] = [];
  try {
    for (let off = 0, i = 0; off < payload.length; i++) {
      const n = pieces[Math.min(i, pieces.length - 1)]!;
      dec.push(place(payload.subarray(off, off + n), shared), out);
      off += n;
    }
    dec.finish(out);
    return { released: Buffer.concat(out), error: null };
  } catch (e) {
    dec.destroy();
    assert.ok(e instanceof NixsealError, `expected a NixsealError, got ${String(e)}`);
    return { released: Buffer.concat(out), error: { code: e.code, message: e.message, hint: e.hint } };
  }
}

const SPLITS: [string, number[], boolean][] = [
  ["one push", [Number.MAX_SAFE_INTEGER], true],
  ["one push, ordinary memory", [Number.MAX_SAFE_INTEGER], false],
  ["pushes of 4.5 chunks", [Math.floor(4.5 * E)], true],
  ["uneven pushes", [7, 5 * E + 3, 8 * E - 10, 13 * E], false],
];

const key = randomBytes(32);
const N = 13; // full chunks before the final one
const plain = randomBytes(N * C + 1000);
const valid = (() => {
  const enc = new PayloadEncryptor(key);
  const out: Buffer[] = [];
  enc.push(plain, out);
  enc.finish(out);
  return Buffer.concat(out);
})();
const fullPlain = randomBytes(N * C);
const validFullFinal = sealChunks(
  key,
  Array.from({ length: N }, (_, i) => ({ plain: fullPlain.subarray(i * C, (i + 1) * C), last: i === N - 1 })),
);

function flipBit(data: Buffer, at: number): Buffer {
  const b = Buffer.from(data);
  b[at]! ^= 0x10;
  return b;
}

/** Damaged and valid payloads, with what the sequential code must release (checked first). */
function cases(): { name: string; payload: Buffer; released: Buffer; ok: boolean }[] {
  const list: { name: string; payload: Buffer; released: Buffer; ok: boolean }[] = [
    { name: "valid, short final chunk", payload: valid, released: plain, ok: true },
    { name: "valid, full-size final chunk", payload: validFullFinal, released: fullPlain, ok: true },
  ];
  for (let k = 0; k <= N; k++) {
    list.push({
      name: `truncated after ${k} chunks`,
      payload: valid.subarray(0, k * E),
      released: plain.subarray(0, k * C),
      ok: false,
    });
    for (const extra of [1, TAG_SIZE, E - 1]) {
      if (k === N && extra >= 1000 + TAG_SIZE) continue;
      list.push({
        name: `truncated ${extra} bytes into chunk ${k}`,
        payload: valid.subarray(0, k * E + extra),
        released: plain.subarray(0, k * C),
        ok: false,
      });
    }
  }
  for (let k = 0; k <= N; k++) {
    list.push({
      name: `bit flipped in chunk ${k}`,
      payload: flipBit(valid, k * E + 100),
      released: plain.subarray(0, k * C),
      ok: false,
    });
    list.push({
      name: `bit flipped in the tag of chunk ${k}`,
      payload: flipBit(valid, Math.min(valid.length, (k + 1) * E) - 1),
      released: plain.subarray(0, k * C),
      ok: false,
    });
  }
  for (const [what, extra] of [
    ["1 byte", Buffer.from([0])],
    ["a chunk's worth", randomBytes(E)],
    ["several chunks' worth", randomBytes(5 * E + 7)],
  ] as const) {
    list.push({
      name: `trailing data after a full-size final chunk: ${what}`,
      payload: Buffer.concat([validFullFinal, extra]),
      released: fullPlain,
      ok: false,
    });
  }
  for (const i of [0, 1, 2, 5, 6, 11]) {
    // Chunk i is a full-size final chunk, then comes another final chunk, then middle chunks.
    const chunks = Array.from({ length: N }, (_, j) => ({
      plain: fullPlain.subarray(j * C, (j + 1) * C),
      last: j === i || j === i + 1,
    }));
    chunks.push({ plain: Buffer.from("tail"), last: true });
    list.push({
      name: `two final chunks at ${i} and ${i + 1}`,
      payload: sealChunks(key, chunks),
      released: fullPlain.subarray(0, (i + 1) * C),
      ok: false,
    });
  }
  const emptyFinal = sealChunks(key, [
    ...Array.from({ length: N }, (_, j) => ({ plain: fullPlain.subarray(j * C, (j + 1) * C), last: false })),
    { plain: Buffer.alloc(0), last: true },
  ]);
  list.push({
    name: "an empty final chunk after full chunks",
    payload: emptyFinal,
    released: fullPlain,
    ok: false,
  });
  return list;
}

test("the sequential decryptor releases what each case expects (the baseline is right)", () => {
  for (const c of cases()) {
    const r = runDecryptor(new PayloadDecryptor(key), c.payload, [Number.MAX_SAFE_INTEGER], false);
    assert.ok(r.released.equals(c.released), `${c.name}: released ${r.released.length} bytes`);
    assert.equal(r.error === null, c.ok, `${c.name}: ${r.error?.message}`);
    if (r.error) assert.equal(r.error.code, "AGE_PAYLOAD", c.name);
  }
});

for (const [configName, baseOptions, workers] of CONFIGS) {
  test(`parallel decryption releases the same bytes and throws the same errors (${configName})`, async (t) => {
    const options = { ...baseOptions, pool: new StreamWorkerPool(workers) };
    t.after(() => options.pool.close());
    await options.pool.ready();
    let workerBatches = 0;
    for (const c of cases()) {
      for (const [splitName, pieces, shared] of SPLITS) {
        const seq = runDecryptor(new PayloadDecryptor(key), c.payload, pieces, shared);
        const dec = new ParallelPayloadDecryptor(key, options);
        const par = runDecryptor(dec, c.payload, pieces, shared);
        const what = `${c.name}, ${splitName}`;
        assert.ok(par.released.equals(seq.released), `${what}: released ${par.released.length} bytes`);
        assert.deepEqual(par.error, seq.error, what);
        if (splitName === "one push" && c.payload.length >= 4 * E && options.mainThreadHelps === false) {
          assert.ok(dec.workerBatches > 0, `${what}: the workers did not take part`);
        }
        workerBatches += dec.workerBatches;
      }
    }
    // With the main thread helping, how much the workers take depends on scheduling.
    if (options.mainThreadHelps === false) assert.ok(workerBatches > 0, "the workers never took part");
    t.diagnostic(`batches opened by workers: ${workerBatches}`);
  });

  test(`parallel encryption gives the same bytes as sequential encryption (${configName})`, async (t) => {
    const options = { ...baseOptions, pool: new StreamWorkerPool(workers) };
    t.after(() => options.pool.close());
    await options.pool.ready();
    const data = randomBytes(40 * C + 1);
    let workerBatches = 0;
    for (const size of [0, 1, C - 1, C, C + 1, 4 * C, 4 * C + 1, 13 * C + 77, 40 * C, 40 * C + 1]) {
      for (const [splitName, pieces, shared] of [
        ["one push", [Number.MAX_SAFE_INTEGER], true],
        ["pushes of 3.3 chunks", [Math.floor(3.3 * C)], false],
        ["uneven pushes", [1, C - 1, 6 * C, 5 * C + 9], true],
      ] as const) {
        const input = data.subarray(0, size);
        const seqOut: Buffer[] = [];
        const parOut: Buffer[] = [];
        const seq = new PayloadEncryptor(key);
        const par = new ParallelPayloadEncryptor(key, options);
        for (let off = 0, i = 0; off < size; i++) {
          const n = pieces[Math.min(i, pieces.length - 1)]!;
          seq.push(input.subarray(off, off + n), seqOut);
          par.push(place(input.subarray(off, off + n), shared), parOut);
          off += n;
        }
        seq.finish(seqOut);
        par.finish(parOut);
        assert.ok(Buffer.concat(parOut).equals(Buffer.concat(seqOut)), `${size} bytes, ${splitName}`);
        workerBatches += par.workerBatches;
      }
    }
    if (options.mainThreadHelps === false) assert.ok(workerBatches > 0, "the workers never took part");
    t.diagnostic(`batches sealed by workers: ${workerBatches}`);
  });
}

/** Threads of this process (Linux), to see workers come and go. */
function threadCount(): number | null {
  try {
    return fs.readdirSync("/proc/self/task").length;
  } catch {
    return null;
  }
}

async function settle(expected: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const n = threadCount()!;
    if (n <= expected) return n;
    await new Promise((r) => setTimeout(r, 10));
  }
  return threadCount()!;
}

test("workers start only past the threshold, and finish() and destroy() end them", async (t) => {
  const before = threadCount();
  if (before === null) return t.skip("no /proc/self/task (not Linux)");
  const payload = valid; // 13 full chunks and a short one: 0.8 MiB

  // Below the default threshold (16 MiB): no thread is started.
  const small = new ParallelPayloadDecryptor(key, { workers: 2 });
  const out: Buffer[] = [];
  small.push(payload, out);
  assert.equal(threadCount(), before, "a small payload started threads");
  small.finish(out);
  assert.ok(Buffer.concat(out).equals(plain));

  // Past the threshold: two workers, gone after finish().
  const big = new ParallelPayloadDecryptor(key, { ...WORKERS_ONLY, workers: 2 });
  out.length = 0;
  big.push(payload.subarray(0, 8 * E), out);
  assert.equal(threadCount(), before + 2, "two worker threads");
  big.push(payload.subarray(8 * E), out);
  big.finish(out);
  assert.ok(Buffer.concat(out).equals(plain));
  assert.equal(await settle(before), before, "workers still running after finish()");

  // On a failure the caller destroys the decryptor: the workers end as well.
  const failing = new ParallelPayloadDecryptor(key, WORKERS_ONLY);
  assert.throws(() => failing.push(flipBit(payload, 3 * E + 5), []), { code: "AGE_PAYLOAD" });
  failing.destroy();
  assert.equal(await settle(before), before, "workers still running after destroy()");

  // Encryption: finish() ends them too.
  const enc = new ParallelPayloadEncryptor(key, WORKERS_ONLY);
  enc.push(randomBytes(10 * C), []);
  assert.ok(enc.workerBatches > 0);
  enc.finish([]);
  assert.equal(await settle(before), before, "workers still running after the encryptor's finish()");
});

test("workers never keep the process alive, even when nobody calls finish() or destroy()", () => {
  const module = new URL("../../src/age/stream-parallel.js", import.meta.url).href;
  const script = `
    import { ParallelPayloadEncryptor } from ${JSON.stringify(module)};
    const enc = new ParallelPayloadEncryptor(new Uint8Array(32), { threshold: 0, workers: 2, batchChunks: 2 });
    const out = [];
    enc.push(new Uint8Array(20 * 65536), out);
    console.log(out.length);
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 20_000,
  });
  assert.equal(r.error, undefined, "the process did not exit by itself");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), "38");
});

function ageBinary(): boolean {
  try {
    execFileSync("age", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

test("a payload big enough for the default settings round-trips with the age binary", async (t) => {
  if (!ageBinary()) return t.skip("age binary not installed");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nixseal-stream-parallel-"));
  try {
    const id = X25519Identity.generate();
    const keyFile = path.join(dir, "key.txt");
    fs.writeFileSync(keyFile, `${id.encode()}\n`, { mode: 0o600 });
    const size = 24 * 1024 * 1024 + 12345; // past the 16 MiB threshold
    const data = randomBytes(size);
    const digest = createHash("sha256").update(data).digest("hex");
    const block = Buffer.from(new SharedArrayBuffer(8 * 1024 * 1024)); // as the CLI reads

    // nixseal encrypts, age decrypts.
    const enc = new AgeEncryptor([id.recipient()]);
    const encrypted: Buffer[] = [];
    await enc.start(encrypted);
    for (let off = 0; off < size; off += block.length) {
      const n = data.copy(block, 0, off, off + block.length);
      const out: Buffer[] = [];
      enc.push(block.subarray(0, n), out);
      for (const b of out) encrypted.push(Buffer.from(b));
    }
    enc.finish(encrypted);
    fs.writeFileSync(path.join(dir, "a.age"), Buffer.concat(encrypted));
    const byAge = execFileSync("age", ["-d", "-i", keyFile, path.join(dir, "a.age")], {
      maxBuffer: 2 * size,
    });
    assert.equal(createHash("sha256").update(byAge).digest("hex"), digest);

    // age encrypts, nixseal decrypts.
    fs.writeFileSync(path.join(dir, "b"), data);
    execFileSync("age", [
      "-r",
      id.recipient().toString(),
      "-o",
      path.join(dir, "b.age"),
      path.join(dir, "b"),
    ]);
    const file = fs.readFileSync(path.join(dir, "b.age"));
    const dec = new AgeDecryptor([id]);
    const hash = createHash("sha256");
    for (let off = 0; off < file.length; off += block.length) {
      const n = file.copy(block, 0, off, off + block.length);
      const out: Buffer[] = [];
      await dec.push(block.subarray(0, n), out);
      for (const b of out) hash.update(b);
    }
    const tail: Buffer[] = [];
    await dec.finish(tail);
    for (const b of tail) hash.update(b);
    assert.equal(hash.digest("hex"), digest);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the sequential encryptor seals the same chunks whatever the sizes of the pushes", () => {
  // The held-back plaintext grows with what is pushed (a few bytes for a password): pushes that
  // fill it piece by piece, across chunk boundaries, must give exactly the age STREAM chunks.
  const data = randomBytes(2 * C + 5);
  for (const size of [0, 1, 31, C - 1, C, C + 1, 2 * C, 2 * C + 5]) {
    const input = data.subarray(0, size);
    const chunks: { plain: Buffer; last: boolean }[] = [];
    for (let off = 0; off < size || chunks.length === 0; off += C)
      chunks.push({ plain: input.subarray(off, off + C), last: off + C >= size });
    const expected = sealChunks(key, chunks);
    for (const [splitName, pieces] of [
      ["one push", [Number.MAX_SAFE_INTEGER]],
      ["bytes one by one, then 1000 at a time", [1, 1, 1, 1, 1, 1, 1, 1000]],
      ["growing pushes", [3, 17, 100, 4000, C - 5, 9]],
    ] as const) {
      const enc = new PayloadEncryptor(key);
      const out: Buffer[] = [];
      for (let off = 0, i = 0; off < size; i++) {
        const n = pieces[Math.min(i, pieces.length - 1)]!;
        enc.push(input.subarray(off, off + n), out);
        off += n;
      }
      enc.finish(out);
      assert.ok(Buffer.concat(out).equals(expected), `${size} bytes, ${splitName}`);
    }
  }
});

/**
 * A generation's metadata file (src/install/generations.ts): written in pieces, it must read back
 * as the very record written, whatever the number of entries, and a file cut short must not be
 * taken for a record.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { type GenerationMeta, Generations, type MetaEntry } from "../../src/install/generations.js";
import { tempDir } from "../helpers.js";

function entry(i: number): MetaEntry {
  // Names, paths and units with characters JSON escapes or encodes on several bytes.
  const odd = ["plain", 'quote"d', "back\\slash", "tab\there", "é-ü-日本", "emoji-🔑", "nl\nx"][i % 7]!;
  return {
    name: `dir-${i % 3}/secret-${i}-${odd}`,
    kind: i % 5 === 0 ? "template" : "secret",
    uid: i,
    gid: 65534,
    mode: 0o400 + (i % 2) * 0o40,
    hmac: i.toString(16).padStart(64, "0"),
    path: i % 4 === 0 ? `/run/${odd}/${i}` : null,
    restartUnits: i % 3 === 0 ? [] : [`svc-${i}.service`, `${odd}.service`],
    reloadUnits: i % 6 === 0 ? [`r-${i}.service`] : [],
    credential: i % 9 === 0 ? `cred-${i}` : null,
    file: i % 5 === 0 ? null : `/nix/store/abc-in/${i}.age`,
    format: i % 5 === 0 ? null : "age",
    key: i % 8 === 0 ? `["a"][${i}]` : null,
    cipher: i % 5 === 0 ? null : (i * 7).toString(16).padStart(64, "f"),
    storeFile: i % 5 === 0 ? null : i % 2 === 0,
  };
}

function meta(
  generation: number,
  count: number,
  identities: string | null = "ab".repeat(32),
): GenerationMeta {
  return { version: 1, generation, identities, entries: Array.from({ length: count }, (_, i) => entry(i)) };
}

test("the metadata written reads back as the record written, for any number of entries", () => {
  const { dir, cleanup } = tempDir();
  try {
    const gens = new Generations(dir);
    // Around the size of a piece (100 entries), and several pieces.
    for (const [n, count] of [0, 1, 99, 100, 101, 200, 257].entries()) {
      const m = meta(n + 1, count, n % 2 === 0 ? "ab".repeat(32) : null);
      gens.writeMeta(m);
      const file = path.join(dir, ".nixseal", `${n + 1}.json`);
      const text = fs.readFileSync(file, "utf8");
      // The same JSON value as one JSON.stringify of the record.
      assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(m)), `${count} entries`);
      assert.deepEqual(gens.readMeta(n + 1), m, `${count} entries read back`);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    }
  } finally {
    cleanup();
  }
});

test("a metadata file cut short is not taken for a record", () => {
  const { dir, cleanup } = tempDir();
  try {
    const gens = new Generations(dir);
    gens.writeMeta(meta(1, 250));
    const file = path.join(dir, ".nixseal", "1.json");
    const whole = fs.readFileSync(file);
    assert.ok(gens.readMeta(1) !== null);
    for (const cut of [1, 200, Math.floor(whole.length / 2), whole.length - 2, whole.length - 1]) {
      fs.writeFileSync(file, whole.subarray(0, cut), { mode: 0o600 });
      assert.equal(gens.readMeta(1), null, `cut at ${cut} of ${whole.length}`);
    }
  } finally {
    cleanup();
  }
});

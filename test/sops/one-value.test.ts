/**
 * Writes of a few values spliced into the file as read (reencryptOneValue for nixseal set,
 * reencryptValues and changedLeaves for nixseal edit): what they write decrypts to the changed
 * tree with a valid MAC, and differs from what writing the whole tree gives only where the
 * randomness of encryption lies (the new values' and the MAC's IVs); whenever the splice does not
 * apply, it says so (null) and the whole tree is written.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { X25519Identity } from "../../src/age/x25519.js";
import {
  changedLeaves,
  decryptDocument,
  encryptNewDocument,
  MAX_SPLICED_VALUES,
  reencryptDocument,
  reencryptOneValue,
  reencryptValues,
  SopsBranch,
  type SopsValue,
  setValueAt,
  YamlStore,
} from "../../src/sops/index.js";
import { prng } from "../helpers.js";

const id = X25519Identity.generate();
const recipient = id.recipient().toString();
const store = new YamlStore();
const NOW = new Date("2026-12-05T12:00:00Z");

/** A random plaintext YAML document of nested mappings with comments, and its leaves' key paths. */
function randomDocument(rand: () => number): { text: string; leaves: string[][] } {
  const lines: string[] = [];
  const leaves: string[][] = [];
  const word = () => `k${Math.floor(rand() * 1e6).toString(36)}`;
  const mapping = (indent: string, path: string[], depth: number) => {
    const used = new Set<string>();
    const n = 1 + Math.floor(rand() * 4);
    for (let i = 0; i < n; i++) {
      let k = word();
      while (used.has(k)) k = word();
      used.add(k);
      if (rand() < 0.3) lines.push(`${indent}# note ${word()}`);
      if (depth < 3 && rand() < 0.35) {
        lines.push(`${indent}${k}:`);
        mapping(`${indent}    `, [...path, k], depth + 1);
      } else {
        const v = rand() < 0.2 ? String(Math.floor(rand() * 1000)) : rand() < 0.1 ? "true" : `v-${word()}`;
        lines.push(`${indent}${k}: ${v}`);
        leaves.push([...path, k]);
      }
    }
  };
  mapping("", [], 0);
  return { text: `${lines.join("\n")}\n`, leaves };
}

async function encrypted(plain: string): Promise<Uint8Array> {
  return encryptNewDocument(store.parsePlain(Buffer.from(plain)), store, { keyGroups: [[recipient]] });
}

async function open(file: Uint8Array) {
  return decryptDocument(file, store, { identities: [id] });
}

/** A spliced write's pieces as one file (null stays null). */
function joinedParts(parts: Uint8Array[] | null): Buffer | null {
  return parts === null ? null : Buffer.concat(parts);
}

/** Lines of a and b that differ, as pairs (both the same number of lines). */
function differing(a: Uint8Array, b: Uint8Array): [string, string][] {
  const x = Buffer.from(a).toString("utf8").split("\n");
  const y = Buffer.from(b).toString("utf8").split("\n");
  assert.equal(x.length, y.length, "the same number of lines");
  return x.flatMap((l, i): [string, string][] => (l === y[i] ? [] : [[l, y[i]!]]));
}

/** The keys (`    key:`) of the lines that differ between a and b, sorted. */
function changedKeys(a: Uint8Array, b: Uint8Array): string[] {
  return differing(a, b)
    .map(([l]) => l.slice(0, l.indexOf(":") + 1))
    .sort();
}

test("one value spliced: decrypts to the changed tree with a valid MAC, and only the value's line, lastmodified and the MAC differ from the file read; the same lines as writing the whole tree", async () => {
  const rand = prng(20261205);
  for (let round = 0; round < 40; round++) {
    const { text, leaves } = randomDocument(rand);
    const file = await encrypted(text);
    const keys = leaves[Math.floor(rand() * leaves.length)]!;
    const value: SopsValue = rand() < 0.5 ? `new ${round} ünïcode` : rand() < 0.5 ? round * 7 : false;

    const doc = await open(file);
    assert.notEqual(doc.source, null, "nixseal's own file is in the narrow form");
    setValueAt(doc.branches[0]!, keys, value);
    const spliced = joinedParts(reencryptOneValue(doc, keys, { now: NOW }));
    assert.ok(spliced !== null, `the splice applies (round ${round}, ${keys.join(".")})`);

    const whole = await open(file);
    setValueAt(whole.branches[0]!, keys, value);
    const written = reencryptDocument(whole, whole.branches, { now: NOW });

    // Both decrypt (the MAC checked) to the same tree: the one with the new value.
    const back = await open(spliced);
    assert.equal(
      Buffer.from(store.emitPlain(back.branches)).toString(),
      Buffer.from(store.emitPlain((await open(written)).branches)).toString(),
    );
    const expected = await open(file);
    setValueAt(expected.branches[0]!, keys, value);
    assert.deepEqual(back.branches, expected.branches);

    // Against the file read: the value's line, lastmodified and mac.
    const indent = "    ".repeat(keys.length - 1);
    assert.deepEqual(
      changedKeys(spliced, file),
      [`${indent}${keys.at(-1)}:`, "    lastmodified:", "    mac:"].sort(),
      `round ${round}`,
    );
    // Against the whole tree written: the same lines but for the two that hold fresh IVs.
    assert.deepEqual(
      changedKeys(spliced, written),
      [`${indent}${keys.at(-1)}:`, "    mac:"].sort(),
      `round ${round}`,
    );
  }
});

test("one value set to the value it has: only lastmodified and the MAC change", async () => {
  const file = await encrypted("a:\n    b: one\n    c: two\nd: 3\n");
  for (const keys of [["a", "b"], ["d"]]) {
    const doc = await open(file);
    // The value as read back (an int is a bigint), set again.
    const value = keys.reduce<SopsValue | undefined>(
      (v, k) => (v instanceof SopsBranch ? v.get(k) : undefined),
      doc.branches[0],
    );
    assert.ok(value !== undefined);
    setValueAt(doc.branches[0]!, keys, value);
    const out = joinedParts(reencryptOneValue(doc, keys, { now: NOW }));
    assert.ok(out !== null);
    assert.deepEqual(changedKeys(out, file), ["    lastmodified:", "    mac:"]);
  }
});

test("one value: a whole-tree write after a splice still keeps every unchanged ciphertext; a document read for decryption only cannot be written back", async () => {
  const file = await encrypted("a:\n    b: one\n    c: two\nd: 3\n");
  const doc = await open(file);
  setValueAt(doc.branches[0]!, ["a", "b"], "x");
  assert.ok(joinedParts(reencryptOneValue(doc, ["a", "b"], { now: NOW })) !== null);
  // The splice stashed the values at a.b alone; the whole write stashes the rest then.
  const whole = reencryptDocument(doc, doc.branches, { now: NOW });
  assert.deepEqual(changedKeys(whole, file), ["    b:", "    lastmodified:", "    mac:"]);
  const readOnly = await decryptDocument(file, store, { identities: [id], readOnly: true });
  assert.equal(readOnly.remembersAll, false);
  assert.throws(() => reencryptDocument(readOnly, readOnly.branches), /not read to be written back whole/);
});

test("one value: a document read to write the values at some paths remembers only those; the splice keeps a value set to what it has, and a whole-tree write is refused", async () => {
  const file = await encrypted("a:\n    b: one\n    c: two\nd: 3\n");
  const doc = await decryptDocument(file, store, { identities: [id], rememberOnly: [["a", "b"]] });
  assert.equal(doc.remembersAll, false);
  setValueAt(doc.branches[0]!, ["a", "b"], "one");
  const out = joinedParts(reencryptOneValue(doc, ["a", "b"], { now: NOW }));
  assert.ok(out !== null);
  assert.deepEqual(changedKeys(out, file), ["    lastmodified:", "    mac:"]);
  // Every other value's IV was never remembered: writing them again would change them all.
  assert.throws(() => reencryptDocument(doc, doc.branches), /not read to be written back whole/);
  // Another path than the one remembered gets a new ciphertext (its IV was not kept).
  const other = await decryptDocument(file, store, { identities: [id], rememberOnly: [["a", "b"]] });
  const again = joinedParts(reencryptValues(other, other.branches, [["a", "c"]], { now: NOW }));
  assert.ok(again !== null);
  assert.deepEqual(changedKeys(again, file), ["    c:", "    lastmodified:", "    mac:"]);
  // Where the splice cannot apply, judged before decrypting, every value is remembered (one read
  // instead of two): a new key, a mapping, a file last written by another sops version.
  const theirs = Buffer.from(
    Buffer.from(file)
      .toString("utf8")
      .replace(/^ {4}version: .*$/m, "    version: 3.9.1"),
  );
  for (const [input, keys] of [
    [file, ["a", "new"]],
    [file, ["a"]],
    [theirs, ["a", "b"]],
  ] as const) {
    const d = await decryptDocument(input, store, { identities: [id], rememberOnly: [keys] });
    assert.equal(d.remembersAll, true, keys.join("."));
  }
});

test("one value: whenever the splice does not apply it returns null, and the whole tree is written instead", async () => {
  const plain = "a:\n    b: one\n    c: two\nd: three\n";
  const file = await encrypted(plain);
  const attempt = async (
    input: Uint8Array,
    keys: string[],
    value: SopsValue,
    options: { at?: string[] } = {},
  ) => {
    const doc = await open(input);
    setValueAt(doc.branches[0]!, options.at ?? keys, value);
    return joinedParts(reencryptOneValue(doc, keys, { now: NOW }));
  };
  assert.ok((await attempt(file, ["a", "b"], "x")) !== null, "the plain case applies");
  assert.equal(await attempt(file, ["a"], "x"), null, "a mapping replaced by a value");
  assert.equal(await attempt(file, ["a", "new"], "x"), null, "a new key");
  assert.equal(await attempt(file, ["a", "b"], ""), null, "an empty string (not encrypted)");
  // An unencrypted value (the default unencrypted_suffix) takes the file out of the narrow form.
  const mixed = await encrypted(`${plain}e_unencrypted: four\n`);
  assert.equal((await open(mixed)).source, null);
  assert.equal(await attempt(mixed, ["d"], "x"), null, "a file with an unencrypted value");
  assert.equal(await attempt(file, ["d"], new SopsBranch([{ key: "z", value: "y" }])), null, "a mapping");
  assert.equal(await attempt(file, ["a", "b"], "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]"), null);
  // Two leaves at the same keys (a list on the way, whose indices the path leaves out).
  const listed = await open(file);
  listed.branches[0]!.set("a", [
    new SopsBranch([{ key: "b", value: "x" }]),
    new SopsBranch([{ key: "b", value: "y" }]),
  ]);
  assert.equal(joinedParts(reencryptOneValue(listed, ["a", "b"], { now: NOW })), null, "a list on the way");
  // Keys that are not plain never match a line: a new key whose text spans "a:" and "b".
  assert.equal(await attempt(file, ["a:\n    b"], "x"), null, "a key with a line break");
  assert.equal(await attempt(file, ["a: x"], "x"), null, "a key with ': '");

  // A metadata block that would be written otherwise (sops's own version string).
  const text = Buffer.from(file).toString("utf8");
  const theirs = Buffer.from(text.replace(/^ {4}version: .*$/m, "    version: 3.9.1"));
  assert.notEqual(theirs.toString(), text);
  assert.equal(await attempt(theirs, ["a", "b"], "x"), null, "another metadata block");
  // The same document not in the narrow form (a flow mapping): not spliceable, read all the same.
  const flow = Buffer.from(text.replace(/^a:\n {4}b: (.*)\n {4}c: (.*)\n/, 'a: {b: "$1", c: "$2"}\n'));
  assert.notEqual(flow.toString(), text);
  const doc = await open(flow);
  assert.equal(doc.source, null);
  assert.equal(await attempt(flow, ["a", "b"], "x"), null);
  // A write with the whole tree still works on each of them.
  for (const input of [theirs, flow]) {
    const d = await open(input);
    setValueAt(d.branches[0]!, ["a", "b"], "x");
    const back = await open(reencryptDocument(d, d.branches, { now: NOW }));
    assert.deepEqual(
      back.branches[0]!.get("a"),
      new SopsBranch([
        { key: "b", value: "x" },
        { key: "c", value: "two" },
      ]),
    );
  }
});

test("one value: a file read for decryption only keeps no copy of itself", async () => {
  const file = await encrypted("a: one\n");
  const doc = await decryptDocument(file, store, { identities: [id], readOnly: true });
  assert.equal(doc.source, null);
});

test("changedLeaves: the keys of changed values when only values changed, else null", () => {
  const tree = (text: string) => store.parsePlain(Buffer.from(text));
  const base = "# c\na:\n    b: one\n    c: 2\nl:\n    - x\nd: true\n";
  assert.deepEqual(changedLeaves(tree(base), tree(base), 10), []);
  assert.deepEqual(
    changedLeaves(tree(base), tree(base.replace("one", "uno").replace("d: true", "d: 4")), 10),
    [["a", "b"], ["d"]],
  );
  assert.deepEqual(
    changedLeaves(tree(base), tree(base.replace("c: 2", "c: '2'")), 10),
    [["a", "c"]],
    "a type",
  );
  for (const [what, edited] of [
    ["a key renamed", base.replace("c: 2", "e: 2")],
    ["a key added", `${base}e: 5\n`],
    ["a key removed", base.replace("d: true\n", "")],
    ["keys reordered", base.replace("    b: one\n    c: 2\n", "    c: 2\n    b: one\n")],
    ["a comment changed", base.replace("# c", "# d")],
    ["a comment added", base.replace("d: true", "# new\nd: true")],
    ["a list item changed", base.replace("- x", "- y")],
    ["a value made a mapping", base.replace("d: true", "d:\n    e: 1")],
    ["a second document", `${base}---\nz: 1\n`],
  ] as const) {
    assert.equal(changedLeaves(tree(base), tree(edited), 10), null, what);
  }
  assert.equal(
    changedLeaves(tree(base), tree(base.replace("one", "uno").replace("d: true", "d: 4")), 1),
    null,
    "over max",
  );
});

test("several values spliced: decrypts to the edited tree with a valid MAC; only their lines, lastmodified and the MAC differ", async () => {
  const rand = prng(20261206);
  for (let round = 0; round < 30; round++) {
    const { text, leaves } = randomDocument(rand);
    const file = await encrypted(text);
    const doc = await open(file);
    const edited = store.parsePlain(store.emitPlain(doc.branches));
    const chosen = leaves.filter(() => rand() < 0.4);
    chosen.forEach((keys, i) => {
      setValueAt(edited[0]!, keys, i % 2 === 0 ? `v${round}.${i} ü` : BigInt(i));
    });
    const changed = changedLeaves(doc.branches, edited, 100);
    assert.ok(changed !== null);
    assert.deepEqual(changed.map((k) => k.join(".")).sort(), chosen.map((k) => k.join(".")).sort());
    const out = joinedParts(reencryptValues(doc, edited, changed, { now: NOW }));
    assert.ok(out !== null, `round ${round}`);
    const back = await open(out);
    assert.deepEqual(back.branches, edited);
    const expected = chosen.map((k) => `${"    ".repeat(k.length - 1)}${k.at(-1)}:`);
    assert.deepEqual(
      changedKeys(out, file),
      [...expected, "    lastmodified:", "    mac:"].sort(),
      `round ${round}`,
    );
  }
});

test("more changed values than MAX_SPLICED_VALUES are not spliced (each would be looked up from the top): the whole tree is written", async () => {
  const n = MAX_SPLICED_VALUES + 1;
  const plain = `${Array.from({ length: n }, (_, i) => `k${i}: v${i}`).join("\n")}\n`;
  const file = await encrypted(plain);
  const doc = await open(file);
  const edited = store.parsePlain(Buffer.from(plain.replace(/: v/g, ": w")));
  assert.equal(changedLeaves(doc.branches, edited, n)?.length, n);
  const all = Array.from({ length: n }, (_, i) => [`k${i}`]);
  assert.equal(reencryptValues(doc, edited, all, { now: NOW }), null, "one over the limit");
  // The same document with one value fewer changed: at the limit, spliced, and it decrypts.
  const fewer = store.parsePlain(Buffer.from(plain.replace(/: v(?!100$)/gm, ": w")));
  const atLimit = reencryptValues(doc, fewer, all.slice(0, -1), { now: NOW });
  assert.ok(atLimit !== null, "at the limit");
  assert.deepEqual((await open(Buffer.concat(atLimit))).branches, fewer);
  const back = await open(reencryptDocument(doc, edited, { now: NOW }));
  assert.deepEqual(back.branches, edited);
});

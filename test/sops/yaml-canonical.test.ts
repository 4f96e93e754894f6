/**
 * The fast YAML path (src/sops/stores/yaml-canonical.ts) against the full one through the yaml
 * library: on random trees and texts, whenever the fast path answers, its answer is the full
 * path's, byte for byte; and it answers for the common form sops writes.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parse as parseWithLibrary } from "yaml";
import { X25519Identity } from "../../src/age/x25519.js";
import {
  changedLeaves,
  decryptDocument,
  encryptNewDocument,
  SopsBranch,
  SopsComment,
  type SopsValue,
  YamlStore,
} from "../../src/sops/index.js";
import { extractMetadata } from "../../src/sops/stores/store.js";
import { emitYamlDocuments, parseYamlDocuments, quotedAsYaml11 } from "../../src/sops/stores/yaml.js";
import {
  emitCanonical,
  emitCanonicalMetadata,
  parseCanonicalData,
  parseCanonicalMetadata,
  parseCanonicalPlain,
  resolvesToNonString,
} from "../../src/sops/stores/yaml-canonical.js";

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/sops");

/** A small deterministic generator, so that a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

const ODD_KEYS = [
  "true",
  "Null",
  "1",
  "a b",
  "x.y",
  "-a",
  "_k",
  "key_unencrypted",
  "yes",
  "ENC",
  "sops",
  "é",
];
const ODD_VALUES = [
  "123",
  "-1",
  "+1",
  "1e5",
  "1E-5",
  "0x1F",
  "0o17",
  ".5",
  "1.",
  "1_000",
  "3abc",
  "-abc",
  "--x",
  "---",
  "-",
  "...x",
  "yes",
  "No",
  "on",
  "y",
  "2024-01-02",
  "2024-01-02T03:04:05Z",
  "null",
  "~",
  "true",
  "False",
  ".inf",
  ".NaN",
  "",
  "a: b",
  "a #b",
  "#a",
  "a:",
  "a b",
  " a",
  "a\nb",
  "é",
  "a/b+c=",
  "x.y.z",
  "ENC[AES256_GCM,data:,iv:AAAA,tag:AAAA,type:str]",
];
const COMMENTS = [" c", "c", " ENC[x]", " ", "", "a\tb", " trailing "];

function encLike(r: (n: number) => number): string {
  const b64 = (n: number) => randomBytes(n).toString("base64");
  return `ENC[AES256_GCM,data:${b64(r(40))},iv:${b64(32)},tag:${b64(16)},type:${["str", "int", "comment"][r(3)]}]`;
}

function randomKey(r: (n: number) => number): string {
  return r(8) === 0 ? ODD_KEYS[r(ODD_KEYS.length)]! : `key_${r(1000)}`;
}

function randomLeaf(r: (n: number) => number, encrypted: boolean): SopsValue {
  const k = r(20);
  if (encrypted && k < 16) return encLike(r);
  if (k < 8)
    return randomBytes(48)
      .toString("base64url")
      .slice(0, 1 + r(64));
  if (k < 17) {
    const v = ODD_VALUES[r(ODD_VALUES.length)]!;
    return encrypted || !v.startsWith("ENC[") ? v : "x";
  }
  if (k === 17) return BigInt(r(100));
  if (k === 18) return r(2) === 0;
  return r(2) === 0 ? null : [encrypted ? encLike(r) : "x"];
}

function randomBranch(r: (n: number) => number, depth: number, encrypted: boolean): SopsBranch {
  const b = new SopsBranch();
  const n = 1 + r(6);
  for (let i = 0; i < n; i++) {
    if (r(4) === 0)
      b.items.push({ key: new SopsComment(COMMENTS[r(COMMENTS.length)]!, r(10) === 0), value: null });
    const key = randomKey(r);
    if (b.has(key)) continue;
    const value = depth < 3 && r(3) === 0 ? randomBranch(r, depth + 1, encrypted) : randomLeaf(r, encrypted);
    b.items.push({ key, value });
  }
  if (r(12) === 0) b.items.push({ key: new SopsComment(" last"), value: null });
  return b;
}

const store = new YamlStore();

test("the fast writer prints what the full writer prints, and is used for the common form", () => {
  let fast = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const docs =
      r(10) === 0 ? [randomBranch(r, 0, false), randomBranch(r, 0, false)] : [randomBranch(r, 0, r(2) === 0)];
    const full = Buffer.from(emitYamlDocuments(docs)).toString("utf8");
    const got = Buffer.from(store.emitPlain(docs)).toString("utf8");
    assert.equal(got, full, `seed ${seed}`);
    if (docs.every((d) => emitCanonical(d, () => false) !== null)) fast++;
  }
  assert.ok(fast > 300, `only ${fast} trees in the common form`);
});

/** A text in the narrow form, damaged one way or another at random (or not at all). */
function damaged(text: string, r: (n: number) => number): string {
  const lines = text.split("\n");
  const at = r(Math.max(1, lines.length - 1));
  switch (r(14)) {
    case 0:
      lines.splice(at, 0, "");
      break;
    case 1:
      lines[at] = `  ${lines[at]}`;
      break;
    case 2:
      lines[at] = `${lines[at]} `;
      break;
    case 3:
      lines.splice(at, 0, `${" ".repeat(4 * r(3))}# moved`);
      break;
    case 4:
      lines.splice(at, 0, lines[at]!);
      break;
    case 5:
      lines[at] = `${lines[at]} # inline`;
      break;
    case 6:
      lines.splice(at, 0, "---");
      break;
    case 7:
      // An edit: a value replaced by one of the odd ones (written as it is, unquoted).
      lines[at] = lines[at]!.replace(/: .*$/, `: ${ODD_VALUES[r(ODD_VALUES.length)]}`);
      break;
    case 8:
      return lines.join("\n").replace(/\n$/, "");
    default:
      break;
  }
  return lines.join("\n");
}

test("the fast reader reads what the full reader reads, or leaves the text to it", () => {
  let answered = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    // Damage the form: the fast reader must then agree with the full one or step aside.
    const text = damaged(Buffer.from(emitYamlDocuments([randomBranch(r, 0, true)])).toString("utf8"), r);
    let full: SopsBranch[] | Error;
    try {
      full = parseYamlDocuments(Buffer.from(text));
    } catch (e) {
      full = e as Error;
    }
    const fast = parseCanonicalData(text);
    // A top-level `sops:` line ends the data part; the whole file is compared below.
    if (fast === null || fast.rest !== text.length) continue;
    answered++;
    assert.ok(!(full instanceof Error), `seed ${seed}: the full reader refused: ${String(full)}\n${text}`);
    assert.equal(full.length, 1, `seed ${seed}`);
    assert.deepEqual(fast.branch, full[0], `seed ${seed}\n${text}`);
  }
  assert.ok(answered > 100, `the fast reader answered only ${answered} times`);
});

/** A tree of string values, most of them generated tokens, some odd (as users' documents hold). */
function stringBranch(r: (n: number) => number, depth: number): SopsBranch {
  const b = new SopsBranch();
  const n = 1 + r(6);
  for (let i = 0; i < n; i++) {
    if (r(4) === 0) b.items.push({ key: new SopsComment(COMMENTS[r(COMMENTS.length)]!), value: null });
    const key = randomKey(r);
    if (b.has(key)) continue;
    const value =
      depth < 3 && r(3) === 0
        ? stringBranch(r, depth + 1)
        : r(10) === 0
          ? ODD_VALUES[r(ODD_VALUES.length)]!
          : randomBytes(48)
              .toString(r(2) === 0 ? "base64url" : "base64")
              .slice(0, 1 + r(64));
    b.items.push({ key, value });
  }
  return b;
}

test("plaintext documents: the fast reader reads what the full reader reads, or leaves the text to it", () => {
  let answered = 0;
  let odd = 0;
  for (let seed = 1; seed <= 4000; seed++) {
    const r = rng(seed);
    const tree = seed % 2 === 0 ? stringBranch(r, 0) : randomBranch(r, 0, false);
    const text = damaged(Buffer.from(emitYamlDocuments([tree])).toString("utf8"), r);
    let full: SopsBranch[] | Error;
    try {
      full = parseYamlDocuments(Buffer.from(text));
    } catch (e) {
      full = e as Error;
    }
    const fast = parseCanonicalPlain(text, quotedAsYaml11);
    // What the store reads is the full reader's answer, whichever path took it.
    let viaStore: SopsBranch[] | Error;
    try {
      viaStore = store.parsePlain(Buffer.from(text));
    } catch (e) {
      viaStore = e as Error;
    }
    if (full instanceof Error) {
      assert.equal(fast, null, `seed ${seed}: the fast reader read what the full one refuses\n${text}`);
      assert.ok(viaStore instanceof Error && viaStore.message === full.message, `seed ${seed}`);
      continue;
    }
    assert.deepEqual(viaStore, full, `seed ${seed}\n${text}`);
    if (fast === null) continue;
    answered++;
    if (ODD_VALUES.some((v) => v !== "" && text.includes(`: ${v}\n`))) odd++;
    assert.equal(full.length, 1, `seed ${seed}`);
    assert.deepEqual(fast.branch, full[0], `seed ${seed}\n${text}`);
  }
  assert.ok(answered > 150, `the fast reader answered only ${answered} times`);
  assert.ok(odd > 10, `only ${odd} answered texts held an odd value`);
});

/**
 * `text` with some `key: value` lines given new values (tokens, odd values, the same value), and
 * at times damaged as well (damaged() above): the edits a user makes in `nixseal edit`.
 */
function editedValues(text: string, r: (n: number) => number): string {
  const lines = text.split("\n");
  const edits = 1 + r(4);
  for (let i = 0; i < edits; i++) {
    const at = r(Math.max(1, lines.length - 1));
    const m = /^( *[^#\s][^:]*: )(.*)$/.exec(lines[at]!);
    if (m === null) continue;
    const k = r(6);
    const value =
      k === 0
        ? ODD_VALUES[r(ODD_VALUES.length)]!
        : k === 1
          ? m[2]!
          : randomBytes(24)
              .toString("base64url")
              .slice(0, 1 + r(30));
    lines[at] = `${m[1]}${value}`;
  }
  const edited = lines.join("\n");
  return r(4) === 0 ? damaged(edited, r) : edited;
}

test("values edited in a plaintext document: read line by line (editedValues) as the full reader and changedLeaves read them, or left to them", () => {
  let answered = 0;
  let declined = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const tree = seed % 3 === 0 ? randomBranch(r, 0, false) : stringBranch(r, 0);
    const shown = store.emitPlain([tree]);
    const text = editedValues(Buffer.from(shown).toString("utf8"), r);
    const edited = Buffer.from(text, "utf8");
    const max = r(5) === 0 ? 1 : 100;
    const quick = store.editedValues(shown, edited, [tree], max);
    let full: SopsBranch[] | Error;
    try {
      full = store.parsePlain(edited);
    } catch (e) {
      full = e as Error;
    }
    const changed = full instanceof Error ? null : changedLeaves([tree], full, max);
    if (quick === null) {
      if (changed !== null && changed.length > 0 && emitCanonical(tree, quotedAsYaml11) !== null) declined++;
      continue;
    }
    answered++;
    assert.ok(!(full instanceof Error), `seed ${seed}: the full reader refused what was read\n${text}`);
    assert.deepEqual(quick.branches, full, `seed ${seed}\n${text}`);
    assert.deepEqual(quick.changed, changed, `seed ${seed}\n${text}`);
    // The tree shown is left as it was.
    assert.equal(Buffer.from(store.emitPlain([tree])).toString("utf8"), Buffer.from(shown).toString("utf8"));
  }
  assert.ok(answered > 250, `editedValues answered only ${answered} times`);
  // It declines values the full path would read as something else, or differently: some.
  assert.ok(declined > 20, `editedValues declined only ${declined} value-only edits`);
});

test("editedValues answers only for what emitPlain wrote of that very tree", () => {
  const tree = new SopsBranch([
    { key: "a", value: new SopsBranch([{ key: "b", value: "x1" }]) },
    { key: "c", value: "y1" },
  ]);
  const shown = store.emitPlain([tree]);
  const edited = Buffer.from("a:\n    b: x2\nc: y1\n");
  assert.deepEqual(store.editedValues(shown, edited, [tree], 100)?.changed, [["a", "b"]]);
  // The same bytes, not returned by emitPlain; another tree; two documents.
  assert.equal(store.editedValues(Buffer.from(shown), edited, [tree], 100), null);
  assert.equal(store.editedValues(shown, edited, [new SopsBranch(tree.items)], 100), null);
  assert.equal(store.editedValues(shown, edited, [tree, tree], 100), null);
  // More changed values than max; a value the full reader reads as an int; invalid UTF-8.
  assert.equal(store.editedValues(shown, Buffer.from("a:\n    b: x2\nc: y2\n"), [tree], 1), null);
  assert.equal(store.editedValues(shown, Buffer.from("a:\n    b: 42\nc: y1\n"), [tree], 100), null);
  assert.equal(
    store.editedValues(
      shown,
      Buffer.from([...Buffer.from("a:\n    b: x"), 0xff, 0x0a, ...Buffer.from("c: y1\n")]),
      [tree],
      100,
    ),
    null,
  );
});

test("a plaintext value the writer would quote, or the full reader read as another type, is left to the full reader", () => {
  for (const v of ODD_VALUES) {
    if (v === "" || v.includes("\n")) continue;
    const text = `a:\n    b: ${v}\n`;
    const fast = parseCanonicalPlain(text, quotedAsYaml11);
    let full: SopsBranch[] | null;
    try {
      full = parseYamlDocuments(Buffer.from(text));
    } catch {
      full = null;
    }
    if (fast === null) continue;
    assert.ok(full !== null, v);
    // Only strings the full reader reads as that very string are taken.
    assert.deepEqual(fast.branch, full[0], v);
    assert.equal(typeof (fast.branch.items[0]!.value as SopsBranch).items[0]!.value, "string", v);
    assert.ok(!quotedAsYaml11(v) && !resolvesToNonString(v), v);
  }
});

test("sops files: the fast paths read and write them as the full paths do", async () => {
  const id = X25519Identity.generate();
  let narrowFiles = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const r = rng(seed);
    const plain = randomBranch(r, 0, false);
    const enc = await encryptNewDocument([plain], store, { keyGroups: [[id.recipient().toString()]] });
    const full = extractMetadata(store.parsePlain(enc));
    assert.ok(full.metadata !== null);
    const { narrow, ...fast } = store.parseEncrypted(enc);
    assert.deepEqual(fast, full, `seed ${seed}`);
    // When it is in the narrow form (no list, no unencrypted value), the file's own text, its
    // metadata block from dataEnd on.
    if (narrow !== undefined) {
      narrowFiles++;
      assert.equal(narrow.text, Buffer.from(enc).toString("utf8"));
      assert.ok(narrow.text.startsWith("sops:\n", narrow.dataEnd), `seed ${seed}`);
      assert.equal(narrow.text.lastIndexOf("\nsops:\n") + 1, narrow.dataEnd, `seed ${seed}`);
    }
    // The same tree through both writers (the full path need not give back `text`: it moves
    // a comment after a nested mapping's last key to before the next key).
    const withMeta = full.branches.map(
      (b) => new SopsBranch([...b.items, { key: "sops", value: full.metadata! }]),
    );
    assert.equal(
      Buffer.from(store.emitEncrypted(full.branches, full.metadata)).toString("utf8"),
      Buffer.from(emitYamlDocuments(withMeta)).toString("utf8"),
      `seed ${seed}`,
    );
    const doc = await decryptDocument(enc, store, { identities: [id] });
    assert.equal(
      Buffer.from(store.emitPlain(doc.branches)).toString("utf8"),
      Buffer.from(emitYamlDocuments(doc.branches)).toString("utf8"),
      `seed ${seed}`,
    );
  }
  assert.ok(narrowFiles > 5, `${narrowFiles} of 40 in the narrow form`);
});

test("the writer's list of plain scalars that are not strings is the yaml library's", () => {
  const r = rng(7);
  const alphabet = "0123456789+-._~eExXoOabcdfinINFNaAluLUtTrsS";
  const samples = [...ODD_VALUES];
  for (let i = 0; i < 20000; i++) {
    let s = "";
    for (let n = r(7); n > 0; n--) s += alphabet[r(alphabet.length)];
    samples.push(s);
  }
  let nonStrings = 0;
  for (const s of samples) {
    if (/[\n#:]|^[\s\-?[{!&*|>'"%@`,]|\s$/.test(s)) continue; // not a plain scalar on its own
    // The library reads `k: s` with the schema yaml.ts reads and writes (YAML 1.2 core).
    const read = parseWithLibrary(`k: ${s}\n`, { version: "1.2" }) as { k: unknown };
    const expected = typeof read.k !== "string";
    if (expected) nonStrings++;
    assert.equal(resolvesToNonString(s), expected, JSON.stringify(s));
  }
  assert.ok(nonStrings > 1000, `only ${nonStrings} samples read as non-strings`);
});

/** The metadata block of a sops YAML file (from its top-level `sops:` line). */
function metadataBlock(text: string): string {
  const at = text.startsWith("sops:") ? 0 : text.indexOf("\nsops:") + 1;
  assert.ok(at >= 0 && text.startsWith("sops:", at));
  return text.slice(at);
}

/** What the full path reads from a metadata block alone, or the error it reports. */
function fullRead(block: string): SopsBranch[] | Error {
  try {
    return store.parsePlain(Buffer.from(block));
  } catch (e) {
    return e as Error;
  }
}

test("the fast metadata reader reads real sops's and nixseal's blocks as the full reader does", async () => {
  const blocks: string[] = [
    metadataBlock(fs.readFileSync(path.join(FIXTURES, "sops-nix/secrets.yaml"), "utf8")),
    metadataBlock(fs.readFileSync(path.join(FIXTURES, "sops-age/secret.enc.yaml"), "utf8")),
  ];
  const ids = [X25519Identity.generate(), X25519Identity.generate(), X25519Identity.generate()];
  const plain = new SopsBranch([{ key: "a", value: "b" }]);
  for (const keyGroups of [[[ids[0]!.recipient().toString()]], [ids.map((i) => i.recipient().toString())]]) {
    const enc = await encryptNewDocument([plain], store, { keyGroups });
    blocks.push(metadataBlock(Buffer.from(enc).toString("utf8")));
  }
  for (const [i, block] of blocks.entries()) {
    const fast = parseCanonicalMetadata(block, 0, 1_000_000);
    assert.ok(fast !== null, `block ${i} was left to the full reader`);
    assert.deepEqual([fast.branch], fullRead(block), `block ${i}`);
  }
});

test("the fast metadata reader reads what the full reader reads, or leaves the block to it", async () => {
  const id = X25519Identity.generate();
  const enc = await encryptNewDocument([new SopsBranch([{ key: "a", value: "b" }])], store, {
    keyGroups: [[id.recipient().toString(), X25519Identity.generate().recipient().toString()]],
  });
  const sources = [
    metadataBlock(Buffer.from(enc).toString("utf8")),
    metadataBlock(fs.readFileSync(path.join(FIXTURES, "sops-nix/secrets.yaml"), "utf8")),
    metadataBlock(fs.readFileSync(path.join(FIXTURES, "sops-age/secret.enc.yaml"), "utf8")),
  ];
  const replacements = [
    "123",
    "true",
    "null",
    "~",
    "1e3",
    "0x1F",
    ".inf",
    '"a\\nb"',
    "'single'",
    "&anchor x",
    "*alias",
    "!!str x",
    "[a, b]",
    "{}",
    "|-",
    "|+",
    ">",
    "|2",
    "a # comment",
    "a:",
    "a: b",
    "",
    "-",
    "- x",
  ];
  let answered = 0;
  let refused = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const lines = sources[r(sources.length)]!.split("\n");
    const mutations = 1 + r(2);
    for (let m = 0; m < mutations; m++) {
      const at = 1 + r(Math.max(1, lines.length - 2));
      const line = lines[at]!;
      switch (r(12)) {
        case 0:
          lines.splice(at, 0, "");
          break;
        case 1:
          lines[at] = `${" ".repeat(1 + r(4))}${line}`;
          break;
        case 2:
          lines[at] = line.slice(Math.min(line.length, 1 + r(3)));
          break;
        case 3:
          lines[at] = `${line} `;
          break;
        case 4:
          lines.splice(at, 0, `${" ".repeat(2 * r(4))}# comment`);
          break;
        case 5:
          lines.splice(at, 0, line);
          break;
        case 6:
          lines.splice(at, 1);
          break;
        case 7:
        case 8: {
          // Another value after the key (or the dash).
          const m2 = /^( *(?:- )?[A-Za-z_]+: |( *)- )/.exec(line);
          if (m2) lines[at] = m2[1] + replacements[r(replacements.length)]!;
          else lines[at] = `${line.replace(/\S.*$/, "")}${replacements[r(replacements.length)]!}`;
          break;
        }
        case 9:
          lines.splice(at, 0, "sops:");
          break;
        case 10:
          lines.splice(lines.length - 1, 0, "");
          break;
        default:
          lines[at] = line.replace(/ /g, r(2) === 0 ? "\t" : "  ");
          break;
      }
    }
    const block = lines.join("\n");
    const fast = parseCanonicalMetadata(block, 0, 1_000_000);
    if (fast === null) {
      refused++;
      continue;
    }
    answered++;
    const full = fullRead(block);
    assert.ok(!(full instanceof Error), `seed ${seed}: the full reader refused: ${String(full)}\n${block}`);
    assert.deepEqual([fast.branch], full, `seed ${seed}\n${block}`);
  }
  assert.ok(answered > 300 && refused > 300, `answered ${answered}, left ${refused} to the full reader`);
});

test("the fast metadata reader keeps within a node budget (more: the full reader's limits apply)", async () => {
  const id = X25519Identity.generate();
  const enc = await encryptNewDocument([new SopsBranch([{ key: "a", value: "b" }])], store, {
    keyGroups: [[id.recipient().toString()]],
  });
  const block = metadataBlock(Buffer.from(enc).toString("utf8"));
  const nodes = parseCanonicalMetadata(block, 0, 1_000_000)!.nodes;
  assert.ok(nodes > 5);
  assert.equal(parseCanonicalMetadata(block, 0, nodes - 1), null);
  assert.ok(parseCanonicalMetadata(block, 0, nodes) !== null);
});

test("decrypting a file in sops's form never loads the yaml library; a file in another form does", async () => {
  const id = X25519Identity.generate();
  const plain = new SopsBranch([
    { key: new SopsComment(" a comment"), value: null },
    { key: "db", value: new SopsBranch([{ key: "password", value: "hunter2" }]) },
  ]);
  const enc = await encryptNewDocument([plain], store, { keyGroups: [[id.recipient().toString()]] });
  const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src");
  const url = (m: string) => JSON.stringify(pathToFileURL(path.join(src, m)).href);
  // A resolve hook sees every import and require of the package, whichever build they load.
  const script = `
    import * as fs from "node:fs";
    import { registerHooks } from "node:module";
    let loaded = false;
    registerHooks({
      resolve(specifier, context, next) {
        if (specifier === "yaml" || specifier.startsWith("yaml/")) loaded = true;
        return next(specifier, context);
      },
    });
    const sops = await import(${url("sops/index.js")});
    const age = await import(${url("age/index.js")});
    const atStart = loaded;
    const { identity, file } = JSON.parse(fs.readFileSync(0, "utf8"));
    const store = new sops.YamlStore();
    const doc = await sops.decryptDocument(Buffer.from(file, "base64"), store, {
      identities: [age.X25519Identity.parse(identity)],
    });
    const text = Buffer.from(store.emitPlain(doc.branches)).toString("utf8");
    const afterDecrypt = loaded;
    store.parsePlain(Buffer.from("list:\\n    - a\\n"));
    process.stdout.write(JSON.stringify([atStart, afterDecrypt, loaded, doc.macVerified, text]));
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    input: JSON.stringify({ identity: id.encode(), file: Buffer.from(enc).toString("base64") }),
    timeout: 30_000,
  });
  assert.equal(r.status, 0, String(r.stderr));
  assert.deepEqual(JSON.parse(String(r.stdout)), [
    false,
    false,
    true,
    true,
    "# a comment\ndb:\n    password: hunter2\n",
  ]);
});

const META_STRINGS = [
  "3.9.1",
  "_unencrypted",
  "2024-01-02T03:04:05Z",
  "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw",
  "7FB89715AADA920D65D25E63F9BA9DEBD03F57C0",
  "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBOcUlP\n-----END AGE ENCRYPTED FILE-----\n",
  "-----BEGIN PGP MESSAGE-----\n\nhQEMA/m6nevQP1fAAQgA\n=MU7I\n-----END PGP MESSAGE-----\n",
  "line\n  indented\n",
  "no final newline\nx",
  "two final newlines\n\n",
  " leading space\n",
  "trailing space \n",
  "a b",
  "^secret$",
  "(?i)pass",
  "a: b",
  "x #y",
  "é",
  "",
  "1234",
  "0x1F",
  "true",
  "yes",
  "null",
  "2024-01-02",
  "it's",
  'say "hi"',
];

function randomMetaValue(r: (n: number) => number, depth: number): SopsValue {
  const k = r(12);
  if (k < 6) return k < 2 ? encLike(r) : META_STRINGS[r(META_STRINGS.length)]!;
  if (k === 6) return [];
  if (k === 7 && depth < 3) {
    const list: SopsValue[] = [];
    for (let n = 1 + r(3); n > 0; n--) list.push(r(8) === 0 ? "x" : randomMetaBranch(r, depth + 1));
    return list;
  }
  if (k === 8 && depth < 3) return randomMetaBranch(r, depth + 1);
  if (k === 9) return BigInt(r(5));
  if (k === 10) return r(2) === 0;
  return META_STRINGS[r(META_STRINGS.length)]!;
}

function randomMetaBranch(r: (n: number) => number, depth: number): SopsBranch {
  const b = new SopsBranch();
  for (let n = 1 + r(4); n > 0; n--) {
    const key =
      r(10) === 0
        ? ODD_KEYS[r(ODD_KEYS.length)]!
        : ["age", "enc", "recipient", "mac", "version", "lastmodified", "pgp", "fp", "created_at"][r(9)]!;
    if (b.has(key)) continue;
    if (r(20) === 0) b.items.push({ key: new SopsComment(" c"), value: null });
    b.items.push({ key, value: randomMetaValue(r, depth) });
  }
  return b;
}

/** What the full writer prints for a document holding only `sops: metadata`. */
function fullMetadata(metadata: SopsBranch): string {
  return Buffer.from(emitYamlDocuments([new SopsBranch([{ key: "sops", value: metadata }])])).toString(
    "utf8",
  );
}

test("the fast metadata writer prints what the full writer prints, or leaves the block to it", async () => {
  const quoted = quotedAsYaml11;
  let answered = 0;
  let left = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const meta = randomMetaBranch(rng(seed), 0);
    const fast = emitCanonicalMetadata(meta, quoted);
    if (fast === null) {
      left++;
      continue;
    }
    answered++;
    assert.equal(fast, fullMetadata(meta), `seed ${seed}`);
  }
  assert.ok(answered > 300 && left > 300, `answered ${answered}, left ${left} to the full writer`);
  // nixseal's own metadata blocks, and real sops's (read back), are written by the fast writer.
  const ids = [X25519Identity.generate(), X25519Identity.generate()];
  const enc = await encryptNewDocument([new SopsBranch([{ key: "a", value: "b" }])], store, {
    keyGroups: [ids.map((i) => i.recipient().toString())],
  });
  const sources = [Buffer.from(enc), fs.readFileSync(path.join(FIXTURES, "sops-age/secret.enc.yaml"))];
  for (const [i, src] of sources.entries()) {
    const { metadata } = store.parseEncrypted(src);
    assert.ok(metadata !== null);
    const fast = emitCanonicalMetadata(metadata, quoted);
    assert.ok(fast !== null, `source ${i} was left to the full writer`);
    assert.equal(fast, fullMetadata(metadata), `source ${i}`);
    // And the whole file as the store writes it.
    const data = new SopsBranch([{ key: "a", value: "b" }]);
    assert.equal(
      Buffer.from(store.emitEncrypted([data], metadata)).toString("utf8"),
      Buffer.from(
        emitYamlDocuments([new SopsBranch([...data.items, { key: "sops", value: metadata }])]),
      ).toString("utf8"),
      `source ${i}`,
    );
  }
});

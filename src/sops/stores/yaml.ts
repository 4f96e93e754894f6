/**
 * The sops YAML store (sops stores/yaml/store.go, go.yaml.in/yaml/v3): every document a mapping,
 * comments turned into comment items where they stand (one per line, inline ones flagged),
 * anchors/aliases expanded (measured first, and refused over a bound: yaml-aliases.ts),
 * duplicate keys refused; written with a 4-space indent, sequences indented under their key, as
 * sops writes. Built on eemeli/yaml's node API.
 */
import type { Document, Node, Scalar, YAMLMap, YAMLSeq } from "yaml";
import type { NixsealError } from "../../common/index.js";
import {
  MAX_DEPTH,
  SopsBranch,
  SopsComment,
  type SopsList,
  SopsTime,
  type SopsValue,
  withLeaves,
} from "../tree.js";
import { isInt64 } from "../value-cipher.js";
import { YamlAliases } from "../yaml-aliases.js";
import { yamlLib } from "../yaml-lib.js";
import {
  checkSize,
  decodeUtf8,
  extractMetadata,
  formatError,
  type NarrowText,
  type SopsStore,
} from "./store.js";
import {
  changedPlainValues,
  emitCanonical,
  emitCanonicalMetadata,
  findNarrowScalar,
  isNarrowEncValue,
  parseCanonicalData,
  parseCanonicalMetadata,
  parseCanonicalPlain,
} from "./yaml-canonical.js";

/**
 * Bound on the nodes of a file, every document and every alias expansion counted (a "billion
 * laughs" document is refused before it is expanded).
 */
/** The yaml library (loaded at first use: yaml-lib.ts). */
const Y = yamlLib;

const MAX_EXPANDED_NODES = 1_000_000;
/**
 * Bound on the nodes aliases copy, in a file: anchors that save repeating a block are far
 * below it, and a few hundred bytes cannot make seconds of work.
 */
const MAX_ALIASED_NODES = 100_000;

/** The node budget of one file, shared by its documents. */
interface NodeBudget {
  used: number;
}

function commentLines(c: string | null | undefined): string[] {
  if (!c) return [];
  return c.split("\n").filter((l) => l !== "");
}

function yamlError(message: string): NixsealError {
  return formatError("yaml", message);
}

const TOO_MANY_NODES = `more than ${MAX_EXPANDED_NODES} nodes in the file, aliases expanded`;

class YamlReader {
  constructor(
    private readonly aliases: YamlAliases | null,
    private readonly budget: NodeBudget,
  ) {}

  private count(): void {
    if (++this.budget.used > MAX_EXPANDED_NODES) throw yamlError(TOO_MANY_NODES);
  }

  private resolve(n: unknown, depth: number): Node | null {
    let node = n as Node | null;
    let hops = 0;
    while (node !== null && Y().isAlias(node)) {
      if (++hops > MAX_DEPTH) throw yamlError("alias chain too long");
      const target = this.aliases?.target(node);
      if (target === undefined) throw yamlError(`unknown alias *${node.source}`);
      node = target;
    }
    if (depth > MAX_DEPTH) throw yamlError("nesting too deep");
    return node;
  }

  private scalar(s: Scalar, where: string): SopsValue {
    const v = s.value;
    if (v === null || v === undefined) return null;
    if (typeof v === "string" || typeof v === "boolean" || typeof v === "number") return v;
    if (typeof v === "bigint") {
      if (!isInt64(v)) {
        throw yamlError(`the integer at ${where} does not fit in 64 bits`);
      }
      return v;
    }
    if (v instanceof Uint8Array) return Uint8Array.from(v);
    if (v instanceof Date) return new SopsTime(v.toISOString());
    throw yamlError(`unsupported scalar at ${where}`);
  }

  value(n: unknown, depth: number, where: string, commentsHandled: boolean): SopsValue {
    this.count();
    const node = this.resolve(n, depth);
    if (node === null) return null;
    if (Y().isMap(node)) {
      const b = new SopsBranch();
      this.mapInto(node, b, depth, where, commentsHandled);
      return b;
    }
    if (Y().isSeq(node)) {
      const list: SopsList = [];
      if (!commentsHandled) for (const l of commentLines(node.commentBefore)) list.push(new SopsComment(l));
      node.items.forEach((item, i) => {
        const it = this.resolve(item, depth + 1);
        const isLeaf = it === null || Y().isScalar(it);
        if (it !== null) for (const l of commentLines(it.commentBefore)) list.push(new SopsComment(l));
        if (it !== null && isLeaf)
          for (const l of commentLines(it.comment)) list.push(new SopsComment(l, true));
        list.push(this.value(item, depth + 1, `${where}[${i}]`, true));
        if (it !== null && !isLeaf) for (const l of commentLines(it.comment)) list.push(new SopsComment(l));
      });
      if (!commentsHandled) for (const l of commentLines(node.comment)) list.push(new SopsComment(l));
      return list;
    }
    if (Y().isScalar(node)) return this.scalar(node, where);
    throw yamlError(`unsupported node at ${where}`);
  }

  mapInto(map: YAMLMap, b: SopsBranch, depth: number, where: string, commentsHandled: boolean): void {
    if (!commentsHandled)
      for (const l of commentLines(map.commentBefore)) b.items.push({ key: new SopsComment(l), value: null });
    const seen = new Set<string>();
    for (const pair of map.items) {
      if (!Y().isPair(pair)) throw yamlError(`unsupported mapping entry in ${where || "the document"}`);
      const keyNode = this.resolve(pair.key, depth + 1);
      if (keyNode === null || !Y().isScalar(keyNode) || typeof keyNode.value !== "string") {
        throw yamlError(
          `a key in ${where || "the top-level mapping"} is not a string (sops supports only string keys)`,
        );
      }
      const key = keyNode.value;
      if (seen.has(key))
        throw yamlError(`duplicate key "${key.slice(0, 60)}" in ${where || "the top-level mapping"}`);
      seen.add(key);
      for (const l of commentLines(keyNode.commentBefore))
        b.items.push({ key: new SopsComment(l), value: null });
      for (const l of commentLines(keyNode.comment)) b.items.push({ key: new SopsComment(l), value: null });
      const valueNode = this.resolve(pair.value, depth + 1);
      const isLeaf = valueNode === null || Y().isScalar(valueNode);
      if (valueNode !== null && isLeaf) {
        for (const l of commentLines(valueNode.commentBefore))
          b.items.push({ key: new SopsComment(l), value: null });
        for (const l of commentLines(valueNode.comment))
          b.items.push({ key: new SopsComment(l, true), value: null });
      }
      const path = where ? `${where}.${key}` : key;
      const value = this.value(pair.value, depth + 1, path, false);
      b.items.push({ key, value });
    }
    if (!commentsHandled)
      for (const l of commentLines(map.comment)) b.items.push({ key: new SopsComment(l), value: null });
  }
}

/** 1-based line and column of a character offset (the parser leaves them out without prettyErrors). */
function lineAndColumn(text: string, offset: number | undefined): { line: number; col: number } | null {
  if (offset === undefined || offset < 0 || offset > text.length) return null;
  let line = 1;
  let start = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, col: offset - start + 1 };
}

/**
 * The aliases of each document, every document's expansion measured before any is expanded:
 * the limits hold for the whole file, however many documents it has.
 */
function measureAliases(
  docs: readonly Document.Parsed[],
  text: string,
  nodesBefore: number,
): (YamlAliases | null)[] {
  let nodes = nodesBefore;
  let aliased = 0;
  return docs.map((doc) => {
    if (doc.errors.length > 0) return null; // reported when the document is read
    const aliases = YamlAliases.of(doc.contents, text);
    if (aliases === null) return null;
    const size = aliases.expansion(doc.contents, {
      maxNodes: MAX_EXPANDED_NODES - nodes,
      maxAliasedNodes: MAX_ALIASED_NODES - aliased,
      maxDepth: MAX_DEPTH,
      aliasIsNode: false,
      keysNest: true,
    });
    if ("refused" in size) {
      throw formatError(
        "yaml",
        size.refused === "depth"
          ? "nesting too deep once aliases are expanded"
          : size.refused === "aliased"
            ? `aliases expand to more than ${MAX_ALIASED_NODES} nodes`
            : TOO_MANY_NODES,
        "write the values out instead of through anchors and aliases (sops itself never writes them)",
      );
    }
    nodes += size.nodes;
    aliased += size.aliased;
    return aliases;
  });
}

function parseYaml(input: Uint8Array): SopsBranch[] {
  checkSize("yaml", input);
  const text = decodeUtf8("yaml", input);
  // The narrow form nixseal writes (a plaintext opened by `edit`, say): read without the
  // library, which takes ~30 µs a value; anything else, and every error, takes the full path.
  const fast = parseCanonicalPlain(text, quotedAsYaml11);
  if (fast !== null && fast.nodes <= MAX_EXPANDED_NODES) return [fast.branch];
  return parseYamlText(text, 0);
}

/** The full reader, through the yaml library alone (exported for the tests of the fast one). */
export function parseYamlDocuments(input: Uint8Array): SopsBranch[] {
  checkSize("yaml", input);
  return parseYamlText(decodeUtf8("yaml", input), 0);
}

/** `nodesBefore`: nodes of the same file already read (the fast path's), counted in the budget. */
function parseYamlText(text: string, nodesBefore: number): SopsBranch[] {
  const docs = Y().parseAllDocuments(text, {
    intAsBigInt: true,
    uniqueKeys: false, // checked below with a Set: the parser's own check is quadratic
    merge: false,
    prettyErrors: false,
    strict: true,
    version: "1.2",
  });
  if (!Array.isArray(docs)) return [];
  const out: SopsBranch[] = [];
  const aliases = measureAliases(docs, text, nodesBefore);
  const budget: NodeBudget = { used: nodesBefore };
  docs.forEach((doc, i) => {
    const err = doc.errors[0];
    if (err !== undefined) {
      // The parser's own message quotes the source line, which may hold a secret: not used.
      const pos = err.linePos?.[0] ?? lineAndColumn(text, err.pos[0]);
      const at = pos ? ` at line ${pos.line}, column ${pos.col}` : "";
      const what = err.code === "DUPLICATE_KEY" ? "duplicate key" : err.code.toLowerCase().replace(/_/g, " ");
      throw yamlError(`${what}${at}`);
    }
    const reader = new YamlReader(aliases[i]!, budget);
    const b = new SopsBranch();
    for (const l of commentLines(doc.commentBefore)) b.items.push({ key: new SopsComment(l), value: null });
    const root = doc.contents;
    if (root === null || (Y().isScalar(root) && root.value === null)) {
      // sops: an empty document is an empty mapping.
    } else if (Y().isMap(root)) {
      reader.mapInto(root, b, 0, "", false);
    } else if (Y().isSeq(root)) {
      throw yamlError("a document that is a sequence is not supported (sops needs a mapping at the top)");
    } else if (Y().isAlias(root)) {
      throw yamlError("a document that is an alias is not supported");
    } else {
      throw yamlError("a document that is a single value is not supported (sops needs a mapping at the top)");
    }
    for (const l of commentLines(doc.comment)) b.items.push({ key: new SopsComment(l), value: null });
    out.push(b);
  });
  return out;
}

// ---- writing -------------------------------------------------------------------------------

/** YAML 1.1 timestamps and booleans: go-yaml writes such strings double-quoted (`lastmodified: "..."`). */
const YAML11_TIMESTAMP =
  /^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?$/;
const YAML11_BOOL = /^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$/;
/** The letters YAML11_BOOL's words start with. */
const YAML11_FIRST_LETTERS = "yYnNoO";

function scalarNode(v: SopsValue): Scalar {
  if (typeof v === "string" && (YAML11_TIMESTAMP.test(v) || YAML11_BOOL.test(v))) {
    const s = new (Y().Scalar)(v);
    s.type = Y().Scalar.QUOTE_DOUBLE;
    return s;
  }
  if (v instanceof SopsTime) return new (Y().Scalar)(v.text);
  if (v instanceof Uint8Array) return new (Y().Scalar)(Buffer.from(v).toString("utf8"));
  const s = new (Y().Scalar)(v);
  if (typeof v === "number" && Number.isInteger(v) && Number.isFinite(v)) {
    // Keep a float a float when read back (Go writes 3.0 as "3" but reads it as an int; we
    // keep the type the value had).
    s.minFractionDigits = 1;
  }
  return s;
}

function toNode(v: SopsValue): Node {
  if (v instanceof SopsBranch) return branchNode(v);
  if (Array.isArray(v)) return listNode(v);
  return scalarNode(v);
}

function join(lines: string[]): string | undefined {
  return lines.length > 0 ? lines.join("\n") : undefined;
}

function listNode(list: SopsList): YAMLSeq {
  const seq = new (Y().YAMLSeq)();
  let head: string[] = [];
  let inline: string[] = [];
  for (const item of list) {
    if (item instanceof SopsComment) {
      (item.inline ? inline : head).push(item.value);
      continue;
    }
    const n = toNode(item);
    if (head.length > 0) n.commentBefore = join(head);
    if (inline.length > 0) n.comment = join(inline);
    head = [];
    inline = [];
    seq.items.push(n);
  }
  const rest = [...head, ...inline];
  if (rest.length > 0) {
    if (seq.items.length === 0) seq.commentBefore = join(rest);
    else seq.comment = join(rest);
  }
  return seq;
}

function branchNode(b: SopsBranch): YAMLMap {
  const map = new (Y().YAMLMap)();
  let head: string[] = [];
  let inline: string[] = [];
  for (const item of b.items) {
    if (item.key instanceof SopsComment) {
      (item.key.inline ? inline : head).push(item.key.value);
      continue;
    }
    const k = new (Y().Scalar)(item.key);
    if (head.length > 0) k.commentBefore = join(head);
    const v = toNode(item.value);
    if (inline.length > 0) {
      if (Y().isScalar(v)) v.comment = join(inline);
      else k.commentBefore = join([...head, ...inline]);
    }
    head = [];
    inline = [];
    map.items.push(new (Y().Pair)(k, v));
  }
  const rest = [...head, ...inline];
  if (rest.length > 0) {
    if (map.items.length === 0) map.commentBefore = join(rest);
    else map.comment = join(rest);
  }
  return map;
}

/** The metadata lines a write of some values changes. */
const MAY_CHANGE = /^ {4}(?:lastmodified|mac): /;

/**
 * Whether the texts `a` and `b` have the same lines, except lines both have at the same place
 * that match `changes`.
 */
function sameBesides(a: string, b: string, changes: RegExp): boolean {
  const x = a.split("\n");
  const y = b.split("\n");
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i] && !(changes.test(x[i]!) && changes.test(y[i]!))) return false;
  }
  return true;
}

/** The strings scalarNode writes double-quoted though they would be plain (exported for tests). */
export function quotedAsYaml11(s: string): boolean {
  // Both start with a digit or one of these letters: most strings are settled here.
  if (s.length === 0) return false;
  const c = s.charCodeAt(0);
  if (!((c >= 0x30 && c <= 0x39) || YAML11_FIRST_LETTERS.includes(s[0]!))) return false;
  return YAML11_TIMESTAMP.test(s) || YAML11_BOOL.test(s);
}

/** Every document through the fast writer (yaml-canonical.ts), or null if one is not in its form. */
function emitCanonicalDocs(branches: readonly SopsBranch[]): string[] | null {
  const parts: string[] = [];
  for (const b of branches) {
    const s = emitCanonical(b, quotedAsYaml11);
    if (s === null) return null;
    parts.push(s);
  }
  return parts;
}

/**
 * A sops file in the form sops writes, read without the yaml library: the data and the metadata
 * block by yaml-canonical.ts (a metadata block in another form by the library alone). Null: take
 * the full path (also for every error, so that errors are the full path's).
 */
function parseEncryptedFast(
  input: Uint8Array,
): { branches: SopsBranch[]; metadata: SopsBranch | null; narrow?: NarrowText } | null {
  checkSize("yaml", input);
  const text = decodeUtf8("yaml", input);
  const data = parseCanonicalData(text);
  if (data === null || data.rest === text.length) return null;
  let rest: SopsBranch[];
  const meta = parseCanonicalMetadata(text, data.rest, MAX_EXPANDED_NODES - data.nodes);
  if (meta !== null) {
    rest = [meta.branch];
  } else {
    try {
      rest = parseYamlText(text.slice(data.rest), data.nodes);
    } catch {
      return null;
    }
  }
  if (rest.length !== 1) return null;
  for (const it of rest[0]!.items) if (typeof it.key === "string" && data.branch.has(it.key)) return null;
  const out = extractMetadata([new SopsBranch([...data.branch.items, ...rest[0]!.items])]);
  // Data and metadata both in the narrow form: a write of some values can splice (spliceScalars).
  return meta === null ? out : { ...out, narrow: { text, dataEnd: data.rest } };
}

/**
 * What emitPlain wrote through the fast writer, by the bytes it returned: their text and the tree
 * they print (editedValues compares an edited text with them).
 */
const emittedNarrow = new WeakMap<Uint8Array, { text: string; tree: SopsBranch }>();

function emitYaml(branches: SopsBranch[]): Uint8Array {
  const fast = emitCanonicalDocs(branches);
  if (fast !== null) return Buffer.from(fast.join("---\n"), "utf8");
  return emitYamlDocuments(branches);
}

/** The full writer, through yaml Documents (exported for the tests of the fast one). */
export function emitYamlDocuments(branches: readonly SopsBranch[]): Uint8Array {
  const parts: string[] = [];
  for (const b of branches) {
    const doc = new (Y().Document)(null, { version: "1.2" });
    const map = branchNode(b);
    // Comments before the first key and after the last one belong to the document.
    doc.contents = map;
    if (map.items.length === 0 && map.commentBefore) {
      doc.commentBefore = map.commentBefore;
      map.commentBefore = undefined;
    } else if (map.comment) {
      doc.comment = map.comment;
      map.comment = undefined;
    }
    parts.push(
      doc.toString({
        indent: 4,
        indentSeq: true,
        lineWidth: 0,
        minContentWidth: 0,
        flowCollectionPadding: false,
        nullStr: "null",
      }),
    );
  }
  return Buffer.from(parts.join("---\n"), "utf8");
}

export class YamlStore implements SopsStore {
  readonly name = "yaml" as const;

  parsePlain(input: Uint8Array): SopsBranch[] {
    return parseYaml(input);
  }

  parseEncrypted(input: Uint8Array): {
    branches: SopsBranch[];
    metadata: SopsBranch | null;
    narrow?: NarrowText;
  } {
    return parseEncryptedFast(input) ?? extractMetadata(parseYamlDocuments(input));
  }

  emitPlain(branches: SopsBranch[]): Uint8Array {
    const fast = emitCanonicalDocs(branches);
    if (fast === null) return emitYamlDocuments(branches);
    const text = fast.join("---\n");
    const out = Buffer.from(text, "utf8");
    if (branches.length === 1) emittedNarrow.set(out, { text, tree: branches[0]! });
    return out;
  }

  editedValues(
    shown: Uint8Array,
    edited: Uint8Array,
    before: readonly SopsBranch[],
    max: number,
  ): { branches: SopsBranch[]; changed: string[][] } | null {
    const narrow = emittedNarrow.get(shown);
    if (narrow === undefined || before.length !== 1 || before[0] !== narrow.tree) return null;
    let text: string;
    try {
      // parsePlain's own checks: what they refuse, it reports.
      checkSize("yaml", edited);
      text = decodeUtf8("yaml", edited);
    } catch {
      return null;
    }
    const changes = changedPlainValues(narrow.text, text, quotedAsYaml11, max);
    const branch = changes === null ? null : withLeaves(narrow.tree, changes);
    return branch === null ? null : { branches: [branch], changed: changes!.map((c) => c.keys) };
  }

  spliceScalars(
    input: Uint8Array,
    narrow: NarrowText,
    changes: readonly { keys: readonly string[]; value: string }[],
    metadata: SopsBranch,
  ): Uint8Array[] | null {
    const { text, dataEnd } = narrow;
    const at: { start: number; end: number; value: string }[] = [];
    for (const { keys, value } of changes) {
      const found = findNarrowScalar(text, dataEnd, keys);
      // An encrypted value replaced by another (which value is encrypted is the caller's rules').
      if (found === null || !isNarrowEncValue(value) || !isNarrowEncValue(text.slice(found.start, found.end)))
        return null;
      at.push({ ...found, value });
    }
    at.sort((a, b) => a.start - b.start);
    // Two changes on one line: keys the narrow form cannot tell apart (it has each once).
    for (let i = 1; i < at.length; i++) if (at[i]!.start < at[i - 1]!.end) return null;
    const meta = emitCanonicalMetadata(metadata, quotedAsYaml11);
    if (meta === null || !sameBesides(meta, text.slice(dataEnd), MAY_CHANGE)) return null;
    // The file's own bytes around the values when they are the text's characters one for one.
    const ascii = input.length === text.length;
    const parts: (Uint8Array | string)[] = [];
    let from = 0;
    for (const { start, end, value } of at) {
      parts.push(ascii ? input.subarray(from, start) : text.slice(from, start), value);
      from = end;
    }
    parts.push(ascii ? input.subarray(from, dataEnd) : text.slice(from, dataEnd), meta);
    if (!ascii) return [Buffer.from(parts.join(""), "utf8")];
    return parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : p));
  }

  /** sops SerializeMetadata: the metadata is appended to every document. */
  emitEncrypted(branches: SopsBranch[], metadata: SopsBranch): Uint8Array {
    const data = branches.length > 0 ? branches : [new SopsBranch()];
    const fast = emitCanonicalDocs(data);
    if (fast !== null) {
      // The metadata block printed alone is printed as it would be after the data's keys.
      const meta =
        emitCanonicalMetadata(metadata, quotedAsYaml11) ??
        Buffer.from(emitYaml([new SopsBranch([{ key: "sops", value: metadata }])])).toString("utf8");
      return Buffer.from(fast.map((d) => d + meta).join("---\n"), "utf8");
    }
    return emitYaml(data.map((b) => new SopsBranch([...b.items, { key: "sops", value: metadata }])));
  }
}

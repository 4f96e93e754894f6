/**
 * A fast path for the YAML that sops and nixseal write: nested mappings with a 4-space indent,
 * plain keys, `ENC[...]` values, whole-line comments. Parsing it line by line and writing such
 * a tree directly skips building (and printing) a whole yaml Document, which was most of the
 * time `decrypt` took on a large file.
 *
 * Both directions are conservative: anything outside that narrow form (lists, anchors, flow
 * collections, block scalars, quoted or odd scalars, blank lines, inline comments, several
 * documents, duplicate keys, ...) returns null and the caller takes the full path through the
 * yaml library (yaml.ts), so results and errors are those of the full path. The tests check
 * both directions against the full path (test/sops/yaml-canonical.test.ts).
 */
import { SopsBranch, SopsComment, type SopsValue } from "../tree.js";

/** Deeper files take the full path (which has the real limit, MAX_DEPTH). */
const MAX_FAST_DEPTH = 64;

/** A key that YAML 1.2 (core schema) reads as this string and the yaml library writes plain. */
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const CORE_KEYWORD = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE|[Nn]ull|NULL)$/;
/** sops's value form, a plain scalar in block context. */
const ENC_VALUE =
  /^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:[a-z]+\]$/;

/** Whether `s` is an encrypted value the narrow form writes plain (ASCII only). */
export function isNarrowEncValue(s: string): boolean {
  return ENC_VALUE.test(s);
}
/**
 * The rest of a data line after its indent (sticky, matched in place: no line is cut out):
 * a key and either nothing (a mapping follows) or `: ` and an ENC value, or `#` and a comment.
 */
const DATA_LINE =
  /(?:([A-Za-z_][A-Za-z0-9_-]*):(?: (ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:[a-z]+\]))?|#([^\n\r\u2028\u2029]*))\n/y;
/** A data line of a plaintext document: as DATA_LINE, with any value (checked after). */
const PLAIN_DATA_LINE = /(?:([A-Za-z_][A-Za-z0-9_-]*):(?: ([^\n]+))?|#([^\n\r\u2028\u2029]*))\n/y;
/** A comment's text that the full path reads differently (empty, ending in a space). */
const ODD_COMMENT = /^$|\s$/;

function plainKey(k: string): boolean {
  return PLAIN_KEY.test(k) && !CORE_KEYWORD.test(k);
}

interface Open {
  branch: SopsBranch;
  indent: number;
  keys: Set<string>;
}

/**
 * The data part of a sops YAML file (up to a top-level `sops:` line), read as yaml.ts reads it,
 * or null when the text is not in the narrow form. `rest` is the offset of the `sops:` line
 * (text.length without one); `nodes` the nodes read, for the caller's node budget.
 */
export function parseCanonicalData(text: string): { branch: SopsBranch; rest: number; nodes: number } | null {
  return parseNarrow(text, null);
}

/**
 * A whole plaintext document in the narrow form (what the writer below prints for a tree of
 * string values: the file `nixseal edit` opens), read as yaml.ts reads it, or null. A value is
 * taken only if the writer prints that string plain (PLAIN_VALUE, not `quoted`, not read as
 * another type), which the full reader reads back as the same string; anything else (numbers,
 * booleans, quoted strings, ...) leaves the text to the full path. `nodes` as above.
 */
export function parseCanonicalPlain(
  text: string,
  quoted: (s: string) => boolean,
): { branch: SopsBranch; nodes: number } | null {
  const r = parseNarrow(text, (v) => PLAIN_VALUE.test(v) && !quoted(v) && !resolvesToNonString(v));
  return r === null || r.rest !== text.length ? null : { branch: r.branch, nodes: r.nodes };
}

/**
 * The reader of both: `plainValue` null reads sops's data part (ENC values, up to `sops:`), else
 * a plaintext document whose values `plainValue` accepts.
 */
function parseNarrow(
  text: string,
  plainValue: ((v: string) => boolean) | null,
): { branch: SopsBranch; rest: number; nodes: number } | null {
  const root: Open = { branch: new SopsBranch(), indent: 0, keys: new Set() };
  const stack: Open[] = [root];
  let pendingComments: { indent: number; comments: SopsComment[] } | null = null;
  /** A key line without a value: its mapping must start on the next key line, one level in. */
  let opening: { parent: Open; key: string } | null = null;
  let nodes = 1;
  let pos = 0;
  const line = plainValue === null ? DATA_LINE : PLAIN_DATA_LINE;
  while (pos < text.length) {
    if (plainValue === null && text.startsWith("sops:", pos)) {
      if (text.charCodeAt(pos + 5) !== 0x0a || pendingComments !== null || opening !== null) return null;
      break;
    }
    let at = pos;
    while (text.charCodeAt(at) === 0x20) at++;
    const indent = at - pos;
    line.lastIndex = at;
    const m = line.exec(text);
    // Anything else (another value, a line without its newline, ...) takes the full path.
    if (m === null) return null;
    const end = line.lastIndex;
    const body = m[3];
    if (body !== undefined) {
      // A comment is read where the key after it stands; comments with blank or trailing
      // space, a line break of its own (CR, U+2028, U+2029: no match above), or at another
      // indent than that key, take the full path.
      if (ODD_COMMENT.test(body)) return null;
      if (pendingComments === null) pendingComments = { indent, comments: [] };
      else if (pendingComments.indent !== indent) return null;
      pendingComments.comments.push(new SopsComment(body));
      nodes++;
      pos = end;
      continue;
    }
    const key = m[1]!;
    const value = m[2];
    if (CORE_KEYWORD.test(key)) return null;
    if (value !== undefined && plainValue !== null && !plainValue(value)) return null;
    if (pendingComments !== null && pendingComments.indent !== indent) return null;
    let top: Open;
    if (opening !== null) {
      const parentIndent = stack[stack.length - 1]!.indent;
      if (indent !== parentIndent + 4 || stack.length > MAX_FAST_DEPTH) return null;
      const b = new SopsBranch();
      opening.parent.branch.items.push({ key: opening.key, value: b });
      top = { branch: b, indent, keys: new Set() };
      stack.push(top);
      opening = null;
    } else {
      while (stack.length > 1 && stack[stack.length - 1]!.indent > indent) stack.pop();
      top = stack[stack.length - 1]!;
      if (top.indent !== indent) return null;
    }
    if (top.keys.has(key)) return null; // the full path reports it
    top.keys.add(key);
    if (pendingComments !== null) {
      for (const cm of pendingComments.comments) top.branch.items.push({ key: cm, value: null });
      pendingComments = null;
    }
    nodes += 2;
    if (value === undefined) opening = { parent: top, key };
    else top.branch.items.push({ key, value });
    pos = end;
  }
  if (pendingComments !== null || opening !== null) return null;
  if (root.keys.has("sops")) return null;
  return { branch: root.branch, rest: pos, nodes };
}

// ---- writing -------------------------------------------------------------------------------

/**
 * Strings the yaml library writes plain (no indicator start, no `: `/` #`, no trailing `:`, not
 * `-` alone, no `---` document marker), base64url included.
 */
const PLAIN_VALUE = /^(?!---)(?:[A-Za-z0-9_]|-[A-Za-z0-9_-])[A-Za-z0-9_./+=-]*$/;

/**
 * The plain scalars the YAML 1.2 core schema reads as something other than a string (null, bool,
 * int in base 8, 10 and 16, float, .inf and .nan): the tests of the yaml library's core schema
 * tags, copied so that writing needs no library. test/sops/yaml-canonical.test.ts checks them
 * against the library's own tags.
 */
const CORE_NON_STRING: readonly RegExp[] = [
  /^(?:~|[Nn]ull|NULL)?$/,
  /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/,
  /^0o[0-7]+$/,
  /^[-+]?[0-9]+$/,
  /^0x[0-9a-fA-F]+$/,
  /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/,
  /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/,
  /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/,
];

/** The first characters of the non-empty strings CORE_NON_STRING matches. */
const CORE_NON_STRING_FIRST = new Set(Array.from("~nNtTfF0123456789+-.", (c) => c.charCodeAt(0)));

/**
 * Whether the yaml library, with the YAML 1.2 core schema of the documents yaml.ts writes,
 * reads `s` back as another type (`42`, `true`, `1e3`, `null`, ...) and so quotes it.
 */
export function resolvesToNonString(s: string): boolean {
  // Every one of them is empty or starts with one of these: most strings are settled here.
  if (s.length > 0 && !CORE_NON_STRING_FIRST.has(s.charCodeAt(0))) return false;
  for (const re of CORE_NON_STRING) if (re.test(s)) return true;
  return false;
}

function emitBranch(b: SopsBranch, indent: string, out: string[], quoted: (s: string) => boolean): boolean {
  let sawKey = false;
  let pendingComment = false;
  for (const item of b.items) {
    if (item.key instanceof SopsComment) {
      const c = item.key.value;
      if (item.key.inline || c === "" || c === " " || c.includes("\n") || c.includes("\r")) return false;
      out.push(`${indent}#${c}\n`);
      pendingComment = true;
      continue;
    }
    const key = item.key;
    if (!plainKey(key)) return false;
    const v: SopsValue = item.value;
    if (v instanceof SopsBranch) {
      if (!v.items.some((i) => typeof i.key === "string")) return false;
      out.push(`${indent}${key}:\n`);
      if (!emitBranch(v, `${indent}    `, out, quoted)) return false;
    } else if (typeof v === "string") {
      if ((PLAIN_VALUE.test(v) && !quoted(v)) || ENC_VALUE.test(v)) out.push(`${indent}${key}: ${v}\n`);
      else return false;
    } else {
      return false;
    }
    sawKey = true;
    pendingComment = false;
  }
  // Comments after the last key are placed by the yaml library's own rules: full path.
  return sawKey && !pendingComment;
}

/**
 * Where the value at the mapping keys `keys` is in the data part (text[0, dataEnd)) of a file in
 * the narrow form emitCanonical writes (the caller knows it is: parseCanonicalData read it): the
 * characters after `key: ` on its line. Null when there is no such line, or the keys name a
 * mapping. Each key is looked for among the lines of its parent's block, at its depth's indent
 * (four spaces a level): in the narrow form a key is on one line, plain, once per mapping.
 */
export function findNarrowScalar(
  text: string,
  dataEnd: number,
  keys: readonly string[],
): { start: number; end: number } | null {
  // Only keys the narrow form writes plain can be its lines (a key holding a line break or `: `
  // could otherwise match lines of other keys).
  if (!keys.every(plainKey)) return null;
  let from = 0;
  let to = dataEnd;
  for (let depth = 0; depth < keys.length; depth++) {
    const indent = "    ".repeat(depth);
    const head = `${indent}${keys[depth]}:`;
    const last = depth === keys.length - 1;
    let line = from;
    let found = -1;
    let lineEnd = from;
    while (line < to) {
      lineEnd = text.indexOf("\n", line);
      if (lineEnd < 0 || lineEnd > to) lineEnd = to;
      if (text.startsWith(head, line)) {
        found = line;
        break;
      }
      line = lineEnd + 1;
    }
    if (found < 0) return null;
    const after = found + head.length;
    if (last) {
      // `key: value` (a key alone on its line holds a mapping).
      if (after >= lineEnd || text.charCodeAt(after) !== 0x20) return null;
      return { start: after + 1, end: lineEnd };
    }
    if (after !== lineEnd) return null;
    // The block: the lines after it indented deeper than it.
    const inner = `${indent}    `;
    let end = lineEnd + 1;
    while (end < to && text.startsWith(inner, end)) {
      const nl = text.indexOf("\n", end);
      end = nl < 0 || nl >= to ? to : nl + 1;
    }
    from = lineEnd + 1;
    to = Math.min(end, to);
  }
  return null;
}

/**
 * The values changed from `shown`, a document emitCanonical wrote, to `edited`, when nothing
 * else changed: the same lines but for lines `key: value` whose value alone differs, each new
 * value one that parseCanonicalPlain reads as a plain string (so the full reader reads the same).
 * For each, the mapping keys leading to it and its new value, in the order of the text. Null when
 * anything else differs, or more than `max` values do: the caller then parses `edited` whole.
 * One pass over both texts that looks closer only at the lines that differ: an edit of a few
 * values of a large document needs neither a second tree nor a comparison of trees.
 */
export function changedPlainValues(
  shown: string,
  edited: string,
  quoted: (s: string) => boolean,
  max: number,
): { keys: string[]; value: string }[] | null {
  const out: { keys: string[]; value: string }[] = [];
  /** The keys of the mappings the current line is in, one per level (four spaces). */
  const open: string[] = [];
  let a = 0;
  let b = 0;
  while (a < shown.length) {
    // emitCanonical ends every line with a newline.
    const endA = shown.indexOf("\n", a);
    const endB = edited.indexOf("\n", b);
    if (endA < 0 || endB < 0) return null;
    let at = a;
    while (shown.charCodeAt(at) === 0x20) at++;
    const comment = shown.charCodeAt(at) === 0x23; /* # */
    // A comment stands at the indent of the key after it; every other line is a key's.
    if (!comment) open.length = (at - a) / 4;
    const opens = !comment && shown.charCodeAt(endA - 1) === 0x3a; /* `key:` alone: a mapping */
    if (endA - a !== endB - b || !edited.startsWith(shown.slice(a, endA), b)) {
      if (comment || opens) return null;
      // `key: value`: a plain key has no `: ` (PLAIN_KEY), a plain value no `:` at all.
      const head = shown.indexOf(": ", at) + 2;
      if (head < 2 || !edited.startsWith(shown.slice(a, head), b)) return null;
      const value = edited.slice(b + (head - a), endB);
      if (!PLAIN_VALUE.test(value) || quoted(value) || resolvesToNonString(value)) return null;
      if (out.length === max) return null;
      out.push({ keys: [...open, shown.slice(at, head - 2)], value });
    } else if (opens) {
      open.push(shown.slice(at, endA - 1));
    }
    a = endA + 1;
    b = endB + 1;
  }
  return b === edited.length ? out : null;
}

/**
 * One document in the narrow form, exactly as yaml.ts's writer prints it, or null when the tree
 * holds anything else. `quoted(s)`: whether yaml.ts writes the string `s` quoted though it looks
 * plain (YAML 1.1 booleans and timestamps, which go-yaml quotes).
 */
export function emitCanonical(b: SopsBranch, quoted: (s: string) => boolean): string | null {
  const out: string[] = [];
  const q = (s: string) => quoted(s) || resolvesToNonString(s);
  if (!emitBranch(b, "", out, q)) return null;
  return out.join("");
}

// ---- the metadata block --------------------------------------------------------------------

/** A key of the metadata block, after its indent: the key, then a value on the line or none. */
const META_KEY_LINE = /^([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?$/;
/** A plain scalar without spaces, indicators first or `: `/` #` (`ENC[...]`, `age1...`, `3.9.1`). */
const META_PLAIN = /^[A-Za-z0-9_][A-Za-z0-9_.+/=[\],:-]*$/;
/** A double-quoted scalar without escapes (`"2024-01-02T03:04:05Z"`). */
const META_QUOTED = /^"([A-Za-z0-9_.+/=:, -]*)"$/;
/** A line of a literal block scalar (armored keys): printable ASCII. */
const BLOCK_TEXT = /^[\x20-\x7e]*$/;

/** Thrown inside the metadata reader: the block is not in the narrow form (the caller falls back). */
class NotCanonical {}

function indentOf(line: string): number {
  let n = 0;
  while (n < line.length && line.charCodeAt(n) === 0x20) n++;
  return n;
}

/**
 * Reads a metadata block in the form sops and nixseal write it: block mappings and sequences,
 * plain and double-quoted scalars, `[]`, literal blocks (`|`) of armored keys. Anything else
 * (comments, blank lines, anchors, tags, flow collections, escapes, numbers, booleans, ...)
 * throws NotCanonical.
 */
class MetadataReader {
  private i = 0;
  nodes = 0;

  constructor(
    private readonly lines: readonly string[],
    private readonly maxNodes: number,
  ) {}

  read(): SopsBranch {
    if (this.lines[0] !== "sops:") throw new NotCanonical();
    this.i = 1;
    const value = this.nested(0, 1);
    if (this.i !== this.lines.length) throw new NotCanonical();
    return new SopsBranch([{ key: "sops", value }]);
  }

  private count(n: number): void {
    this.nodes += n;
    if (this.nodes > this.maxNodes) throw new NotCanonical();
  }

  /** The block node on the lines after `key:`, more indented than `parentIndent`. */
  private nested(parentIndent: number, depth: number): SopsValue {
    if (depth > MAX_FAST_DEPTH || this.i >= this.lines.length) throw new NotCanonical();
    const line = this.lines[this.i]!;
    const indent = indentOf(line);
    if (indent <= parentIndent) throw new NotCanonical();
    if (line.startsWith("- ", indent)) return this.sequence(indent, depth);
    return this.mapping(indent, depth);
  }

  /** A block mapping at `indent`; `first`: its first entry, already read (after `- `). */
  private mapping(indent: number, depth: number, first?: string): SopsBranch {
    const b = new SopsBranch();
    const keys = new Set<string>();
    let content = first;
    for (;;) {
      if (content === undefined) {
        if (this.i >= this.lines.length) break;
        const line = this.lines[this.i]!;
        const at = indentOf(line);
        if (at < indent && line !== "") break;
        if (at !== indent) throw new NotCanonical();
        content = line.slice(indent);
        this.i++;
      }
      const m = META_KEY_LINE.exec(content);
      if (m === null) throw new NotCanonical();
      const key = m[1]!;
      if (CORE_KEYWORD.test(key) || keys.has(key)) throw new NotCanonical();
      keys.add(key);
      this.count(2);
      const rest = m[2];
      const value = rest === undefined ? this.nested(indent, depth + 1) : this.inline(rest, indent);
      b.items.push({ key, value });
      content = undefined;
    }
    return b;
  }

  private sequence(indent: number, depth: number): SopsValue[] {
    const list: SopsValue[] = [];
    while (this.i < this.lines.length) {
      const line = this.lines[this.i]!;
      const at = indentOf(line);
      if (at < indent && line !== "") break;
      if (at !== indent || !line.startsWith("- ", indent)) throw new NotCanonical();
      this.i++;
      const content = line.slice(indent + 2);
      this.count(1);
      if (META_KEY_LINE.test(content)) list.push(this.mapping(indent + 2, depth + 1, content));
      else list.push(this.scalar(content));
    }
    return list;
  }

  /** A value on its key's line: a scalar, `[]`, or a literal block on the lines after. */
  private inline(rest: string, mapIndent: number): SopsValue {
    this.count(1);
    if (rest === "[]") return [];
    if (rest === "|") return this.literal(mapIndent);
    return this.scalar(rest);
  }

  private scalar(s: string): string {
    const q = META_QUOTED.exec(s);
    if (q !== null) return q[1]!;
    if (!META_PLAIN.test(s) || s.endsWith(":") || resolvesToNonString(s)) throw new NotCanonical();
    return s;
  }

  /** A literal block with clip chomping: its lines less the indent of its first, and one newline. */
  private literal(mapIndent: number): string {
    const first = this.lines[this.i];
    if (first === undefined) throw new NotCanonical();
    const indent = indentOf(first);
    if (indent <= mapIndent || indent === first.length) throw new NotCanonical();
    const out: string[] = [];
    let empty = 0;
    while (this.i < this.lines.length) {
      const line = this.lines[this.i]!;
      if (line === "") {
        empty++;
        this.i++;
        continue;
      }
      const at = indentOf(line);
      if (at === line.length) throw new NotCanonical(); // a line of spaces only
      if (at < indent) break;
      if (!BLOCK_TEXT.test(line)) throw new NotCanonical();
      for (; empty > 0; empty--) out.push("");
      out.push(line.slice(indent));
      this.i++;
    }
    // Trailing blank lines are chomped by rules this reader leaves to the library.
    if (empty > 0) throw new NotCanonical();
    return `${out.join("\n")}\n`;
  }
}

/**
 * The metadata block of a sops YAML file (from `start`, a top-level `sops:` line, to the end),
 * read as yaml.ts reads it: a document holding one key, `sops`. Null when the block is not in the
 * narrow form sops writes, or has more than `maxNodes` nodes.
 */
export function parseCanonicalMetadata(
  text: string,
  start: number,
  maxNodes: number,
): { branch: SopsBranch; nodes: number } | null {
  if (!text.endsWith("\n")) return null;
  const lines = text.slice(start, text.length - 1).split("\n");
  const reader = new MetadataReader(lines, maxNodes);
  try {
    return { branch: reader.read(), nodes: reader.nodes };
  } catch (e) {
    if (e instanceof NotCanonical) return null;
    throw e;
  }
}

/** A multi-line string the library writes as a literal block (`|`): lines of printable ASCII, none blank or indented. */
const LITERAL_LINES = /^(?:[\x21-\x7e][\x20-\x7e]*\n)+$/;
/** A string that is double-quoted without escapes (`"2024-01-02T03:04:05Z"`). */
const QUOTABLE = /^[A-Za-z0-9_.+/=:, -]*$/;

/**
 * One metadata value after `key:` (with the space, or a newline and the lines of a nested block),
 * or false when it is not in the narrow form. `col`: the column of the key.
 */
function emitMetaValue(
  v: SopsValue,
  col: number,
  out: string[],
  quoted: (s: string) => boolean,
  depth: number,
): boolean {
  if (depth > MAX_FAST_DEPTH) return false;
  if (typeof v === "string") {
    if (ENC_VALUE.test(v) || (PLAIN_VALUE.test(v) && !quoted(v))) out.push(` ${v}\n`);
    else if (quoted(v) && QUOTABLE.test(v)) out.push(` "${v}"\n`);
    else if (LITERAL_LINES.test(v)) {
      const pad = " ".repeat(col + 4);
      out.push(" |\n");
      for (const line of v.slice(0, -1).split("\n")) out.push(`${pad}${line}\n`);
    } else return false;
    return true;
  }
  if (v instanceof SopsBranch) {
    out.push("\n");
    return emitMetaBranch(v, col + 4, out, quoted, depth + 1, null);
  }
  if (Array.isArray(v)) {
    if (v.length === 0) {
      out.push(" []\n");
      return true;
    }
    out.push("\n");
    const dash = `${" ".repeat(col + 4)}- `;
    for (const item of v) {
      if (!(item instanceof SopsBranch)) return false;
      if (!emitMetaBranch(item, col + 6, out, quoted, depth + 1, dash)) return false;
    }
    return true;
  }
  return false;
}

/** A mapping at column `col`; `first`: what its first line starts with instead of the indent (`- `). */
function emitMetaBranch(
  b: SopsBranch,
  col: number,
  out: string[],
  quoted: (s: string) => boolean,
  depth: number,
  first: string | null,
): boolean {
  if (b.items.length === 0) return false;
  const indent = " ".repeat(col);
  let lead = first;
  for (const item of b.items) {
    if (typeof item.key !== "string" || !plainKey(item.key)) return false;
    out.push(`${lead ?? indent}${item.key}:`);
    lead = null;
    if (!emitMetaValue(item.value, col, out, quoted, depth)) return false;
  }
  return true;
}

/**
 * The metadata block (`sops:` and the mapping under it) exactly as yaml.ts's writer prints it
 * after a document's keys, or null when it holds anything outside the narrow form (comments,
 * numbers, booleans, blank or indented lines in a block, ...). `quoted` as for emitCanonical.
 */
export function emitCanonicalMetadata(metadata: SopsBranch, quoted: (s: string) => boolean): string | null {
  const out: string[] = ["sops:"];
  const q = (s: string) => quoted(s) || resolvesToNonString(s);
  if (!emitMetaValue(metadata, 0, out, q, 0)) return null;
  return out.join("");
}

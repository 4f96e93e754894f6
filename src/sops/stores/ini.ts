/**
 * The sops INI store (sops stores/ini/store.go, which reads and writes with gopkg.in/ini.v1
 * v1.67, options `AllowNonUniqueSections`, pretty format): every section is a top-level key whose
 * value is a mapping of strings; comments are kept as sops keeps them; the metadata is the last
 * section, `[sops]`, flattened below the top (`age__list_0__map_enc`) with newlines written as a
 * literal `\n` (sops 3.13.0 and 3.13.1 wrote them as real newlines inside `"""`; both are read).
 *
 * Where ini.v1 silently loses data, this store refuses the input instead: a key repeated in a
 * section (ini.v1 keeps the last value) and a repeated section (sops would write two items with
 * the same path, which no reader can tell apart).
 */
import { NixsealError } from "../../common/index.js";
import { SopsBranch, SopsComment, SopsTime } from "../tree.js";
import { formatGoFloat } from "../value-cipher.js";
import { flattenBranch, unflatten } from "./flatten.js";
import { checkSize, decodeUtf8, formatError, METADATA_KEY, type SopsStore } from "./store.js";

/** ini.v1 DefaultSection: the keys before the first section header. */
export const INI_DEFAULT_SECTION = "DEFAULT";

/** ini.v1 newFile: the key/value delimiters it reads (it writes `=`). */
const KEY_VALUE_DELIMITERS = "=:";

/** sops ini store stripCommentChar: strips the leading `;`/`#` run and the spaces after it. */
function stripCommentChar(comment: string): string {
  if (comment.startsWith(";")) return comment.replace(/^[; ]+/, "");
  if (comment.startsWith("#")) return comment.replace(/^[# ]+/, "");
  return comment;
}

function indexOfAny(s: string, chars: string, from = 0): number {
  for (let i = from; i < s.length; i++) if (chars.includes(s[i]!)) return i;
  return -1;
}

/** ini.v1 hasSurroundedQuote: `"x"` or `'x'` with no other such quote inside. */
function hasSurroundedQuote(s: string, q: string): boolean {
  return s.length >= 2 && s[0] === q && s[s.length - 1] === q && s.indexOf(q, 1) === s.length - 1;
}

interface Section {
  name: string;
  comment: string;
  keys: { name: string; value: string; comment: string }[];
}

/** The line reader of ini.v1's parser: lines keep their `\n`, as `bufio.ReadBytes` returns them. */
class Lines {
  private pos = 0;
  line = 0;
  constructor(private readonly text: string) {}
  get eof(): boolean {
    return this.pos >= this.text.length;
  }
  next(): string {
    const nl = this.text.indexOf("\n", this.pos);
    const end = nl < 0 ? this.text.length : nl + 1;
    const s = this.text.slice(this.pos, end);
    this.pos = end;
    this.line++;
    return s;
  }
}

function lineError(n: number, what: string, hint?: string): NixsealError {
  // The line itself is never quoted: it may hold a secret.
  return formatError("ini", `line ${n}: ${what}`, hint);
}

/** ini.v1 readKeyName: a key, optionally quoted with `"`, `"""` or a backtick, then `=` or `:`. */
function readKeyName(line: string, n: number): { name: string; rest: string } {
  let quote = "";
  if (line[0] === '"') quote = line.length > 6 && line.startsWith('"""') ? '"""' : '"';
  else if (line[0] === "`") quote = "`";
  if (quote !== "") {
    const close = line.indexOf(quote, quote.length);
    if (close < 0) throw lineError(n, "a quoted key has no closing quote");
    const d = indexOfAny(line, KEY_VALUE_DELIMITERS, close + quote.length);
    if (d < 0)
      throw lineError(n, "no '=' after the key", "every line must be key = value, [section] or a ; comment");
    return { name: line.slice(quote.length, close).trim(), rest: line.slice(d + 1) };
  }
  const d = indexOfAny(line, KEY_VALUE_DELIMITERS);
  if (d < 0)
    throw lineError(n, "no '=' in the line", "every line must be key = value, [section] or a ; comment");
  if (d === 0) throw lineError(n, "empty key name");
  return { name: line.slice(0, d).trim(), rest: line.slice(d + 1) };
}

/** ini.v1 readValue (no Python multi-line values, continuation lines and inline comments on). */
function readValue(raw: string, lines: Lines, comment: { text: string }): string {
  const startLine = lines.line;
  let line = raw.trimStart();
  if (line === "") return "";
  let quote = "";
  if (line.length > 3 && line.startsWith('"""')) quote = '"""';
  else if (line[0] === "`") quote = "`";
  if (quote !== "") {
    const close = line.lastIndexOf(quote);
    if (close >= quote.length) return line.slice(quote.length, close);
    // A value over several lines, up to the line holding the closing quote.
    let val = line.slice(quote.length);
    for (;;) {
      if (lines.eof) throw lineError(startLine, "a quoted value has no closing quote");
      const next = lines.next();
      const pos = next.lastIndexOf(quote);
      if (pos >= 0) {
        val += next.slice(0, pos);
        const c = indexOfAny(next, "#;", pos);
        if (c >= 0) comment.text += next.slice(c).trim();
        return val;
      }
      val += next;
    }
  }
  line = line.trim();
  if (line.endsWith("\\")) {
    // Continuation lines: `a\` + `b` is `ab`, up to a line that does not end with `\`.
    let val = line.slice(0, -1);
    for (;;) {
      const next = lines.eof ? "" : lines.next().trim();
      if (next === "") break;
      val += next;
      if (!val.endsWith("\\")) break;
      val = val.slice(0, -1);
    }
    return val;
  }
  const c = indexOfAny(line, "#;");
  if (c >= 0) {
    comment.text += line.slice(c);
    line = line.slice(0, c).trim();
  }
  if (hasSurroundedQuote(line, "'") || hasSurroundedQuote(line, '"')) line = line.slice(1, -1);
  return line;
}

function parseSections(text: string): Section[] {
  const lines = new Lines(text);
  const def: Section = { name: INI_DEFAULT_SECTION, comment: "", keys: [] };
  const sections: Section[] = [def];
  const seenSections = new Set<string>([INI_DEFAULT_SECTION]);
  let current = def;
  let seenKeys = new Set<string>();
  const comment = { text: "" };
  while (!lines.eof) {
    const raw = lines.next();
    const n = lines.line;
    const line = raw.trimStart();
    if (line === "") continue;
    if (line[0] === "#" || line[0] === ";") {
      comment.text += line;
      continue;
    }
    if (line[0] === "[") {
      const close = line.lastIndexOf("]");
      if (close < 0) throw lineError(n, "unclosed section header");
      const name = line.slice(1, close);
      if (name === "") throw lineError(n, "empty section name");
      const after = indexOfAny(line, "#;", close + 1);
      if (after >= 0) comment.text += line.slice(after);
      if (name === INI_DEFAULT_SECTION && def.keys.length === 0 && current === def) {
        // An explicit [DEFAULT] before any key: the same section as the implicit one.
        seenSections.add(name);
      } else if (seenSections.has(name)) {
        throw lineError(
          n,
          `section [${name.slice(0, 60)}] appears twice`,
          "merge the two sections: sops would keep both and no reader could tell them apart",
        );
      } else {
        seenSections.add(name);
        current = { name, comment: "", keys: [] };
        sections.push(current);
        seenKeys = new Set();
      }
      current.comment = comment.text.trim();
      comment.text = "";
      continue;
    }
    const { name, rest } = readKeyName(line, n);
    if (name === "-") {
      throw lineError(n, "auto-increment keys ('-') are not supported", "give the key a name");
    }
    const value = readValue(rest, lines, comment);
    if (seenKeys.has(name) || (current === def && def.keys.some((k) => k.name === name))) {
      throw lineError(
        n,
        `duplicate key "${name.slice(0, 60)}" in section [${current.name.slice(0, 60)}]`,
        "remove one of them: INI readers would silently keep only the last",
      );
    }
    seenKeys.add(name);
    current.keys.push({ name, value, comment: comment.text.trim() });
    comment.text = "";
  }
  return sections;
}

/**
 * sops treeItemFromSection: the section comment first, then each key followed by its comment
 * (ini.v1 attaches the comment lines above a key, and its inline comment, to the key).
 */
function parseIni(input: Uint8Array): SopsBranch {
  checkSize("ini", input);
  const text = decodeUtf8("ini", input);
  const root = new SopsBranch();
  for (const s of parseSections(text)) {
    const b = new SopsBranch();
    if (s.comment !== "") b.items.push({ key: new SopsComment(stripCommentChar(s.comment)), value: null });
    for (const k of s.keys) {
      b.items.push({ key: k.name, value: k.value });
      if (k.comment !== "") b.items.push({ key: new SopsComment(stripCommentChar(k.comment)), value: null });
    }
    // sops always has the DEFAULT section first; an empty one holds nothing and writes nothing.
    if (s.name === INI_DEFAULT_SECTION && s.keys.length === 0 && s.comment === "") continue;
    root.items.push({ key: s.name, value: b });
  }
  return root;
}

/** sops stores.ValToString. */
function valueText(section: string, key: string, v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatGoFloat(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (v === null) return "";
  if (v instanceof SopsTime) return v.text;
  if (v instanceof Uint8Array) return Buffer.from(v).toString("utf8");
  throw new NixsealError(
    "SOPS_FORMAT",
    `cannot write a nested value in an INI file (key "${key.slice(0, 60)}" in section [${section.slice(0, 60)}])`,
    { hint: "INI sections hold only key = value lines" },
  );
}

/** ini.v1 writeToBuffer's comment lines: `; text`, or the text's own `;`/`#` kept. */
function commentLines(comment: string, trim: boolean): string {
  let out = "";
  for (const l of comment.split("\n")) {
    if (l === "") out += ";\n";
    else if (l[0] !== "#" && l[0] !== ";") out += `; ${trim ? l.trim() : l}\n`;
    else out += `${l[0]} ${l.slice(1).trim()}\n`;
  }
  return out;
}

function checkName(what: string, name: string, forbidden: RegExp): void {
  if (name === "" || forbidden.test(name)) {
    throw new NixsealError("SOPS_FORMAT", `cannot write the INI ${what} "${name.slice(0, 60)}"`, {
      hint: `an INI ${what} name must be non-empty and on one line${what === "section" ? ", without ']'" : ""}`,
    });
  }
}

/**
 * sops encodeTree + ini.v1 writeToBuffer (PrettyFormat, PrettySection): keys aligned on ` = `,
 * a blank line between sections, the DEFAULT section first without its header.
 */
function emitIni(root: SopsBranch, extra?: { name: string; pairs: [string, string][] }): Uint8Array {
  const sections: Section[] = [];
  for (const it of root.items) {
    if (it.key instanceof SopsComment) continue; // sops: top-level comments are not written
    if (!(it.value instanceof SopsBranch)) {
      throw new NixsealError(
        "SOPS_FORMAT",
        `cannot write the top-level value "${it.key.slice(0, 60)}" in an INI file`,
        { hint: "an INI document is made of [sections] of key = value lines" },
      );
    }
    const s: Section = { name: it.key, comment: "", keys: [] };
    const items = it.value.items;
    let first = 0;
    if (items[0]?.key instanceof SopsComment) {
      s.comment = items[0].key.value;
      first = 1;
    }
    for (let i = first; i < items.length; i++) {
      const item = items[i]!;
      if (item.key instanceof SopsComment) {
        // sops: a comment belongs to the key before it (ini.v1 writes it above that key).
        const last = s.keys[s.keys.length - 1];
        if (last !== undefined) last.comment = item.key.value;
      } else {
        const value = valueText(s.name, item.key, item.value);
        const same = s.keys.find((k) => k.name === item.key);
        if (same !== undefined) same.value = value;
        else s.keys.push({ name: item.key, value, comment: "" });
      }
    }
    sections.push(s);
  }
  if (extra !== undefined) {
    sections.push({
      name: extra.name,
      comment: "",
      keys: extra.pairs.map(([name, value]) => ({ name, value, comment: "" })),
    });
  }

  let out = "";
  sections.forEach((s, i) => {
    checkName("section", s.name, /[\n\r\]]/);
    if (s.comment !== "") out += commentLines(s.comment, false);
    if (i > 0 || s.name.toUpperCase() !== INI_DEFAULT_SECTION) out += `[${s.name}]\n`;
    else if (s.keys.length === 0) return;
    const quoted = s.keys.map((k) => {
      checkName("key", k.name, /[\n\r]/);
      if (k.name.includes('"') || indexOfAny(k.name, KEY_VALUE_DELIMITERS) >= 0) return `\`${k.name}\``;
      if (k.name.includes("`")) return `"""${k.name}"""`;
      return k.name;
    });
    const width = Math.max(0, ...quoted.map((q) => Buffer.byteLength(q)));
    s.keys.forEach((k, j) => {
      if (k.comment !== "") out += commentLines(k.comment, true);
      let v = k.value;
      if (v.includes("\n") || v.includes("`")) v = `"""${v}"""`;
      else if (v.includes("#") || v.includes(";")) v = `\`${v}\``;
      else if (v.trim().length !== v.length) v = `"${v}"`;
      const q = quoted[j]!;
      out += `${q}${" ".repeat(width - Buffer.byteLength(q))} = ${v}\n`;
    });
    if (i < sections.length - 1) out += "\n";
  });
  return Buffer.from(out, "utf8");
}

export class IniStore implements SopsStore {
  readonly name = "ini" as const;

  parsePlain(input: Uint8Array): SopsBranch[] {
    return [parseIni(input)];
  }

  parseEncrypted(input: Uint8Array): { branches: SopsBranch[]; metadata: SopsBranch | null } {
    const root = parseIni(input);
    const meta = root.get(METADATA_KEY);
    if (meta === undefined) return { branches: [root], metadata: null };
    root.delete(METADATA_KEY);
    const flat: [string, string][] = [];
    for (const it of (meta as SopsBranch).items) {
      // sops MetadataOpts.EscapeNewlines: `\n` in the text stands for a newline.
      if (typeof it.key === "string") flat.push([it.key, (it.value as string).replaceAll("\\n", "\n")]);
    }
    return { branches: [root], metadata: unflatten(flat) };
  }

  emitPlain(branches: SopsBranch[]): Uint8Array {
    return emitIni(branches[0] ?? new SopsBranch());
  }

  emitEncrypted(branches: SopsBranch[], metadata: SopsBranch): Uint8Array {
    const pairs = flattenBranch(metadata).map(([k, v]): [string, string] => [k, v.replaceAll("\n", "\\n")]);
    return emitIni(branches[0] ?? new SopsBranch(), { name: METADATA_KEY, pairs });
  }
}

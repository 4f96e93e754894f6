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
import { Document } from "yaml";
import { SopsBranch, SopsComment, type SopsValue } from "../tree.js";

/** Deeper files take the full path (which has the real limit, MAX_DEPTH). */
const MAX_FAST_DEPTH = 64;

/** A key that YAML 1.2 (core schema) reads as this string and the yaml library writes plain. */
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const CORE_KEYWORD = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE|[Nn]ull|NULL)$/;
/** sops's value form, a plain scalar in block context. */
const ENC_VALUE =
  /^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:[a-z]+\]$/;
/** Key lines: indent, key, and either nothing (a mapping follows) or `: ` and an ENC value. */
const KEY_LINE = /^( *)([A-Za-z_][A-Za-z0-9_-]*):(?: (.*))?$/;
const COMMENT_LINE = /^( *)#(.*)$/;

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
  const root: Open = { branch: new SopsBranch(), indent: 0, keys: new Set() };
  const stack: Open[] = [root];
  let pendingComments: { indent: number; comments: SopsComment[] } | null = null;
  /** A key line without a value: its mapping must start on the next key line, one level in. */
  let opening: { parent: Open; key: string } | null = null;
  let nodes = 1;
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf("\n", pos);
    if (end < 0) return null; // sops ends every line
    const line = text.slice(pos, end);
    if (line.startsWith("sops:")) {
      if (line !== "sops:" || pendingComments !== null || opening !== null) return null;
      break;
    }
    end += 1;
    const c = COMMENT_LINE.exec(line);
    if (c !== null) {
      const indent = c[1]!.length;
      const body = c[2]!;
      // A comment is read where the key after it stands; comments with blank or trailing
      // space, or at another indent than that key, take the full path.
      if (body === "" || /\s$/.test(body) || body.includes("\r")) return null;
      if (pendingComments === null) pendingComments = { indent, comments: [] };
      else if (pendingComments.indent !== indent) return null;
      pendingComments.comments.push(new SopsComment(body));
      nodes++;
      pos = end;
      continue;
    }
    const m = KEY_LINE.exec(line);
    if (m === null) return null;
    const indent = m[1]!.length;
    const key = m[2]!;
    const value = m[3];
    if (CORE_KEYWORD.test(key)) return null;
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
    if (value === undefined) {
      opening = { parent: top, key };
    } else {
      if (!ENC_VALUE.test(value)) return null;
      top.branch.items.push({ key, value });
    }
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

interface SchemaTag {
  default?: boolean | string;
  tag: string;
  test?: RegExp;
}

let coreTags: SchemaTag[] | null = null;

/**
 * Whether the yaml library, with the YAML 1.2 core schema of the documents yaml.ts writes,
 * reads `s` back as another type (`42`, `true`, `1e3`, `null`, ...) and so quotes it: the test
 * its plain-scalar writer makes, with its own tags.
 */
function resolvesToNonString(s: string): boolean {
  if (coreTags === null) {
    coreTags = (new Document(null, { version: "1.2" }).schema as unknown as { tags: SchemaTag[] }).tags;
  }
  for (const t of coreTags) {
    if (t.default && t.tag !== "tag:yaml.org,2002:str" && t.test?.test(s)) return true;
  }
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
      if (ENC_VALUE.test(v) || (PLAIN_VALUE.test(v) && !quoted(v))) out.push(`${indent}${key}: ${v}\n`);
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

/**
 * The sops document model: an ordered tree, as sops builds it (sops.go `Tree`, `TreeBranch`).
 * No plain objects hold user keys, so keys like `__proto__` or `constructor` are just strings.
 * sops: "A branch is an ordered list of TreeItem{Key, Value}; comments are items whose key is a
 * Comment (in maps) or list elements of type Comment".
 */
import { NixsealError } from "../common/index.js";

/** A comment line, without its leading `#` (sops keeps the space after it: `# x` → ` x`). */
export class SopsComment {
  constructor(
    readonly value: string,
    /** The comment stood at the end of a value's line (YAML only). */
    readonly inline = false,
  ) {}
}

/** A YAML timestamp decrypted from type `time` (RFC 3339 text, kept as written). */
export class SopsTime {
  constructor(readonly text: string) {}
}

/**
 * A leaf: str (string), int (bigint, 64-bit), float (number), bool, time, legacy bytes, null.
 * Null leaves are neither encrypted nor MACed (sops: "nil ... doesn't make sense to encrypt").
 */
export type SopsLeaf = string | bigint | number | boolean | SopsTime | Uint8Array | null;

export type SopsValue = SopsLeaf | SopsBranch | SopsList;

/** A list: values and comment lines (a comment is a list element in sops). */
export type SopsList = (SopsValue | SopsComment)[];

export interface SopsItem {
  key: string | SopsComment;
  value: SopsValue;
}

/** An ordered mapping: keys in document order, comment lines in position. */
export class SopsBranch {
  readonly items: SopsItem[];

  constructor(items: SopsItem[] = []) {
    this.items = items;
  }

  /** The value of the first item with this key, or undefined. */
  get(key: string): SopsValue | undefined {
    for (const item of this.items) if (item.key === key) return item.value;
    return undefined;
  }

  has(key: string): boolean {
    return this.items.some((i) => i.key === key);
  }

  /** Replaces the value of `key` in place, or appends it. */
  set(key: string, value: SopsValue): void {
    for (const item of this.items) {
      if (item.key === key) {
        item.value = value;
        return;
      }
    }
    this.items.push({ key, value });
  }

  delete(key: string): boolean {
    const i = this.items.findIndex((it) => it.key === key);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  /** Keys only (no comments), in order. */
  keys(): string[] {
    const out: string[] = [];
    for (const item of this.items) if (typeof item.key === "string") out.push(item.key);
    return out;
  }
}

export function isBranch(v: unknown): v is SopsBranch {
  return v instanceof SopsBranch;
}

export function isList(v: unknown): v is SopsList {
  return Array.isArray(v);
}

/** A deep copy (leaves are immutable, except bytes, which are copied). */
export function cloneValue<T extends SopsValue | SopsComment>(v: T): T {
  if (v instanceof SopsBranch) {
    return new SopsBranch(v.items.map((i) => ({ key: i.key, value: cloneValue(i.value) }))) as T;
  }
  if (Array.isArray(v)) return v.map((x) => cloneValue(x)) as T;
  if (v instanceof Uint8Array) return Uint8Array.from(v) as T;
  return v;
}

/**
 * A callback on every leaf and comment, with sops's walk semantics (sops.go walkBranch/walkSlice):
 * `path` holds map keys only (list indices are not part of it); `comments` is the stack of
 * comment lines seen since the last value at each level, used by the comment-regex rules;
 * `pathText` is `path` with a `:` after each key (`a:b:`, "" for the top level), the additional
 * data sops encrypts a value with. The callback returns the replacement value. `path` and
 * `comments` are the walk's own arrays, changed as it goes on: read them during the call only.
 */
export type LeafVisitor = (
  value: SopsLeaf | SopsComment,
  path: readonly string[],
  comments: readonly (readonly string[])[],
  pathText: string,
) => SopsLeaf | SopsComment;

/** A frame of the comment stack with no comment in it (frames are replaced, never changed). */
const NO_COMMENTS: readonly string[] = Object.freeze([]);

/**
 * One walk's state: the path and the comment stack, pushed and popped as the walk goes down
 * and up (one array each for the whole walk, not a copy per value).
 */
interface Walk {
  path: string[];
  stack: (readonly string[])[];
  visit: LeafVisitor;
}

export function walkBranches(branches: readonly SopsBranch[], visit: LeafVisitor): void {
  for (const b of branches) walkBranch(b, "", { path: [], stack: [], visit });
}

function walkValue(v: SopsValue | SopsComment, pathText: string, w: Walk): SopsValue | SopsComment {
  if (v instanceof SopsBranch) {
    walkBranch(v, pathText, w);
    return v;
  }
  if (Array.isArray(v)) {
    walkList(v, pathText, w);
    return v;
  }
  if (v === null) return null; // sops: nil is neither encrypted nor MACed
  return w.visit(v, w.path, w.stack, pathText);
}

/**
 * sops.go walkSlice: a comment in a list is a list element. When it is encrypted it becomes a
 * plain `ENC[...,type:comment]` string element (that is what sops writes), and decrypting such
 * an element gives a comment back.
 */
function walkList(list: SopsList, pathText: string, w: Walk): void {
  const stack = w.stack;
  const top = stack.push(NO_COMMENTS) - 1;
  for (let i = 0; i < list.length; i++) {
    const v = list[i]!;
    const isComment = v instanceof SopsComment;
    if (isComment) stack[top] = [...stack[top]!, v.value];
    list[i] = walkValue(v, pathText, w);
    if (!isComment && stack[top]!.length !== 0) stack[top] = NO_COMMENTS;
  }
  stack.pop();
}

/** sops.go walkBranch: comment keys are visited with the branch's own path. */
function walkBranch(branch: SopsBranch, pathText: string, w: Walk): void {
  const { path, stack } = w;
  const top = stack.push(NO_COMMENTS) - 1;
  for (const item of branch.items) {
    if (item.key instanceof SopsComment) {
      const c = item.key;
      stack[top] = [...stack[top]!, c.value];
      const out = w.visit(c, path, stack, pathText);
      item.key = out instanceof SopsComment ? out : new SopsComment(String(out), c.inline);
      continue;
    }
    path.push(item.key);
    const out = walkValue(item.value, `${pathText}${item.key}:`, w);
    if (out instanceof SopsComment) {
      throw new NixsealError("SOPS_FORMAT", `the value of "${path.join(".")}" is an encrypted comment`, {
        hint: "a mapping value cannot be a comment; the file was edited by hand or damaged",
      });
    }
    path.pop();
    item.value = out;
    if (stack[top]!.length !== 0) stack[top] = NO_COMMENTS;
  }
  stack.pop();
}

/**
 * Whether `test` holds for a string value anywhere in the documents (mapping values and list
 * items; not keys or comments). A plain recursion: no path is built.
 */
export function someString(branches: readonly SopsBranch[], test: (s: string) => boolean): boolean {
  const inValue = (v: SopsValue | SopsComment): boolean => {
    if (typeof v === "string") return test(v);
    if (v instanceof SopsBranch) return v.items.some((it) => inValue(it.value));
    return Array.isArray(v) && v.some(inValue);
  };
  return branches.some((b) => inValue(b));
}

/** Nesting limit for every store's parser: deep enough for any real config, bounded for hostile input. */
export const MAX_DEPTH = 200;
/** Size limit for a sops document (every store). */
export const MAX_DOCUMENT_SIZE = 64 * 1024 * 1024;

/** The same leaf or comment: same type and value (a float by Object.is, bytes by content). */
function sameLeaf(a: SopsLeaf | SopsComment, b: SopsLeaf | SopsComment): boolean {
  if (a instanceof SopsComment)
    return b instanceof SopsComment && a.value === b.value && a.inline === b.inline;
  if (a instanceof SopsTime) return b instanceof SopsTime && a.text === b.text;
  if (a instanceof Uint8Array) {
    return b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
  }
  return typeof a === typeof b && Object.is(a, b);
}

/** A leaf (not a mapping, a list or a comment). */
function isLeaf(v: SopsValue | SopsComment): v is SopsLeaf {
  return !(v instanceof SopsBranch || Array.isArray(v) || v instanceof SopsComment);
}

/**
 * `b` with the leaves at the mapping keys of `changes` replaced by their values, `b` itself left
 * as it is: only the mappings on the way are copied. Null when some keys do not lead through
 * mappings alone to a leaf.
 */
export function withLeaves(
  b: SopsBranch,
  changes: readonly { keys: readonly string[]; value: SopsLeaf }[],
): SopsBranch | null {
  const copies = new Set<SopsBranch>();
  const copy = (x: SopsBranch): SopsBranch => {
    const c = new SopsBranch(x.items.map((it) => ({ key: it.key, value: it.value })));
    copies.add(c);
    return c;
  };
  const root = copy(b);
  for (const { keys, value } of changes) {
    let at = root;
    for (let depth = 0; depth < keys.length; depth++) {
      const item = at.items.find((it) => it.key === keys[depth]);
      if (item === undefined) return null;
      const v = item.value;
      if (depth === keys.length - 1) {
        if (!isLeaf(v)) return null;
        item.value = value;
      } else {
        if (!(v instanceof SopsBranch)) return null;
        if (!copies.has(v)) item.value = copy(v);
        at = item.value as SopsBranch;
      }
    }
  }
  return root;
}

/**
 * The mapping keys of every leaf whose value differs between `before` and `after`, when that is
 * all that differs: the same documents, keys, comments and lists in the same order, and each
 * changed leaf reached through mappings only (no list on the way). Null when anything else
 * differs, or more than `max` leaves do.
 */
export function changedLeaves(
  before: readonly SopsBranch[],
  after: readonly SopsBranch[],
  max: number,
): string[][] | null {
  if (before.length !== after.length) return null;
  const out: string[][] = [];
  const path: string[] = [];
  const same = (a: SopsValue | SopsComment, b: SopsValue | SopsComment, inList: boolean): boolean => {
    if (a instanceof SopsBranch) {
      if (!(b instanceof SopsBranch) || a.items.length !== b.items.length) return false;
      for (let i = 0; i < a.items.length; i++) {
        const x = a.items[i]!;
        const y = b.items[i]!;
        if (typeof x.key === "string") {
          if (x.key !== y.key) return false;
          path.push(x.key);
          const ok = same(x.value, y.value, inList);
          path.pop();
          if (!ok) return false;
        } else if (!(y.key instanceof SopsComment) || !sameLeaf(x.key, y.key)) return false;
      }
      return true;
    }
    if (Array.isArray(a)) {
      if (!Array.isArray(b) || a.length !== b.length) return false;
      for (let i = 0; i < a.length; i++) if (!same(a[i]!, b[i]!, true)) return false;
      return true;
    }
    if (b instanceof SopsBranch || Array.isArray(b)) return false;
    if (sameLeaf(a, b)) return true;
    // A changed value: a leaf for a leaf, at mapping keys alone.
    if (inList || !isLeaf(a) || !isLeaf(b) || out.length >= max) return false;
    out.push([...path]);
    return true;
  };
  for (let i = 0; i < before.length; i++) if (!same(before[i]!, after[i]!, false)) return null;
  return out;
}

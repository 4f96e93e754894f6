/**
 * sops stores/flatten.go: the metadata of dotenv and INI files, flattened to one level with
 * `__map_` and `__list_N` separators (`age__list_0__map_enc`), and back.
 */
import { NixsealError } from "../../common/index.js";
import { SopsBranch, type SopsList, type SopsValue } from "../tree.js";
import { formatGoFloat } from "../value-cipher.js";

const MAP = "__map_";
const LIST = "__list_";

function leafText(v: SopsValue): string {
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatGoFloat(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (v === null) return "";
  return String(v);
}

/** Flattened (key, value) pairs, in tree order. */
export function flattenBranch(b: SopsBranch): [string, string][] {
  const out: [string, string][] = [];
  const walk = (v: SopsValue, prefix: string) => {
    if (v instanceof SopsBranch) {
      for (const it of v.items) if (typeof it.key === "string") walk(it.value, prefix + MAP + it.key);
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => {
        walk(x as SopsValue, `${prefix}${LIST}${i}`);
      });
    } else out.push([prefix, leafText(v)]);
  };
  for (const it of b.items) if (typeof it.key === "string") walk(it.value, it.key);
  return out;
}

type Token = { map: string } | { list: number };

function tokenize(path: string): Token[] {
  const tokens: Token[] = [];
  let state: "normal" | "map" | "list" = "normal";
  let start = 0;
  let i = 0;
  const finish = () => {
    const raw = path.slice(start, i);
    if (state === "normal") tokens.push({ map: raw });
    else if (state === "map") tokens.push({ map: raw.slice(MAP.length) });
    else {
      const n = raw.slice(LIST.length);
      if (!/^[0-9]{1,6}$/.test(n)) throw badFlat(path);
      tokens.push({ list: Number(n) });
    }
    start = i;
  };
  while (i < path.length) {
    if (path.startsWith(MAP, i)) {
      finish();
      state = "map";
      i += MAP.length;
    } else if (path.startsWith(LIST, i)) {
      finish();
      state = "list";
      i += LIST.length;
    } else i++;
  }
  finish();
  return tokens;
}

function badFlat(key: string): NixsealError {
  return new NixsealError(
    "SOPS_METADATA",
    `the flattened sops metadata key "${key.slice(0, 80)}" is malformed`,
    {
      hint: "the metadata was edited by hand or damaged; restore the file from version control",
    },
  );
}

interface FlatNode {
  value?: string;
  keys?: Map<string, FlatNode>;
  indices?: Map<number, FlatNode>;
}

function convert(n: FlatNode, key: string): SopsValue {
  const kinds =
    Number(n.value !== undefined) + Number(n.keys !== undefined) + Number(n.indices !== undefined);
  if (kinds > 1) throw badFlat(key);
  if (n.value !== undefined) return n.value;
  if (n.keys !== undefined) {
    const names = [...n.keys.keys()].sort();
    return new SopsBranch(names.map((k) => ({ key: k, value: convert(n.keys!.get(k)!, key) })));
  }
  if (n.indices !== undefined) {
    const list: SopsList = [];
    for (let i = 0; i < n.indices.size; i++) {
      const x = n.indices.get(i);
      if (x === undefined) throw badFlat(key);
      list.push(convert(x, key));
    }
    return list;
  }
  return new SopsBranch();
}

/** The metadata tree back from flattened pairs (maps sorted by key, as sops does). */
export function unflatten(pairs: [string, string][]): SopsBranch {
  const root: FlatNode = {};
  for (const [key, value] of pairs) {
    let node = root;
    for (const t of tokenize(key)) {
      if ("map" in t) {
        node.keys ??= new Map();
        let next = node.keys.get(t.map);
        if (next === undefined) {
          next = {};
          node.keys.set(t.map, next);
        }
        node = next;
      } else {
        node.indices ??= new Map();
        let next = node.indices.get(t.list);
        if (next === undefined) {
          next = {};
          node.indices.set(t.list, next);
        }
        node = next;
      }
    }
    if (node.value !== undefined) throw badFlat(key);
    node.value = value;
  }
  const v = convert(root, "");
  if (!(v instanceof SopsBranch)) throw badFlat("");
  return v;
}

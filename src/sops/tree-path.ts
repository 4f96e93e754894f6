/**
 * sops' tree paths, as `sops decrypt --extract` and `sops set` take them: `["key"][0]["sub"]`
 * (keys in double quotes, list indices as numbers), and finding or setting the value a path
 * names in a decrypted document.
 */
import { NixsealError } from "../common/index.js";
import { isBranch, SopsBranch, SopsComment, type SopsValue } from "./tree.js";

export type TreePath = (string | number)[];

/** Parses sops' tree path syntax, strictly: `["key"][0]["other"]`. */
export function parseTreePath(text: string): TreePath {
  const out: TreePath = [];
  const re = /\[(?:"([^"]*)"|(0|[1-9][0-9]{0,8}))\]/y;
  let i = 0;
  while (i < text.length) {
    re.lastIndex = i;
    const m = re.exec(text);
    if (m === null) {
      throw new NixsealError(
        "USAGE",
        `invalid path ${JSON.stringify(text.slice(0, 80))} at character ${i + 1}`,
        {
          hint: `write the path as sops does: '["key"]["sub"][0]' (keys in double quotes, list indices as numbers)`,
        },
      );
    }
    out.push(m[1] !== undefined ? m[1] : Number(m[2]));
    i = re.lastIndex;
  }
  if (out.length === 0) {
    throw new NixsealError("USAGE", "empty path", {
      hint: `write the path as sops does: '["key"]["sub"][0]'`,
    });
  }
  return out;
}

export function formatTreePath(p: TreePath, upTo = p.length): string {
  return p
    .slice(0, upTo)
    .map((k) => (typeof k === "number" ? `[${k}]` : `["${k}"]`))
    .join("");
}

function notFound(p: TreePath, depth: number, why: string): NixsealError {
  return new NixsealError("USAGE", `${formatTreePath(p, depth + 1)}: ${why}`, {
    hint: "check the path against the decrypted file (nixseal decrypt FILE)",
  });
}

/** The value at a path (sops --extract). */
export function valueAt(root: SopsValue, p: TreePath): SopsValue {
  let v: SopsValue = root;
  p.forEach((k, depth) => {
    if (typeof k === "string") {
      if (!isBranch(v)) throw notFound(p, depth, "not a mapping");
      const next = v.get(k);
      if (next === undefined) throw notFound(p, depth, "no such key");
      v = next;
    } else {
      if (!Array.isArray(v)) throw notFound(p, depth, "not a list");
      const elems = v.filter((x) => !(x instanceof SopsComment)) as SopsValue[];
      if (k >= elems.length) throw notFound(p, depth, `index out of range (the list has ${elems.length})`);
      v = elems[k]!;
    }
  });
  return v;
}

/**
 * Sets the value at a path (sops set): missing mapping keys are created, a list index equal to
 * the list's length appends. The first branch of the document is the root.
 */
export function setValueAt(root: SopsBranch, p: TreePath, value: SopsValue): void {
  let v: SopsValue = root;
  for (let depth = 0; depth < p.length; depth++) {
    const k = p[depth]!;
    const last = depth === p.length - 1;
    const fresh = (): SopsValue => (last ? value : typeof p[depth + 1] === "number" ? [] : new SopsBranch());
    if (typeof k === "string") {
      if (!isBranch(v)) throw notFound(p, depth, "not a mapping");
      let next = v.get(k);
      if (next === undefined || last) {
        next = fresh();
        v.set(k, next);
      }
      v = next;
    } else {
      if (!Array.isArray(v)) throw notFound(p, depth, "not a list");
      const positions: number[] = [];
      v.forEach((x, i) => {
        if (!(x instanceof SopsComment)) positions.push(i);
      });
      if (k > positions.length)
        throw notFound(p, depth, `index out of range (the list has ${positions.length})`);
      if (k === positions.length) {
        const next = fresh();
        v.push(next);
        v = next;
      } else if (last) {
        v[positions[k]!] = value;
        v = value;
      } else {
        v = v[positions[k]!] as SopsValue;
      }
    }
  }
}

/**
 * The sops dotenv store (sops stores/dotenv/store.go): lines split at the first `=`, no trimming
 * or quoting; `#` lines are comments; `\n` in a value stands for a newline. The metadata is
 * flattened into `sops_...` keys.
 */
import { NixsealError } from "../../common/index.js";
import { SopsBranch, SopsComment, SopsTime } from "../tree.js";
import { formatGoFloat } from "../value-cipher.js";
import { flattenBranch, unflatten } from "./flatten.js";
import { checkSize, decodeUtf8, formatError, type SopsStore } from "./store.js";

export const DOTENV_METADATA_PREFIX = "sops_";

function parseDotenv(input: Uint8Array): SopsBranch {
  checkSize("dotenv", input);
  const text = decodeUtf8("dotenv", input);
  const b = new SopsBranch();
  const seen = new Set<string>();
  const lines = text.split("\n");
  lines.forEach((line, n) => {
    if (line === "") return;
    if (line.startsWith("#")) {
      b.items.push({ key: new SopsComment(line.slice(1)), value: null });
      return;
    }
    const eq = line.indexOf("=");
    if (eq < 0)
      throw formatError("dotenv", `line ${n + 1} has no '='`, "every line must be KEY=value or a # comment");
    const key = line.slice(0, eq);
    if (seen.has(key)) throw formatError("dotenv", `duplicate key "${key.slice(0, 60)}" on line ${n + 1}`);
    seen.add(key);
    b.items.push({ key, value: line.slice(eq + 1).replaceAll("\\n", "\n") });
  });
  return b;
}

function valueText(key: string, v: unknown): string {
  if (typeof v === "string") return v.replaceAll("\n", "\\n");
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatGoFloat(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (v === null) return "";
  if (v instanceof SopsTime) return v.text;
  if (v instanceof Uint8Array) return Buffer.from(v).toString("utf8").replaceAll("\n", "\\n");
  throw new NixsealError(
    "SOPS_FORMAT",
    `cannot use a nested value in a dotenv file (key "${key.slice(0, 60)}")`,
    {
      hint: "dotenv files hold only KEY=value lines",
    },
  );
}

function emitDotenv(b: SopsBranch, extra: [string, string][] = []): Uint8Array {
  let out = "";
  for (const it of b.items) {
    if (it.key instanceof SopsComment) out += `#${it.key.value}\n`;
    else out += `${it.key}=${valueText(it.key, it.value)}\n`;
  }
  for (const [k, v] of extra) out += `${k}=${v.replaceAll("\n", "\\n")}\n`;
  return Buffer.from(out, "utf8");
}

export class DotenvStore implements SopsStore {
  readonly name = "dotenv" as const;

  parsePlain(input: Uint8Array): SopsBranch[] {
    return [parseDotenv(input)];
  }

  parseEncrypted(input: Uint8Array): { branches: SopsBranch[]; metadata: SopsBranch | null } {
    const b = parseDotenv(input);
    const data = new SopsBranch();
    const flat: [string, string][] = [];
    for (const it of b.items) {
      if (typeof it.key === "string" && it.key.startsWith(DOTENV_METADATA_PREFIX)) {
        flat.push([it.key.slice(DOTENV_METADATA_PREFIX.length), it.value as string]);
      } else data.items.push(it);
    }
    return { branches: [data], metadata: flat.length > 0 ? unflatten(flat) : null };
  }

  emitPlain(branches: SopsBranch[]): Uint8Array {
    return emitDotenv(branches[0] ?? new SopsBranch());
  }

  emitEncrypted(branches: SopsBranch[], metadata: SopsBranch): Uint8Array {
    const flat = flattenBranch(metadata).map(([k, v]): [string, string] => [DOTENV_METADATA_PREFIX + k, v]);
    return emitDotenv(branches[0] ?? new SopsBranch(), flat);
  }
}

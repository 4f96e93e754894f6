/**
 * The sops JSON store (sops stores/json/store.go): one top-level object, key order kept, integers
 * in the int64 range exact (bigint) and other numbers float64 (sops ≥ 3.13.2); written with
 * `json.Indent` and a tab, plus a trailing newline. Our own parser: strict RFC 8259, duplicate
 * keys refused, bounded depth.
 */
import { MAX_DEPTH, SopsBranch, SopsComment, type SopsList, SopsTime, type SopsValue } from "../tree.js";
import { formatGoFloat, isInt64 } from "../value-cipher.js";
import { checkSize, decodeUtf8, extractMetadata, formatError, type SopsStore } from "./store.js";

class JsonParser {
  private i = 0;
  constructor(
    private readonly s: string,
    private readonly store: "json" | "binary",
  ) {}

  private fail(what: string): never {
    let line = 1;
    let col = 1;
    for (let k = 0; k < this.i && k < this.s.length; k++) {
      if (this.s.charCodeAt(k) === 10) {
        line++;
        col = 1;
      } else col++;
    }
    throw formatError(this.store, `${what} at line ${line}, column ${col}`);
  }

  private ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }

  parseDocument(): SopsBranch {
    this.ws();
    if (this.s[this.i] !== "{") this.fail("the top level must be an object");
    const v = this.value(0) as SopsBranch;
    this.ws();
    if (this.i !== this.s.length) this.fail("unexpected data after the top-level object");
    return v;
  }

  private value(depth: number): SopsValue {
    if (depth > MAX_DEPTH) this.fail("nesting too deep");
    this.ws();
    const c = this.s[this.i];
    if (c === "{") return this.object(depth);
    if (c === "[") return this.array(depth);
    if (c === '"') return this.string();
    if (c === "t" && this.s.startsWith("true", this.i)) {
      this.i += 4;
      return true;
    }
    if (c === "f" && this.s.startsWith("false", this.i)) {
      this.i += 5;
      return false;
    }
    if (c === "n" && this.s.startsWith("null", this.i)) {
      this.i += 4;
      return null;
    }
    return this.number();
  }

  private object(depth: number): SopsBranch {
    this.i++; // {
    const b = new SopsBranch();
    const seen = new Set<string>();
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return b;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("expected a string key");
      const keyAt = this.i;
      const key = this.string();
      if (seen.has(key)) {
        this.i = keyAt;
        this.fail(`duplicate key "${key.length > 40 ? `${key.slice(0, 40)}...` : key}"`);
      }
      seen.add(key);
      this.ws();
      if (this.s[this.i] !== ":") this.fail("expected ':'");
      this.i++;
      b.items.push({ key, value: this.value(depth + 1) });
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "}") {
        this.i++;
        return b;
      }
      this.fail("expected ',' or '}'");
    }
  }

  private array(depth: number): SopsList {
    this.i++; // [
    const out: SopsList = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "]") {
        this.i++;
        return out;
      }
      this.fail("expected ',' or ']'");
    }
  }

  private string(): string {
    const start = this.i;
    this.i++;
    const s = this.s;
    let simple = true;
    for (;;) {
      if (this.i >= s.length) this.fail("unterminated string");
      const c = s.charCodeAt(this.i);
      if (c === 0x22) break;
      if (c < 0x20) this.fail("control character in a string");
      if (c === 0x5c) {
        simple = false;
        this.i += 2;
        continue;
      }
      this.i++;
    }
    this.i++;
    if (simple) return s.slice(start + 1, this.i - 1);
    try {
      // JSON.parse of one string token: exact escapes (\uXXXX, surrogates) without a hand decoder.
      return JSON.parse(s.slice(start, this.i)) as string;
    } catch {
      this.i = start;
      this.fail("invalid escape in a string");
    }
  }

  private number(): bigint | number {
    const m = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    m.lastIndex = this.i;
    const r = m.exec(this.s);
    if (r === null || r[0] === "" || r[0] === "-") this.fail("unexpected character");
    this.i += r[0].length;
    // sops normalizeJSONNumber: json.Number.Int64 if it parses, else Float64.
    if (r[1] === undefined && r[2] === undefined) {
      const n = BigInt(r[0]);
      if (isInt64(n)) return n;
    }
    const f = Number(r[0]);
    if (!Number.isFinite(f)) this.fail("number out of range");
    return f;
  }
}

export function parseJsonObject(text: string, store: "json" | "binary" = "json"): SopsBranch {
  return new JsonParser(text, store).parseDocument();
}

/** Go encoding/json string escaping (HTML-safe: <, >, & as \u003c...; U+2028/9 escaped). */
export function goJsonString(s: string): string {
  let out = '"';
  let last = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | null = null;
    if (c === 0x22) esc = '\\"';
    else if (c === 0x5c) esc = "\\\\";
    else if (c === 0x0a) esc = "\\n";
    else if (c === 0x0d) esc = "\\r";
    else if (c === 0x09) esc = "\\t";
    else if (c < 0x20 || c === 0x3c || c === 0x3e || c === 0x26 || c === 0x2028 || c === 0x2029) {
      esc = `\\u${c.toString(16).padStart(4, "0")}`;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // A lone surrogate is invalid UTF-8: Go writes U+FFFD.
      const paired =
        c <= 0xdbff && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff;
      if (paired) {
        i++;
        continue;
      }
      esc = "\ufffd";
    }
    if (esc !== null) {
      out += s.slice(last, i) + esc;
      last = i + 1;
    }
  }
  return `${out + s.slice(last)}"`;
}

function emitValue(v: SopsValue | SopsComment, indent: string, out: string[]): void {
  if (v instanceof SopsBranch) {
    const items = v.items.filter((it) => typeof it.key === "string");
    if (items.length === 0) {
      out.push("{}");
      return;
    }
    const inner = `${indent}\t`;
    out.push("{\n");
    items.forEach((it, n) => {
      out.push(inner, goJsonString(it.key as string), ": ");
      emitValue(it.value, inner, out);
      out.push(n === items.length - 1 ? "\n" : ",\n");
    });
    out.push(indent, "}");
    return;
  }
  if (Array.isArray(v)) {
    const elems = v.filter((x) => !(x instanceof SopsComment));
    if (elems.length === 0) {
      out.push("[]");
      return;
    }
    const inner = `${indent}\t`;
    out.push("[\n");
    elems.forEach((x, n) => {
      out.push(inner);
      emitValue(x, inner, out);
      out.push(n === elems.length - 1 ? "\n" : ",\n");
    });
    out.push(indent, "]");
    return;
  }
  if (v === null) out.push("null");
  else if (typeof v === "string") out.push(goJsonString(v));
  else if (typeof v === "bigint") out.push(v.toString());
  else if (typeof v === "number") {
    if (!Number.isFinite(v))
      throw formatError("json", "NaN and infinities cannot be written as JSON numbers");
    // Go encoding/json: 'f' format, exponent form below 1e-6 and from 1e21, like JS.
    out.push(Math.abs(v) < 1e21 && (Math.abs(v) >= 1e-6 || v === 0) ? formatGoFloat(v) : String(v));
  } else if (typeof v === "boolean") out.push(v ? "true" : "false");
  else if (v instanceof SopsTime) out.push(goJsonString(v.text));
  else if (v instanceof Uint8Array) out.push(goJsonString(Buffer.from(v).toString("utf8")));
  // Comments cannot be written in JSON (sops drops them too).
}

export function emitJsonObject(b: SopsBranch): Uint8Array {
  const out: string[] = [];
  emitValue(b, "", out);
  out.push("\n");
  return Buffer.from(out.join(""), "utf8");
}

export class JsonStore implements SopsStore {
  readonly name = "json" as const;

  parsePlain(input: Uint8Array): SopsBranch[] {
    checkSize("json", input);
    return [parseJsonObject(decodeUtf8("json", input))];
  }

  parseEncrypted(input: Uint8Array): { branches: SopsBranch[]; metadata: SopsBranch | null } {
    return extractMetadata(this.parsePlain(input));
  }

  emitPlain(branches: SopsBranch[]): Uint8Array {
    return emitJsonObject(branches[0] ?? new SopsBranch());
  }

  emitEncrypted(branches: SopsBranch[], metadata: SopsBranch): Uint8Array {
    const b = new SopsBranch([...(branches[0]?.items ?? []), { key: "sops", value: metadata }]);
    return emitJsonObject(b);
  }
}

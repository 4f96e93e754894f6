/**
 * Go regular expressions (RE2 syntax, package regexp) translated to JavaScript RegExps, for the
 * regexes of `.sops.yaml` (path_regex, encrypted_regex, ...) which sops compiles with Go's
 * `regexp.Compile` and applies with `MatchString` (unanchored search).
 *
 * The translation parses the Go syntax itself and emits a `v`-flag JS pattern in which every
 * construct has Go's meaning, so a pattern that Go rejects is rejected here too, and the few Go
 * constructs JS cannot express are refused with a message rather than silently changed:
 *
 * - `.` is any character but `\n` (JS would also exclude `\r`, U+2028, U+2029): emitted `[^\n]`,
 *   or any character under a leading `(?s)`.
 * - `^`/`$` are start/end of text, or of a line (only `\n`) under a leading `(?m)`; `\A`, `\z`:
 *   emitted as lookarounds. Go's `$` does not match before a final newline, nor does ours.
 * - `\d \s \w` and their negations and `\b \B` are ASCII as in Go (JS `\s` would be Unicode);
 *   POSIX classes `[[:alpha:]]`, `\pL`, `\p{Greek}`, `\PN`, `\p{^L}` are mapped.
 * - `\Q...\E`, octal `\123`, `\x7f`, `\x{10FFFF}`, `(?P<name>...)`, `(?<name>...)` are supported
 *   (groups become non-capturing: only whether the pattern matches matters).
 * - Refused as Go refuses them: backreferences, lookaround, escapes Go does not know,
 *   repeat counts over 1000, nested repetition operators (`a**`), `[a-b-c]`, bad ranges.
 * - Refused because JS (Node 20) cannot express them: flags anywhere but at the very start of
 *   the pattern (`a(?i)b`, `(?i:...)`, `(?-s)`), the ungreedy flag `(?U)`, and `\C`.
 *
 * Matching differs from RE2 in one way that matters: JS backtracks, so a hostile pattern can be
 * slow (RE2 is linear time). The patterns come from the user's own `.sops.yaml`, and the inputs
 * are short paths and key names, so we accept that.
 */
import { NixsealError } from "../common/index.js";

const MAX_REPEAT = 1000; // Go regexp/syntax maxRepeat / "invalid repeat count"

class GoRegexpSyntaxError extends Error {}

const PERL_CLASSES: Record<string, string> = {
  d: "0-9",
  s: "\\t\\n\\f\\r ",
  w: "0-9A-Za-z_",
};

// Go regexp/syntax perl_groups.go posixGroup, as ranges in JS class syntax.
const POSIX_CLASSES: Record<string, string> = {
  alnum: "0-9A-Za-z",
  alpha: "A-Za-z",
  ascii: "\\u{0}-\\u{7f}",
  blank: "\\t ",
  cntrl: "\\u{0}-\\u{1f}\\u{7f}",
  digit: "0-9",
  graph: "\\u{21}-\\u{7e}",
  lower: "a-z",
  print: "\\u{20}-\\u{7e}",
  punct: "\\u{21}-\\u{2f}\\u{3a}-\\u{40}\\u{5b}-\\u{60}\\u{7b}-\\u{7e}",
  space: "\\t\\n\\u{b}\\f\\r ",
  upper: "A-Z",
  word: "0-9A-Za-z_",
  xdigit: "0-9A-Fa-f",
};

/** One code point as a JS pattern atom that means exactly that character, in or out of a class. */
function literal(cp: number): string {
  const c = String.fromCodePoint(cp);
  return /^[A-Za-z0-9]$/.test(c) ? c : `\\u{${cp.toString(16)}}`;
}

function isOctal(c: string | undefined): boolean {
  return c !== undefined && c >= "0" && c <= "7";
}

function isHex(c: string | undefined): boolean {
  return c !== undefined && /^[0-9A-Fa-f]$/.test(c);
}

function isAsciiPunct(c: string): boolean {
  const cp = c.codePointAt(0)!;
  return cp < 0x80 && !/^[0-9A-Za-z]$/.test(c);
}

class Translator {
  private readonly s: string[];
  private i = 0;
  private dotAll = false;
  private multiLine = false;
  ignoreCase = false;

  constructor(source: string) {
    this.s = Array.from(source);
  }

  private fail(message: string): never {
    throw new GoRegexpSyntaxError(message);
  }

  private peek(k = 0): string | undefined {
    return this.s[this.i + k];
  }

  translate(): string {
    this.leadingFlags();
    const out = this.alternation(0);
    if (this.i < this.s.length) this.fail("unexpected )");
    return out;
  }

  /** `(?ims)` at the very start sets flags for the whole pattern. */
  private leadingFlags(): void {
    const m = /^\(\?([a-zA-Z-]*)\)/.exec(this.s.slice(0, 20).join(""));
    if (!m) return;
    const flags = m[1]!;
    if (!/^[ims]+$/.test(flags)) {
      if (/^[imsU-]*$/.test(flags)) this.fail(`flags "(?${flags})" are not supported (only i, m, s)`);
      this.fail(`invalid or unsupported Perl syntax: "(?${flags})"`);
    }
    this.ignoreCase = flags.includes("i");
    this.multiLine = flags.includes("m");
    this.dotAll = flags.includes("s");
    this.i += m[0].length;
  }

  private alternation(depth: number): string {
    const branches = [this.concatenation(depth)];
    while (this.peek() === "|") {
      this.i++;
      branches.push(this.concatenation(depth));
    }
    return branches.join("|");
  }

  private concatenation(depth: number): string {
    let out = "";
    let lastWasRepeat = false;
    let hasAtom = false;
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === "|") break;
      if (c === ")") {
        if (depth === 0) this.fail("unexpected )");
        break;
      }
      const rep = this.repetition();
      if (rep !== null) {
        if (!hasAtom) this.fail(`missing argument to repetition operator: "${rep}"`);
        if (lastWasRepeat) this.fail(`invalid nested repetition operator: "${rep}"`);
        out += rep;
        lastWasRepeat = true;
        continue;
      }
      out += this.atom(depth);
      hasAtom = true;
      lastWasRepeat = false;
    }
    return out;
  }

  /** A repetition operator at the cursor (consumed), or null. `{` that is no repeat is literal. */
  private repetition(): string | null {
    const c = this.peek();
    let op: string;
    if (c === "*" || c === "+" || c === "?") {
      this.i++;
      op = c;
    } else if (c === "{") {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.s.slice(this.i, this.i + 24).join(""));
      if (!m) return null;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === "" ? -1 : Number(m[3]);
      if (min > MAX_REPEAT || max > MAX_REPEAT || (max >= 0 && max < min)) {
        this.fail(`invalid repeat count: "${m[0]}"`);
      }
      this.i += m[0].length;
      op = m[0];
    } else {
      return null;
    }
    if (this.peek() === "?") {
      this.i++;
      op += "?";
    }
    return op;
  }

  private atom(depth: number): string {
    const c = this.s[this.i++]!;
    switch (c) {
      case "(":
        return this.group(depth);
      case "[":
        return this.characterClass();
      case ".":
        return this.dotAll ? "[\\u{0}-\\u{10ffff}]" : "[^\\n]";
      case "^":
        return this.multiLine ? "(?:(?<![^\\n]))" : "(?:(?<![\\s\\S]))";
      case "$":
        return this.multiLine ? "(?:(?![^\\n]))" : "(?:(?![\\s\\S]))";
      case "\\":
        return this.escape();
      default:
        return literal(c.codePointAt(0)!);
    }
  }

  private group(depth: number): string {
    if (this.peek() === "?") {
      const rest = this.s.slice(this.i, this.i + 40).join("");
      const named = /^\?P?<([^>]*)>/.exec(rest);
      if (named) {
        if (!/^[A-Za-z0-9_]+$/.test(named[1]!)) this.fail(`invalid named capture: "(${named[0]}"`);
        this.i += named[0].length;
      } else if (rest.startsWith("?:")) {
        this.i += 2;
      } else if (/^\?(=|!|<=|<!)/.test(rest)) {
        this.fail("lookahead and lookbehind are not supported by Go regular expressions");
      } else if (rest.startsWith("?P=")) {
        this.fail("backreferences are not supported by Go regular expressions");
      } else if (/^\?[imsU-]*[:)]/.test(rest)) {
        this.fail("flags are supported only at the very start of the pattern, as (?i), (?m) or (?s)");
      } else {
        this.fail(`invalid or unsupported Perl syntax: "(${rest.slice(0, 3)}"`);
      }
    }
    const inner = this.alternation(depth + 1);
    if (this.peek() !== ")") this.fail("missing closing )");
    this.i++;
    return `(?:${inner})`;
  }

  /** An escape outside a class. */
  private escape(): string {
    const c = this.peek();
    if (c === undefined) this.fail("trailing backslash at end of expression");
    switch (c) {
      case "A":
        this.i++;
        return "(?:(?<![\\s\\S]))";
      case "z":
        this.i++;
        return "(?:(?![\\s\\S]))";
      case "b":
        this.i++;
        return "(?:\\b)";
      case "B":
        this.i++;
        return "(?:\\B)";
      case "C":
        this.fail("\\C (any byte) is not supported");
        break;
      case "Q": {
        this.i++;
        let out = "";
        while (this.i < this.s.length) {
          if (this.peek() === "\\" && this.peek(1) === "E") {
            this.i += 2;
            return out;
          }
          out += literal(this.s[this.i++]!.codePointAt(0)!);
        }
        return out;
      }
    }
    const cls = this.classEscape();
    if (cls !== null) return cls.standalone;
    return literal(this.charEscape());
  }

  /** `\d \D \s \S \w \W \pX \p{..} \PX \P{..}` at the cursor (after the backslash), or null. */
  private classEscape(): { standalone: string; inClass: string } | null {
    const c = this.peek()!;
    const lower = c.toLowerCase();
    if (lower in PERL_CLASSES && (c === lower || c.toUpperCase() === c)) {
      this.i++;
      const ranges = PERL_CLASSES[lower]!;
      const negated = c !== lower;
      const cls = negated ? `[^${ranges}]` : `[${ranges}]`;
      return { standalone: cls, inClass: negated ? cls : ranges };
    }
    if (c === "p" || c === "P") {
      this.i++;
      let name: string;
      if (this.peek() === "{") {
        const end = this.s.indexOf("}", this.i);
        if (end < 0) this.fail("invalid character class range: missing }");
        name = this.s.slice(this.i + 1, end).join("");
        this.i = end + 1;
      } else {
        const n = this.s[this.i++];
        if (n === undefined) this.fail("invalid character class range");
        name = n;
      }
      let negated = c === "P";
      if (name.startsWith("^")) {
        negated = !negated;
        name = name.slice(1);
      }
      let js: string;
      if (name === "Any") js = "[\\u{0}-\\u{10ffff}]";
      else if (/^[A-Z][a-z]?$/.test(name)) js = `\\p{${name}}`;
      else if (/^[A-Za-z_]+$/.test(name)) js = `\\p{Script=${name}}`;
      else this.fail(`invalid character class range: "\\p{${name}}"`);
      try {
        new RegExp(js, "v");
      } catch {
        this.fail(`unknown Unicode class: "\\p{${name}}"`);
      }
      const cls = negated ? `[^${js}]` : js;
      return { standalone: cls, inClass: cls };
    }
    return null;
  }

  /** A single-character escape at the cursor (after the backslash): its code point. */
  private charEscape(): number {
    const c = this.s[this.i++]!;
    if (c >= "1" && c <= "7" && !isOctal(this.peek())) {
      this.fail(`invalid escape sequence: "\\${c}" (backreferences are not supported)`);
    }
    if (c >= "0" && c <= "7") {
      let v = Number(c);
      for (let k = 0; k < 2 && isOctal(this.peek()); k++) v = v * 8 + Number(this.s[this.i++]);
      return v;
    }
    if (c === "x") {
      if (this.peek() === "{") {
        const end = this.s.indexOf("}", this.i);
        const hex = end < 0 ? "" : this.s.slice(this.i + 1, end).join("");
        if (!/^[0-9A-Fa-f]+$/.test(hex) || Number.parseInt(hex, 16) > 0x10ffff) {
          this.fail("invalid escape sequence: \\x{...}");
        }
        this.i = end + 1;
        return Number.parseInt(hex, 16);
      }
      const h1 = this.peek();
      const h2 = this.peek(1);
      if (!isHex(h1) || !isHex(h2)) this.fail("invalid escape sequence: \\x");
      this.i += 2;
      return Number.parseInt(`${h1}${h2}`, 16);
    }
    const simple: Record<string, number> = { a: 7, f: 12, t: 9, n: 10, r: 13, v: 11 };
    if (c in simple) return simple[c]!;
    if (isAsciiPunct(c)) return c.codePointAt(0)!;
    this.fail(`invalid escape sequence: "\\${c}"`);
  }

  /** A bracket expression (the `[` consumed), emitted as a v-mode class. */
  private characterClass(): string {
    let negated = false;
    if (this.peek() === "^") {
      negated = true;
      this.i++;
    }
    const items: string[] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.fail("missing closing ]");
      if (c === "]" && !first) {
        this.i++;
        break;
      }
      // Go: a '-' that is neither first, last, nor part of a range is an error.
      if (c === "-" && !first && this.peek(1) !== "]" && this.peek(1) !== undefined) {
        this.fail("invalid character class range: misplaced -");
      }
      first = false;
      if (c === "[" && this.peek(1) === ":") {
        const m = /^\[:(\^?)([a-z]+):\]/.exec(this.s.slice(this.i, this.i + 12).join(""));
        if (m) {
          const ranges = POSIX_CLASSES[m[2]!];
          if (ranges === undefined) this.fail(`invalid character class range: "${m[0]}"`);
          items.push(m[1] ? `[^${ranges}]` : `[${ranges}]`);
          this.i += m[0].length;
          continue;
        }
      }
      if (c === "\\") {
        this.i++;
        if (this.peek() === undefined) this.fail("missing closing ]");
        const cls = this.classEscape();
        if (cls !== null) {
          items.push(
            cls.inClass.startsWith("[") || cls.inClass.startsWith("\\p") ? cls.inClass : `[${cls.inClass}]`,
          );
          continue;
        }
        this.i--;
      }
      const lo = this.classChar();
      if (this.peek() === "-" && this.peek(1) !== "]" && this.peek(1) !== undefined) {
        this.i++;
        const hi = this.classChar();
        if (hi < lo) this.fail("invalid character class range: reversed range");
        items.push(`${literal(lo)}-${literal(hi)}`);
      } else {
        items.push(literal(lo));
      }
    }
    return `[${negated ? "^" : ""}${items.join("")}]`;
  }

  private classChar(): number {
    const c = this.s[this.i++]!;
    if (c !== "\\") return c.codePointAt(0)!;
    if (this.peek() === undefined) this.fail("missing closing ]");
    return this.charEscape();
  }
}

/**
 * Compiles a Go (RE2) regular expression to a JS RegExp with the same matches, for an
 * unanchored `test()` as Go's `MatchString`. Throws SOPS_CONFIG naming `what` on a pattern Go
 * rejects or that JS cannot express.
 */
export function compileGoRegexp(
  source: string,
  what = "regular expression",
  code: "SOPS_CONFIG" | "SOPS_METADATA" = "SOPS_CONFIG",
): RegExp {
  const t = new Translator(source);
  let pattern: string;
  try {
    pattern = t.translate();
    return new RegExp(pattern, t.ignoreCase ? "iv" : "v");
  } catch (e) {
    const reason =
      e instanceof GoRegexpSyntaxError ? e.message : "it cannot be expressed as a JavaScript RegExp";
    throw new NixsealError(code, `cannot compile ${what} ${JSON.stringify(source)}: ${reason}`, {
      hint: "write it in Go RE2 syntax (https://github.com/google/re2/wiki/Syntax) without lookaround or backreferences",
    });
  }
}

/**
 * Go regular expressions, for the regexes that come from files: `.sops.yaml` (path_regex,
 * encrypted_regex, unencrypted_regex, encrypted_comment_regex, unencrypted_comment_regex) and
 * a sops file's own metadata. sops compiles them with Go's `regexp.Compile` and applies them
 * with `MatchString` (an unanchored search).
 *
 * They are compiled by re2js, RE2 in JavaScript: Go's syntax (flags anywhere, `\z`, POSIX
 * classes, `(?P<name>...)`, `\Q...\E`) and Go's meaning (`.` and `$` as in Go, ASCII `\d \s
 * \w \b`, Unicode classes); what Go refuses (lookaround, backreferences, repeat counts over
 * 1000) is refused with Go's message. Matching takes time linear in the input, as in Go: a
 * pattern in a file cannot make nixseal spin (docs/architecture.md, invariant 7; JavaScript's
 * RegExp backtracks, so `(a*)*b` against a long key name would run for minutes). re2js is loaded
 * on the first compile.
 */
import { createRequire } from "node:module";
import { NixsealError } from "../common/index.js";

/** A compiled Go regexp: `test` is Go's `MatchString`. */
export interface GoRegexp {
  test(input: string): boolean;
}

type Re2js = typeof import("re2js");
let re2js: Re2js | null = null;

/** Compiled patterns by source: rules are matched against every file of a repository. */
const compiled = new Map<string, GoRegexp>();
const MAX_CACHED = 256;

/**
 * Compiles a Go (RE2) regular expression. Throws `code` naming `what` on a pattern Go rejects,
 * with Go's reason.
 */
export function compileGoRegexp(
  source: string,
  what = "regular expression",
  code: "SOPS_CONFIG" | "SOPS_METADATA" = "SOPS_CONFIG",
): GoRegexp {
  const known = compiled.get(source);
  if (known !== undefined) return known;
  re2js ??= createRequire(import.meta.url)("re2js") as Re2js;
  let re: GoRegexp;
  try {
    re = re2js.RE2JS.compile(source);
  } catch (e) {
    if (!(e instanceof re2js.RE2JSException)) throw e;
    const reason = e.message.replace(/^error parsing regexp: /, "");
    throw new NixsealError(code, `cannot compile ${what} ${JSON.stringify(source)}: ${reason}`, {
      hint: "write it in Go's regexp syntax, RE2 (https://github.com/google/re2/wiki/Syntax): no lookaround, no backreferences",
    });
  }
  if (compiled.size >= MAX_CACHED) compiled.clear();
  compiled.set(source, re);
  return re;
}

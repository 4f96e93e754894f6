/**
 * The encodings of a secret, checked against independent encoders: Node's Buffer (base64,
 * base64url, hex), encodeURIComponent and URLSearchParams, Python's urllib.parse (quote,
 * quote_plus), JSON.stringify, the real Nix for Nix strings, and /bin/sh for shell words. For
 * encoders not installed here (Go, PHP) the expected strings are written out from their
 * documented rules, and checked against Python where the two coincide.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import {
  type EncodedPattern,
  encodeAs,
  patternsFor,
  skipReason,
  trimValue,
} from "../../src/audit/encodings.js";
import { prng, tempDir, which } from "../helpers.js";

const enc = new TextEncoder();

function patternsOf(value: string | Uint8Array, minLength?: number): EncodedPattern[] {
  const r = patternsFor(typeof value === "string" ? enc.encode(value) : value, { minLength });
  assert.equal(r.skipped, null);
  return (r as { patterns: EncodedPattern[] }).patterns;
}

/** Whether some pattern occurs in `text`, and at which offset; the pattern's encoding. */
function findIn(text: Buffer, patterns: EncodedPattern[]): { offset: number; encoding: string }[] {
  const out: { offset: number; encoding: string }[] = [];
  for (const p of patterns) {
    const at = text.indexOf(p.bytes);
    if (at >= 0) for (const encoding of p.encodings) out.push({ offset: at, encoding });
  }
  return out;
}

const SECRET_CHARS = "abcXYZ019 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\té€😀\n";

function randomSecret(rand: () => number): string {
  const n = 8 + Math.floor(rand() * 30);
  const chars = [...SECRET_CHARS];
  let s = "";
  for (let i = 0; i < n; i++) s += chars[Math.floor(rand() * chars.length)];
  // Ends that are white space are trimmed away before encoding; keep them visible.
  return `k${s}z`;
}

test("encodings: raw, hex and HEX are the value (trimmed), Buffer's hex lower and upper", () => {
  const ps = patternsOf("  correct-horse-battery\n");
  const by = (e: string) =>
    Buffer.from(ps.find((p) => p.encodings.includes(e as never))!.bytes).toString("latin1");
  assert.equal(by("raw"), "correct-horse-battery");
  assert.equal(by("hex"), Buffer.from("correct-horse-battery").toString("hex"));
  assert.equal(by("HEX"), Buffer.from("correct-horse-battery").toString("hex").toUpperCase());
});

test("encodings: base64 and base64url of the value inside any longer data, padded or not, are found", () => {
  const rand = prng(11);
  for (let i = 0; i < 300; i++) {
    const secret = Buffer.from(
      Array.from({ length: 8 + Math.floor(rand() * 40) }, () => Math.floor(rand() * 256)),
    );
    // White space at the ends is trimmed before encoding: leave it out here.
    if (skipReason(secret) !== null || trimValue(secret).length !== secret.length) continue;
    const ps = patternsOf(secret);
    const prefix = Buffer.from(
      Array.from({ length: Math.floor(rand() * 7) }, () => Math.floor(rand() * 256)),
    );
    const suffix = Buffer.from(
      Array.from({ length: Math.floor(rand() * 4) }, () => Math.floor(rand() * 256)),
    );
    const whole = Buffer.concat([prefix, secret, suffix]);
    // Where the first character computed from the secret's bits alone is.
    const expected = Math.ceil((prefix.length * 8) / 6);
    for (const [kind, encoded] of [
      ["base64", whole.toString("base64")],
      ["base64", whole.toString("base64").replace(/=+$/, "")],
      ["base64url", whole.toString("base64url")],
    ] as const) {
      const text = Buffer.from(`data: ${encoded};`);
      const found = findIn(text, ps).filter((f) => f.encoding.startsWith("base64"));
      assert.ok(
        found.some((f) => f.offset === 6 + expected),
        `${kind}, prefix ${prefix.length}, secret ${secret.length}: ${JSON.stringify(found)}`,
      );
      if (
        kind === "base64url" &&
        /[-_]/.test(encoded.slice(expected, expected + (secret.length * 4) / 3 - 1))
      ) {
        assert.ok(found.some((f) => f.encoding === "base64url"));
      }
    }
  }
});

test("encodings: URL-encoded forms (RFC 3986 upper and lower, form, encodeURIComponent) are found", () => {
  const rand = prng(12);
  for (let i = 0; i < 300; i++) {
    const secret = randomSecret(rand);
    const ps = patternsOf(secret);
    const component = encodeURIComponent(secret);
    const form = new URLSearchParams({ k: secret }).toString().slice(2);
    const strict = component.replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
    const lower = strict.replace(/%[0-9A-F]{2}/g, (x) => x.toLowerCase());
    for (const encoded of [component, form, strict, lower]) {
      const text = Buffer.from(`postgres://u:${encoded}@db/x`);
      const found = findIn(text, ps);
      assert.ok(
        found.some((f) => f.offset === 13),
        `${JSON.stringify(secret)} as ${encoded}: ${JSON.stringify(found)}`,
      );
    }
  }
});

/** Python's urllib.parse encodings of each value: [quote_plus(v), quote(v), quote(v, safe="")]. */
function pythonQuotes(values: string[]): [string, string, string][] {
  const script =
    "import json, sys\nfrom urllib.parse import quote, quote_plus\n" +
    "print(json.dumps([[quote_plus(v), quote(v), quote(v, safe='')] for v in json.load(sys.stdin)]))";
  const r = spawnSync("python3", ["-c", script], { input: JSON.stringify(values), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test("encodings: Python's quote_plus, quote and quote(safe='') of any value are found", (t) => {
  if (!which("python3")) return t.skip("needs python3");
  const rand = prng(17);
  const secrets = Array.from({ length: 300 }, () => randomSecret(rand));
  // Values where the plus form and the kept '~' or '/' meet: the cases nixseal used to miss.
  secrets.push("k a~b c*d/e~z", "kpass word~1*2z", "k/usr/lib x*z", "k~~ ** //z");
  const quoted = pythonQuotes(secrets);
  secrets.forEach((secret, i) => {
    const ps = patternsOf(secret);
    for (const encoded of quoted[i]!) {
      // Python writes upper-case hex (url-lower is for the encoders that do not).
      assert.doesNotMatch(encoded, /%(?:[a-f][0-9a-fA-F]|[0-9A-F][a-f])/, encoded);
      const text = Buffer.from(`postgres://u:${encoded}@db/x`);
      const found = findIn(text, ps);
      assert.ok(
        found.some((f) => f.offset === 13),
        `${JSON.stringify(secret)} as ${encoded}: ${JSON.stringify(found)}`,
      );
    }
  });
});

test("encodings: Go's QueryEscape, PHP's urlencode and rawurlencode, encodeURIComponent (documented rules)", (t) => {
  const value = "p@ss word~*'()!/:;\u00e9";
  // Go, net/url documentation and source: QueryEscape keeps A-Z a-z 0-9 - _ . ~, writes a space
  // as '+' and every other byte as %XX with upper-case hex.
  const go = "p%40ss+word~%2A%27%28%29%21%2F%3A%3B%C3%A9";
  // The PHP manual: urlencode "Returns a string in which all non-alphanumeric characters except
  // -_. have been replaced with a percent (%) sign followed by two hex digits and spaces encoded
  // as plus (+) signs" (upper-case hex in PHP's ext/standard/url.c); rawurlencode does the same
  // except that '~' is kept too (since PHP 5.3.0, RFC 3986) and a space is %20.
  const phpUrlencode = "p%40ss+word%7E%2A%27%28%29%21%2F%3A%3B%C3%A9";
  const phpRawurlencode = "p%40ss%20word~%2A%27%28%29%21%2F%3A%3B%C3%A9";
  // ECMAScript encodeURIComponent keeps A-Z a-z 0-9 - _ . ! ~ * ' ( ).
  const component = "p%40ss%20word~*'()!%2F%3A%3B%C3%A9";
  assert.equal(encodeURIComponent(value), component);
  if (which("python3")) {
    // Where Python's encoders follow the same rules, they must give the same strings.
    const [[plus, , strict]] = pythonQuotes([value]) as [[string, string, string]];
    assert.equal(plus, go, "Python's quote_plus and Go's QueryEscape");
    assert.equal(strict, phpRawurlencode, "Python's quote(safe='') and PHP's rawurlencode");
  } else t.diagnostic("python3 missing: the Go and PHP strings are not cross-checked");
  const ps = patternsOf(value);
  for (const [who, encoded] of [
    ["Go QueryEscape", go],
    ["PHP urlencode", phpUrlencode],
    ["PHP rawurlencode", phpRawurlencode],
    ["encodeURIComponent", component],
    // The lower-case hex an ad-hoc encoder (printf '%%%02x') writes for RFC 3986.
    ["RFC 3986, lower-case hex", phpRawurlencode.replace(/%[0-9A-F]{2}/g, (x) => x.toLowerCase())],
  ]) {
    const found = findIn(Buffer.from(`?pw=${encoded}&x`), ps);
    assert.ok(
      found.some((f) => f.offset === 4),
      `${who}: ${encoded}: ${JSON.stringify(found)}`,
    );
  }
});

test("encodings: a URL form adds a pattern only when its bytes differ for that value", () => {
  // The URL-encoded patterns of each value, by label, worked out by hand from the rules above.
  const urlPatterns = (v: string) =>
    Object.fromEntries(
      patternsOf(v)
        .filter((p) => p.encodings[0]!.startsWith("url"))
        .map((p) => [p.encodings.join("/"), Buffer.from(p.bytes).toString("latin1")]),
    );
  assert.deepEqual(urlPatterns("pass word 123"), {
    "url/url-lower/url-component/url-path": "pass%20word%20123",
    "url-form/url-plus/url-php": "pass+word+123",
  });
  assert.deepEqual(urlPatterns("pass word~123"), {
    "url/url-lower/url-component/url-path": "pass%20word~123",
    "url-form/url-php": "pass+word%7E123",
    "url-plus": "pass+word~123",
  });
  assert.deepEqual(urlPatterns("pass word*123"), {
    "url/url-path": "pass%20word%2A123",
    "url-lower": "pass%20word%2a123",
    "url-form": "pass+word*123",
    "url-component": "pass%20word*123",
    "url-plus/url-php": "pass+word%2A123",
  });
  assert.deepEqual(urlPatterns("pass/word 123"), {
    "url/url-component": "pass%2Fword%20123",
    "url-lower": "pass%2fword%20123",
    "url-form/url-plus/url-php": "pass%2Fword+123",
    "url-path": "pass/word%20123",
  });
  // A value that no URL encoder changes has no URL pattern at all.
  assert.deepEqual(urlPatterns("Tok3n-With.Dots_And_Underscores"), {});
});

test("encodings: JSON.stringify bodies and Python-style \\u escapes are found", () => {
  const rand = prng(13);
  for (let i = 0; i < 300; i++) {
    const secret = randomSecret(rand);
    const ps = patternsOf(secret);
    const json = JSON.stringify({ password: secret });
    const ascii = json.replace(
      /[\u007f-\uffff]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
    );
    for (const text of [json, ascii]) {
      const found = findIn(Buffer.from(text), ps);
      assert.ok(
        found.some((f) => f.offset === 13),
        `${JSON.stringify(secret)} in ${text}`,
      );
    }
  }
});

test("encodings: shell words in '...' and \"...\" that /bin/sh turns back into the value", () => {
  const rand = prng(14);
  for (let i = 0; i < 60; i++) {
    const secret = randomSecret(rand);
    const value = enc.encode(secret);
    for (const e of ["shell-single", "shell-single-alt", "shell-double"] as const) {
      const body = Buffer.from(encodeAs(value, e)!).toString("utf8");
      const q = e === "shell-double" ? '"' : "'";
      const r = spawnSync("/bin/sh", ["-c", `printf %s ${q}${body}${q}`], { encoding: "utf8" });
      assert.equal(r.stdout, secret, `${e} of ${JSON.stringify(secret)}`);
    }
  }
});

test("encodings: Nix string literals that the real Nix reads back as the value", (t) => {
  if (!which("nix-instantiate")) return t.skip("needs nix-instantiate");
  const { dir, cleanup } = tempDir();
  try {
    const rand = prng(15);
    const cases: string[] = [];
    for (let i = 0; i < 40; i++) cases.push(randomSecret(rand));
    cases.push(`a\${b}c\\d"e'f\ng`);
    const lines = cases.map((secret, i) => {
      fs.writeFileSync(path.join(dir, `s${i}`), secret.trim());
      const body = Buffer.from(encodeAs(trimValue(enc.encode(secret)), "nix-string")!).toString("utf8");
      return `(builtins.readFile ./s${i} == "${body}")`;
    });
    fs.writeFileSync(path.join(dir, "t.nix"), `[ ${lines.join("\n")} ]\n`);
    const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", path.join(dir, "t.nix")], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      JSON.parse(r.stdout),
      cases.map(() => true),
    );
  } finally {
    cleanup();
  }
});

test("encodings: an encoding that changes nothing adds no pattern; all patterns are distinct", () => {
  const ps = patternsOf("abcdefgh12345678");
  assert.deepEqual(
    ps.map((p) => p.encodings.join("/")),
    [
      "raw",
      // No + or / in its base64, no a-f in its hex ("6162..."): one pattern each.
      "base64/base64url",
      "base64/base64url",
      "base64/base64url",
      "hex/HEX",
    ],
  );
  assert.deepEqual(
    patternsOf('ab"cd\\ef').map((p) => p.encodings.join("/")),
    [
      "raw",
      "base64/base64url",
      "base64/base64url",
      "base64/base64url",
      "hex",
      "HEX",
      "url/url-form/url-component/url-plus/url-php/url-path",
      "url-lower",
      "json/json-ascii/nix-string/drv-string/shell-double",
    ],
  );
  const rand = prng(16);
  for (let i = 0; i < 200; i++) {
    const all = patternsOf(randomSecret(rand)).map((p) => Buffer.from(p.bytes).toString("latin1"));
    assert.equal(new Set(all).size, all.length);
  }
});

test("encodings: short, common and low-variety values are skipped, with the reason", () => {
  assert.deepEqual(skipReason(enc.encode("short")), { kind: "too-short", length: 5, minLength: 8 });
  assert.deepEqual(skipReason(enc.encode("short"), { minLength: 4 }), null);
  assert.deepEqual(skipReason(enc.encode("Password\n")), { kind: "common", word: "password" });
  assert.deepEqual(skipReason(enc.encode("aaaaaaaaaaaa")), {
    kind: "low-entropy",
    distinct: 1,
    minDistinct: 4,
  });
  assert.deepEqual(skipReason(enc.encode("abababababab")), {
    kind: "low-entropy",
    distinct: 2,
    minDistinct: 4,
  });
  assert.deepEqual(skipReason(enc.encode(" \n\t ")), { kind: "empty" });
  assert.equal(skipReason(enc.encode("x9$Lq!2mP0")), null);
  assert.equal(patternsFor(enc.encode("true")).skipped?.kind, "too-short");
});

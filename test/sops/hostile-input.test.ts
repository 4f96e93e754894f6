/**
 * Input that costs time out of proportion to its size: YAML anchors that expand exponentially,
 * regular expressions from files that backtrack (`(a*)*b`: sops uses Go's linear-time RE2;
 * a backtracking engine takes exponential time on a long key name). Each case runs in its own Node process, killed after a few seconds, so that a regression
 * fails the test in bounded time instead of stalling the suite; the time limit the test checks
 * is measured inside that process, around the call alone.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { X25519Identity } from "../../src/age/x25519.js";
import { encryptNewDocument, JsonStore, YamlStore } from "../../src/sops/index.js";
import { REPO } from "../helpers.js";

const SRC = path.join(REPO, "dist", "src");
const KILL_AFTER_MS = 10_000;

interface ChildOutcome {
  /** The body's value, when it returned. */
  value?: unknown;
  /** The error it threw: its code (a NixsealError's) and message. */
  code?: string;
  message?: string;
  /** Time spent in the body, in milliseconds. */
  ms: number;
}

/**
 * Runs `body` (statements of an async function that may `return` a JSON value) in a new Node
 * process, with `input` (its standard input, a string), `sops` (src/sops/index.js), `rules`
 * (src/sops/creation-rules.js) and `keys` (src/keys/index.js) in scope, the yaml library loaded.
 * `setup` runs first, untimed. Killed after KILL_AFTER_MS, which fails the test.
 */
function inChild(body: string, input = "", setup = ""): ChildOutcome {
  const url = (m: string) => JSON.stringify(pathToFileURL(path.join(SRC, m)).href);
  const script = `
    import * as fs from "node:fs";
    const sops = await import(${url("sops/index.js")});
    const rules = await import(${url("sops/creation-rules.js")});
    const keys = await import(${url("keys/index.js")});
    const input = fs.readFileSync(0, "utf8");
    // The yaml library is loaded at first use (src/sops/yaml-lib.ts): here, untimed.
    new sops.YamlStore().parsePlain(Buffer.from("k: v\\n"));
    ${setup}
    const t0 = performance.now();
    let out;
    try {
      out = { value: await (async () => { ${body} })() };
    } catch (e) {
      out = { code: e.code, message: String(e.message) };
    }
    out.ms = performance.now() - t0;
    process.stdout.write(JSON.stringify(out));
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    input,
    timeout: KILL_AFTER_MS,
    killSignal: "SIGKILL",
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.notEqual(r.signal, "SIGKILL", `still running after ${KILL_AFTER_MS} ms`);
  assert.equal(r.status, 0, String(r.stderr));
  return JSON.parse(String(r.stdout)) as ChildOutcome;
}

/** `levels` mappings, each holding the one before it twice: 2^levels leaves from a few bytes a level. */
function anchorChain(levels: number, prefix = "a"): string {
  let s = `${prefix}0: &${prefix}0 {x: v, y: v}\n`;
  for (let i = 1; i <= levels; i++) {
    s += `${prefix}${i}: &${prefix}${i} {x: *${prefix}${i - 1}, y: *${prefix}${i - 1}}\n`;
  }
  return s;
}

function refusedQuickly(o: ChildOutcome, pattern: RegExp): void {
  assert.equal(o.code, "SOPS_FORMAT", `expected a refusal, got ${JSON.stringify(o).slice(0, 200)}`);
  assert.match(o.message ?? "", pattern);
  assert.ok(o.ms < 1000, `refused after ${Math.round(o.ms)} ms`);
}

test("YAML: a chain of anchors is refused before it is expanded, in a plaintext and a sops document", () => {
  const eighteen = anchorChain(18);
  assert.ok(eighteen.length < 520, String(eighteen.length));
  const plain = inChild("return new sops.YamlStore().parsePlain(Buffer.from(input)).length;", eighteen);
  refusedQuickly(plain, /invalid YAML document: aliases expand to more than \d+ nodes/);
  // A file as it reaches install: seven documents of 17 levels (3.4 KB), a sops block in the first.
  const file = `${anchorChain(17)}sops:\n    version: 3.9.0\n${`---\n${anchorChain(17)}`.repeat(6)}`;
  assert.ok(file.length > 3000 && file.length < 4000, String(file.length));
  const encrypted = inChild(
    "return new sops.YamlStore().parseEncrypted(Buffer.from(input)).branches.length;",
    file,
  );
  refusedQuickly(encrypted, /aliases expand to more than \d+ nodes/);
});

test("YAML: the alias budget is the file's, not each document's", () => {
  // Each document alone is within the budget (12 levels: ~33 000 nodes); four are not.
  const one = anchorChain(12);
  assert.equal(new YamlStore().parsePlain(Buffer.from(one)).length, 1);
  const four = inChild(
    "return new sops.YamlStore().parsePlain(Buffer.from(input)).length;",
    `${one}---\n${one}---\n${one}---\n${one}`,
  );
  refusedQuickly(four, /aliases expand to more than \d+ nodes/);
});

test("YAML: an alias inside the node it names is refused; an unknown alias too", () => {
  const y = new YamlStore();
  assert.throws(
    () => y.parsePlain(Buffer.from("a: &a {b: [*a]}\n")),
    (e: Error) => /nesting too deep once aliases are expanded/.test(e.message),
  );
  assert.throws(
    () => y.parsePlain(Buffer.from("a: 1\nb: *nope\n")),
    (e: Error) => /unknown alias \*nope/.test(e.message),
  );
});

test("YAML: anchors that repeat a block still expand, to the last anchor of the name before the alias", () => {
  const [doc] = new YamlStore().parsePlain(
    Buffer.from(
      "base: &b {user: u, port: 1}\nprod: *b\nbase2: &b {user: v}\nstaging: *b\nlist: [&x 7, *x]\n",
    ),
  );
  const text = Buffer.from(new YamlStore().emitPlain([doc!])).toString("utf8");
  assert.equal(
    text,
    "base:\n    user: u\n    port: 1\nprod:\n    user: u\n    port: 1\nbase2:\n    user: v\nstaging:\n    user: v\nlist:\n    - 7\n    - 7\n",
  );
});

test(".sops.yaml: a chain of anchors is refused before it is expanded", () => {
  const o = inChild(
    `return rules.parseSopsConfig(input, "/repo/.sops.yaml").rules.length;`,
    `${anchorChain(20)}creation_rules: []\n`,
  );
  assert.equal(o.code, "SOPS_CONFIG", JSON.stringify(o).slice(0, 200));
  assert.match(o.message ?? "", /too large or too deeply nested once aliases are expanded/);
  assert.ok(o.ms < 1000, `refused after ${Math.round(o.ms)} ms`);
});

// ---- regular expressions from files -------------------------------------------------------------

const HOSTILE: readonly [pattern: string, input: string][] = [
  ["(a*)*b", "a".repeat(10_000)],
  ["(a|a)*b", "a".repeat(10_000)],
  ["(a|aa)+$", `${"a".repeat(10_000)}!`],
  ["((a+)+)+[^a]$", "a".repeat(10_000)],
  ["(x+x+)+y", "x".repeat(10_000)],
  ["^(\\w+\\s?)*$", `${"word ".repeat(2_000)}!`],
  ["(.*a){20}", "a".repeat(10_000)],
];

test("regexps: hostile patterns on 10 000-character inputs finish in bounded time, with Go's answers", () => {
  // The answers Go's regexp gives, computed here from what the patterns mean.
  const expected = [false, false, false, false, false, false, true];
  const o = inChild(
    "return JSON.parse(input).map(([p, s]) => rules.compileGoRegexp(p).test(s));",
    JSON.stringify(HOSTILE),
  );
  assert.deepEqual(o.value, expected, JSON.stringify(o).slice(0, 200));
  assert.ok(o.ms < 2000, `${HOSTILE.length} patterns took ${Math.round(o.ms)} ms`);
});

test("regexps: a hostile path_regex in .sops.yaml does not stall choosing a rule", () => {
  const r = X25519Identity.generate().recipient().toString();
  const o = inChild(
    `const c = rules.parseSopsConfig(input, "/repo/.sops.yaml");
     return [rules.ruleFor(c, "/repo/" + "a".repeat(10000))?.index ?? null, rules.validateSopsConfig(c).length];`,
    `creation_rules:\n  - path_regex: (a*)*b\n    age: ${r}\n  - age: ${r}\n`,
  );
  assert.deepEqual(o.value, [1, 0], JSON.stringify(o).slice(0, 300));
  assert.ok(o.ms < 1000, `took ${Math.round(o.ms)} ms`);
});

test("regexps: a hostile encrypted_regex in a sops file's metadata fails at the MAC, not after minutes", async () => {
  const id = X25519Identity.generate();
  // JSON: a YAML key is at most 1024 characters.
  const store = new JsonStore();
  const longKey = "a".repeat(10_000);
  const enc = Buffer.from(
    await encryptNewDocument(
      store.parsePlain(Buffer.from(JSON.stringify({ [longKey]: "secret", other: "x" }))),
      store,
      { keyGroups: [[id.recipient().toString()]], rules: { encryptedRegex: "^a" } },
    ),
  ).toString("utf8");
  assert.match(enc, /"encrypted_regex": "\^a"/);
  // The metadata is not covered by the MAC: only the values' check catches the change.
  const hostile = enc.replace(/"encrypted_regex": "\^a"/, '"encrypted_regex": "(a*)*b"');
  const o = inChild(
    `await sops.decryptDocument(Buffer.from(input), new sops.JsonStore(), { identities: [identity], file: "x.json" });
     return "decrypted";`,
    hostile,
    `const identity = keys.parseIdentityString(${JSON.stringify(id.encode())}, "test");`,
  );
  assert.equal(o.code, "SOPS_MAC", JSON.stringify(o).slice(0, 300));
  assert.ok(o.ms < 1000, `took ${Math.round(o.ms)} ms`);
});

test("regexps: re2js is loaded by the first compile, not when src/sops is", () => {
  const url = (m: string) => JSON.stringify(pathToFileURL(path.join(SRC, m)).href);
  // A resolve hook sees every import and require of the package, whichever build they load.
  const script = `
    import { registerHooks } from "node:module";
    let loaded = false;
    registerHooks({
      resolve(specifier, context, next) {
        if (specifier === "re2js" || specifier.startsWith("re2js/")) loaded = true;
        return next(specifier, context);
      },
    });
    const rules = await import(${url("sops/creation-rules.js")});
    await import(${url("sops/index.js")});
    const atStart = loaded;
    const config = rules.parseSopsConfig("creation_rules:\\n  - path_regex: ^x\\n", "/repo/.sops.yaml");
    const afterParse = loaded;
    rules.ruleFor(config, "/repo/x");
    process.stdout.write(JSON.stringify([atStart, afterParse, loaded]));
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { timeout: KILL_AFTER_MS });
  assert.equal(r.status, 0, String(r.stderr));
  assert.deepEqual(JSON.parse(String(r.stdout)), [false, false, true]);
});

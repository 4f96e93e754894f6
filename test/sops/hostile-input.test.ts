/**
 * Input that costs time out of proportion to its size: YAML anchors that expand exponentially.
 * Each case runs in its own Node process, killed after a few seconds, so that a regression
 * fails the test in bounded time instead of stalling the suite; the time limit the test checks
 * is measured inside that process, around the call alone.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { YamlStore } from "../../src/sops/index.js";
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
 * process, with `input` (its standard input, a string), `sops` (src/sops/index.js) and `rules`
 * (src/sops/creation-rules.js) in scope. Killed after KILL_AFTER_MS, which fails the test.
 */
function inChild(body: string, input = ""): ChildOutcome {
  const url = (m: string) => JSON.stringify(pathToFileURL(path.join(SRC, m)).href);
  const script = `
    import * as fs from "node:fs";
    const sops = await import(${url("sops/index.js")});
    const rules = await import(${url("sops/creation-rules.js")});
    const input = fs.readFileSync(0, "utf8");
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

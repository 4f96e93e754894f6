/**
 * The shape docs/architecture.md describes, checked against the code so it stays true:
 * - layers: a folder of src/ imports only folders on a lower layer;
 * - faces: another folder is imported through its index.ts only;
 * - only src/cli/ prints or exits (the trusted fetcher, a separate program, is the one exception);
 * - the repository stands on its own: no file cites a design file or notes outside it, or an
 *   issue number (.ci/run is not scanned: CI provides nixpkgs's lib beside the checkout, and it
 *   must say where).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { REPO } from "./helpers.js";

/** The layers, lowest first; folders on one line may not import each other. */
export const LAYERS: readonly (readonly string[])[] = [
  ["common"],
  ["age"],
  ["ssh"],
  ["keys"],
  ["sops"],
  ["creds", "vault"],
  ["install", "build-secrets", "audit"],
  ["push", "generate"],
  ["cli"],
];

const SRC = path.join(REPO, "src");

function sourceFiles(dir: string, ending = /\.ts$/): string[] {
  return fs
    .readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => ending.test(f))
    .map((f) => path.join(dir, f))
    .filter((f) => fs.statSync(f).isFile());
}

/** Every module specifier a file names: import/export ... from, import("..."), typeof import("..."). */
export function specifiersOf(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|[\s;])(?:import|export)\s[^;'"]*?\sfrom\s+["']([^"']+)["']/g))
    out.push(m[1]!);
  for (const m of text.matchAll(/(?:^|[\s;])import\s+["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]!);
  return out;
}

function layerOf(folder: string): number {
  const i = LAYERS.findIndex((l) => l.includes(folder));
  assert.notEqual(
    i,
    -1,
    `src/${folder}/ is in no layer of docs/architecture.md (add it to LAYERS and the doc)`,
  );
  return i;
}

const folders = fs.readdirSync(SRC).filter((f) => fs.statSync(path.join(SRC, f)).isDirectory());

test("every folder of src/ has a layer, an index.ts (but the top, cli), and the docs name it", () => {
  const doc = fs.readFileSync(path.join(REPO, "docs", "architecture.md"), "utf8");
  const readme = fs.readFileSync(path.join(REPO, "README.md"), "utf8");
  for (const folder of folders) {
    layerOf(folder);
    // src/cli/ is the top: nothing imports it, so it has entry points (main.ts) and no face.
    if (folder !== "cli")
      assert.ok(fs.existsSync(path.join(SRC, folder, "index.ts")), `src/${folder}/index.ts is missing`);
    assert.ok(doc.includes(`src/${folder}/`), `docs/architecture.md does not describe src/${folder}/`);
    assert.ok(readme.includes(`src/${folder}/`), `README.md's layout does not list src/${folder}/`);
  }
});

test("imports point down the layers, and into another folder only through its index.ts", () => {
  const problems: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const own = path.relative(SRC, file).split(path.sep)[0]!;
    for (const spec of specifiersOf(fs.readFileSync(file, "utf8"))) {
      if (!spec.startsWith(".")) continue;
      const target = path.resolve(path.dirname(file), spec);
      const rel = path.relative(SRC, target);
      if (rel.startsWith("..")) {
        problems.push(`${path.relative(REPO, file)} imports ${spec}, outside src/`);
        continue;
      }
      const folder = rel.split(path.sep)[0]!;
      if (folder === own) continue;
      if (layerOf(folder) >= layerOf(own)) {
        problems.push(
          `${path.relative(REPO, file)} (layer ${own}) imports ${spec} from the same or a higher layer`,
        );
      }
      if (rel !== path.join(folder, "index.js")) {
        problems.push(`${path.relative(REPO, file)} imports ${spec}: go through src/${folder}/index.ts`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test("an index.ts exports only what other folders use", () => {
  const users = [
    ...sourceFiles(SRC),
    ...sourceFiles(path.join(REPO, "test")),
    ...sourceFiles(path.join(REPO, "bench")),
  ];
  const problems: string[] = [];
  for (const folder of folders.filter((f) => f !== "cli")) {
    const index = path.join(SRC, folder, "index.ts");
    const text = fs.readFileSync(index, "utf8");
    const words = new Set<string>();
    for (const file of users) {
      if (file.startsWith(path.join(SRC, folder) + path.sep)) continue;
      const t = fs.readFileSync(file, "utf8");
      const names = specifiersOf(t).some(
        (s) =>
          s.startsWith(".") && path.resolve(path.dirname(file), s) === path.join(SRC, folder, "index.js"),
      );
      if (names) for (const w of t.match(/[A-Za-z_$][\w$]*/g) ?? []) words.add(w);
    }
    for (const m of text.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g)) {
      for (const raw of m[1]!.split(",")) {
        const name = raw
          .trim()
          .replace(/^type\s+/, "")
          .split(/\s+as\s+/)
          .pop()!;
        if (name && !words.has(name))
          problems.push(`src/${folder}/index.ts exports ${name}, which no other folder uses`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test("only src/cli/ prints or exits", () => {
  const fetcher = path.join(SRC, "build-secrets", "fetcher.ts");
  const problems: string[] = [];
  for (const file of sourceFiles(SRC)) {
    if (file.startsWith(path.join(SRC, "cli") + path.sep) || file === fetcher) continue;
    const code = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, "");
    for (const m of code.matchAll(/\bconsole\.\w+|\bprocess\.(?:exit|exitCode|stdout|stderr)\b/g)) {
      problems.push(`${path.relative(REPO, file)}: ${m[0]}`);
    }
  }
  assert.deepEqual(problems, []);
  // The fetcher is its own program, copied alone into the store: it may print, and so it must
  // import nothing but Node's own modules.
  const own = specifiersOf(fs.readFileSync(fetcher, "utf8")).filter((s) => !s.startsWith("node:"));
  assert.deepEqual(own, [], "src/build-secrets/fetcher.ts must import only node: modules");
});

test("the repository stands on its own: no citation of files outside it, a design file or an issue number", () => {
  const roots = ["src", "test", "bench", "nix", "docs"].map((d) => path.join(REPO, d));
  const files = [
    ...roots.flatMap((r) => sourceFiles(r, /\.(ts|mjs|nix|md|sh)$/)),
    path.join(REPO, "README.md"),
    path.join(REPO, "flake.nix"),
  ].filter((f) => !f.includes(`${path.sep}fixtures${path.sep}`));
  const cites =
    /\.\.\/shared\b|DESIGN(?:\.md| invariant)|\bissue\s+#?\d+|\(issue \d|\b[\w.-]+\/[\w.-]+#\d+|\b[\w-]+#\d{2,}\b/i;
  const problems: string[] = [];
  for (const file of files) {
    if (file === path.join(REPO, "test", "architecture.test.ts")) continue;
    fs.readFileSync(file, "utf8")
      .split("\n")
      .forEach((line, i) => {
        if (cites.test(line))
          problems.push(`${path.relative(REPO, file)}:${i + 1}: ${line.trim().slice(0, 100)}`);
      });
  }
  assert.deepEqual(problems, []);
});

test("every file docs/architecture.md names exists", () => {
  const doc = fs.readFileSync(path.join(REPO, "docs", "architecture.md"), "utf8");
  const named = new Set(
    [...doc.matchAll(/\b((?:src|nix|test|bench|docs)\/[\w./-]*[\w/])/g)].map((m) => m[1]!.replace(/\/$/, "")),
  );
  assert.ok(named.size >= 40, `only ${named.size} paths found: the pattern no longer matches the doc`);
  const missing = [...named].filter((p) => !fs.existsSync(path.join(REPO, p)));
  assert.deepEqual(missing, []);
});

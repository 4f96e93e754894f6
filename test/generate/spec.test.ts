/** generators.nix validation (src/generate/spec.ts): the JSON Nix gives, checked strictly. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseGenerators, parsePeriod, validationHash } from "../../src/generate/spec.js";
import { isError } from "../helpers.js";

const ADMIN = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
const HOST = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN";

function problemsOf(value: unknown): string[] {
  try {
    parseGenerators("generators.nix", value);
  } catch (e) {
    assert.ok(isError("GENERATORS")(e));
    const err = e as { problems: { message: string }[]; message: string };
    return err.problems.length > 0 ? err.problems.map((p) => p.message) : [err.message];
  }
  return [];
}

test("a valid file: defaults filled in, generators in dependency order", () => {
  const g = parseGenerators("generators.nix", {
    admins: [ADMIN],
    hosts: { web: HOST },
    generators: {
      z: { files: { a: {} }, script: "true", dependencies: ["m"] },
      m: { files: { b: { secret: false } }, script: "true", share: true },
      h: { files: { c: {} }, script: "true", hosts: ["web"], dependencies: ["m"], rotate: { every: "90d" } },
    },
  });
  assert.deepEqual(g.order, ["m", "h", "z"]);
  const h = g.generators.get("h")!;
  assert.equal(h.rotateEvery, 90 * 86400);
  assert.equal(h.timeout, 60);
  assert.deepEqual(h.files, [
    { name: "c", secret: true, owner: "root", group: "root", mode: "0400", neededForUsers: false },
  ]);
});

test("every problem reported at once, each naming its place", () => {
  const problems = problemsOf({
    admins: ["not-a-key"],
    hosts: { web: HOST, "bad host": HOST },
    generators: {
      "../x": { files: { a: {} }, script: "" },
      both: { files: { a: {} }, script: "", import: { command: ["pass"] } },
      neither: { files: { a: {} } },
      imp: { files: { a: {}, b: {} }, import: { command: ["pass", "show", "x"] } },
      typo: { files: { a: { sceret: true } }, script: "" },
      host: { files: { a: {} }, script: "", hosts: ["nowhere"] },
      rot: { files: { a: {} }, script: "", rotate: { every: "3 months" } },
      prompt: { files: { a: {} }, script: "", prompts: { p: { type: "secret" } } },
      dep: { files: { a: {} }, script: "", dependencies: ["missing"] },
      noFiles: { files: {}, script: "" },
    },
  });
  const expected = [
    /admins\[0\]: is not a recipient/,
    /hosts\.bad host: is not a valid host name/,
    /generators\.\.\.\/x: is not a valid generator name/,
    /generators\.both: needs exactly one of script and import\.command/,
    /generators\.neither: needs exactly one of script and import\.command/,
    /generators\.imp: an import\.command generator has exactly one file/,
    /generators\.typo\.files\.a\.sceret: unknown field/,
    /generators\.host\.hosts: names "nowhere", which is not in hosts/,
    /generators\.rot\.rotate\.every: "3 months" is not a period/,
    /generators\.prompt\.prompts\.p\.type: must be one of/,
    /generators\.dep\.dependencies: names "missing", which is not a generator/,
    /generators\.noFiles\.files: must be an attribute set naming at least one file/,
  ];
  for (const re of expected)
    assert.ok(
      problems.some((p) => re.test(p)),
      `${re} in:\n${problems.join("\n")}`,
    );
  assert.equal(problems.length, expected.length, problems.join("\n"));
});

test("dependencies: a cycle is named; a generator that is not per-host cannot read a per-host one", () => {
  assert.match(
    problemsOf({
      generators: {
        a: { files: { x: {} }, script: "", dependencies: ["b"] },
        b: { files: { x: {} }, script: "", dependencies: ["c"] },
        c: { files: { x: {} }, script: "", dependencies: ["a"] },
      },
    })[0]!,
    /the dependencies form a cycle: a -> b -> c -> a/,
  );
  const problems = problemsOf({
    admins: [ADMIN],
    hosts: { web: HOST, db: HOST },
    generators: {
      per: { files: { x: {} }, script: "", hosts: ["web"] },
      shared: { files: { x: {} }, script: "", share: true, dependencies: ["per"] },
      plain: { files: { x: {} }, script: "", dependencies: ["per"] },
      other: { files: { x: {} }, script: "", hosts: ["web", "db"], dependencies: ["per"] },
    },
  });
  assert.ok(
    problems.some((p) => /generators\.shared: is shared but depends on the per-host generator "per"/.test(p)),
  );
  assert.ok(
    problems.some((p) =>
      /generators\.plain: is not per-host but depends on the per-host generator "per"/.test(p),
    ),
  );
  assert.ok(
    problems.some((p) => /generators\.other: runs for host "db", but its dependency "per" does not/.test(p)),
  );
});

test("hostile names cannot become paths, and prototype keys are plain names", () => {
  for (const name of ["..", "a/b", ".hidden", "", "x".repeat(65), "__proto__\n"]) {
    assert.ok(
      problemsOf({ generators: { [name]: { files: { a: {} }, script: "" } } }).length > 0,
      JSON.stringify(name),
    );
    assert.ok(
      problemsOf({ generators: { g: { files: { [name]: {} }, script: "" } } }).length > 0,
      JSON.stringify(name),
    );
  }
  const g = parseGenerators(
    "generators.nix",
    JSON.parse(`{"admins":["${ADMIN}"],"generators":{"__proto__":{"files":{"a":{}},"script":""}}}`),
  );
  assert.ok(g.generators.has("__proto__"));
  assert.equal(({} as Record<string, unknown>).files, undefined);
});

test("periods and validation hashes", () => {
  assert.equal(parsePeriod("12h"), 12 * 3600);
  assert.equal(parsePeriod("2w"), 14 * 86400);
  for (const bad of ["0d", "90", "1y", "-1d", "1.5d"]) assert.equal(typeof parsePeriod(bad), "string", bad);
  // Key order does not matter; values do.
  assert.equal(validationHash({ a: 1, b: [2, "x"] }), validationHash({ b: [2, "x"], a: 1 }));
  assert.notEqual(validationHash({ a: 1 }), validationHash({ a: 2 }));
  assert.notEqual(validationHash(null), validationHash("null"));
});

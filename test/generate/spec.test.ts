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
    /generators\.both: needs exactly one of script, import\.command and builtin/,
    /generators\.neither: needs exactly one of script, import\.command and builtin/,
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
  for (const name of ["..", "a/b", ".hidden", "", "x".repeat(65), "__proto__\n", "a..b", "key.pub/x"]) {
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

test("file names with a dot inside (key.pub) are accepted, as nixseal gen and the module write them", () => {
  const g = parseGenerators("generators.nix", {
    admins: [ADMIN],
    generators: { k: { files: { key: {}, "key.pub": { secret: false }, "0.x_y-z": {} }, script: "" } },
  });
  assert.deepEqual(
    g.generators.get("k")!.files.map((f) => f.name),
    ["key", "key.pub", "0.x_y-z"],
  );
  // But two outputs cannot land on one path: a secret "a" is a.age.
  assert.match(
    problemsOf({
      admins: [ADMIN],
      generators: { c: { files: { a: {}, "a.age": { secret: false } }, script: "" } },
    })[0]!,
    /generators\.c\.files: two outputs would both be written as "a\.age"/,
  );
});

test("builtin: a kind name or one kind with options; defaults filled in", () => {
  const g = parseGenerators("generators.nix", {
    admins: [ADMIN],
    generators: {
      a: { files: { password: {} }, builtin: "password" },
      b: { files: { password: {} }, builtin: { password: { length: 12, charset: "hex" } } },
      c: { files: { hex: {} }, builtin: { hex: { bytes: 8 } } },
      d: { files: { key: {}, "key.pub": { secret: false } }, builtin: "age-key" },
      e: { files: { key: {}, "key.pub": { secret: false } }, builtin: { "ssh-ed25519": { comment: "web" } } },
      f: { files: { key: {}, "key.pub": { secret: false } }, builtin: { wireguard: {} } },
      g: { files: { hash: {} }, dependencies: ["a"], builtin: { hash: { sha512Crypt: "$in/a/password" } } },
      h: {
        files: { hash: {} },
        prompts: { pw: { type: "hidden" } },
        builtin: { hash: { sha512Crypt: "$prompts/pw", rounds: 10000 } },
      },
    },
  });
  const b = (n: string) => g.generators.get(n)!.builtin;
  assert.deepEqual(b("a"), { kind: "password", length: 32, charset: "alnum" });
  assert.deepEqual(b("b"), { kind: "password", length: 12, charset: "hex" });
  assert.deepEqual(b("c"), { kind: "hex", bytes: 8 });
  assert.deepEqual(b("d"), { kind: "age-key" });
  assert.deepEqual(b("e"), { kind: "ssh-ed25519", comment: "web" });
  assert.deepEqual(b("f"), { kind: "wireguard" });
  assert.deepEqual(b("g"), { kind: "hash", input: { dependency: "a", file: "password" }, rounds: 5000 });
  assert.deepEqual(b("h"), { kind: "hash", input: { prompt: "pw" }, rounds: 10000 });
  assert.equal(g.generators.get("a")!.script, null);
});

test("builtin: every misuse reported at once", () => {
  const problems = problemsOf({
    admins: [ADMIN],
    generators: {
      pw: { files: { password: {} }, builtin: "password" },
      kind: { files: { x: {} }, builtin: "passwd" },
      two: { files: { x: {} }, builtin: { password: {}, hex: {} } },
      opt: { files: { password: {} }, builtin: { password: { lenght: 3 } } },
      range: { files: { password: {} }, builtin: { password: { length: 0 } } },
      files: { files: { secret: {} }, builtin: "password" },
      both: { files: { password: {} }, builtin: "password", script: "true" },
      inputs: { files: { password: {} }, builtin: "password", runtimeInputs: ["sh"] },
      prompt: { files: { password: {} }, builtin: "password", prompts: { p: {} } },
      nodep: { files: { hash: {} }, builtin: { hash: { sha512Crypt: "$in/pw/password" } } },
      nofile: {
        files: { hash: {} },
        dependencies: ["pw"],
        builtin: { hash: { sha512Crypt: "$in/pw/nope" } },
      },
      noprompt: { files: { hash: {} }, builtin: { hash: { sha512Crypt: "$prompts/p" } } },
      badsrc: { files: { hash: {} }, builtin: { hash: { sha512Crypt: "/etc/shadow" } } },
    },
  });
  const expected = [
    /generators\.kind\.builtin: "passwd" is not a built-in kind/,
    /generators\.two\.builtin: must be a kind name or an attribute set with one kind/,
    /generators\.opt\.builtin\.password\.lenght: unknown field/,
    /generators\.range\.builtin\.password\.length: must be a whole number from 1 to 4096/,
    /generators\.files\.files: builtin password writes "password", not "secret"/,
    /generators\.both: needs exactly one of script, import\.command and builtin/,
    /generators\.inputs\.runtimeInputs: is set, but a builtin runs no program/,
    /generators\.prompt\.prompts\.p: is asked but the builtin does not read it/,
    /generators\.nodep\.builtin\.hash\.sha512Crypt: reads "pw", which dependencies does not list/,
    /generators\.nofile\.builtin\.hash\.sha512Crypt: reads "nope", which is not a file of "pw"/,
    /generators\.noprompt\.builtin\.hash\.sha512Crypt: reads prompt "p", which prompts does not declare/,
    /generators\.badsrc\.builtin\.hash\.sha512Crypt: "\/etc\/shadow" is not \$in\/<dependency>\/<file> or \$prompts\/<prompt>/,
  ];
  for (const re of expected)
    assert.ok(
      problems.some((p) => re.test(p)),
      `${re} in:\n${problems.join("\n")}`,
    );
  assert.equal(problems.length, expected.length, problems.join("\n"));
});

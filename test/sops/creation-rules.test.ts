import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { NixsealError } from "../../src/common/errors.js";
import {
  compileGoRegexp,
  findSopsConfig,
  loadSopsConfig,
  MAX_SOPS_CONFIG_BYTES,
  noMatchingRuleError,
  parseSopsConfig,
  pathForRules,
  ruleFor,
  type SopsConfig,
  validateSopsConfig,
} from "../../src/sops/creation-rules.js";
import { isError, REPO, tempDir } from "../helpers.js";

const FIXTURES = path.join(REPO, "test", "fixtures", "sops-rules");
const AGE_A = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
const AGE_B = "age12zlz6lvcdk6eqaewfylg35w0syh58sm7gh53q5vvn7hd7c6nngyseftjxl";
const AGE_C = "age1rgffpespcyjn0d8jglk7km9kfrfhdyev6camd3rck6pn8y47ze4sug23v3";

/** A config parsed as if it lived at /conf/.sops.yaml. */
function conf(text: string): SopsConfig {
  return parseSopsConfig(text, "/conf/.sops.yaml");
}

/** All messages of an error, including those collected by NixsealError.many. */
function messages(e: unknown): string {
  assert.ok(e instanceof NixsealError, `not a NixsealError: ${String(e)}`);
  return [e.message, ...e.problems.map((p) => p.message)].join("\n");
}

function throwsConfig(f: () => unknown, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof NixsealError, String(e));
    assert.equal(e.code, "SOPS_CONFIG");
    for (const p of [e, ...e.problems]) assert.ok(p.hint && p.hint.length > 0, `no hint: ${p.message}`);
    assert.match(messages(e), pattern);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Real-world files

test("sops-nix README example: anchors, one key group with pgp and age, first match wins", () => {
  const c = loadSopsConfig(path.join(FIXTURES, "sops-nix-readme.sops.yaml"));
  assert.deepEqual(c.warnings, [], "the keys: anchor list is not warned about");
  const r = ruleFor(c, path.join(FIXTURES, "secrets", "example.yaml"));
  assert.ok(r);
  assert.equal(r.index, 0);
  assert.equal(r.keyGroups.length, 1);
  assert.deepEqual(r.keyGroups[0]!.age, [AGE_B, AGE_C]);
  assert.deepEqual(r.keyGroups[0]!.other, [
    { type: "pgp", id: "2504791468b153b8a3963cc97ba53d1919c5dfd4" },
    { type: "pgp", id: "0fd60c8c3b664aceb1796ce02b318df330331003" },
  ]);
  // secrets/azmidi/x.yaml: rule 1's [^/]+ cannot span the slash, so rule 2 applies.
  const r2 = ruleFor(c, path.join(FIXTURES, "secrets", "azmidi", "x.json"));
  assert.equal(r2?.index, 1);
  assert.deepEqual(r2?.keyGroups[0]?.age, [AGE_B]);
  assert.equal(ruleFor(c, path.join(FIXTURES, "secrets", "example.txt")), null);
  assert.deepEqual(validateSopsConfig(c), []);
});

test("Mic92/dotfiles .sops.yaml: nine rules, pgp-only and mixed groups", () => {
  const c = loadSopsConfig(path.join(FIXTURES, "mic92-dotfiles.sops.yaml"));
  assert.equal(c.rules.length, 9);
  const eva = ruleFor(c, path.join(FIXTURES, "eva", "secrets", "wifi.yaml"));
  assert.equal(eva?.index, 2);
  assert.deepEqual(eva?.keyGroups[0]?.age, [
    "age1v8zjc47jmlqwefyu66s0d4ke98qr4vnuj3cpvs4z9npfdw833dxqwjrhzv",
  ]);
  const admins = ruleFor(c, path.join(FIXTURES, "secrets", "admins", "a.yaml"));
  assert.equal(admins?.index, 0);
  assert.deepEqual(admins?.keyGroups[0]?.age, []);
  assert.equal(admins?.keyGroups[0]?.other.length, 1);
  // secrets/x.yaml: rules 1-8 need another directory, so the last rule applies.
  const last = ruleFor(c, path.join(FIXTURES, "secrets", "x.yaml"));
  assert.equal(last?.index, 8);
  assert.equal(last?.keyGroups[0]?.other.length, 7);
  assert.deepEqual(validateSopsConfig(c), []);
});

test("sops' own config tests: complicated regexps pick the first matching rule", () => {
  // From getsops/sops config/config_test.go (sampleConfigWithComplicatedRegexp).
  const c = conf(`
creation_rules:
  - path_regex: "stage/dev/feature-.*"
    kms: dev-feature
  - path_regex: "stage/dev/.*"
    kms: dev
  - path_regex: "stage/staging/.*"
    kms: staging
  - path_regex: "stage/.*/.*"
    kms: default
`);
  for (const [file, kms] of [
    ["stage/prod/api.yml", "default"],
    ["stage/dev/feature-foo.yml", "dev-feature"],
    ["stage/dev/api.yml", "dev"],
  ] as const) {
    assert.deepEqual(ruleFor(c, `/conf/${file}`)?.keyGroups[0]?.other, [{ type: "kms", id: kms }]);
  }
  // sampleConfigWithInvalidComplicatedRegexp: Go rejects \K (and lookbehind).
  throwsConfig(
    () => ruleFor(conf('creation_rules:\n  - path_regex: "[ ]\\\\K(?<!\\\\d )(?="\n    kms: x\n'), "/conf/a"),
    /invalid escape sequence: `\\K`/,
  );
});

// ---------------------------------------------------------------------------------------------
// Matching paths

test("paths are matched relative to the config's directory, absolute when outside it", () => {
  // sops TestLoadConfigFileWithAmbiguousPath: config in /foo, path_regex foo/*
  const c = parseSopsConfig(`creation_rules:\n  - path_regex: foo/*\n    age: ${AGE_A}\n`, "/foo/.sops.yaml");
  assert.equal(pathForRules(c, "/foo/foo/bar"), "foo/bar");
  assert.ok(ruleFor(c, "/foo/foo/bar"));
  assert.equal(ruleFor(c, "/foo/fuu/bar"), null);
  assert.equal(pathForRules(c, "/elsewhere/x"), "/elsewhere/x");
  assert.equal(pathForRules(c, "/foo/a/../b/./c"), "b/c", "cleaned like filepath.Abs");
  const anchored = parseSopsConfig(
    `creation_rules:\n  - path_regex: ^secrets/\n    age: ${AGE_A}\n`,
    "/repo/.sops.yaml",
  );
  assert.ok(ruleFor(anchored, "/repo/secrets/a.yaml"));
  assert.equal(ruleFor(anchored, "/repo/sub/secrets/a.yaml"), null);
  assert.equal(ruleFor(anchored, "/other/secrets/a.yaml"), null, "outside: the absolute path is matched");
  // A config in / strips nothing (sops builds the prefix "//").
  const root = parseSopsConfig(`creation_rules:\n  - path_regex: ^etc/\n    age: ${AGE_A}\n`, "/.sops.yaml");
  assert.equal(pathForRules(root, "/etc/x"), "/etc/x");
  assert.equal(ruleFor(root, "/etc/x"), null);
});

test("relative file paths resolve against the current directory", () => {
  const c = parseSopsConfig(
    `creation_rules:\n  - path_regex: ^x/y\\.yaml$\n    age: ${AGE_A}\n`,
    path.join(process.cwd(), ".sops.yaml"),
  );
  assert.ok(ruleFor(c, "x/y.yaml"));
});

test("an empty path_regex is a catch-all; no creation_rules means no rule; no match is null", () => {
  const c = conf(`creation_rules:\n  - path_regex: ^a\n    age: ${AGE_A}\n  - age: ${AGE_B}\n`);
  assert.deepEqual(ruleFor(c, "/conf/zzz")?.keyGroups[0]?.age, [AGE_B]);
  for (const text of [
    "",
    "creation_rules:\n",
    "destination_rules:\n  - path_regex: ''\n    s3_bucket: b\n",
  ]) {
    const empty = conf(text);
    assert.equal(empty.hasCreationRules, false, JSON.stringify(text));
    assert.equal(ruleFor(empty, "/conf/x"), null);
  }
  const none = conf("creation_rules: []\n");
  assert.equal(none.hasCreationRules, true);
  assert.equal(ruleFor(none, "/conf/x"), null);
  const e = noMatchingRuleError(none, "/conf/sub/x.yaml");
  assert.equal(e.code, "SOPS_CONFIG");
  assert.match(e.message, /no matching creation rules found .* for sub\/x\.yaml/);
  assert.ok(e.hint);
});

test("a catch-all before other rules is warned about", () => {
  const c = conf(`creation_rules:\n  - age: ${AGE_A}\n  - path_regex: x\n    age: ${AGE_B}\n`);
  assert.match(c.warnings.map((w) => w.message).join("\n"), /never used/);
});

// ---------------------------------------------------------------------------------------------
// Keys

test("age: comma-separated string with whitespace and newlines, or a list", () => {
  const folded = conf(`creation_rules:\n  - age: >-\n      ${AGE_A},\n      ${AGE_B} ,\n\n      ${AGE_C},\n`);
  assert.deepEqual(ruleFor(folded, "/conf/x")?.keyGroups[0]?.age, [AGE_A, AGE_B, AGE_C]);
  const literal = conf(`creation_rules:\n  - age: |\n      ${AGE_A},\n      ${AGE_B}\n`);
  assert.deepEqual(ruleFor(literal, "/conf/x")?.keyGroups[0]?.age, [AGE_A, AGE_B]);
  const list = conf(`creation_rules:\n  - age:\n      - ${AGE_A}\n      - "${AGE_B}, ${AGE_C}"\n`);
  assert.deepEqual(ruleFor(list, "/conf/x")?.keyGroups[0]?.age, [AGE_A, AGE_B, AGE_C]);
  const ssh = conf(`creation_rules:\n  - age: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host"\n`);
  assert.deepEqual(ruleFor(ssh, "/conf/x")?.keyGroups[0]?.age, [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host",
  ]);
  assert.deepEqual(ruleFor(conf("creation_rules:\n  - age: ''\n"), "/conf/x")?.keyGroups, [
    { age: [], other: [] },
  ]);
});

test("age: wrong types and empty list entries are errors of the rule that applies", () => {
  const c = conf(
    `creation_rules:\n  - path_regex: ^bad\n    age: 42\n  - path_regex: ^list\n    age: [${AGE_A}, 7]\n  - path_regex: ^comma\n    age: ["${AGE_A},"]\n  - age: ${AGE_B}\n`,
  );
  throwsConfig(() => ruleFor(c, "/conf/bad"), /invalid age key configuration/);
  throwsConfig(() => ruleFor(c, "/conf/list"), /expected string in list/);
  throwsConfig(() => ruleFor(c, "/conf/comma"), /empty age recipient/);
  assert.deepEqual(ruleFor(c, "/conf/fine")?.keyGroups[0]?.age, [AGE_B], "other rules' errors do not matter");
  assert.equal(validateSopsConfig(c).length, 3, "no 'names no keys' on top of a rule's own errors");
});

test("key_groups: groups, merge, dedup, opaque keys of other types", () => {
  const c = conf(`
creation_rules:
  - path_regex: ""
    shamir_threshold: 2
    key_groups:
      - age:
          - ${AGE_A}
          - "${AGE_B}, ${AGE_A}"
        pgp:
          - "85D7 7543 B3D6 24B6 3CEA  9E6D BC17 301B 491B 3F21"
        kms:
          - arn: arn:aws:kms:us-east-1:1:key/k
            role: arn:aws:iam::1:role/r
            context: {a: b}
            aws_profile: p
      - merge:
          - age: [${AGE_C}]
            hc_vault: [https://vault.example.com:8200/v1/transit/keys/k]
        gcp_kms:
          - resource_id: projects/p/locations/global/keyRings/r/cryptoKeys/k
        azure_keyvault:
          - vaultUrl: https://v.vault.azure.net
            key: k
            version: "1"
        hckms:
          - key_id: tr-west-1:abc
        age: [${AGE_C}]
`);
  const r = ruleFor(c, "/conf/x");
  assert.ok(r);
  assert.equal(r.shamirThreshold, 2);
  assert.equal(r.keyGroups.length, 2);
  assert.deepEqual(r.keyGroups[0]!.age, [AGE_A, AGE_B], "deduplicated, first kept");
  assert.deepEqual(r.keyGroups[0]!.other, [
    { type: "pgp", id: "85D77543B3D624B63CEA9E6DBC17301B491B3F21" },
    { type: "kms", id: "arn:aws:kms:us-east-1:1:key/k+arn:aws:iam::1:role/r" },
  ]);
  assert.deepEqual(r.keyGroups[1]!.age, [AGE_C], "merged first, duplicate dropped");
  assert.deepEqual(
    r.keyGroups[1]!.other.map((k) => k.type),
    ["hc_vault", "gcp_kms", "hckms", "azure_keyvault"],
  );
  assert.equal(r.keyGroups[1]!.other[3]!.id, "https://v.vault.azure.net/keys/k/1");
  assert.deepEqual(c.warnings, []);
  assert.deepEqual(validateSopsConfig(c), []);
});

test("key_groups: a stray '-' (as sops-nix users write it) gives two groups; flat keys beside key_groups are ignored with a warning", () => {
  const c = conf(
    `creation_rules:\n  - age: ${AGE_C}\n    key_groups:\n    - pgp:\n      - ABCD\n    - age:\n      - ${AGE_A}\n`,
  );
  const r = ruleFor(c, "/conf/x");
  assert.equal(r?.keyGroups.length, 2);
  assert.deepEqual(r?.keyGroups[1]?.age, [AGE_A]);
  assert.ok(!r?.keyGroups.some((g) => g.age.includes(AGE_C)));
  assert.match(c.warnings.map((w) => w.message).join("\n"), /age ignored because key_groups is set/);
});

test("flat keys of every type are kept as opaque strings", () => {
  const r = ruleFor(
    conf(`creation_rules:
  - pgp: "AAAA, BBBB"
    kms: "arn:1,arn:2+role"
    gcp_kms: [projects/p/k]
    azure_keyvault: https://v.vault.azure.net/keys/k/1
    hc_vault_transit_uri: https://vault:8200/v1/transit/keys/k
    hckms: [tr-west-1:abc]
    aws_profile: prof
    age: ${AGE_A}
`),
    "/conf/x",
  );
  assert.deepEqual(r?.keyGroups, [
    {
      age: [AGE_A],
      other: [
        { type: "pgp", id: "AAAA" },
        { type: "pgp", id: "BBBB" },
        { type: "kms", id: "arn:1" },
        { type: "kms", id: "arn:2+role" },
        { type: "gcp_kms", id: "projects/p/k" },
        { type: "hckms", id: "tr-west-1:abc" },
        { type: "azure_keyvault", id: "https://v.vault.azure.net/keys/k/1" },
        { type: "hc_vault", id: "https://vault:8200/v1/transit/keys/k" },
      ],
    },
  ]);
});

// ---------------------------------------------------------------------------------------------
// Options

test("every encryption option, mac_only_encrypted and shamir_threshold are read", () => {
  for (const [key, prop] of [
    ["unencrypted_suffix", "unencryptedSuffix"],
    ["encrypted_suffix", "encryptedSuffix"],
    ["unencrypted_regex", "unencryptedRegex"],
    ["encrypted_regex", "encryptedRegex"],
    ["unencrypted_comment_regex", "unencryptedCommentRegex"],
    ["encrypted_comment_regex", "encryptedCommentRegex"],
  ] as const) {
    const r = ruleFor(conf(`creation_rules:\n  - age: ${AGE_A}\n    ${key}: "^(data|x)$"\n`), "/conf/x");
    assert.equal(r?.[prop], "^(data|x)$", key);
  }
  const r = ruleFor(
    conf(`creation_rules:\n  - age: ${AGE_A}\n    mac_only_encrypted: true\n    shamir_threshold: 3\n`),
    "/conf/x",
  );
  assert.equal(r?.macOnlyEncrypted, true);
  assert.equal(r?.shamirThreshold, 3);
  const d = ruleFor(conf(`creation_rules:\n  - age: ${AGE_A}\n`), "/conf/x");
  assert.equal(d?.macOnlyEncrypted, false);
  assert.equal(d?.shamirThreshold, 0);
  assert.equal(d?.unencryptedSuffix, "", "the _unencrypted default is the store's business, not the rule's");
  // yaml.v3 accepts YAML 1.1 booleans for a Go bool field.
  assert.equal(
    ruleFor(conf(`creation_rules:\n  - mac_only_encrypted: yes\n`), "/conf/x")?.macOnlyEncrypted,
    true,
  );
});

test("more than one suffix/regex option in the applying rule is refused, as sops does", () => {
  const c = conf(
    `creation_rules:\n  - path_regex: ^a\n    age: ${AGE_A}\n    unencrypted_suffix: _u\n    encrypted_regex: ^x$\n  - age: ${AGE_A}\n`,
  );
  throwsConfig(
    () => ruleFor(c, "/conf/a"),
    /cannot use more than one of .* \(found unencrypted_suffix, encrypted_regex\)/,
  );
  assert.ok(ruleFor(c, "/conf/b"));
});

test("stores options are read with sops' defaults", () => {
  assert.deepEqual(conf("").stores, { yamlIndent: 0, jsonIndent: -1, jsonBinaryIndent: -1 });
  assert.deepEqual(conf("stores:\n  yaml:\n    indent: 2\n  json:\n    indent: 4\n").stores, {
    yamlIndent: 2,
    jsonIndent: 4,
    jsonBinaryIndent: -1,
  });
});

test("validateSopsConfig lists what sops would only notice when a rule is used", () => {
  const c = conf(`creation_rules:
  - path_regex: "(?=x)"
    age: ${AGE_A}
  - path_regex: ^b
    encrypted_regex: "a**"
    age: ${AGE_A}
  - path_regex: ^c
    shamir_threshold: 5
    key_groups:
      - age: [${AGE_A}]
      - age: [${AGE_B}]
  - path_regex: ^d
`);
  const problems = validateSopsConfig(c).map((p) => p.message);
  assert.equal(problems.length, 4, problems.join("\n"));
  assert.match(problems[0]!, /path_regex of creation rule 1 .*invalid or unsupported Perl syntax: `\(\?=`/);
  assert.match(problems[1]!, /encrypted_regex of creation rule 2 .*nested repetition/);
  assert.match(problems[2]!, /shamir_threshold 5 does not fit 2 key group/);
  assert.match(problems[3]!, /creation rule 4 names no keys/);
});

// ---------------------------------------------------------------------------------------------
// Bad and hostile input

test("unknown keys are warnings with a hint (sops ignores them)", () => {
  const c = conf(
    `creation_rule:\n  - age: x\ncreation_rules:\n  - path-regex: ^a\n    age: ${AGE_A}\n    encrypted_regexp: x\n    key_groups:\n      - agee: [${AGE_A}]\n`,
  );
  const w = c.warnings;
  assert.equal(w.length, 5, w.map((x) => x.message).join("\n"));
  assert.match(w[0]!.message, /\.sops\.yaml:1: unknown key "creation_rule" in the top level/);
  assert.equal(w[0]!.hint, "did you mean creation_rules?");
  assert.equal(w[1]!.hint, "did you mean path_regex?");
  assert.equal(w[2]!.hint, "did you mean encrypted_regex?");
  assert.equal(w[3]!.hint, "did you mean age?");
  assert.match(w[4]!.message, /age ignored because key_groups is set/);
  // The misspelt path-regex means the rule is a catch-all, exactly as in sops.
  assert.ok(ruleFor(c, "/conf/zzz"));
});

test("structural type errors are load errors, all reported", () => {
  assert.throws(
    () =>
      conf(
        "creation_rules:\n  - shamir_threshold: two\n    mac_only_encrypted: maybe\n    key_groups: {age: x}\n    path_regex: [a]\n",
      ),
    (e: unknown) => {
      assert.ok(e instanceof NixsealError);
      assert.equal(e.code, "SOPS_CONFIG");
      const all = messages(e);
      assert.equal(e.problems.length, 4, all);
      assert.match(all, /:2: shamir_threshold must be an integer/);
      assert.match(all, /mac_only_encrypted must be true or false/);
      assert.match(all, /key_groups must be a list, not a mapping/);
      assert.match(all, /path_regex must be a string, not a list/);
      return true;
    },
  );
  throwsConfig(() => conf("creation_rules: 3\n"), /creation_rules must be a list/);
  throwsConfig(() => conf("- a\n- b\n"), /the top level must be a mapping/);
  throwsConfig(() => conf("creation_rules:\n  - key_groups:\n      - age: x\n"), /age must be a list/);
});

test("duplicate keys, invalid YAML, __proto__ keys, merge keys", () => {
  throwsConfig(
    () => conf("creation_rules:\n  - path_regex: a\n    path_regex: b\n"),
    /\.sops\.yaml:3: a key appears twice/,
  );
  throwsConfig(() => conf("creation_rules: [\n"), /invalid YAML/);
  // __proto__ is an unknown key like any other: no prototype pollution.
  const p = conf(
    `__proto__: {polluted: true}\ncreation_rules:\n  - __proto__: {age: x}\n    age: ${AGE_A}\n`,
  );
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(ruleFor(p, "/conf/x")?.keyGroups[0]?.age, [AGE_A]);
  assert.equal(p.warnings.length, 2);
  // << merge keys, as yaml.v3 applies them; explicit keys win.
  const m = conf(
    `base: &base\n  age: ${AGE_A}\n  mac_only_encrypted: true\ncreation_rules:\n  - <<: *base\n    age: ${AGE_B}\n`,
  );
  const r = ruleFor(m, "/conf/x");
  assert.deepEqual(r?.keyGroups[0]?.age, [AGE_B]);
  assert.equal(r?.macOnlyEncrypted, true);
});

test("alias bombs and huge files are refused", () => {
  let bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (let i = 1; i < 9; i++)
    bomb += `a${i}: &a${i} [*a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}]\n`;
  bomb += "creation_rules: []\n";
  throwsConfig(() => conf(bomb), /too large or too deeply nested/);
  throwsConfig(() => conf(`${"[".repeat(5000)}${"]".repeat(5000)}`), /nested|invalid YAML/);
  const { dir, cleanup } = tempDir();
  try {
    const big = path.join(dir, ".sops.yaml");
    fs.writeFileSync(big, `# ${"x".repeat(MAX_SOPS_CONFIG_BYTES)}\ncreation_rules: []\n`);
    throwsConfig(() => loadSopsConfig(big), /larger than/);
    assert.throws(() => loadSopsConfig(path.join(dir, "missing.yaml")), isError("IO", /no such file/));
  } finally {
    cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// Finding the file

test("findSopsConfig walks up, ignores .sops.yml with a warning, honours an override", () => {
  const { dir, cleanup } = tempDir();
  try {
    const deep = path.join(dir, "a", "b", "c");
    fs.mkdirSync(deep, { recursive: true });
    fs.writeFileSync(path.join(dir, ".sops.yaml"), "creation_rules: []\n");
    assert.deepEqual(findSopsConfig(deep), { file: path.join(dir, ".sops.yaml"), warning: null });
    fs.writeFileSync(path.join(dir, "a", ".sops.yml"), "creation_rules: []\n");
    const found = findSopsConfig(deep);
    assert.equal(found.file, path.join(dir, ".sops.yaml"));
    assert.match(
      found.warning ?? "",
      /ignoring .*a\/\.sops\.yml: the config file must be called \.sops\.yaml; using/,
    );
    fs.writeFileSync(path.join(dir, "a", "b", ".sops.yaml"), "creation_rules: []\n");
    assert.deepEqual(findSopsConfig(deep), { file: path.join(dir, "a", "b", ".sops.yaml"), warning: null });
    assert.deepEqual(findSopsConfig(deep, "rel/custom.yaml"), {
      file: path.resolve("rel/custom.yaml"),
      warning: null,
    });
    assert.equal(
      findSopsConfig(deep, "").file,
      path.join(dir, "a", "b", ".sops.yaml"),
      "empty override = none",
    );
    // Nothing found: null, with the .sops.yml warning when one was seen.
    const lonely = path.join(dir, "lonely");
    fs.mkdirSync(lonely);
    fs.writeFileSync(path.join(lonely, ".sops.yml"), "");
    fs.rmSync(path.join(dir, ".sops.yaml"));
    const none = findSopsConfig(lonely);
    if (findSopsConfig(dir).file === null) {
      assert.equal(none.file, null);
      assert.match(none.warning ?? "", /ignoring .*lonely\/\.sops\.yml/);
    }
  } finally {
    cleanup();
  }
});

test("a loaded config matches relative to its own directory", () => {
  const { dir, cleanup } = tempDir();
  try {
    fs.writeFileSync(
      path.join(dir, ".sops.yaml"),
      `creation_rules:\n  - path_regex: ^secrets/[^/]+\\.yaml$\n    age: ${AGE_A}\n`,
    );
    const c = loadSopsConfig(path.join(dir, ".sops.yaml"));
    assert.equal(c.dir, dir);
    assert.ok(ruleFor(c, path.join(dir, "secrets", "x.yaml")));
    assert.equal(ruleFor(c, path.join(dir, "secrets", "deep", "x.yaml")), null);
  } finally {
    cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// Go regular expressions

test("Go regexps: semantics that differ from JavaScript's RegExp", () => {
  const m = (re: string, s: string) => compileGoRegexp(re).test(s);
  assert.ok(m("a.c", "a\rc"), ". matches \\r in Go");
  assert.ok(!m("a.c", "a\nc"));
  assert.ok(m("(?s)a.c", "a\nc"));
  assert.ok(!m("a$", "a\n"), "$ is end of text");
  assert.ok(m("(?m)a$", "a\nb"));
  assert.ok(!m("(?m)a$", "a\rb"), "only \\n ends a line in Go");
  assert.ok(m("(?m)^b", "a\nb"));
  assert.ok(!m("^b", "a\nb"));
  assert.ok(!m("\\s", "\u00a0"), "\\s is ASCII in Go");
  assert.ok(!m("\\s", "\v"), "\\s has no \\v in Go");
  assert.ok(m("[[:space:]]", "\v"));
  assert.ok(!m("\\w", "é"));
  assert.ok(m("\\pL", "é"));
  assert.ok(m("\\p{Greek}", "λ"));
  assert.ok(!m("\\P{Greek}", "λ"));
  assert.ok(m("[^\\S]", " "));
  assert.ok(!m("[^\\S]", "x"));
  assert.ok(m("[\\d\\-x]", "-"));
  assert.ok(m("[]a]", "]"));
  assert.ok(m("[a-]", "-"));
  assert.ok(m("[[:^alpha:]]", "1"));
  assert.ok(!m("[[:^alpha:]]", "a"));
  assert.ok(m("\\Qa.b*\\E+", "a.b**"));
  assert.ok(!m("\\Qa.b\\E", "axb"));
  assert.ok(m("\\x41\\x{42}\\103", "ABC"));
  assert.ok(m("(?i)SECRETS/", "secrets/x"));
  assert.ok(m("(?P<name>ab)+c", "ababc"));
  assert.ok(m("(?<name>ab)c", "abc"));
  assert.ok(m("a{,2}", "a{,2}"), "{,n} is literal in Go");
  assert.ok(m("a{2,3}$", "aaa"));
  assert.ok(m("x{", "x{"));
  assert.ok(m("\\Aab\\z", "ab"));
  assert.ok(!m("\\Aab\\z", "abc"));
  assert.ok(m("\\bfoo\\b", "a foo b"));
  assert.ok(m("a|", "zzz"), "empty alternative matches");
  assert.ok(m("^*a", "a"), "Go allows repeating an assertion");
  assert.ok(m("\\.sops\\.ya?ml$", "x/.sops.yml"));
  assert.ok(m("\\/\\#\\:\\ ", "/#: "), "escaped punctuation is literal");
});

test("Go regexps: syntax Go has and JavaScript lacks works as in Go", () => {
  const m = (re: string, s: string) => compileGoRegexp(re).test(s);
  // Flags anywhere, scoped, and turned off again.
  assert.ok(m("^a(?i)b$", "aB"));
  assert.ok(!m("^a(?i)b$", "AB"), "(?i) applies from where it stands");
  assert.ok(m("^(?i:secret)_key$", "SECRET_key"));
  assert.ok(!m("^(?i:secret)_key$", "SECRET_KEY"), "(?i:...) applies inside the group only");
  assert.ok(m("^(?i)a(?-i)b$", "Ab"));
  assert.ok(!m("^(?i)a(?-i)b$", "AB"));
  assert.ok(m("a(?s:.)b", "a\nb"));
  assert.ok(!m("a.b", "a\nb"));
  assert.ok(m("(?U)^a+$", "aaa"), "ungreedy changes what is captured, not whether it matches");
  // \z is the end of the text; so is $ without (?m): no newline before it.
  assert.ok(m("ab\\z", "ab"));
  assert.ok(!m("ab\\z", "ab\n"));
  // POSIX classes, inside brackets.
  assert.ok(m("^[[:alpha:]]+$", "abcXYZ"));
  assert.ok(!m("^[[:alpha:]]+$", "abc1"));
  assert.ok(m("^[[:alnum:]_-]+$", "db_pass-1"));
  // Named groups, both spellings.
  assert.ok(m("^(?P<kind>db|api)_password$", "db_password"));
  assert.ok(m("^(?<kind>db|api)_password$", "api_password"));
  assert.ok(!m("(?P<kind>db|api)_password", "web_password"));
  // Perl mode: a '-' between ranges is literal.
  assert.ok(m("^[a-b-c]$", "-"));
  assert.ok(m("^[a-b-c]$", "c"));
});

test("Go regexps: patterns Go refuses are refused with Go's reason", () => {
  for (const [re, why] of [
    ["(?=a)", /invalid or unsupported Perl syntax/],
    ["(?<!a)b", /invalid named capture/],
    ["(?P=x)", /invalid or unsupported Perl syntax/],
    ["(a)\\1", /invalid escape sequence/],
    ["\\K", /invalid escape sequence/],
    ["\\8", /invalid escape sequence/],
    ["\\C", /invalid escape sequence/],
    ["\\Z", /invalid escape sequence/],
    ["a**", /invalid nested repetition operator/],
    ["a{2}{3}", /invalid nested repetition operator/],
    ["*a", /missing argument to repetition operator/],
    ["a|+", /missing argument to repetition operator/],
    ["a{1001}", /invalid repeat count/],
    ["(a{100}){100}", /invalid repeat count/],
    ["a{3,2}", /invalid repeat count/],
    ["[z-a]", /invalid character class range/],
    ["[[:foo:]]", /invalid character class range/],
    ["\\p{Klingon}", /invalid character class range/],
    ["[abc", /missing closing \]/],
    ["(abc", /missing closing \)/],
    ["abc)", /unexpected \)/],
    ["a\\", /trailing backslash/],
    ["(?P<n>a)(?P<n>b)", /duplicate capture group name/],
    ["\\x{110000}", /invalid escape sequence/],
  ] as const) {
    assert.throws(() => compileGoRegexp(re), isError("SOPS_CONFIG", why), re);
  }
  assert.throws(
    () => compileGoRegexp("(?=a)", "encrypted_regex", "SOPS_METADATA"),
    isError("SOPS_METADATA", /^cannot compile encrypted_regex "\(\?=a\)": /, /RE2/),
  );
});

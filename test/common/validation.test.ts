/**
 * The shared rules (src/common/validation.ts) as the manifest and the build-secrets policy apply
 * them: both accept and refuse exactly what test/common/shared-rules.ts says (the Nix modules
 * are held to the same table in test/nix/rules.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePolicy } from "../../src/build-secrets/policy.js";
import { duplicateKey } from "../../src/common/validation.js";
import { parseManifest, validateManifest } from "../../src/install/manifest.js";
import { isError } from "../helpers.js";
import { type Cases, MODES, PATHS, PRINCIPALS, UNITS } from "./shared-rules.js";

function manifest(entry: Record<string, unknown> = {}, top: Record<string, unknown> = {}) {
  return {
    version: 1,
    secretsDir: "/run/nixseal/secrets",
    generationsDir: "/run/nixseal/generations",
    keepGenerations: 1,
    identities: [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }],
    secrets: [
      {
        name: "s",
        file: "/nix/store/aaaa-s.age",
        format: "age",
        key: null,
        owner: "root",
        group: "root",
        mode: "0400",
        path: null,
        restartUnits: [],
        reloadUnits: [],
        ...entry,
      },
    ],
    templates: [],
    placeholders: {},
    ...top,
  };
}

function policy(secret: Record<string, unknown> = {}, top: Record<string, unknown> = {}) {
  return {
    version: 1,
    identities: [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }],
    secrets: {
      token: {
        file: "/var/lib/nixseal/token.age",
        allowedUrlPrefixes: ["https://mods.example.com/api/"],
        fetcherStorePaths: ["/nix/store/aaaa-fetcher/bin/fetch"],
        ...secret,
      },
    },
    ...top,
  };
}

/** The problem messages of a manifest or policy ([] = valid). */
function problems(run: () => unknown): string[] {
  try {
    run();
    return [];
  } catch (e) {
    const list = (e as { problems?: { message: string }[] }).problems ?? [];
    return list.length > 0 ? list.map((p) => p.message) : [(e as Error).message];
  }
}

function check(cases: Cases, label: string, place: RegExp, run: (v: string) => unknown): void {
  for (const [v, ok] of cases) {
    const list = problems(() => run(v));
    if (ok) assert.deepEqual(list, [], `${label} ${JSON.stringify(v)} is accepted`);
    else {
      assert.equal(list.length, 1, `${label} ${JSON.stringify(v)} is refused once: ${list.join("\n")}`);
      assert.match(list[0]!, place, `${label} ${JSON.stringify(v)}`);
    }
  }
}

test("user and group names and ids: the manifest's owner and group, the policy's allowedUsers", () => {
  check(PRINCIPALS, "manifest owner", /secrets\[0\]\.owner: /, (v) =>
    validateManifest(manifest({ owner: v }), "m.json"),
  );
  check(PRINCIPALS, "manifest group", /secrets\[0\]\.group: /, (v) =>
    validateManifest(manifest({ group: v }), "m.json"),
  );
  check(PRINCIPALS, "policy allowedUsers", /allowedUsers\[0\]: /, (v) =>
    parsePolicy(JSON.stringify(policy({ allowedUsers: [v] })), "p.json"),
  );
});

test("paths: the manifest's paths and the policy's paths follow one rule", () => {
  check(PATHS, "manifest path", /secrets\[0\]\.path: /, (v) =>
    validateManifest(manifest({ path: v }), "m.json"),
  );
  check(PATHS, "manifest credstoreDir", /credstoreDir: /, (v) =>
    validateManifest(manifest({}, { credstoreDir: v }), "m.json"),
  );
  check(PATHS, "policy file", /secrets\."token"\.file: /, (v) =>
    parsePolicy(JSON.stringify(policy({ file: v })), "p.json"),
  );
  check(PATHS, "policy runtimeDir", /runtimeDir: /, (v) =>
    parsePolicy(JSON.stringify(policy({}, { runtimeDir: v })), "p.json"),
  );
});

test("modes and unit names", () => {
  check(MODES, "manifest mode", /secrets\[0\]\.mode: /, (v) =>
    validateManifest(manifest({ mode: v }), "m.json"),
  );
  check(UNITS, "manifest restartUnits", /secrets\[0\]\.restartUnits\[0\]: /, (v) =>
    validateManifest(manifest({ restartUnits: [v] }), "m.json"),
  );
});

test("duplicate keys: refused with their place, in the manifest and the policy", () => {
  const text = JSON.stringify(manifest());
  const dupOwner = text.replace('"owner":"root"', '"owner":"root","own\\u0065r":"postgres"');
  assert.throws(
    () => parseManifest(dupOwner, "m.json"),
    isError("MANIFEST", /^m\.json: secrets\[0\]\.owner: duplicate key "owner"$/, /JSON readers disagree/),
  );
  assert.throws(
    () => parseManifest(`{"version":1,${text.slice(1)}`, "m.json"),
    isError("MANIFEST", /^m\.json: version: duplicate key "version"$/),
  );
  const ph = JSON.stringify(manifest({}, { placeholders: { "db/password": "x".repeat(8) } })).replace(
    '"db/password":"xxxxxxxx"',
    '"db/password":"xxxxxxxx","db/password":"yyyyyyyy"',
  );
  assert.throws(
    () => parseManifest(ph, "m.json"),
    isError("MANIFEST", /placeholders\["db\/password"\]: duplicate key "db\/password"/),
  );
  const pol = JSON.stringify(policy()).replace('"file":', '"file":"/a","file":');
  assert.throws(
    () => parsePolicy(pol, "p.json"),
    isError("BUILD_POLICY", /^p\.json: secrets\.token\.file: duplicate key "file"$/),
  );
});

test("duplicate keys: the same key in different objects, and braces or quotes inside strings, are fine", () => {
  const m = manifest({}, {});
  m.secrets.push({ ...m.secrets[0]!, name: "t", path: null });
  (m.secrets[0] as Record<string, unknown>).name = 's"{"name":1,';
  assert.equal(duplicateKey(JSON.stringify(m)), null);
  assert.equal(duplicateKey('[{"a":1},{"a":2},{"b":{"a":1}},"{\\"a\\":1,\\"a\\":2}"]'), null);
  assert.deepEqual(duplicateKey('{"a":[{"b":1},{"c":1,"c":2}]}'), { at: "a[1].c", key: "c" });
});

test("duplicate keys: counting keys first (the parsed value given) finds exactly what the full scan finds", () => {
  const texts = [
    `{"a":1,"b":{"a":2}}`,
    `{"a":1,"a":2}`,
    '{ "a" : 1 ,\n "a"\t: 2 }',
    String.raw`{"k\\":1,"k\\":2}`,
    String.raw`{"k\\\"":1,"x":"a\\","y":"\\\"c\":\"d"}`,
    // Escaped colons in values: the text has fewer ":" characters than the parsed strings.
    String.raw`{"u":"\u003a","a":{"v":"\u003a:","v":1}}`,
    `{"__proto__":1,"__proto__":2}`,
    `[[[{"a":[1,{"b":1,"b":2}]}]]]`,
    String.raw`{"s":"{\"a\":1,\"a\":2}"}`,
  ];
  for (const text of texts) {
    assert.deepEqual(duplicateKey(text, JSON.parse(text)), duplicateKey(text), text);
  }
  assert.deepEqual(duplicateKey('{"a":1,"a":2}', { a: 2 }), { at: "a", key: "a" });
  assert.equal(duplicateKey('{"a":1,"b":2}', { a: 1, b: 2 }), null);
});

test("duplicate keys: linear time on hostile input", () => {
  const many = `{${Array.from({ length: 200_000 }, (_, i) => `"k${i}":${i}`).join(",")},"k0":1}`;
  const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
  const escapes = `{"${"\\u0061".repeat(200_000)}":1}`;
  const t0 = performance.now();
  assert.deepEqual(duplicateKey(many), { at: "k0", key: "k0" });
  assert.equal(duplicateKey(deep), null);
  assert.equal(duplicateKey(escapes), null);
  assert.ok(performance.now() - t0 < 3000, `took ${performance.now() - t0} ms`);
});

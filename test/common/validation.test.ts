/**
 * The shared rules (src/common/validation.ts) as the manifest and the build-secrets policy apply
 * them: both accept and refuse exactly what test/common/shared-rules.ts says (the Nix modules
 * are held to the same table in test/nix/rules.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePolicy } from "../../src/build-secrets/policy.js";
import { validateManifest } from "../../src/install/manifest.js";
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

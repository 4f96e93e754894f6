/**
 * nix/modules/build-secrets.nix evaluated by the real Nix with nixpkgs' lib (NIXPKGS_LIB): the
 * policy it writes passes the hook's own validation, nix.conf gets the sandbox and both hooks,
 * and misconfigurations fail with assertions.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { parsePolicy } from "../../src/build-secrets/policy.js";
import { REPO, tempDir, which } from "../helpers.js";
import { nixEval } from "../nix/eval.js";

const NIXPKGS_LIB = process.env.NIXPKGS_LIB;
const SKIP = !which("nix-instantiate")
  ? "needs nix-instantiate"
  : !NIXPKGS_LIB
    ? "needs NIXPKGS_LIB (nixpkgs's lib folder, or a checkout of nixpkgs.lib)"
    : false;

const FETCHER = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.js";
const NODE = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nodejs/bin/node";

interface Evaluated {
  failedAssertions: string[];
  settings: Record<string, unknown>;
  policy: { text: string; mode: string } | null;
  tmpfiles: string[];
  sweep: string | null;
  preHookText: string | null;
  postHookText: string | null;
}

function evaluate(config: object): Evaluated {
  const libDir = fs.existsSync(path.join(NIXPKGS_LIB!, "lib", "default.nix"))
    ? path.join(NIXPKGS_LIB!, "lib")
    : NIXPKGS_LIB!;
  const r = spawnSync(
    "nix-instantiate",
    [
      "--eval",
      "--strict",
      "--json",
      "--read-write-mode",
      path.join(REPO, "test", "build-secrets", "nix", "eval-module.nix"),
      "--arg",
      "nixpkgsLib",
      libDir,
      "--arg",
      "module",
      path.join(REPO, "nix", "modules", "build-secrets.nix"),
      "--argstr",
      "configJson",
      JSON.stringify(config),
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Evaluated;
}

const SECRET = {
  file: "/var/lib/nixseal/mods-token.age",
  allowedUrlPrefixes: ["https://mods.example.com/api/"],
  allowedUsers: ["alice"],
};

function config(extra: object = {}): object {
  return {
    nixseal: {
      buildSecrets: { "mods-token": SECRET, approval: { ...SECRET, prompt: true, allowedUsers: [] } },
      buildSecretsSettings: {
        fetcher: FETCHER,
        interpreter: NODE,
        identities: [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }],
      },
    },
    ...extra,
  };
}

test("the module writes a policy the hook accepts, and sets the sandbox and both hooks", {
  skip: SKIP,
}, () => {
  const e = evaluate(config());
  assert.deepEqual(e.failedAssertions, []);
  assert.equal(e.settings.sandbox, true);
  assert.equal(e.policy?.mode, "0644", "a copied file, not a symlink into the store");
  const { dir, cleanup } = tempDir();
  try {
    const policy = parsePolicy(e.policy!.text, "/etc/nixseal/build-secrets.json");
    assert.deepEqual(policy.interpreters, [NODE]);
    assert.deepEqual(policy.identities, [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }]);
    const s = policy.secrets.get("mods-token")!;
    assert.deepEqual(s.fetcherStorePaths, [FETCHER]);
    assert.deepEqual(s.allowedUsers, ["alice"]);
    assert.equal(s.allowedUrlPrefixes[0]!.href, "https://mods.example.com/api/");
    assert.equal(policy.secrets.get("approval")!.prompt, true);
    // The hook scripts are valid sh and call the hook with the policy.
    for (const [kind, text] of [
      ["pre", e.preHookText],
      ["post", e.postHookText],
    ] as const) {
      const file = path.join(dir, kind);
      fs.writeFileSync(file, text!);
      const r = spawnSync("sh", ["-n", file], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(text!, /build-hook .*--policy \/etc\/nixseal\/build-secrets\.json/);
    }
    assert.match(e.preHookText!, /-qF '\("nixsealSecret",' "\$1" \|\| exit 0/);
    assert.match(e.postHookText!, /-qF '\("nixsealSecret",' "\$DRV_PATH" \|\| exit 0/);
  } finally {
    cleanup();
  }
  assert.deepEqual(e.tmpfiles, ["d /run/nixseal/agents 1733 root root -"]);
  assert.match(e.sweep!, /build-hook --sweep --policy \/etc\/nixseal\/build-secrets\.json$/);
});

test("no build secrets: nothing is set", { skip: SKIP }, () => {
  const e = evaluate({});
  assert.deepEqual(e.settings, {});
  assert.equal(e.policy, null);
});

test("misconfigurations fail as assertions with a clear message", { skip: SKIP }, () => {
  const off = evaluate(config({ nix: { settings: { sandbox: false } } }));
  assert.ok(
    off.failedAssertions.some((m) => /needs nix\.settings\.sandbox = true/.test(m)),
    off.failedAssertions.join("\n"),
  );
  const noFetcher = evaluate({
    nixseal: {
      buildSecrets: { t: SECRET },
      buildSecretsSettings: { identities: [{ type: "age", path: "/k" }] },
    },
  });
  assert.ok(noFetcher.failedAssertions.some((m) => /set nixseal\.buildSecretsSettings\.fetcher/.test(m)));
  const noIdentity = evaluate({
    nixseal: { buildSecrets: { t: SECRET }, buildSecretsSettings: { fetcher: FETCHER } },
  });
  assert.ok(noIdentity.failedAssertions.some((m) => /no host identity/.test(m)));
});

test("source: an agent-supplied secret has no file in the policy; a file with source = agent, or none without it, fails", {
  skip: SKIP,
}, () => {
  const { file: _file, ...noFile } = SECRET;
  const e = evaluate({
    nixseal: {
      buildSecrets: {
        typed: { ...noFile, source: "agent" },
        either: { ...SECRET, source: "host-or-agent", prompt: true },
      },
      // No host identity is needed when only the agent supplies values, but "either" needs one.
      buildSecretsSettings: {
        fetcher: FETCHER,
        interpreter: NODE,
        identities: [{ type: "age", path: "/k" }],
      },
    },
  });
  assert.deepEqual(e.failedAssertions, []);
  const written = JSON.parse(e.policy!.text) as { secrets: Record<string, Record<string, unknown>> };
  assert.equal("file" in written.secrets.typed!, false, "the host holds nothing for source = agent");
  const policy = parsePolicy(e.policy!.text, "/etc/nixseal/build-secrets.json");
  assert.equal(policy.secrets.get("typed")!.source, "agent");
  assert.equal(policy.secrets.get("typed")!.file, null);
  assert.equal(policy.secrets.get("either")!.source, "host-or-agent");
  assert.equal(policy.secrets.get("either")!.file, SECRET.file);

  const agentOnly = evaluate({
    nixseal: {
      buildSecrets: { typed: { ...noFile, source: "agent" } },
      buildSecretsSettings: { fetcher: FETCHER, interpreter: NODE },
    },
  });
  assert.deepEqual(agentOnly.failedAssertions, [], "no host identity is needed when the host holds nothing");

  const bad = evaluate({
    nixseal: {
      buildSecrets: { withFile: { ...SECRET, source: "agent" }, without: noFile },
      buildSecretsSettings: { fetcher: FETCHER, identities: [{ type: "age", path: "/k" }] },
    },
  });
  assert.ok(
    bad.failedAssertions.some((m) =>
      /withFile, without: a secret with source = "agent" has no file .* any other source needs file/.test(m),
    ),
    bad.failedAssertions.join("\n"),
  );
});

test("identities as in the activation manifest: a sealed key (systemd-creds, with its name) reaches the policy", {
  skip: SKIP,
}, () => {
  const e = evaluate({
    nixseal: {
      buildSecrets: { t: SECRET },
      buildSecretsSettings: {
        fetcher: FETCHER,
        identities: [
          { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred", name: "host-key" },
          { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
        ],
      },
    },
  });
  assert.deepEqual(e.failedAssertions, []);
  assert.deepEqual(parsePolicy(e.policy!.text, "/etc/nixseal/build-secrets.json").identities, [
    { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred", name: "host-key" },
    { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
  ]);
});

test("the git that lib.fetchgit runs is pinned in the policy's gitPaths", { skip: SKIP }, () => {
  const GIT = "/nix/store/gggggggggggggggggggggggggggggggg-git-minimal/bin/git";
  const base = config() as { nixseal: { buildSecretsSettings: Record<string, unknown> } };
  base.nixseal.buildSecretsSettings.git = GIT;
  const e = evaluate(base);
  assert.deepEqual(e.failedAssertions, []);
  assert.deepEqual(parsePolicy(e.policy!.text, "/etc/nixseal/build-secrets.json").gitPaths, [GIT]);
});

test("with the whole NixOS module, the build policy lists the activation manifest's identities, sealed keys included, gpg ones not", {
  skip: SKIP,
}, () => {
  const { dir, cleanup } = tempDir();
  try {
    const mod = path.join(dir, "host.nix");
    fs.writeFileSync(
      mod,
      `{ ... }: {
        nixseal.sealedIdentityPaths = [ "/var/lib/nixseal/host-key.cred" ];
        nixseal.identityPaths = [ "/etc/ssh/ssh_host_ed25519_key" ];
        # A sops-nix host's PGP key (the compat module's default): no use for age files.
        nixseal.extraIdentities = [ { type = "gpg-ssh"; path = "/etc/ssh/ssh_host_rsa_key"; } ];
        nixseal.buildSecrets.t = {
          file = "/var/lib/nixseal/t.age";
          allowedUrlPrefixes = [ "https://mods.example.com/api/" ];
        };
        nixseal.buildSecretsSettings.fetcher = "${FETCHER}";
      }`,
    );
    const r = nixEval("eval-nixos.nix", [mod], "config.environment.etc");
    assert.ok(r.ok, r.ok ? "" : r.stderr);
    const etc = r.value as Record<string, { text: string }>;
    const policy = parsePolicy(etc["nixseal/build-secrets.json"]!.text, "/etc/nixseal/build-secrets.json");
    assert.deepEqual(policy.identities, [
      { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred" },
      { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
    ]);
  } finally {
    cleanup();
  }
});

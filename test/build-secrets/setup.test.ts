/**
 * The set-up of build secrets as a new user meets it on a host without NixOS: the post-build
 * wrapper cleans up in the runtimeDir the policy names when it runs (not when the wrapper was
 * made), the policy accepts the identity types of the activation manifest, an unusable policy
 * reaches the build as such (not as "is the sandbox on?"), and refusals name the policy the hook
 * was given with --policy.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { encrypt } from "../../src/age/index.js";
import { preBuildHook } from "../../src/build-secrets/hook.js";
import { parsePolicy } from "../../src/build-secrets/policy.js";
import { decryptBuildSecret } from "../../src/build-secrets/secret-dir.js";
import { parseRecipientString } from "../../src/keys/index.js";
import { generateIdentity } from "../../src/keys/key-types.js";
import { hostKeyPath, systemdCredsMissing } from "../creds/creds-env.js";
import { isError, nixseal, tempDir } from "../helpers.js";

const SHM = fs.existsSync("/dev/shm") && fs.statfsSync("/dev/shm").type === 0x01021994;
const ROOT = process.getuid?.() === 0;
const HASH = "dddddddddddddddddddddddddddddddd";

/** A .drv as Nix writes it, asking for the secret "token" through a fetcher in `store`. */
function drvText(store: string): string {
  const s = (x: string) => JSON.stringify(x);
  const out = `${store}/cccccccccccccccccccccccccccccccc-mod.zip`;
  const fetcher = `${store}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.mjs`;
  const env: [string, string][] = [
    ["builder", "/usr/bin/node"],
    ["name", "mod.zip"],
    ["nixsealSecret", "token"],
    ["out", out],
    ["outputHash", "sha256-AAAA"],
    ["outputHashMode", "flat"],
    ["system", "x86_64-linux"],
    ["url", "https://mods.example.com/api/mod.zip"],
  ];
  return `Derive([("out",${s(out)},"sha256",${s("00".repeat(32))})],[],[${s(fetcher)}],"x86_64-linux","/usr/bin/node",[${s(fetcher)}],[${env.map(([k, v]) => `(${s(k)},${s(v)})`)}])`;
}

function policyDoc(store: string, runtimeDir: string): Record<string, unknown> {
  return {
    version: 1,
    storeDir: store,
    runtimeDir,
    identities: [{ type: "age", path: "/nonexistent/key.txt" }],
    interpreters: ["/usr/bin/node"],
    secrets: {
      token: {
        file: "/nonexistent/token.age",
        allowedUrlPrefixes: ["https://mods.example.com/api/"],
        fetcherStorePaths: [`${store}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.mjs`],
      },
    },
  };
}

test("the post-build wrapper made before the policy existed cleans up in the runtimeDir the policy names now", {
  skip: !SHM ? "needs /dev/shm on tmpfs" : !ROOT ? "needs root (the policy must be root's)" : false,
}, () => {
  const { dir, cleanup } = tempDir("nixseal-setup-");
  const shm = fs.mkdtempSync("/dev/shm/nixseal-setup-");
  try {
    const store = path.join(dir, "store");
    fs.mkdirSync(store);
    const policyFile = path.join(dir, "policy.json");
    // As the docs have it: the wrappers first, the policy afterwards (with its own runtimeDir).
    const made = nixseal(["build-hook", "--wrapper", "post", "--policy", policyFile]);
    assert.equal(made.status, 0, made.stderr);
    const wrapper = path.join(dir, "post-hook");
    fs.writeFileSync(wrapper, made.stdout, { mode: 0o755 });
    const runtimeDir = path.join(shm, "build");
    fs.writeFileSync(policyFile, JSON.stringify(policyDoc(store, runtimeDir)), { mode: 0o644 });

    const drvPath = path.join(store, `${HASH}-mod.zip.drv`);
    fs.writeFileSync(drvPath, drvText(store));
    const secretDir = path.join(runtimeDir, `${HASH}-mod.zip.drv`);
    fs.mkdirSync(secretDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(secretDir, "secret"), "tok\n", { mode: 0o444 });

    const r = spawnSync(wrapper, [], { encoding: "utf8", env: { ...process.env, DRV_PATH: drvPath } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.existsSync(secretDir), false, `the build's secret is left behind: ${r.stderr}`);

    // A build that named no secret does not start the hook at all (nothing logged).
    const plain = path.join(store, `${"e".repeat(32)}-plain.drv`);
    fs.writeFileSync(plain, 'Derive([("out","/x","","")],[],[],"x86_64-linux","/bin/sh",[],[])');
    const p = spawnSync(wrapper, [], { encoding: "utf8", env: { ...process.env, DRV_PATH: plain } });
    assert.equal(p.status, 0);
    assert.equal(p.stderr, "");

    // An unusable policy is said loudly in the daemon log; the post hook still exits 0.
    fs.writeFileSync(policyFile, "{ not json", { mode: 0o644 });
    fs.mkdirSync(secretDir, { mode: 0o700 });
    const bad = spawnSync(wrapper, [], { encoding: "utf8", env: { ...process.env, DRV_PATH: drvPath } });
    assert.equal(bad.status, 0);
    assert.match(bad.stderr, /error: the build-secrets policy is unusable: .*policy\.json: not valid JSON/);
    assert.match(bad.stderr, /may remain until the policy is fixed/);
  } finally {
    cleanup();
    fs.rmSync(shm, { recursive: true, force: true });
  }
});

test("an unusable policy reaches the build as a refusal that names the policy's problem", {
  skip: !SHM ? "needs /dev/shm on tmpfs" : !ROOT ? "needs root (the policy must be root's)" : false,
}, async () => {
  const { dir, cleanup } = tempDir("nixseal-setup-");
  const shm = fs.mkdtempSync("/dev/shm/nixseal-setup-");
  try {
    const store = path.join(dir, "store");
    fs.mkdirSync(store);
    const drvPath = path.join(store, `${HASH}-mod.zip.drv`);
    fs.writeFileSync(drvPath, drvText(store));
    fs.mkdirSync(`${drvPath}.chroot`);
    const policyFile = path.join(dir, "custom-policy.json");
    const doc = policyDoc(store, path.join(shm, "build"));
    doc.identities = [{ type: "gpg", path: "/k" }];
    fs.writeFileSync(policyFile, JSON.stringify(doc), { mode: 0o644 });

    const r = await preBuildHook(drvPath, `${drvPath}.chroot`, { policyFile, ppid: process.pid });
    const refusal = path.join(shm, "build", `${HASH}-mod.zip.drv`, "refusal");
    assert.equal(r.output, `extra-sandbox-paths\n/run/nixseal-refusal=${refusal}\n\n`);
    const text = fs.readFileSync(refusal, "utf8");
    assert.match(text, /policy is unusable:\n {2}- .*custom-policy\.json: identities\[0\]\.type/);
    assert.match(text, /\nhint: see the build-secrets policy .*custom-policy\.json/);
    assert.doesNotMatch(text, /\/etc\/nixseal/);
    assert.equal(fs.existsSync(path.join(path.dirname(refusal), "secret")), false);

    // A refusal by a valid policy names the policy given too, not the default path.
    fs.writeFileSync(policyFile, JSON.stringify(policyDoc(store, path.join(shm, "build"))), { mode: 0o644 });
    const other = path.join(store, `${"b".repeat(32)}-other.zip.drv`);
    fs.writeFileSync(other, drvText(store).replace("https://mods.example.com/api/", "https://evil.example/"));
    fs.mkdirSync(`${other}.chroot`);
    const o = await preBuildHook(other, `${other}.chroot`, { policyFile, ppid: process.pid });
    assert.match(o.output, /\/run\/nixseal-refusal=/);
    const otherText = fs.readFileSync(path.join(shm, "build", path.basename(other), "refusal"), "utf8");
    assert.match(otherText, /is not under an allowed prefix/);
    assert.match(otherText, /\nhint: see the build-secrets policy .*custom-policy\.json/);
  } finally {
    cleanup();
    fs.rmSync(shm, { recursive: true, force: true });
  }
});

test("the policy accepts the identity types of the activation manifest (systemd-creds with a name)", () => {
  const doc = policyDoc("/nix/store", "/run/nixseal/build");
  doc.identities = [
    { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred", name: "host-key" },
    { type: "systemd-creds", path: "/var/lib/nixseal/other.cred" },
    { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
  ];
  const p = parsePolicy(JSON.stringify(doc), "p.json");
  assert.deepEqual(p.identities, [
    { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred", name: "host-key" },
    { type: "systemd-creds", path: "/var/lib/nixseal/other.cred" },
    { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
  ]);
  // As in the manifest: a name only for sealed keys.
  doc.identities = [{ type: "age", path: "/k", name: "x" }];
  assert.throws(
    () => parsePolicy(JSON.stringify(doc), "p.json"),
    isError("BUILD_POLICY", /identities\[0\]\.name: is set, but a age identity has no name/),
  );
});

test("a build secret decrypts with a host key sealed by systemd-creds", {
  skip: systemdCredsMissing() ?? false,
}, async () => {
  const { dir, cleanup } = tempDir("nixseal-setup-");
  const saved = process.env.SYSTEMD_CREDENTIAL_SECRET;
  try {
    const env = { SYSTEMD_CREDENTIAL_SECRET: hostKeyPath(dir, "build") };
    const sealed = path.join(dir, "host-key.cred");
    const made = nixseal(["host-key", "new", "-o", sealed], { env });
    assert.equal(made.status, 0, made.stderr);
    const recipient = made.stdout.toString().trim();
    const file = path.join(dir, "token.age");
    fs.writeFileSync(
      file,
      await encrypt(Buffer.from("tok-sealed\n"), [parseRecipientString(recipient, "t")]),
    );
    process.env.SYSTEMD_CREDENTIAL_SECRET = env.SYSTEMD_CREDENTIAL_SECRET;
    const plain = await decryptBuildSecret(file, [
      { type: "age", path: path.join(dir, "missing.txt") },
      { type: "systemd-creds", path: sealed },
    ]);
    assert.equal(Buffer.from(plain).toString(), "tok-sealed\n");
    // Another host key cannot open it: the identity really is the sealed one.
    const other = await generateIdentity(false);
    fs.writeFileSync(path.join(dir, "other.txt"), `${other.identity}\n`, { mode: 0o600 });
    await assert.rejects(decryptBuildSecret(file, [{ type: "age", path: path.join(dir, "other.txt") }]));
  } finally {
    if (saved === undefined) delete process.env.SYSTEMD_CREDENTIAL_SECRET;
    else process.env.SYSTEMD_CREDENTIAL_SECRET = saved;
    cleanup();
  }
});

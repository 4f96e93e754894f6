/**
 * `nixseal install` of sops files whose data key is wrapped for PGP (sops-nix's `sops.gnupg.home`
 * and `sops.gnupg.sshKeyPaths`), with the real gpg, as root in a private mount namespace.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, test } from "node:test";
import { REPO, which } from "../helpers.js";
import { cleanUpGpg, gpgHome, newKey, sopsFileFor } from "../sops/pgp-fixture.js";
import {
  type Host,
  installOk,
  installTestsSkipReason,
  makeHost,
  runPlan,
  secret,
  snap,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason() ?? (which("gpg") === null ? "needs gpg (GnuPG)" : null);
after(cleanUpGpg);

function withHost(fn: (host: Host) => Promise<void>) {
  return async (t: { skip(msg: string): void }) => {
    if (skip !== null) {
      t.skip(skip);
      return;
    }
    const host = makeHost();
    try {
      await fn(host);
    } finally {
      host.cleanup();
    }
  };
}

function tempHomesInShm(): string[] {
  return fs.readdirSync("/dev/shm").filter((n) => n.startsWith("nixseal-gpg-"));
}

test(
  "a gpg identity (sops.gnupg.home): the values of a pgp-wrapped sops file are installed",
  withHost(async (host) => {
    const home = gpgHome();
    const fp = newKey(home, "host");
    const pw = uniqueSecret("pw");
    const yaml = path.join(host.dir, "store", "pgp.yaml");
    fs.mkdirSync(path.dirname(yaml), { recursive: true });
    fs.writeFileSync(yaml, await sopsFileFor(`db:\n    password: ${pw}\n    user: app\n`, [{ home, fp }]));
    const m = writeManifest(
      host,
      [
        secret("pw", yaml, { format: "yaml", key: "db/password" }),
        secret("user", yaml, { format: "yaml", key: "db/user" }),
      ],
      [],
      // The ssh host key first, as a host lists it: it opens nothing here.
      {
        identities: [
          { type: "ssh", path: host.hostKey },
          { type: "gpg", path: home },
        ],
      },
    );
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m] },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    const f = snap(r[1]).files;
    assert.equal(f["1/pw"]!.content, pw);
    assert.equal(f["1/user"]!.content, "app");
  }),
);

test(
  "a gpg-ssh identity (sops.gnupg.sshKeyPaths): sops-nix's own file for its RSA test key installs; no temporary home is left",
  withHost(async (host) => {
    // A copy: the host's key file is its own (0600), as on a host.
    const key = path.join(host.dir, "etc", "ssh", "ssh_host_rsa_key");
    fs.copyFileSync(path.join(REPO, "test", "fixtures", "sops", "sops-nix", "ssh-key"), key);
    fs.chmodSync(key, 0o600);
    const yaml = path.join(REPO, "test", "fixtures", "sops", "sops-nix", "secrets.yaml");
    const before = new Set(tempHomesInShm());
    const m = writeManifest(host, [secret("test", yaml, { format: "yaml", key: "test_key" })], [], {
      identities: [{ type: "gpg-ssh", path: key }],
    });
    // No XDG_RUNTIME_DIR: the temporary home goes to /dev/shm, where this test looks.
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m], env: { XDG_RUNTIME_DIR: "" } },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    assert.equal(snap(r[1]).files["1/test"]!.content, "test_value"); // sops-nix main_test.go expects this
    assert.deepEqual(
      tempHomesInShm().filter((n) => !before.has(n)),
      [],
    );
  }),
);

test(
  "no key fits: the install fails naming the file's fingerprints, and gpg missing says to install it",
  withHost(async (host) => {
    const home = gpgHome();
    const fp = newKey(home, "owner");
    const other = gpgHome();
    newKey(other, "stranger");
    const yaml = path.join(host.dir, "store", "pgp.yaml");
    fs.mkdirSync(path.dirname(yaml), { recursive: true });
    fs.writeFileSync(yaml, await sopsFileFor("x: 1\n", [{ home, fp }]));
    const m = writeManifest(host, [secret("x", yaml, { format: "yaml", key: "x" })], [], {
      identities: [{ type: "gpg", path: other }],
    });
    const r = runPlan(host, [{ op: "install", args: ["--manifest", m] }]);
    const i = r[0] as { status: number; stderr: string };
    assert.equal(i.status, 1, i.stderr);
    assert.match(i.stderr, new RegExp(`pgp ${fp}: no secret key for it`));
    assert.match(i.stderr, new RegExp(`tried: GnuPG home ${other}`));
    const noGpg = runPlan(host, [{ op: "install", args: ["--manifest", m], env: { PATH: "/nonexistent" } }]);
    const n = noGpg[0] as { status: number; stderr: string };
    assert.equal(n.status, 1, n.stderr);
    assert.match(n.stderr, /gpg is not installed/);
    assert.match(n.stderr, /hint: .*install GnuPG/);
  }),
);

/**
 * `nixseal install` with systemd credentials, as root, with the real systemd-creds (a private
 * credential host key per test through SYSTEMD_CREDENTIAL_SECRET: /var/lib/systemd/credential.secret
 * is never touched) and the real installer in a private mount namespace: entries with a
 * `credential` sealed into the credential store instead of the ramfs, re-encrypted only when
 * changed, all-or-nothing with the rest of the install; identities sealed with `nixseal host-key`;
 * restartMode "systemctl" (a recording systemctl: systemd is not PID 1 here).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { hostKeyPath, systemdCredsMissing } from "../creds/creds-env.js";
import { nixseal } from "../helpers.js";
import {
  ageFile,
  type Host,
  type InstallResult,
  installOk,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  placeholderOf,
  read,
  runPlan,
  type Snapshot,
  secret,
  snap,
  template,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason() ?? systemdCredsMissing();

interface Credential {
  name: string;
  withKey: string;
  services: string[];
  tpm2Pcrs?: string;
}

/** A manifest entry with a credential. */
function withCredential<T extends object>(entry: T, credential: Credential): T {
  return Object.assign(entry, { credential });
}

interface CredHost extends Host {
  credstore: string;
  /** The environment of systemd-creds for this host: its own credential host key. */
  env: Record<string, string>;
}

function withCredHost(fn: (host: CredHost) => Promise<void>) {
  return async (t: { skip(msg: string): void }) => {
    if (skip !== null) {
      t.skip(skip);
      return;
    }
    const host = makeHost();
    try {
      await fn({
        ...host,
        credstore: path.join(host.dir, "var", "lib", "nixseal", "credstore"),
        env: { SYSTEMD_CREDENTIAL_SECRET: hostKeyPath(host.dir, "host"), NO_COLOR: "1" },
      });
    } finally {
      host.cleanup();
    }
  };
}

/** The real systemd-creds decrypting a stored credential, as the service manager would. */
function realDecrypt(host: CredHost, name: string, env = host.env) {
  return spawnSync("systemd-creds", ["decrypt", `--name=${name}`, path.join(host.credstore, name), "-"], {
    env: { ...process.env, ...env },
    encoding: "utf8",
  });
}

function bytes(file: string): Buffer | null {
  try {
    return fs.readFileSync(file);
  } catch {
    return null;
  }
}

/** Every file content under a snapshot, joined: to look for plaintext anywhere in the ramfs. */
function allContent(s: Snapshot): string {
  return Object.values(s.files)
    .map((f) => f.content ?? "")
    .join("\n");
}

test(
  "credentials: sealed into the store, never in the ramfs; systemd-creds gives them back; another host key does not",
  withCredHost(async (host) => {
    const pw = uniqueSecret("pw");
    const plain = uniqueSecret("plain");
    const pwFile = await ageFile(host, "pw", pw);
    const plainFile = await ageFile(host, "plain", plain);
    const m = writeManifest(
      host,
      [
        withCredential(secret("db/password", pwFile, { restartUnits: ["extra.service"] }), {
          name: "db-password",
          withKey: "host",
          services: ["db.service"],
        }),
        secret("plain", plainFile, { restartUnits: ["plain.service"] }),
      ],
      [
        withCredential(template("app.conf", `password=${placeholderOf("db/password")}\n`), {
          name: "app.conf",
          withKey: "auto",
          services: ["app.service"],
        }),
      ],
      { credstoreDir: host.credstore },
    );
    const [run, gens] = runPlan(host, [
      { op: "install", args: ["--manifest", m, "--json"], env: host.env },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    const out = installOk(run);
    const j = jsonOf(out);
    const credentials = j.credentials as { created: string[] };
    credentials.created.sort(); // encrypted in parallel: finished in any order
    assert.deepEqual(credentials, {
      store: host.credstore,
      created: ["app.conf", "db-password"],
      updated: [],
      unchanged: 0,
      removed: [],
      keyRenewed: false,
    });
    assert.deepEqual(j.added, ["db/password", "plain", "app.conf"]);
    assert.deepEqual(
      new Set(j.restartUnits as string[]),
      new Set(["extra.service", "db.service", "plain.service", "app.service"]),
    );

    // The ramfs generation holds the plain secret only, and no credential plaintext anywhere.
    const g = snap(gens);
    assert.equal(g.files["1/plain"]!.content, plain);
    assert.equal(g.files["1/db/password"], undefined);
    assert.equal(g.files["1/db"], undefined, "not even the directory of a credential's name");
    assert.equal(g.files["1/app.conf"], undefined);
    assert.ok(!allContent(g).includes(pw), "the credential's plaintext is nowhere in the ramfs");

    // The store: private, one 0400 file per credential, which systemd-creds opens under its name.
    assert.equal(fs.statSync(host.credstore).mode & 0o777, 0o700);
    for (const name of ["db-password", "app.conf"]) {
      const st = fs.statSync(path.join(host.credstore, name));
      assert.equal(st.mode & 0o777, 0o400, name);
      assert.ok(
        !fs.readFileSync(path.join(host.credstore, name), "latin1").includes(pw),
        `${name} is sealed`,
      );
    }
    const db = realDecrypt(host, "db-password");
    assert.equal(db.status, 0, db.stderr);
    assert.equal(db.stdout, pw);
    const conf = realDecrypt(host, "app.conf");
    assert.equal(conf.status, 0, conf.stderr);
    assert.equal(conf.stdout, `password=${pw}\n`, "a template is rendered, then sealed");
    for (const f of fs.readdirSync(path.join(host.credstore, ".nixseal"))) {
      assert.ok(!read(path.join(host.credstore, ".nixseal", f)).includes(pw), `${f} holds no plaintext`);
    }

    // Moved to another host (another credential host key), it does not decrypt.
    const other = realDecrypt(host, "db-password", {
      SYSTEMD_CREDENTIAL_SECRET: hostKeyPath(host.dir, "other"),
    });
    assert.notEqual(other.status, 0);
    assert.ok(!other.stdout.includes(pw));
    assert.ok(!out.stdout.includes(pw) && !out.stderr.includes(pw), "no value is printed");
  }),
);

test(
  "a changed credential is encrypted again and restarts its units; an unchanged one keeps its file byte for byte; a removed one is deleted",
  withCredHost(async (host) => {
    const [a1, a2, b, c] = ["a1", "a2", "b", "c"].map(uniqueSecret) as [string, string, string, string];
    const files = {
      a1: await ageFile(host, "a1", a1),
      a2: await ageFile(host, "a2", a2),
      b: await ageFile(host, "b", b),
      c: await ageFile(host, "c", c),
    };
    const entry = (name: string, file: string) =>
      withCredential(secret(name, file), { name, withKey: "host", services: [`${name}.service`] });
    const extra = { credstoreDir: host.credstore };
    const m1 = writeManifest(
      host,
      [entry("a", files.a1), entry("b", files.b), entry("c", files.c)],
      [],
      extra,
    );
    const m2 = writeManifest(host, [entry("a", files.a2), entry("b", files.b)], [], extra);
    const m3 = writeManifest(host, [entry("a", files.a2), entry("b", files.a1)], [], extra);

    const saved = (name: string, n: number) => path.join(host.dir, `${name}.${n}`);
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1, "--json"], env: host.env },
      { op: "copy", from: path.join(host.credstore, "a"), to: saved("a", 1) },
      { op: "copy", from: path.join(host.credstore, "b"), to: saved("b", 1) },
      { op: "install", args: ["--manifest", m2, "--json"], env: host.env },
      { op: "install", args: ["--manifest", m2, "--json"], env: host.env },
      { op: "install", args: ["--manifest", m3, "--dry-run", "--json"], env: host.env },
    ]);
    assert.deepEqual((jsonOf(installOk(r[0])).credentials as { created: string[] }).created.sort(), [
      "a",
      "b",
      "c",
    ]);
    const before = { a: bytes(saved("a", 1)), b: bytes(saved("b", 1)) };
    const [j2, j3, dry] = [jsonOf(installOk(r[3])), jsonOf(installOk(r[4])), jsonOf(installOk(r[5]))];
    assert.deepEqual(j2.credentials, {
      store: host.credstore,
      created: [],
      updated: ["a"],
      unchanged: 1,
      removed: ["c"],
      keyRenewed: false,
    });
    assert.deepEqual([j2.changed, j2.removed, j2.unchanged], [["a"], ["c"], 1]);
    assert.deepEqual(j2.restartUnits, ["a.service", "c.service"], "changed and removed: restarted");
    assert.notDeepEqual(bytes(path.join(host.credstore, "a")), before.a);
    assert.equal(realDecrypt(host, "a").stdout, a2);
    assert.deepEqual(bytes(path.join(host.credstore, "b")), before.b, "unchanged: not encrypted again");
    assert.equal(bytes(path.join(host.credstore, "c")), null, "removed from the store");
    assert.ok(!fs.existsSync(path.join(host.credstore, ".nixseal", "c.record")));

    // The same configuration again: nothing encrypted, nothing restarted.
    assert.deepEqual(j3.credentials, {
      store: host.credstore,
      created: [],
      updated: [],
      unchanged: 2,
      removed: [],
      keyRenewed: false,
    });
    assert.deepEqual([j3.changed, j3.restartUnits, j3.unchanged], [[], [], 2]);
    assert.equal(read(host.restartList), "a.service\nb.service\nc.service\na.service\nc.service\n");

    // A dry run tells what would change and writes nothing to the store.
    const stored = bytes(path.join(host.credstore, "b"));
    assert.deepEqual((dry.credentials as { updated: string[] }).updated, ["b"]);
    assert.deepEqual(dry.restartUnits, ["b.service"]);
    assert.deepEqual(bytes(path.join(host.credstore, "b")), stored);
    assert.equal(realDecrypt(host, "b").stdout, b);
    assert.equal(read(host.dryRestartList), "b.service\n");

    // A reboot (a new namespace: the ramfs and its records are gone, the store is not): the
    // credentials the units will load are the ones already there, so nothing restarts.
    // Then b becomes a plain file: changed, in the generation, its credential removed.
    const m4 = writeManifest(
      host,
      [entry("a", files.a2), secret("b", files.b, { restartUnits: ["b-file.service"] })],
      [],
      extra,
    );
    const [boot, , toFile, gens] = runPlan(host, [
      { op: "install", args: ["--manifest", m2, "--json"], env: host.env },
      { op: "copy", from: path.join(host.credstore, "b"), to: saved("b", 2) },
      { op: "install", args: ["--manifest", m4, "--json"], env: host.env },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    const jb = jsonOf(installOk(boot));
    assert.deepEqual([jb.added, jb.changed, jb.unchanged, jb.restartUnits], [[], [], 2, []]);
    assert.deepEqual(bytes(saved("b", 2)), before.b);
    const jf = jsonOf(installOk(toFile));
    assert.deepEqual([jf.changed, jf.restartUnits], [["b"], ["b-file.service"]]);
    assert.deepEqual((jf.credentials as { removed: string[] }).removed, ["b"]);
    assert.equal(bytes(path.join(host.credstore, "b")), null);
    const g = snap(gens).files;
    const active = Object.keys(g)
      .filter((k) => /^\d+$/.test(k))
      .sort((x, y) => Number(y) - Number(x))[0]!;
    assert.equal(g[`${active}/b`]!.content, b);
    assert.equal(g[`${active}/a`], undefined);
  }),
);

test(
  "a failing install writes nothing to the credential store: every problem reported, the old credentials and generation stay",
  withCredHost(async (host) => {
    const v1 = uniqueSecret("v1");
    const v2 = uniqueSecret("v2");
    const f1 = await ageFile(host, "v1", v1);
    const f2 = await ageFile(host, "v2", v2);
    const big = await ageFile(host, "big", "x".repeat(1024 * 1024 + 1));
    const other = path.join(host.dir, "other_key");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    const otherPub = fs.readFileSync(`${other}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
    const foreign = await ageFile(host, "foreign", uniqueSecret("foreign"), otherPub);
    const cred = (name: string, file: string) =>
      withCredential(secret(name, file), { name, withKey: "host", services: [`${name}.service`] });
    const extra = { credstoreDir: host.credstore };
    const m1 = writeManifest(host, [cred("token", f1)], [], extra);
    const m2 = writeManifest(host, [cred("token", f2), cred("huge", big), secret("bad", foreign)], [], extra);

    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1], env: host.env },
      { op: "snapshot", dir: host.generationsDir },
      { op: "install", args: ["--manifest", m2], env: host.env },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    const stored = bytes(path.join(host.credstore, "token"));
    const failed = r[2] as InstallResult;
    assert.equal(failed.status, 1);
    for (const pattern of [
      /secret "bad" from \S*foreign\.age: no identity matched/,
      /credential huge is 1048577 bytes, more than systemd's limit of 1 MiB/,
      /2 problems: nothing was installed; generation 1 stays active/,
    ]) {
      assert.match(failed.stderr, pattern);
    }
    assert.deepEqual(bytes(path.join(host.credstore, "token")), stored, "the credential was not replaced");
    assert.equal(realDecrypt(host, "token").stdout, v1);
    assert.equal(bytes(path.join(host.credstore, "huge")), null);
    assert.deepEqual(snap(r[3]).files, snap(r[1]).files, "the generations are as they were");
    assert.equal(read(host.restartList), "token.service\n", "a failed install restarts nothing");
    assert.ok(!failed.stderr.includes(v2) && !failed.stdout.includes(v2));
  }),
);

test(
  "a sealed host identity (nixseal host-key new) decrypts secrets at install; a corrupted one is one clear error and the old generation stays",
  withCredHost(async (host) => {
    const sealed = path.join(host.dir, "var", "lib", "nixseal", "host-key.cred");
    fs.mkdirSync(path.dirname(sealed), { recursive: true });
    const made = nixseal(["host-key", "new", "-o", sealed], { env: host.env });
    assert.equal(made.status, 0, made.stderr);
    const recipient = made.stdout.toString().trim();
    const s1 = uniqueSecret("s1");
    const s2 = uniqueSecret("s2");
    const f1 = await ageFile(host, "s1", s1, recipient);
    const f2 = await ageFile(host, "s2", s2, recipient);
    // A corrupted copy: one base64 character of the sealed data changed.
    const corrupted = path.join(path.dirname(sealed), "corrupted.cred");
    const text = fs.readFileSync(sealed, "latin1");
    const at = Math.floor(text.length / 2);
    fs.writeFileSync(corrupted, text.slice(0, at) + (text[at] === "A" ? "B" : "A") + text.slice(at + 1));
    const ids = (p: string) => ({
      identities: [
        { type: "ssh", path: host.hostKey },
        { type: "systemd-creds", path: p, name: "host-key.cred" },
      ],
    });
    const m1 = writeManifest(host, [secret("s", f1, { restartUnits: ["s.service"] })], [], ids(sealed));
    const m2 = writeManifest(host, [secret("s", f2, { restartUnits: ["s.service"] })], [], ids(corrupted));
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1], env: host.env },
      { op: "snapshot", dir: host.generationsDir },
      { op: "install", args: ["--manifest", m2], env: host.env },
      { op: "snapshot", dir: host.generationsDir },
      { op: "snapshot", dir: host.secretsDir },
    ]);
    installOk(r[0]);
    assert.equal(snap(r[1]).files["1/s"]!.content, s1);
    const failed = r[2] as InstallResult;
    assert.equal(failed.status, 1);
    const aboutSealed = failed.stderr.split("\n").filter((l) => l.includes(corrupted) && /error/.test(l));
    assert.equal(aboutSealed.length, 1, `one problem names the sealed file:\n${failed.stderr}`);
    assert.match(aboutSealed[0]!, /not a valid encrypted credential|does not decrypt/);
    assert.match(failed.stderr, /nothing was installed; generation 1 stays active/);
    assert.deepEqual(snap(r[3]).files, snap(r[1]).files);
    assert.equal(snap(r[4]).files["."]!.target, path.join(host.generationsDir, "1"));
    assert.ok(!failed.stderr.includes("AGE-SECRET-KEY"), "the key is never printed");
  }),
);

test(
  'restartMode "systemctl": one systemctl call per verb for all changed units, none when nothing changed',
  withCredHost(async (host) => {
    const bin = path.join(host.dir, "fakebin");
    const calls = path.join(host.dir, "systemctl-calls");
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, "systemctl"), `#!/bin/sh\necho "$*" >> ${calls}\n`, { mode: 0o755 });
    const env = { ...host.env, PATH: `${bin}:${process.env.PATH}` };
    const [a1, a2, b, c] = await Promise.all(
      ["a1", "a2", "b", "c"].map((n) => ageFile(host, n, uniqueSecret(n))),
    );
    const extra = {
      restartMode: "systemctl",
      restartListFile: null,
      reloadListFile: null,
      credstoreDir: host.credstore,
    };
    const entries = (a: string) => [
      secret("a", a, { restartUnits: ["a.service", "x.service"] }),
      secret("b", b!, { reloadUnits: ["b.service", "x.service"] }),
      withCredential(secret("c", c!), { name: "c", withKey: "host", services: ["c.service"] }),
    ];
    const m1 = writeManifest(host, entries(a1!), [], extra);
    const m2 = writeManifest(host, entries(a2!), [], extra);
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1], env },
      { op: "copy", from: calls, to: `${calls}.1` },
      { op: "install", args: ["--manifest", m1], env },
      { op: "copy", from: calls, to: `${calls}.2` },
      { op: "install", args: ["--manifest", m2], env },
    ]);
    installOk(r[0]);
    installOk(r[2]);
    installOk(r[4]);
    assert.equal(
      read(`${calls}.1`),
      "--no-block try-restart -- a.service x.service c.service\n--no-block try-reload-or-restart -- b.service\n",
      "all units in one call per verb; a unit restarted is not reloaded too",
    );
    assert.equal(read(`${calls}.2`), read(`${calls}.1`), "nothing changed: no call");
    assert.equal(
      read(calls),
      `${read(`${calls}.1`)}--no-block try-restart -- a.service x.service\n`,
      "only the changed secret's units",
    );
    assert.equal(read(host.restartList), "", "no restart list is written");
    assert.equal(read(host.reloadList), "");
  }),
);

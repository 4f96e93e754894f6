/**
 * `nixseal install` as root with the real installer: run inside a private mount namespace (the
 * ramfs it mounts vanishes with it), real users and groups, real chown, real files.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { encrypt } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { PARALLEL_MIN_DECRYPTS } from "../../src/install/early-worker.js";
import { type GenerationMeta, identitySetHash } from "../../src/install/generations.js";
import { validateManifest } from "../../src/install/manifest.js";
import { RAMFS_MAGIC } from "../../src/install/mount.js";
import { PARALLEL_MIN_COPIES, workerModeFor } from "../../src/install/parallel-sources.js";
import { parseRecipientString } from "../../src/keys/key-types.js";
import { encryptNewDocument, YamlStore } from "../../src/sops/index.js";
import { sshEd25519ToAgeRecipient } from "../../src/ssh/ed25519.js";
import { decodeSshPublicKeyLine } from "../../src/ssh/public-key.js";
import { nixseal, which } from "../helpers.js";
import {
  addUser,
  ageFile,
  type Host,
  type InstallResult,
  installOk,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  placeholderOf,
  read,
  removeUsers,
  runPlan,
  secret,
  snap,
  type TestUser,
  template,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason();

function withHost(fn: (host: Host, users: TestUser[]) => Promise<void>, tool?: string) {
  return async (t: { skip(msg: string): void }) => {
    const why = skip ?? (tool !== undefined && !which(tool) ? `needs ${tool}` : null);
    if (why !== null) {
      t.skip(why);
      return;
    }
    const host = makeHost();
    const users: TestUser[] = [];
    try {
      await fn(host, users);
    } finally {
      removeUsers(users);
      host.cleanup();
    }
  };
}

test(
  "install: owners, modes, subdirectories, templates, the secretsDir and path symlinks, on a ramfs",
  withHost(async (host, users) => {
    const app = addUser("app");
    users.push(app);
    const pw = uniqueSecret("pw");
    const token = uniqueSecret("token");
    const dbFile = await ageFile(host, "db", pw);
    const tokenFile = await ageFile(host, "token", token);
    const link = path.join(host.dir, "etc", "app", "db-password");
    const confLink = path.join(host.dir, "etc", "app", "app.conf");
    const m = writeManifest(
      host,
      [
        secret("db/password", dbFile, {
          owner: app.user,
          group: app.group,
          mode: "0440",
          path: link,
          restartUnits: ["postgresql.service"],
        }),
        secret("token", tokenFile, { reloadUnits: ["nginx.service"] }),
        secret("by-id", tokenFile, { owner: String(app.uid), group: null, mode: "0600" }),
      ],
      [
        template(
          "app/app.conf",
          `user=app\npassword=${placeholderOf("db/password")}\ntoken=${placeholderOf("token")}\n`,
          {
            owner: app.user,
            group: app.group,
            path: confLink,
            restartUnits: ["app.service"],
          },
        ),
      ],
    );
    const [run, gens, secretsDir, links] = runPlan(host, [
      { op: "install", args: ["--manifest", m] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "snapshot", dir: host.secretsDir },
      { op: "snapshot", dir: path.dirname(link) },
    ]);
    const out = installOk(run);
    assert.match(out.stdout, /generation 1 active .*ramfs mounted/);
    assert.match(out.stdout, /added: db\/password, token, by-id, app\/app\.conf/);
    assert.match(out.stdout, /restart: postgresql\.service, app\.service/);
    assert.match(out.stdout, /reload: nginx\.service/);

    const g = snap(gens);
    assert.equal(g.fsType, RAMFS_MAGIC, "generationsDir is a ramfs");
    const f = g.files;
    assert.equal(f["."]!.mode, 0o751);
    assert.deepEqual(
      { type: f["1"]!.type, mode: f["1"]!.mode, uid: f["1"]!.uid },
      { type: "dir", mode: 0o751, uid: 0 },
    );
    assert.deepEqual(
      { type: f["1/db"]!.type, mode: f["1/db"]!.mode, uid: f["1/db"]!.uid, gid: f["1/db"]!.gid },
      {
        type: "dir",
        mode: 0o751,
        uid: 0,
        gid: 0,
      },
    );
    assert.deepEqual(f["1/db/password"], {
      type: "file",
      mode: 0o440,
      uid: app.uid,
      gid: app.gid,
      content: pw,
    });
    assert.deepEqual(f["1/token"], { type: "file", mode: 0o400, uid: 0, gid: 0, content: token });
    assert.deepEqual(f["1/by-id"], { type: "file", mode: 0o600, uid: app.uid, gid: 0, content: token });
    assert.deepEqual(f["1/app/app.conf"], {
      type: "file",
      mode: 0o400,
      uid: app.uid,
      gid: app.gid,
      content: `user=app\npassword=${pw}\ntoken=${token}\n`,
    });
    // The metadata: root-only, beside the generations, names and keyed hashes but no plaintext.
    assert.equal(f[".nixseal"]!.mode, 0o700);
    const metaFiles = Object.entries(f).filter(([k]) => k.startsWith(".nixseal/"));
    assert.deepEqual(metaFiles.map(([k]) => k).sort(), [".nixseal/1.json", ".nixseal/hmac-key"]);
    for (const [k, info] of metaFiles) {
      assert.equal(info.mode, 0o600, k);
      assert.equal(info.uid, 0, k);
      assert.ok(!info.content!.includes(pw) && !info.content!.includes(token), `${k} holds no plaintext`);
    }
    const meta = JSON.parse(f[".nixseal/1.json"]!.content!) as { entries: { name: string; hmac: string }[] };
    const plainHash = createHash("sha256").update(pw).digest("hex");
    assert.ok(
      meta.entries.every((e) => e.hmac !== plainHash),
      "the content hash is keyed",
    );
    assert.deepEqual(
      meta.entries.map((e) => e.name),
      ["db/password", "token", "by-id", "app/app.conf"],
    );

    const s = snap(secretsDir);
    assert.deepEqual(s.files["."], {
      type: "symlink",
      mode: s.files["."]!.mode,
      uid: 0,
      gid: 0,
      target: path.join(host.generationsDir, "1"),
    });
    const l = snap(links).files;
    assert.equal(l["db-password"]!.type, "symlink");
    assert.equal(l["db-password"]!.target, path.join(host.secretsDir, "db/password"));
    assert.equal(l["app.conf"]!.target, path.join(host.secretsDir, "app/app.conf"));
    assert.equal(read(host.restartList), "postgresql.service\napp.service\n");
    assert.equal(read(host.reloadList), "nginx.service\n");
    for (const text of [out.stdout, out.stderr]) {
      assert.ok(!text.includes(pw) && !text.includes(token), "no value is printed");
    }
  }),
);

test(
  "generations: unchanged, changed (content, mode), added, removed; restart/reload lists; pruning; stale path links",
  withHost(async (host) => {
    const a1 = await ageFile(host, "a1", uniqueSecret("a1"));
    const a2 = await ageFile(host, "a2", uniqueSecret("a2"));
    const b = await ageFile(host, "b", uniqueSecret("b"));
    const c = await ageFile(host, "c", uniqueSecret("c"));
    const d = await ageFile(host, "d", uniqueSecret("d"));
    const linkA = path.join(host.dir, "links", "a");
    const linkC = path.join(host.dir, "links", "c");
    const first = [
      secret("a", a1, { restartUnits: ["a.service"], path: linkA }),
      secret("b", b, { reloadUnits: ["b.service"] }),
      secret("c", c, { restartUnits: ["c.service"], path: linkC }),
    ];
    const m1 = writeManifest(host, first);
    const m3 = writeManifest(host, [
      secret("a", a2, { restartUnits: ["a.service"], path: linkA }),
      secret("b", b, { reloadUnits: ["b.service"], mode: "0440" }),
      secret("d", d, { restartUnits: ["d.service"] }),
    ]);
    const m4 = writeManifest(
      host,
      [
        secret("a", a2, { restartUnits: ["a.service"], path: linkA }),
        secret("b", b, { reloadUnits: ["b.service"], mode: "0440" }),
        secret("d", d, { restartUnits: ["d.service"] }),
      ],
      [],
      { keepGenerations: 0 },
    );
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1, "--json"] },
      { op: "install", args: ["--manifest", m1, "--json"] },
      { op: "install", args: ["--manifest", m3, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "snapshot", dir: path.dirname(linkA) },
      { op: "install", args: ["--manifest", m4, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "install", args: ["--manifest", m4] },
    ]);
    const [j1, j2, j3] = [jsonOf(r[0]), jsonOf(r[1]), jsonOf(r[2])];
    assert.equal(j1.generation, 1);
    assert.deepEqual(j1.added, ["a", "b", "c"]);
    // Nothing changed: the active generation stays (verified), no new one is made.
    assert.deepEqual(j2, {
      ...j2,
      generation: 1,
      previousGeneration: 1,
      added: [],
      changed: [],
      removed: [],
      unchanged: 3,
    });
    assert.deepEqual(j3.changed, ["a", "b"]);
    assert.deepEqual(j3.added, ["d"]);
    assert.deepEqual(j3.removed, ["c"]);
    assert.deepEqual(j3.restartUnits, ["a.service", "d.service", "c.service"]);
    assert.deepEqual(j3.reloadUnits, ["b.service"]);
    assert.equal(j3.generation, 2);
    assert.deepEqual(j3.pruned, [], "keepGenerations 1: generation 1 kept");
    const g3 = snap(r[3]).files;
    assert.deepEqual(
      Object.keys(g3)
        .filter((k) => !k.includes("/") && k !== ".")
        .sort(),
      [".nixseal", "1", "2"],
    );
    assert.ok(g3[".nixseal/1.json"] && g3[".nixseal/2.json"]);
    assert.equal(g3["2/b"]!.mode, 0o440);
    assert.equal(g3["2/c"], undefined);
    const links = snap(r[4]).files;
    assert.equal(links.a!.target, path.join(host.secretsDir, "a"));
    assert.equal(links.c, undefined, "the symlink of the removed secret is gone");
    // keepGenerations 0: only the active generation stays.
    const j4 = jsonOf(r[5]);
    // The same entries: generation 2 stays active, and the older one goes.
    assert.deepEqual([j4.generation, j4.pruned], [2, [1]]);
    assert.deepEqual(
      Object.keys(snap(r[6]).files)
        .filter((k) => !k.includes("/") && k !== ".")
        .sort(),
      [".nixseal", "2"],
    );
    assert.match((r[7] as InstallResult).stdout, /no change \(3 unchanged\)/);
    // Appended, run after run, in the files switch-to-configuration reads.
    assert.equal(read(host.restartList), "a.service\nc.service\na.service\nd.service\nc.service\n");
    assert.equal(read(host.reloadList), "b.service\nb.service\n");
  }),
);

test(
  "--dry-run decrypts and compares, mounts nothing, changes nothing but the dry lists",
  withHost(async (host) => {
    const v1 = uniqueSecret("v1");
    const f1 = await ageFile(host, "v1", v1);
    const f2 = await ageFile(host, "v2", uniqueSecret("v2"));
    const m1 = writeManifest(host, [secret("s", f1, { restartUnits: ["s.service"] })]);
    const m2 = writeManifest(host, [
      secret("s", f2, { restartUnits: ["s.service"] }),
      secret("t", f2, { reloadUnits: ["t.service"] }),
    ]);
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1, "--dry-run", "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "install", args: ["--manifest", m1] },
      { op: "install", args: ["--manifest", m2, "--dry-run", "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "snapshot", dir: host.secretsDir },
    ]);
    const first = jsonOf(r[0]);
    assert.equal(first.ok, true);
    assert.equal(first.generation, null);
    assert.deepEqual(first.added, ["s"]);
    assert.equal(snap(r[1]).exists, false, "a dry run mounts and creates nothing");
    installOk(r[2]);
    const dry = jsonOf(r[3]);
    assert.deepEqual([dry.changed, dry.added, dry.generation], [["s"], ["t"], null]);
    const g = snap(r[4]).files;
    assert.deepEqual(
      Object.keys(g)
        .filter((k) => !k.includes("/") && k !== ".")
        .sort(),
      [".nixseal", "1"],
    );
    assert.equal(g["1/s"]!.content, v1, "the active generation is untouched");
    assert.equal(snap(r[5]).files["."]!.target, path.join(host.generationsDir, "1"));
    assert.equal(read(host.restartList), "s.service\n", "only the real run wrote the real list");
    assert.equal(read(host.reloadList), "");
    assert.equal(read(host.dryRestartList), "s.service\ns.service\n");
    assert.equal(read(host.dryReloadList), "t.service\n");
  }),
);

test(
  "a failing install reports every problem at once; the old generation stays active and intact",
  withHost(async (host) => {
    const good = uniqueSecret("good");
    const db1 = uniqueSecret("db1");
    const goodFile = await ageFile(host, "good", good);
    const dbFile = await ageFile(host, "db", db1);
    const m1 = writeManifest(
      host,
      [secret("good", goodFile, { restartUnits: ["good.service"] }), secret("db", dbFile)],
      [template("t.conf", `pw=${placeholderOf("db")}\n`)],
    );
    // The second configuration: db re-encrypted to another key, a user and a group that do
    // not exist, a sops key that is not there, and a path occupied by a real file.
    const other = path.join(host.dir, "other_key");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    const otherPub = fs.readFileSync(`${other}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
    const dbWrong = await ageFile(host, "db-wrong", uniqueSecret("db2"), otherPub);
    const yaml = path.join(host.dir, "store", "hosts.yaml");
    await writeSopsYaml(yaml, "a: 1\n", hostToAge(host));
    const occupied = path.join(host.dir, "etc", "occupied");
    fs.writeFileSync(occupied, "not ours\n");
    const missingUser = `nxsnosuch${process.pid}`;
    const m2 = writeManifest(
      host,
      [
        secret("good", goodFile, { restartUnits: ["good.service"] }),
        secret("db", dbWrong),
        secret("owned", goodFile, { owner: missingUser, group: "nxsnosuchgroup" }),
        secret("y", yaml, { format: "yaml", key: "missing/key" }),
        secret("p", goodFile, { path: occupied }),
      ],
      [template("t.conf", `pw=${placeholderOf("db")}\n`)],
    );
    // A failure found only while decrypting: generation 2 is made, then removed.
    const m3 = writeManifest(host, [secret("good", goodFile), secret("db", dbWrong)]);
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "install", args: ["--manifest", m2] },
      { op: "snapshot", dir: host.generationsDir },
      { op: "snapshot", dir: host.secretsDir },
      { op: "install", args: ["--manifest", m3, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    const before = snap(r[1]).files;
    const failed = r[2] as InstallResult;
    assert.equal(failed.status, 1);
    const err = failed.stderr;
    for (const pattern of [
      /secret "db" from \S*db-wrong\.age: no identity matched any of the recipients \(ssh-ed25519\)/,
      new RegExp(`secret "owned": unknown user "${missingUser}"`),
      /secret "owned": unknown group "nxsnosuchgroup"/,
      /secret "y" from \S*hosts\.yaml: has no key "missing"/,
      /secret "p": its path .*occupied is a file, not a symlink/,
      /template "t\.conf": uses secret "db", which could not be decrypted/,
      /6 problems: nothing was installed; generation 1 stays active/,
    ]) {
      assert.match(err, pattern);
    }
    assert.equal((err.match(/hint:/g) ?? []).length, 6, "a hint for every problem");
    assert.ok(!err.includes(good) && !failed.stdout.includes(good), "no value is printed");
    const after = snap(r[3]).files;
    assert.deepEqual(after, before, "the generations (files, owners, modes, contents) are as they were");
    assert.equal(snap(r[4]).files["."]!.target, path.join(host.generationsDir, "1"));
    assert.equal(read(occupied), "not ours\n");
    assert.equal(read(host.restartList), "good.service\n", "a failed install restarts nothing");
    const j3 = jsonOf(r[5]);
    assert.equal(j3.ok, false);
    assert.equal(j3.generation, null);
    assert.equal((j3.problems as unknown[]).length, 1);
    assert.deepEqual(snap(r[6]).files, before, "the new generation was removed");
  }),
);

/** The ssh-to-age recipient of the host's ed25519 key. */
function hostToAge(host: Host): string {
  return sshToAge(host.hostPub);
}

function sshToAge(pubLine: string): string {
  const { key } = decodeSshPublicKeyLine(pubLine);
  return sshEd25519ToAgeRecipient((key as { publicKey: Uint8Array }).publicKey).toString();
}

async function writeSopsYaml(file: string, plainYaml: string, recipient: string): Promise<void> {
  const store = new YamlStore();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(
    file,
    await encryptNewDocument(store.parsePlain(Buffer.from(plainYaml)), store, { keyGroups: [[recipient]] }),
  );
}

test(
  "sops: several keys of one YAML file, read once; the ssh host key acts as its ssh-to-age identity",
  withHost(async (host) => {
    const user = uniqueSecret("user");
    const pw = uniqueSecret("pw");
    const yaml = path.join(host.dir, "store", "hosts.yaml");
    // Indented as sops prints YAML (4 spaces), so the whole document comes back byte for byte.
    const plain = `db:\n    user: ${user}\n    password: ${pw}\n    port: 5432\napi: key\n`;
    await writeSopsYaml(yaml, plain, hostToAge(host));
    const m = writeManifest(host, [
      secret("db/user", yaml, { format: "yaml", key: "db/user" }),
      secret("db/password", yaml, { format: "yaml", key: "db/password" }),
      secret("db/port", yaml, { format: "yaml", key: "db/port" }),
      secret("dbconf", yaml, { format: "yaml", key: "db" }),
      secret("whole.yaml", yaml, { format: "yaml" }),
    ]);
    const strace = which("strace");
    const log = path.join(host.dir, "strace.log");
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m], ...(strace ? { strace: log } : {}) },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    const f = snap(r[1]).files;
    assert.equal(f["1/db/user"]!.content, user);
    assert.equal(f["1/db/password"]!.content, pw);
    assert.equal(f["1/db/port"]!.content, "5432");
    assert.equal(f["1/dbconf"]!.content, `user: ${user}\npassword: ${pw}\nport: 5432\n`);
    assert.equal(f["1/whole.yaml"]!.content, plain);
    if (strace) {
      const opens = read(log)
        .split("\n")
        .filter((l) => l.includes("openat(") && l.includes(JSON.stringify(yaml)));
      assert.equal(opens.length, 1, `the sops file is read once:\n${opens.join("\n")}`);
    }
  }),
);

test(
  "child processes: only mount and getent run, and none of them sees a plaintext (argv or environment)",
  withHost(async (host, users) => {
    const app = addUser("ch");
    users.push(app);
    const value = uniqueSecret("child");
    const f = await ageFile(host, "child", value);
    const ok = writeManifest(
      host,
      [secret("s", f, { owner: app.user, group: app.group })],
      [template("t", `x=${placeholderOf("s")}`)],
    );
    const missing = writeManifest(host, [secret("s", f, { owner: `nxsmissing${process.pid}` })]);
    const users1 = writeManifest(host, [secret("s", f)], [], {
      stage: "users",
      secretsDir: path.join(host.dir, "run", "secrets-for-users"),
      generationsDir: path.join(host.dir, "run", "secrets-for-users.d"),
    });
    const logs = ["ok", "missing", "users"].map((n) => path.join(host.dir, `strace-${n}.log`));
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", ok], strace: logs[0]! },
      { op: "install", args: ["--manifest", missing], strace: logs[1]! },
      { op: "install", args: ["--manifest", users1], strace: logs[2]! },
    ]);
    installOk(r[0]);
    assert.equal((r[1] as InstallResult).status, 1);
    installOk(r[2]);
    const programs = (log: string) =>
      read(log)
        .split("\n")
        .filter((l) => l.includes('execve("') && !/= -1 E/.test(l))
        .map((l) => path.basename(/execve\("([^"]+)"/.exec(l)![1]!));
    const [p0, p1, p2] = logs.map(programs);
    assert.deepEqual(
      p0,
      ["node", "mount"],
      "a first install: one mount, no getent (the users are in /etc/passwd)",
    );
    assert.deepEqual(
      p1,
      ["node", "getent"],
      "an unknown user: one getent (and nothing mounted: the install failed before)",
    );
    assert.deepEqual(p2, ["node", "mount"], "the users stage never asks NSS");
    for (const log of logs) {
      for (const line of read(log)
        .split("\n")
        .filter((l) => l.includes("execve("))) {
        assert.ok(!line.includes(value), "no plaintext in any argv or environment");
      }
    }
  }, "strace"),
);

test(
  "generationsDir: an existing ramfs is used as it is; mount existing refuses a disk",
  withHost(async (host) => {
    const f = await ageFile(host, "x", uniqueSecret("x"));
    const m = writeManifest(host, [secret("x", f)]);
    const disk = writeManifest(host, [secret("x", f)], [], {
      mount: "existing",
      generationsDir: path.join(host.dir, "disk", "generations"),
      secretsDir: path.join(host.dir, "disk", "secrets"),
    });
    const r = runPlan(host, [
      { op: "mountRamfs", dir: host.generationsDir },
      { op: "install", args: ["--manifest", m, "--json"] },
      { op: "install", args: ["--manifest", disk] },
      { op: "snapshot", dir: path.join(host.dir, "disk") },
    ]);
    const j = jsonOf(r[1]);
    assert.equal(j.ok, true);
    assert.equal(j.mounted, false);
    const refused = r[2] as InstallResult;
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /generationsDir .*disk\/generations is not on a ramfs or tmpfs/);
    assert.deepEqual(
      Object.keys(snap(r[3]).files).filter((k) => k !== "." && k !== "generations"),
      [],
      "nothing written to the disk",
    );
  }),
);

test(
  "stage users: root-only secrets installed before users exist",
  withHost(async (host) => {
    const hash = uniqueSecret("$6$hash");
    const f = await ageFile(host, "root-pw", hash);
    const m = writeManifest(host, [secret("root-password", f, { owner: "root", group: "0" })], [], {
      stage: "users",
      restartListFile: null,
      reloadListFile: null,
    });
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m] },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    assert.deepEqual(snap(r[1]).files["1/root-password"], {
      type: "file",
      mode: 0o400,
      uid: 0,
      gid: 0,
      content: hash,
    });
    const bad = writeManifest(host, [secret("x", f, { owner: "nobody" })], [], { stage: "users" });
    const refused = nixseal(["install", "--manifest", bad]);
    assert.equal(refused.status, 2);
    assert.match(
      refused.stderr,
      /secrets\[0\]\.owner: is "nobody", but the users stage runs before users and groups exist/,
    );
  }),
);

test("install --check: structure of every file without any key; exit 1 with all problems, 2 for a bad manifest", async (t) => {
  if (!which("ssh-keygen")) {
    t.skip("needs ssh-keygen");
    return;
  }
  const host = makeHost();
  try {
    const good = await ageFile(host, "good", "v");
    const truncated = path.join(host.dir, "store", "truncated.age");
    fs.writeFileSync(truncated, fs.readFileSync(good).subarray(0, 40));
    const notAge = path.join(host.dir, "store", "plain.txt");
    fs.writeFileSync(notAge, "just text\n");
    const yaml = path.join(host.dir, "store", "hosts.yaml");
    await writeSopsYaml(yaml, "db:\n  password: x\n", hostToAge(host));
    const m = writeManifest(
      host,
      [
        secret("good", good),
        secret("pw", yaml, { format: "yaml", key: "db/password" }),
        secret("whole", yaml, { format: "yaml" }),
      ],
      [],
      { identities: [{ type: "ssh", path: "/nonexistent/key" }] },
    );
    const ok = nixseal(["install", "--check", "--manifest", m]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stderr, /manifest valid: 3 secrets from 2 files, 0 templates/);
    const bad = writeManifest(host, [
      secret("good", good),
      secret("cut", truncated),
      secret("text", notAge),
      secret("gone", path.join(host.dir, "store", "none.age")),
      secret("pw", yaml, { format: "yaml", key: "db/password" }),
      secret("user", yaml, { format: "yaml", key: "db/user" }),
      secret("yaml-as-json", yaml, { format: "json" }),
    ]);
    const r = nixseal(["install", "--check", "--manifest", bad, "--json"]);
    assert.equal(r.status, 1);
    const j = JSON.parse(r.stdout.toString()) as {
      ok: boolean;
      problems: { code: string; message: string; hint: string }[];
    };
    assert.equal(j.ok, false);
    const messages = j.problems.map((p) => `${p.code} ${p.message}`);
    assert.equal(j.problems.length, 5, messages.join("\n"));
    for (const pattern of [
      /AGE_HEADER secret "cut"/,
      /AGE_HEADER secret "text"/,
      /IO secret "gone" .*no such file/,
      /INSTALL secret "user" from \S*hosts\.yaml: has no key "db\/user"/,
      /SOPS_FORMAT secret "yaml-as-json"/,
    ]) {
      assert.ok(
        messages.some((x) => pattern.test(x)),
        `${pattern} in\n${messages.join("\n")}`,
      );
    }
    assert.ok(j.problems.every((p) => p.hint.length > 0));
    const invalid = path.join(host.dir, "invalid.json");
    fs.writeFileSync(invalid, JSON.stringify({ version: 1 }));
    const inv = nixseal(["install", "--check", "--manifest", invalid]);
    assert.equal(inv.status, 2);
    assert.match(inv.stderr, /secretsDir: is missing/);
    assert.match(inv.stderr, /secrets: is missing/);
  } finally {
    host.cleanup();
  }
});

test("install: --help has an example; usage errors exit 2", () => {
  const help = nixseal(["install", "--help"]);
  assert.equal(help.status, 0);
  assert.match(help.stdout.toString(), /Example:\n\s+\$ nixseal install --manifest/);
  const none = nixseal(["install"]);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /expected --manifest FILE/);
  const both = nixseal(["install", "--manifest", "/x.json", "--check", "--dry-run"]);
  assert.equal(both.status, 2);
  const missing = nixseal(["install", "--manifest", "/nonexistent/manifest.json"]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /cannot read the manifest \/nonexistent\/manifest\.json: no such file/);
});

test(
  "many secrets (decrypted on two threads): every value lands under its own name; the failures are exactly the bad files",
  withHost(async (host) => {
    const hostRecipient = parseRecipientString(host.hostPub, "host");
    const stranger = parseRecipientString(X25519Identity.generate().recipient().toString(), "stranger");
    // Enough files for the decrypt worker (parallel-sources.ts) to share them.
    const count = PARALLEL_MIN_DECRYPTS + 40;
    const bad = new Set([7, 150, count - 1]);
    const values: string[] = [];
    const entries: ReturnType<typeof secret>[] = [];
    fs.mkdirSync(path.join(host.dir, "store"), { recursive: true });
    for (let i = 0; i < count; i++) {
      const value = uniqueSecret(`v${i}`);
      values.push(value);
      const file = path.join(host.dir, "store", `s${i}.age`);
      fs.writeFileSync(file, await encrypt(Buffer.from(value), [bad.has(i) ? stranger : hostRecipient]));
      entries.push(secret(`s/${i}`, file));
    }
    // Two secrets reading one file.
    entries.push(secret("twin", entries[42]!.file));
    // A template's secret stays on the main thread; the others are shared with the worker.
    const templates = [template("t.conf", `five=${placeholderOf("s/5")}\n`)];
    const failing = writeManifest(host, entries, templates);
    assert.equal(workerModeFor(validateManifest(JSON.parse(read(failing)), failing), null, "", 2), "share");
    const fixed = writeManifest(
      host,
      entries.filter((_, i) => !bad.has(i)),
      templates,
    );
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", failing] },
      { op: "snapshot", dir: host.secretsDir },
      { op: "install", args: ["--manifest", fixed] },
      // The trailing slash follows the secretsDir symlink into the active generation.
      { op: "snapshot", dir: `${host.secretsDir}/` },
    ]);
    const failed = r[0] as InstallResult;
    assert.equal(failed.status, 1);
    const named = [...failed.stderr.matchAll(/secret "(s\/\d+)"/g)].map((m) => m[1]);
    assert.deepEqual([...new Set(named)].sort(), [...bad].map((i) => `s/${i}`).sort());
    // Each named with its own file, whichever thread met it.
    for (const i of bad)
      assert.ok(failed.stderr.includes(`secret "s/${i}" from ${entries[i]!.file}:`), `s/${i}`);
    assert.equal(snap(r[1]).exists, false, "no generation became active");
    const ok = installOk(r[2]);
    // The text report names the first 20 added, in the manifest's order, and counts the rest.
    const fixedNames = [...entries.filter((_, i) => !bad.has(i)).map((e) => e.name), "t.conf"];
    const addedLines = ok.stdout.split("\n").filter((l) => l.startsWith("nixseal install: added: "));
    assert.deepEqual(addedLines, [
      `nixseal install: added: ${fixedNames.slice(0, 20).join(", ")} and ${fixedNames.length - 20} more (--json lists them all)`,
    ]);
    const files = snap(r[3]).files;
    for (let i = 0; i < count; i++) {
      if (bad.has(i)) assert.equal(files[`s/${i}`], undefined);
      else assert.equal(files[`s/${i}`]?.content, values[i], `s/${i}`);
    }
    assert.equal(files.twin?.content, values[42]);
    assert.equal(files["t.conf"]?.content, `five=${values[5]}\n`);
    for (const v of values) assert.ok(!failed.stderr.includes(v) && !failed.stdout.includes(v));
  }),
);

test(
  "a first install whose manifest names many age files that are few: the worker started on that guess is closed and the install completes; one that is not valid JSON fails at once",
  withHost(async (host) => {
    // The text names an age file PARALLEL_MIN_DECRYPTS + 8 times, but there are 3 files: the
    // guess made before parsing (early-worker.ts) starts a worker that will not pay.
    const values = ["a", "b", "c"].map((n) => uniqueSecret(`few-${n}`));
    const files = await Promise.all(values.map((v, i) => ageFile(host, `few-${i}`, v)));
    const count = PARALLEL_MIN_DECRYPTS + 8;
    const entries = Array.from({ length: count }, (_, i) => secret(`f/${i}`, files[i % 3]!));
    const m = writeManifest(host, entries);
    assert.equal(workerModeFor(validateManifest(JSON.parse(read(m)), m), null, "", 2), null);
    const text = read(m);
    const broken = path.join(host.dir, "broken-manifest.json");
    fs.writeFileSync(broken, text.slice(0, text.lastIndexOf("}")));
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", broken] },
      { op: "install", args: ["--manifest", m] },
      { op: "snapshot", dir: `${host.secretsDir}/` },
    ]);
    const bad = r[0] as InstallResult;
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /broken-manifest\.json: not valid JSON/);
    installOk(r[1]);
    const got = snap(r[2]).files;
    for (let i = 0; i < count; i++) assert.equal(got[`f/${i}`]?.content, values[i % 3], `f/${i}`);
  }),
);

test(
  "a missing identity file is skipped without a warning while another key decrypts; an unreadable one is a warning",
  withHost(async (host) => {
    const a = await ageFile(host, "a", uniqueSecret("a"));
    const broken = path.join(host.dir, "broken_key");
    fs.writeFileSync(broken, "not a key\n", { mode: 0o600 });
    const m = writeManifest(host, [secret("a", a)], [], {
      identities: [
        { type: "ssh", path: path.join(host.dir, "home", ".ssh", "id_rsa") },
        { type: "ssh", path: broken },
        { type: "ssh", path: host.hostKey },
      ],
    });
    const r = runPlan(host, [{ op: "install", args: ["--manifest", m, "--json"] }]);
    const j = jsonOf(r[0]) as { ok: boolean; warnings: { message: string }[] };
    assert.equal(j.ok, true);
    assert.equal(j.warnings.length, 1, JSON.stringify(j.warnings));
    assert.match(j.warnings[0]!.message, /broken_key/);
    assert.doesNotMatch(JSON.stringify(j.warnings), /id_rsa|host key/);
  }),
);

test(
  "re-activation: unchanged values come from the active generation, only changed ones are decrypted; without the host key an unchanged install still succeeds",
  withHost(async (host, users) => {
    const app = addUser("re");
    users.push(app);
    const [va, vb, vb2, vc] = ["a", "b", "b2", "c"].map(uniqueSecret) as [string, string, string, string];
    const [fa, fb, fb2, fc] = await Promise.all([
      ageFile(host, "a", va),
      ageFile(host, "b", vb),
      ageFile(host, "b2", vb2),
      ageFile(host, "c", vc),
    ]);
    const pw = uniqueSecret("pw");
    const yaml = path.join(host.dir, "store", "re.yaml");
    await writeSopsYaml(yaml, `db:\n    password: ${pw}\n    user: app\n`, hostToAge(host));
    const entries = (b: string) => [
      secret("a", fa, { restartUnits: ["a.service"] }),
      secret("b", b, { restartUnits: ["b.service"] }),
      secret("c/in-dir", fc, { owner: app.user, group: app.group, mode: "0440" }),
      secret("twin", fa),
      secret("pw", yaml, { format: "yaml", key: "db/password" }),
      secret("user", yaml, { format: "yaml", key: "db/user" }),
    ];
    const templates = [template("t.conf", `b=${placeholderOf("b")}\n`, { restartUnits: ["t.service"] })];
    const m1 = writeManifest(host, entries(fb), templates);
    const m2 = writeManifest(host, entries(fb2), templates);
    const aside = path.join(host.dir, "host-key-aside");
    const install = (m: string, ...more: string[]) => ({
      op: "install" as const,
      args: ["--manifest", m, "--json", ...more],
    });
    const r = runPlan(host, [
      install(m1),
      install(m1),
      install(m1, "--dry-run"),
      { op: "copy", from: host.hostKey, to: aside },
      { op: "remove", path: host.hostKey },
      install(m1),
      install(m2),
      { op: "snapshot", dir: `${host.secretsDir}/` },
      { op: "copy", from: aside, to: host.hostKey },
      install(m2),
      { op: "snapshot", dir: `${host.secretsDir}/` },
    ]);
    const counts = (j: Record<string, unknown>) => [j.decrypted, j.reused, j.repaired];
    const first = jsonOf(r[0]);
    assert.equal(first.ok, true);
    assert.deepEqual(counts(first), [6, 0, []], "a first install decrypts everything");
    const same = jsonOf(r[1]);
    assert.equal(same.ok, true);
    assert.deepEqual(counts(same), [0, 6, []], "nothing changed: every value from the active generation");
    assert.deepEqual([same.changed, same.added, same.unchanged, same.restartUnits], [[], [], 7, []]);
    assert.deepEqual(counts(jsonOf(r[2])), [0, 6, []], "a dry run takes them from there too");

    const keyless = jsonOf(r[5]);
    assert.equal(keyless.ok, true, JSON.stringify(keyless.problems));
    assert.deepEqual(counts(keyless), [0, 6, []], "no key needed when nothing must be decrypted");
    assert.deepEqual(keyless.warnings, [], "the identities were not even read");

    const failed = jsonOf(r[6]);
    assert.equal(failed.ok, false);
    assert.equal(failed.generation, null);
    const problems = failed.problems as { code: string; message: string; hint: string }[];
    const messages = problems.map((p) => p.message).join("\n");
    assert.match(messages, /cannot read the ssh key/);
    assert.match(messages, /no identity could be loaded, so secret "b" cannot be decrypted/);
    assert.match(messages, /template "t\.conf": uses secret "b", which could not be decrypted/);
    assert.deepEqual(
      [...new Set([...messages.matchAll(/secret "([^"]+)"/g)].map((m) => m[1]))],
      ["b"],
      "only the changed secret fails",
    );
    assert.ok(problems.every((p) => p.hint.length > 0));
    const kept = snap(r[7]).files;
    assert.equal(kept.b?.content, vb, "the active generation stays");

    const changed = jsonOf(r[9]);
    assert.equal(changed.ok, true);
    assert.deepEqual(counts(changed), [1, 5, []], "only the changed secret is decrypted");
    assert.deepEqual(changed.changed, ["b", "t.conf"]);
    assert.deepEqual(changed.restartUnits, ["b.service", "t.service"]);
    const f = snap(r[10]).files;
    assert.equal(f.a?.content, va);
    assert.equal(f.twin?.content, va);
    assert.equal(f.b?.content, vb2);
    assert.equal(f["t.conf"]?.content, `b=${vb2}\n`);
    assert.equal(f.pw?.content, pw);
    assert.equal(f.user?.content, "app");
    assert.deepEqual(f["c/in-dir"], { type: "file", mode: 0o440, uid: app.uid, gid: app.gid, content: vc });
  }),
);

test(
  "re-activation: a file altered, removed or re-moded in the active generation is decrypted again, not copied; a changed mode, owner or identity set decrypts again",
  withHost(async (host, users) => {
    const app = addUser("rp");
    users.push(app);
    const values = ["a", "b", "c", "d"].map(uniqueSecret) as [string, string, string, string];
    const files = await Promise.all(values.map((v, i) => ageFile(host, `rp${i}`, v)));
    const [a, b, c, d] = ["a", "b", "c", "d"];
    const entries = (more: { aMode?: string; bOwner?: string } = {}) => [
      secret(a!, files[0]!, { mode: more.aMode ?? "0400", restartUnits: ["a.service"] }),
      secret(b!, files[1]!, { owner: more.bOwner ?? "root" }),
      secret(c!, files[2]!),
      secret(d!, files[3]!),
    ];
    const m1 = writeManifest(host, entries());
    const mMode = writeManifest(host, entries({ aMode: "0440" }));
    const mOwner = writeManifest(host, entries({ aMode: "0440", bOwner: app.user }));
    const mIds = writeManifest(host, entries({ aMode: "0440", bOwner: app.user }), [], {
      identities: [
        { type: "ssh", path: host.hostKey },
        { type: "age", path: path.join(host.dir, "no-such-key.txt") },
      ],
    });
    const install = (m: string) => ({ op: "install" as const, args: ["--manifest", m, "--json"] });
    const r = runPlan(host, [
      install(m1),
      { op: "overwrite", path: path.join(host.secretsDir, "a"), content: "tampered" },
      { op: "remove", path: path.join(host.secretsDir, "b") },
      { op: "chmod", path: path.join(host.secretsDir, "c"), mode: 0o444 },
      install(m1),
      { op: "snapshot", dir: `${host.secretsDir}/` },
      install(mMode),
      install(mOwner),
      install(mIds),
      install(mIds),
    ]);
    const counts = (j: Record<string, unknown>) => [j.decrypted, j.reused, j.repaired];
    const repaired = jsonOf(r[4]);
    assert.equal(repaired.ok, true);
    assert.deepEqual(counts(repaired), [3, 1, ["a", "b", "c"]], "d alone was intact");
    const warnings = (repaired.warnings as { message: string }[]).map((w) => w.message);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]!,
      /the files of secrets "a", "b", "c" in generation 1 were changed or removed since they were installed/,
    );
    const f = snap(r[5]).files;
    assert.equal(f.a?.content, values[0], "decrypted again, not the altered copy");
    assert.equal(f.b?.content, values[1]);
    assert.deepEqual([f.c?.content, f.c?.mode], [values[2], 0o400]);
    assert.equal(f.d?.content, values[3]);

    const mode = jsonOf(r[6]);
    assert.deepEqual(counts(mode), [1, 3, []], "a new mode: that file decrypted again");
    assert.deepEqual(mode.changed, ["a"]);
    const owner = jsonOf(r[7]);
    assert.deepEqual(counts(owner), [1, 3, []], "a new owner: that file decrypted again");
    assert.deepEqual(owner.changed, ["b"]);
    const ids = jsonOf(r[8]);
    assert.equal(ids.ok, true);
    assert.deepEqual(counts(ids), [4, 0, []], "another identity set: everything decrypted again");
    assert.deepEqual([ids.changed, ids.unchanged], [[], 4], "the same values: nothing restarts");
    assert.deepEqual(
      ids.warnings,
      [],
      "a missing identity file while another key decrypts is skipped silently",
    );
    assert.deepEqual(counts(jsonOf(r[9])), [0, 4, []], "and then the same set again: reused");
  }),
);

test(
  "re-activation: nothing changed keeps the active generation as it was (same number, same files, nothing written, links put back); a change links the unchanged files into the new generation; a tampered copy is decrypted again, never linked",
  withHost(async (host) => {
    const [va, vb, vc, vc2] = ["a", "b", "c", "c2"].map(uniqueSecret) as [string, string, string, string];
    const [fa, fb, fc, fc2] = await Promise.all([
      ageFile(host, "ka", va),
      ageFile(host, "kb", vb),
      ageFile(host, "kc", vc),
      ageFile(host, "kc2", vc2),
    ]);
    const linkA = path.join(host.dir, "links", "a");
    const entries = (c: string) => [
      secret("a", fa, { path: linkA, restartUnits: ["a.service"] }),
      secret("db/b", fb, { mode: "0440" }),
      secret("c", c, { restartUnits: ["c.service"] }),
    ];
    const templates = [template("t.conf", `b=${placeholderOf("db/b")}\n`, { restartUnits: ["t.service"] })];
    const m1 = writeManifest(host, entries(fc), templates);
    const m2 = writeManifest(host, entries(fc2), templates);
    const gen = (n: number, name: string) => path.join(host.generationsDir, String(n), name);
    const install = (m: string) => ({ op: "install" as const, args: ["--manifest", m, "--json"] });
    const r = runPlan(host, [
      install(m1),
      { op: "snapshot", dir: host.generationsDir },
      { op: "inode", path: gen(1, "a") },
      install(m1),
      { op: "snapshot", dir: host.generationsDir },
      { op: "inode", path: gen(1, "a") },
      { op: "remove", path: linkA },
      install(m1),
      { op: "snapshot", dir: path.dirname(linkA) },
      install(m2),
      { op: "inode", path: gen(2, "a") },
      { op: "inode", path: gen(2, "db/b") },
      { op: "inode", path: gen(1, "db/b") },
      { op: "snapshot", dir: `${host.secretsDir}/` },
      { op: "overwrite", path: gen(2, "db/b"), content: "tampered" },
      { op: "inode", path: gen(2, "db/b") },
      install(m2),
      { op: "inode", path: gen(3, "db/b") },
      { op: "inode", path: gen(3, "a") },
      { op: "snapshot", dir: `${host.secretsDir}/` },
    ]);
    const inode = (k: number) => r[k] as Extract<(typeof r)[number], { op: "inode" }>;
    const counts = (j: Record<string, unknown>) => [j.generation, j.decrypted, j.reused, j.repaired];
    assert.deepEqual(counts(jsonOf(r[0])), [1, 3, 0, []]);

    const same = jsonOf(r[3]);
    assert.equal(same.ok, true, JSON.stringify(same.problems));
    assert.deepEqual(counts(same), [1, 0, 3, []], "nothing changed: generation 1 stays active");
    assert.deepEqual(
      [same.previousGeneration, same.added, same.changed, same.removed, same.unchanged, same.restartUnits],
      [1, [], [], [], 4, []],
    );
    assert.deepEqual(snap(r[4]), snap(r[1]), "every file, mode, owner and metadata record as it was");
    assert.ok(!("2" in snap(r[4]).files), "no new generation");
    assert.deepEqual(inode(5), inode(2), "the same file, not rewritten (inode, mtime)");

    const relinked = jsonOf(r[7]);
    assert.deepEqual(counts(relinked), [1, 0, 3, []]);
    assert.equal(snap(r[8]).files.a?.target, path.join(host.secretsDir, "a"), "the missing link made again");

    const changed = jsonOf(r[9]);
    assert.deepEqual(counts(changed), [2, 1, 2, []], "only c decrypted");
    assert.deepEqual([changed.changed, changed.restartUnits], [["c"], ["c.service"]]);
    assert.equal(inode(10).ino, inode(2).ino, "a: the active generation's file, hard-linked");
    assert.equal(inode(11).ino, inode(12).ino, "db/b too");
    const f2 = snap(r[13]).files;
    assert.deepEqual([f2.a?.content, f2.a?.mode], [va, 0o400]);
    assert.deepEqual([f2["db/b"]?.content, f2["db/b"]?.mode], [vb, 0o440]);
    assert.equal(f2.c?.content, vc2);
    assert.equal(f2["t.conf"]?.content, `b=${vb}\n`);

    const repaired = jsonOf(r[16]);
    assert.equal(repaired.ok, true, JSON.stringify(repaired.problems));
    assert.deepEqual(
      counts(repaired),
      [3, 1, 2, ["db/b"]],
      "the tampered copy is decrypted, in a new generation",
    );
    assert.notEqual(inode(17).ino, inode(15).ino, "the tampered file is not linked");
    assert.equal(inode(18).ino, inode(2).ino, "the intact one still is");
    const f3 = snap(r[19]).files;
    assert.deepEqual([f3["db/b"]?.content, f3["db/b"]?.mode], [vb, 0o440]);
    assert.equal(f3["t.conf"]?.content, `b=${vb}\n`);
    assert.equal(f3.a?.content, va);
  }),
);

test(
  "re-activation of many secrets with a few changed (the main thread copies, the worker decrypts the rest): every value right, a tampered copy repaired, and without the key only the changed ones fail",
  withHost(async (host) => {
    const hostRecipient = parseRecipientString(host.hostPub, "host");
    const count = PARALLEL_MIN_COPIES + 8;
    const changed = new Set([3, 700, count - 1]);
    const values: string[] = [];
    const newValues = new Map<number, string>();
    const first: ReturnType<typeof secret>[] = [];
    const second: ReturnType<typeof secret>[] = [];
    const third: ReturnType<typeof secret>[] = [];
    fs.mkdirSync(path.join(host.dir, "store"), { recursive: true });
    const write = async (file: string, value: string) =>
      fs.writeFileSync(file, await encrypt(Buffer.from(value), [hostRecipient]));
    for (let i = 0; i < count; i++) {
      const value = uniqueSecret(`m${i}`);
      values.push(value);
      const file = path.join(host.dir, "store", `m${i}.age`);
      await write(file, value);
      first.push(secret(`m/${i}`, file));
      let file2 = file;
      if (changed.has(i)) {
        newValues.set(i, uniqueSecret(`n${i}`));
        file2 = path.join(host.dir, "store", `n${i}.age`);
        await write(file2, newValues.get(i)!);
      }
      second.push(secret(`m/${i}`, file2));
      third.push(secret(`m/${i}`, i === 10 ? first[3]!.file : file2));
    }
    const m1 = writeManifest(host, first);
    const m2 = writeManifest(host, second);
    const m3 = writeManifest(host, third);
    // What the first install records, as far as the choice of the worker's part looks at it.
    const ids = identitySetHash([{ type: "ssh", path: host.hostKey, name: null }]);
    const recorded: GenerationMeta = {
      version: 1,
      generation: 1,
      identities: ids,
      entries: first.map((s) => ({
        ...s,
        kind: "secret" as const,
        uid: 0,
        gid: 0,
        mode: 0o400,
        hmac: "",
        credential: null,
        cipher: "recorded",
      })),
    };
    assert.equal(
      workerModeFor(validateManifest(JSON.parse(read(m2)), m2), recorded, ids, 2),
      "rest",
      "this case is the worker's 'rest' mode (on two cores)",
    );
    const aside = path.join(host.dir, "key-aside");
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1, "--json"] },
      { op: "overwrite", path: path.join(host.secretsDir, "m", "5"), content: "tampered" },
      { op: "install", args: ["--manifest", m2, "--json"] },
      { op: "snapshot", dir: `${host.secretsDir}/` },
      { op: "copy", from: host.hostKey, to: aside },
      { op: "remove", path: host.hostKey },
      { op: "install", args: ["--manifest", m3, "--json"] },
    ]);
    const j1 = jsonOf(r[0]);
    assert.deepEqual([j1.ok, j1.decrypted, j1.reused], [true, count, 0]);
    const j2 = jsonOf(r[2]);
    assert.equal(j2.ok, true, JSON.stringify(j2.problems));
    assert.deepEqual(
      [j2.decrypted, j2.reused, j2.repaired],
      [changed.size + 1, count - changed.size - 1, ["m/5"]],
    );
    assert.deepEqual(
      j2.changed,
      [...changed].map((i) => `m/${i}`),
    );
    const files = snap(r[3]).files;
    for (let i = 0; i < count; i++) {
      assert.equal(files[`m/${i}`]?.content, newValues.get(i) ?? values[i], `m/${i}`);
    }
    const j3 = jsonOf(r[6]);
    assert.equal(j3.ok, false);
    const messages = (j3.problems as { message: string }[]).map((p) => p.message).join("\n");
    assert.match(messages, /no identity could be loaded, so secret "m\/10" cannot be decrypted/);
    assert.deepEqual(
      [...new Set([...messages.matchAll(/secret "([^"]+)"/g)].map((m) => m[1]))],
      ["m/10"],
      "only the changed secret fails",
    );
  }),
);

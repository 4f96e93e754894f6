/**
 * The install steps that decide without root: which units restart or reload (diff, from the
 * previous generation's metadata) and the `path` symlinks (linkPaths). Both run here on plain
 * data and a temp directory; the install tests (install.test.ts) run the whole chain as root.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import type { SyncStatus } from "../../src/creds/index.js";
import type { GenerationMeta, MetaEntry } from "../../src/install/generations.js";
import { diff } from "../../src/install/steps/diff.js";
import { linkPaths } from "../../src/install/steps/link-paths.js";
import { InstallProblems } from "../../src/install/steps/problems.js";
import { tempDir, which } from "../helpers.js";
import { addUser, removeUsers, type TestUser } from "./fixture.js";

function entry(name: string, more: Partial<MetaEntry> = {}): MetaEntry {
  return {
    name,
    kind: "secret",
    uid: 0,
    gid: 0,
    mode: 0o400,
    hmac: `hash-of-${name}`,
    path: null,
    restartUnits: [],
    reloadUnits: [],
    credential: null,
    ...more,
  };
}

function gen(n: number, entries: MetaEntry[]): GenerationMeta {
  return { version: 1, generation: n, entries };
}

const none = new Map<string, SyncStatus>();

test("diff: no previous generation: everything is added and every unit named once", () => {
  const c = diff(
    null,
    [
      entry("a", { restartUnits: ["x.service", "y.service"] }),
      entry("b", { restartUnits: ["x.service"], reloadUnits: ["n.service"] }),
    ],
    none,
  );
  assert.deepEqual(c, {
    added: ["a", "b"],
    changed: [],
    removed: [],
    unchanged: 0,
    restartUnits: ["x.service", "y.service"],
    reloadUnits: ["n.service"],
  });
});

test("diff: content, owner, group and mode each count as a change; the same file does not", () => {
  const old = [
    entry("same", { restartUnits: ["same.service"] }),
    entry("content", { restartUnits: ["content.service"] }),
    entry("owner", { restartUnits: ["owner.service"] }),
    entry("group", { reloadUnits: ["group.service"] }),
    entry("mode", { restartUnits: ["mode.service"] }),
  ];
  const now = [
    entry("same", { restartUnits: ["same.service"] }),
    entry("content", { hmac: "other", restartUnits: ["content.service"] }),
    entry("owner", { uid: 1000, restartUnits: ["owner.service"] }),
    entry("group", { gid: 1000, reloadUnits: ["group.service"] }),
    entry("mode", { mode: 0o440, restartUnits: ["mode.service"] }),
  ];
  const c = diff(gen(3, old), now, none);
  assert.deepEqual(c.changed, ["content", "owner", "group", "mode"]);
  assert.equal(c.unchanged, 1);
  assert.deepEqual(c.restartUnits, ["content.service", "owner.service", "mode.service"]);
  assert.deepEqual(c.reloadUnits, ["group.service"]);
});

test("diff: a removed entry restarts the units it had (the new ones do not know it)", () => {
  const c = diff(
    gen(1, [entry("kept"), entry("gone", { restartUnits: ["old.service"], reloadUnits: ["r.service"] })]),
    [entry("kept")],
    none,
  );
  assert.deepEqual(c.removed, ["gone"]);
  assert.deepEqual(c.restartUnits, ["old.service"]);
  assert.deepEqual(c.reloadUnits, ["r.service"]);
});

test("diff: a credential follows the store's verdict, and a file turned credential is a change", () => {
  const cred = (name: string, id: string) =>
    entry(name, { credential: id, hmac: "ignored-for-credentials", restartUnits: [`${id}.service`] });
  const status = new Map<string, SyncStatus>([
    ["same", "unchanged"],
    ["updated", "updated"],
    ["fresh", "unchanged"],
    ["turned", "unchanged"],
  ]);
  const c = diff(
    gen(2, [cred("s", "same"), cred("u", "updated"), entry("t", { restartUnits: ["turned.service"] })]),
    // "fresh": no record before (the ramfs was emptied by a reboot), the store says unchanged.
    [cred("s", "same"), cred("u", "updated"), cred("f", "fresh"), cred("t", "turned")],
    status,
  );
  assert.deepEqual(c.changed, ["u", "t"]);
  assert.deepEqual(c.added, []);
  assert.equal(c.unchanged, 2);
  assert.deepEqual(c.restartUnits, ["updated.service", "turned.service"]);
});

function linkDir(): { dir: string; secretsDir: string; cleanup: () => void } {
  const { dir, cleanup } = tempDir("nixseal-steps-");
  return { dir, secretsDir: path.join(dir, "run", "secrets"), cleanup };
}

test("linkPaths: makes each path a symlink into secretsDir, making its parents", () => {
  const { dir, secretsDir, cleanup } = linkDir();
  try {
    const p = path.join(dir, "etc", "app", "deep", "token");
    const problems = new InstallProblems();
    linkPaths(secretsDir, [entry("db/token", { path: p }), entry("no-path")], null, problems);
    assert.deepEqual(problems.list, []);
    assert.equal(fs.readlinkSync(p), path.join(secretsDir, "db/token"));
    assert.deepEqual(fs.readdirSync(path.dirname(p)), ["token"], "no temp link left behind");
  } finally {
    cleanup();
  }
});

test("linkPaths: replaces a stale symlink, refuses a file in the way, leaves it untouched", () => {
  const { dir, secretsDir, cleanup } = linkDir();
  try {
    const stale = path.join(dir, "stale");
    const file = path.join(dir, "file");
    fs.symlinkSync("/somewhere/else", stale);
    fs.writeFileSync(file, "mine");
    const problems = new InstallProblems();
    linkPaths(secretsDir, [entry("a", { path: stale }), entry("b", { path: file })], null, problems);
    assert.equal(fs.readlinkSync(stale), path.join(secretsDir, "a"));
    assert.equal(fs.readFileSync(file, "utf8"), "mine");
    assert.equal(problems.list.length, 1);
    assert.match(problems.list[0]!.message, /secret "b": its path .*\/file is a file, not a symlink/);
  } finally {
    cleanup();
  }
});

test("linkPaths: a removed entry's link goes only while it still points where nixseal put it", () => {
  const { dir, secretsDir, cleanup } = linkDir();
  try {
    const ours = path.join(dir, "ours");
    const retargeted = path.join(dir, "retargeted");
    fs.symlinkSync(path.join(secretsDir, "old"), ours);
    fs.symlinkSync("/elsewhere", retargeted);
    const previous = gen(1, [entry("old", { path: ours }), entry("other", { path: retargeted })]);
    const problems = new InstallProblems();
    linkPaths(secretsDir, [], previous, problems);
    assert.deepEqual(problems.list, []);
    assert.equal(fs.existsSync(ours) || isLink(ours), false);
    assert.equal(fs.readlinkSync(retargeted), "/elsewhere");
  } finally {
    cleanup();
  }
});

test("linkPaths: a credential has no path symlink", () => {
  const { dir, secretsDir, cleanup } = linkDir();
  try {
    const p = path.join(dir, "cred");
    const problems = new InstallProblems();
    linkPaths(secretsDir, [entry("c", { path: p, credential: "c" })], null, problems);
    assert.equal(isLink(p), false);
  } finally {
    cleanup();
  }
});

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

const asRoot =
  process.geteuid?.() !== 0
    ? "needs root (a real unprivileged user owns the directories)"
    : !which("useradd") || !which("runuser")
      ? "needs useradd and runuser"
      : false;

/** A temp tree others may traverse, a real user, and `as(user, cmd...)` run as that user. */
function withUser(fn: (dir: string, u: TestUser, secretsDir: string) => void): () => void {
  return () => {
    const { dir, cleanup } = tempDir("nixseal-steps-");
    fs.chmodSync(dir, 0o755);
    const u = addUser("walk");
    try {
      fn(dir, u, path.join(dir, "run", "secrets"));
    } finally {
      removeUsers([u]);
      cleanup();
    }
  };
}

function asUser(u: TestUser, ...argv: string[]): void {
  const r = spawnSync("runuser", ["-u", u.user, "--", ...argv], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
}

function oneProblem(problems: InstallProblems, re: RegExp): void {
  assert.equal(problems.list.length, 1, problems.list.map((p) => p.message).join("\n"));
  const p = problems.list[0]!;
  assert.match(p.message, re);
  assert.doesNotMatch(p.message, /\n/, "one line");
  assert.match(p.hint ?? "", /root owns/);
}

test(
  "linkPaths: a symlink a user made on the path is not followed; root's is",
  { skip: asRoot },
  withUser((dir, u, secretsDir) => {
    const shared = path.join(dir, "tmp");
    const victim = path.join(dir, "victim");
    fs.mkdirSync(shared, { mode: 0o777 });
    fs.chmodSync(shared, 0o1777); // like /tmp: anyone may add entries
    fs.mkdirSync(victim, { mode: 0o755 });
    asUser(u, "ln", "-s", victim, path.join(shared, "app"));
    const problems = new InstallProblems();
    linkPaths(
      secretsDir,
      [entry("token", { path: path.join(shared, "app", "deep", "token") })],
      null,
      problems,
    );
    oneProblem(
      problems,
      new RegExp(`secret "token": its path .*: .*/tmp/app is a symlink owned by uid ${u.uid}`),
    );
    assert.deepEqual(fs.readdirSync(victim), [], "nothing made where the user's symlink points");

    // A symlink of root's (as /etc/static on NixOS) is followed.
    const real = path.join(dir, "static");
    fs.mkdirSync(real, { mode: 0o755 });
    fs.symlinkSync(real, path.join(dir, "etc"));
    const ok = new InstallProblems();
    linkPaths(secretsDir, [entry("token", { path: path.join(dir, "etc", "app", "token") })], null, ok);
    assert.deepEqual(ok.list, []);
    assert.equal(fs.readlinkSync(path.join(real, "app", "token")), path.join(secretsDir, "token"));
  }),
);

test(
  "linkPaths: a directory a user owns, or one group or others may write, is not used",
  { skip: asRoot },
  withUser((dir, u, secretsDir) => {
    const home = path.join(dir, "home");
    fs.mkdirSync(home, { mode: 0o755 });
    fs.chownSync(home, u.uid, u.gid);
    const open = path.join(dir, "open");
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const grouped = path.join(dir, "grouped");
    fs.mkdirSync(grouped);
    fs.chmodSync(grouped, 0o775);
    fs.chownSync(grouped, 0, u.gid);
    for (const [parent, why] of [
      [home, `home is a directory owned by uid ${u.uid}`],
      [open, "open is writable by every user"],
      [grouped, `grouped is writable by group ${u.gid}`],
    ] as const) {
      const problems = new InstallProblems();
      linkPaths(secretsDir, [entry("s", { path: path.join(parent, "sub", "s") })], null, problems);
      oneProblem(problems, new RegExp(why));
      assert.deepEqual(fs.readdirSync(parent), [], `nothing made in ${parent}`);
    }
  }),
);

test(
  "linkPaths: a removed entry's link under a user's symlink is left alone",
  { skip: asRoot },
  withUser((dir, u, secretsDir) => {
    const shared = path.join(dir, "tmp");
    fs.mkdirSync(shared);
    fs.chmodSync(shared, 0o1777);
    const elsewhere = path.join(dir, "elsewhere");
    fs.mkdirSync(elsewhere, { mode: 0o755 });
    const theirs = path.join(elsewhere, "old");
    fs.symlinkSync(path.join(secretsDir, "old"), theirs);
    asUser(u, "ln", "-s", elsewhere, path.join(shared, "d"));
    const problems = new InstallProblems();
    linkPaths(secretsDir, [], gen(1, [entry("old", { path: path.join(shared, "d", "old") })]), problems);
    assert.equal(fs.readlinkSync(theirs), path.join(secretsDir, "old"), "not removed through the symlink");
  }),
);

/**
 * The install steps that decide without root: which units restart or reload (diff, from the
 * previous generation's metadata) and the `path` symlinks (linkPaths). Both run here on plain
 * data and a temp directory; the install tests (install.test.ts) run the whole chain as root.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import type { SyncStatus } from "../../src/creds/index.js";
import type { GenerationMeta, MetaEntry } from "../../src/install/generations.js";
import { diff } from "../../src/install/steps/diff.js";
import { linkPaths } from "../../src/install/steps/link-paths.js";
import { InstallProblems } from "../../src/install/steps/problems.js";
import { tempDir } from "../helpers.js";

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

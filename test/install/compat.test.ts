/**
 * What the installer does for the compat modules (nix/modules/sops-compat.nix,
 * nix/modules/agenix-compat.nix) so that a host behaves as it did with sops-nix or agenix: the
 * manifest fields they set, run by the real `nixseal install` as root in a private mount
 * namespace (ns-driver.ts). Native mode is tested in install.test.ts.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import {
  ageFile,
  type Host,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  runPlan,
  secret,
  snap,
  writeManifest,
} from "./fixture.js";
import type { StepResult } from "./ns-driver.js";

const skip = installTestsSkipReason() ?? false;

let host: Host;
before(() => {
  if (!skip) host = makeHost();
});
after(() => host?.cleanup());

const generationsIn = (files: Record<string, unknown>) =>
  Object.keys(files)
    .filter((k) => /^[0-9]+$/.test(k))
    .sort();

test('keepGenerations "all": nothing is pruned (sops-nix\'s keepGenerations = 0)', { skip }, async () => {
  const manifests = [];
  for (const v of ["one", "two", "three"]) {
    const file = await ageFile(host, `keep-${v}`, v);
    manifests.push(writeManifest(host, [secret("s", file)], [], { keepGenerations: "all" }));
  }
  const r = runPlan(host, [
    ...manifests.map((m) => ({ op: "install" as const, args: ["--json", "--manifest", m] })),
    { op: "snapshot", dir: host.generationsDir },
  ]);
  for (let i = 0; i < 3; i++) {
    const j = jsonOf(r[i]);
    assert.deepEqual(j.problems, []);
    assert.deepEqual(j.pruned, [], `install ${i + 1} prunes nothing`);
  }
  const g = snap(r[3]).files;
  assert.deepEqual(generationsIn(g), ["1", "2", "3"]);
  assert.equal((g["1/s"] as { content: string }).content, "one");
});

test("replaceExisting: a file at a path is replaced by the link, with a warning naming it; a directory still stops the install", {
  skip,
}, async () => {
  const file = await ageFile(host, "replace", "new-secret");
  const etc = path.join(host.dir, "etc", "replace");
  const occupied = path.join(etc, "token");
  const dirThere = path.join(etc, "dir");
  fs.mkdirSync(dirThere, { recursive: true });
  fs.writeFileSync(occupied, "old content written by hand");
  const native = writeManifest(host, [secret("token", file, { path: occupied })]);
  const compat = writeManifest(host, [secret("token", file, { path: occupied })], [], {
    replaceExisting: true,
  });
  const intoDir = writeManifest(host, [secret("token", file, { path: dirThere })], [], {
    replaceExisting: true,
  });
  const r = runPlan(host, [
    { op: "install", args: ["--json", "--manifest", native] },
    { op: "stat", path: occupied },
    { op: "install", args: ["--json", "--manifest", compat] },
    { op: "stat", path: occupied },
    { op: "install", args: ["--json", "--manifest", intoDir] },
  ]);
  // Native: refused, the file untouched.
  assert.equal((r[0] as { status: number }).status, 1);
  assert.match(JSON.stringify(jsonOf(r[0]).problems), /is a file, not a symlink/);
  assert.equal((r[1] as Extract<StepResult, { op: "stat" }>).content, "old content written by hand");
  // Compat: replaced, as sops-nix and agenix do, and said so.
  const j = jsonOf(r[2]);
  assert.deepEqual(j.problems, []);
  const warnings = j.warnings as { message: string; file: string }[];
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!.message, new RegExp(`the file ${occupied} was replaced by a symlink`));
  assert.equal(warnings[0]!.file, occupied);
  const after = r[3] as Extract<StepResult, { op: "stat" }>;
  assert.equal(after.lstatType, "symlink");
  assert.equal(after.content, "new-secret");
  // A directory is never replaced.
  assert.equal((r[4] as { status: number }).status, 1);
  assert.match(JSON.stringify(jsonOf(r[4]).problems), /is a directory, not a symlink/);
});

test('changeDetection "files": nothing restarted at boot; files changed or removed by hand are noticed; no stray file survives', {
  skip,
}, async () => {
  const run = path.join(host.dir, "run", "files-mode");
  const secretsDir = path.join(run, "secrets");
  const restartList = path.join(run, "restart-list");
  const reloadList = path.join(run, "reload-list");
  const a = await ageFile(host, "fm-a", "value-a");
  const b = await ageFile(host, "fm-b", "value-b");
  const c = await ageFile(host, "fm-c", "value-c");
  const entries = [
    secret("a", a, { restartUnits: ["a.service"] }),
    secret("b", b, { reloadUnits: ["b.service"] }),
    secret("c", c, { restartUnits: ["c.service"] }),
  ];
  const where = {
    secretsDir,
    generationsDir: path.join(run, "secrets.d"),
    restartListFile: restartList,
    reloadListFile: reloadList,
  };
  const files = writeManifest(host, entries, [], { ...where, changeDetection: "files" });
  const r = runPlan(host, [
    { op: "install", args: ["--json", "--manifest", files] },
    { op: "install", args: ["--json", "--manifest", files] },
    { op: "write", path: path.join(secretsDir, "a"), content: "changed by hand" },
    { op: "write", path: path.join(secretsDir, "b"), content: null },
    { op: "write", path: path.join(secretsDir, "stray"), content: "left by hand" },
    { op: "install", args: ["--json", "--manifest", files] },
    { op: "stat", path: path.join(secretsDir, "stray") },
    { op: "stat", path: path.join(secretsDir, "a") },
  ]);
  const [boot, again, afterHand] = [jsonOf(r[0]), jsonOf(r[1]), jsonOf(r[5])];
  assert.deepEqual(boot.problems, []);
  // Boot (no generation before): sops-nix restarts nothing.
  assert.deepEqual(boot.added, ["a", "b", "c"]);
  assert.deepEqual([boot.restartUnits, boot.reloadUnits], [[], []]);
  assert.deepEqual([again.restartUnits, again.reloadUnits, again.unchanged], [[], [], 3]);
  // The files as they were found: a changed, b missing; c untouched restarts nothing.
  assert.deepEqual(afterHand.changed, ["a"]);
  assert.deepEqual(afterHand.added, ["b"]);
  assert.deepEqual([afterHand.restartUnits, afterHand.reloadUnits], [["a.service"], ["b.service"]]);
  assert.equal(fs.readFileSync(restartList, "utf8"), "a.service\n");
  assert.equal(fs.readFileSync(reloadList, "utf8"), "b.service\n");
  assert.equal((r[6] as Extract<StepResult, { op: "stat" }>).lstatType, null, "the stray file is gone");
  assert.equal((r[7] as Extract<StepResult, { op: "stat" }>).content, "value-a");
});

test('changeDetection "files" on the first switch from sops-nix: its generation (no nixseal metadata) is compared file by file, then pruned', {
  skip,
}, async () => {
  const run = path.join(host.dir, "run", "from-sops-nix");
  const secretsDir = path.join(run, "secrets");
  const generationsDir = path.join(run, "secrets.d");
  const same = await ageFile(host, "sn-same", "unchanged-value");
  const differs = await ageFile(host, "sn-differs", "new-value");
  const m = writeManifest(
    host,
    [
      secret("same", same, { restartUnits: ["same.service"] }),
      secret("differs", differs, { restartUnits: ["differs.service"] }),
    ],
    [],
    {
      secretsDir,
      generationsDir,
      restartListFile: path.join(run, "restart-list"),
      reloadListFile: path.join(run, "reload-list"),
      changeDetection: "files",
    },
  );
  // What sops-nix left: a ramfs on /run/secrets.d, generation 1 (files, no nixseal metadata),
  // /run/secrets linking to it.
  const r2 = runPlan(host, [
    { op: "mountRamfs", dir: generationsDir },
    { op: "mkdir", path: path.join(generationsDir, "1"), mode: 0o751 },
    { op: "write", path: path.join(generationsDir, "1", "same"), content: "unchanged-value" },
    { op: "write", path: path.join(generationsDir, "1", "differs"), content: "old-value" },
    { op: "chmod", path: path.join(generationsDir, "1", "same"), mode: 0o400 },
    { op: "chmod", path: path.join(generationsDir, "1", "differs"), mode: 0o400 },
    { op: "symlink", path: secretsDir, target: path.join(generationsDir, "1"), replace: true },
    { op: "install", args: ["--json", "--manifest", m] },
    { op: "install", args: ["--json", "--manifest", m] },
    { op: "snapshot", dir: generationsDir },
  ]);
  const first = jsonOf(r2[7]);
  assert.deepEqual(first.problems, []);
  assert.equal(first.previousGeneration, 1);
  assert.deepEqual(first.changed, ["differs"]);
  assert.deepEqual(first.restartUnits, ["differs.service"]);
  // Without nixseal's metadata it is not a generation to keep: it goes once it is not active.
  assert.deepEqual(first.pruned, [1]);
  const second = jsonOf(r2[8]);
  assert.deepEqual([second.unchanged, second.restartUnits], [2, []]);
  // Nothing changed since: generation 2 stays active, no generation 3 is made.
  assert.deepEqual([second.generation, second.previousGeneration], [2, 2]);
  assert.deepEqual(
    Object.keys(snap(r2[9]).files)
      .filter((k) => /^[0-9]+$/.test(k))
      .sort(),
    ["2"],
  );
});

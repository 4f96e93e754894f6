/**
 * Encrypted files in the Nix store (docs/manifest.md, storeDir; docs/architecture.md, "Store
 * files are not read again"): the real installer, encrypted files added to the real store with
 * nix-store --add. To see whether a file is read, another encryption is bind-mounted over it
 * inside the test's mount namespace: the path stays the same, the content does not, so an
 * install that reads the file gets the other value and one that does not keeps the first.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { which } from "../helpers.js";
import {
  ageFile,
  type Host,
  installOk,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  runPlan,
  secret,
  snap,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason() ?? (which("nix-store") ? null : "needs nix-store (Debian nix-bin)");

interface StoreFixture {
  host: Host;
  /** The store path nix-store --add made of the encrypted files. */
  storePath: string;
  /** The store directory it is in (what the modules write as storeDir). */
  storeDir: string;
  /** Plaintexts: the files' values, and those of the other encryptions bound over them. */
  v: Record<"a" | "t" | "x" | "o" | "a2" | "t2" | "x2" | "o2", string>;
  /** Other encryptions (outside the store) of a2, t2, x2 for the host. */
  other: Record<"a" | "t" | "x", string>;
  /** An encrypted file outside the store, and another encryption of o2. */
  outside: string;
  otherOutside: string;
}

/**
 * In the store: a.age (a regular file), link.age (a symlink to t.age beside it), and
 * via/x.age where via is a symlink to the directory sub (a symlink on the way, not at the end).
 */
async function withStore(fn: (f: StoreFixture) => Promise<void>) {
  return async (t: { skip(msg: string): void }) => {
    if (skip !== null) {
      t.skip(skip);
      return;
    }
    const host = makeHost();
    let storePath: string | null = null;
    try {
      const names = ["a", "t", "x", "o", "a2", "t2", "x2", "o2"] as const;
      const v = Object.fromEntries(names.map((n) => [n, uniqueSecret(n)])) as StoreFixture["v"];
      const src = path.join(host.dir, "src");
      fs.mkdirSync(path.join(src, "sub"), { recursive: true });
      fs.copyFileSync(await ageFile(host, "a", v.a), path.join(src, "a.age"));
      fs.copyFileSync(await ageFile(host, "t", v.t), path.join(src, "t.age"));
      fs.copyFileSync(await ageFile(host, "x", v.x), path.join(src, "sub", "x.age"));
      fs.symlinkSync("t.age", path.join(src, "link.age"));
      fs.symlinkSync("sub", path.join(src, "via"));
      const r = spawnSync("nix-store", ["--add", src], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      storePath = r.stdout.trim();
      await fn({
        host,
        storePath,
        storeDir: path.dirname(storePath),
        v,
        other: {
          a: await ageFile(host, "a2", v.a2),
          t: await ageFile(host, "t2", v.t2),
          x: await ageFile(host, "x2", v.x2),
        },
        outside: await ageFile(host, "o", v.o),
        otherOutside: await ageFile(host, "o2", v.o2),
      });
    } finally {
      // Nothing refers to it: the metadata of a generation is not a GC root.
      if (storePath !== null) spawnSync("nix-store", ["--delete", storePath], { stdio: "ignore" });
      host.cleanup();
    }
  };
}

function secretsOf(f: StoreFixture) {
  return [
    secret("a", path.join(f.storePath, "a.age")),
    secret("link", path.join(f.storePath, "link.age")),
    secret("via", path.join(f.storePath, "via", "x.age")),
    secret("o", f.outside),
  ];
}

test(
  "storeDir: an unchanged store file is not read again, with nothing changed or with others changed; symlinks and files outside the store are",
  await withStore(async (f) => {
    const { host, storePath, v } = f;
    const m = writeManifest(host, secretsOf(f), [], { storeDir: f.storeDir });
    const withoutStoreDir = writeManifest(host, secretsOf(f));
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m, "--json"] },
      // The store file now has other content at the same path: only reading it would tell.
      { op: "bind", from: f.other.a, to: path.join(storePath, "a.age") },
      { op: "install", args: ["--manifest", m, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      // The symlink's target, the file behind a symlinked directory and the file outside change too.
      { op: "bind", from: f.other.t, to: path.join(storePath, "t.age") },
      { op: "bind", from: f.other.x, to: path.join(storePath, "sub", "x.age") },
      { op: "bind", from: f.otherOutside, to: f.outside },
      { op: "install", args: ["--manifest", m, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      // Without storeDir every file is read, the store file too.
      { op: "install", args: ["--manifest", withoutStoreDir, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    for (const [i, step] of r.entries()) if (step.op === "bind") assert.equal(step.ok, true, `bind ${i}`);
    const first = jsonOf(installOk(r[0]));
    assert.deepEqual([first.generation, first.decrypted], [1, 4]);

    const kept = jsonOf(installOk(r[2]));
    assert.deepEqual([kept.generation, kept.changed, kept.decrypted], [1, [], 0], "nothing changed: kept");
    assert.equal(snap(r[3]).files["1/a"]!.content, v.a, "the store file was not read");

    const next = jsonOf(installOk(r[7]));
    assert.equal(next.generation, 2);
    assert.deepEqual(next.changed, ["link", "via", "o"], "the symlinks and the file outside were read");
    assert.deepEqual([next.decrypted, next.reused], [3, 1]);
    const files = snap(r[8]).files;
    assert.deepEqual(
      [files["2/a"]!.content, files["2/link"]!.content, files["2/via"]!.content, files["2/o"]!.content],
      [v.a, v.t2, v.x2, v.o2],
      "the unchanged store file taken from the active generation, unread; the others read and decrypted",
    );

    const plain = jsonOf(installOk(r[9]));
    assert.deepEqual([plain.generation, plain.changed], [3, ["a"]]);
    assert.equal(snap(r[10]).files["3/a"]!.content, v.a2, "without storeDir the store file is read");
  }),
);

test(
  "storeDir: a value altered in the active generation is caught by its keyed hash and decrypted again from the store file",
  await withStore(async (f) => {
    const { host, storePath, v } = f;
    const m = writeManifest(host, [secret("a", path.join(storePath, "a.age"))], [], { storeDir: f.storeDir });
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m, "--json"] },
      { op: "overwrite", path: path.join(host.generationsDir, "1", "a"), content: "altered" },
      { op: "install", args: ["--manifest", m, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
      // And once more, with the metadata of the repaired generation: nothing changed, kept.
      { op: "bind", from: f.other.a, to: path.join(storePath, "a.age") },
      { op: "install", args: ["--manifest", m, "--json"] },
      { op: "snapshot", dir: host.generationsDir },
    ]);
    installOk(r[0]);
    const repaired = jsonOf(installOk(r[2]));
    assert.deepEqual(
      [repaired.generation, repaired.decrypted, repaired.reused, repaired.repaired],
      [2, 1, 0, ["a"]],
    );
    assert.equal(snap(r[3]).files["2/a"]!.content, v.a);
    const kept = jsonOf(installOk(r[5]));
    assert.deepEqual([kept.generation, kept.decrypted], [2, 0]);
    assert.equal(
      snap(r[6]).files["2/a"]!.content,
      v.a,
      "the repaired generation recorded the store file too",
    );
  }),
);

test("storeDir: validated as every path (absolute, normalised); absent means null", async () => {
  const { validateManifest } = await import("../../src/install/manifest.js");
  const base = {
    version: 1,
    secretsDir: "/run/s",
    generationsDir: "/run/g",
    keepGenerations: 1,
    identities: [],
    secrets: [],
    templates: [],
    placeholders: {},
  };
  assert.equal(validateManifest(base, "/m.json").storeDir, null);
  assert.equal(validateManifest({ ...base, storeDir: "/nix/store" }, "/m.json").storeDir, "/nix/store");
  assert.equal(validateManifest({ ...base, storeDir: null }, "/m.json").storeDir, null);
  for (const [bad, why] of [
    ["nix/store", /storeDir: .*is not absolute/],
    ["/nix/store/", /storeDir: .*ends with \//],
    ["/nix/../nix/store", /storeDir: .*\. or \.\. segment/],
    [7, /storeDir: .*string/],
  ] as const) {
    assert.throws(
      () => validateManifest({ ...base, storeDir: bad }, "/m.json"),
      (e: Error) => why.test(e.message),
      String(bad),
    );
  }
});

test("isInStore: a store path or a file below one, by its text; nothing else", async () => {
  const { isInStore } = await import("../../src/install/sources.js");
  const h = "0123456789abcdfghijklmnpqrsvwxyz";
  assert.equal(isInStore(`/nix/store/${h}-src`, "/nix/store"), true);
  assert.equal(isInStore(`/nix/store/${h}-src/secrets/db.age`, "/nix/store"), true);
  assert.equal(isInStore(`/custom/store/${h}-db.age`, "/custom/store"), true);
  for (const p of [
    "/nix/store",
    "/nix/store/",
    `/nix/storeX/${h}-src/a`,
    `/nix/store/${h}/a`, // no name
    `/nix/store/${h.replace("0", "e")}-src/a`, // e is not in Nix's base-32
    `/nix/store/${h.slice(1)}-src/a`, // 31 characters
    `/nix/store/${h}-.hidden/a`,
    "/nix/store/.links/abc",
    `/nix/store/${h}-src/../../../etc/shadow`,
    `/tmp/${h}-src/a`,
  ]) {
    assert.equal(isInStore(p, "/nix/store"), false, p);
  }
  assert.equal(isInStore(`/nix/store/${h}-src/a`, null), false, "no storeDir: nothing is a store file");
});

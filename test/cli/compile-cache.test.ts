/**
 * Node's compile cache (src/cli/compile-cache.ts): used only in a directory nobody but the user
 * can write, never creating HOME, off with NIXSEAL_NO_COMPILE_CACHE; and the real CLI fills it.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { compileCacheDir } from "../../src/cli/compile-cache.js";
import { nixseal, tempDir } from "../helpers.js";

const uid = process.geteuid?.() ?? 0;
let dir: string;
let cleanup: () => void;
let n = 0;

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-cc-"));
});
after(() => cleanup());

/** A fresh private home directory (0700) under the test's temp dir. */
function home(): string {
  const h = path.join(dir, `home-${n++}`);
  fs.mkdirSync(h, { mode: 0o700 });
  return h;
}

function modeOf(p: string): number {
  return fs.lstatSync(p).mode & 0o7777;
}

describe("compileCacheDir", () => {
  test("a private HOME: ~/.cache/nixseal/compile-cache, each directory created 0700", () => {
    const h = home();
    const got = compileCacheDir({ HOME: h }, uid);
    assert.equal(got, path.join(fs.realpathSync(h), ".cache", "nixseal", "compile-cache"));
    for (const p of [".cache", ".cache/nixseal", ".cache/nixseal/compile-cache"]) {
      assert.equal(modeOf(path.join(h, p)), 0o700, p);
    }
    // Found again as it is.
    assert.equal(compileCacheDir({ HOME: h }, uid), got);
  });

  test("XDG_CACHE_HOME (absolute, existing) comes first; a relative one is ignored", () => {
    const h = home();
    const xdg = path.join(h, "xdg");
    fs.mkdirSync(xdg, { mode: 0o700 });
    assert.equal(
      compileCacheDir({ HOME: h, XDG_CACHE_HOME: xdg }, uid),
      path.join(fs.realpathSync(xdg), "nixseal", "compile-cache"),
    );
    assert.equal(
      compileCacheDir({ HOME: h, XDG_CACHE_HOME: "relative/cache" }, uid),
      path.join(fs.realpathSync(h), ".cache", "nixseal", "compile-cache"),
    );
    // A missing XDG_CACHE_HOME is not created: no cache.
    const missing = path.join(h, "no-such-dir");
    assert.equal(compileCacheDir({ HOME: h, XDG_CACHE_HOME: missing }, uid), null);
    assert.ok(!fs.existsSync(missing));
  });

  test("NIXSEAL_NO_COMPILE_CACHE turns it off, and nothing is created", () => {
    const h = home();
    assert.equal(compileCacheDir({ HOME: h, NIXSEAL_NO_COMPILE_CACHE: "1" }, uid), null);
    assert.equal(compileCacheDir({ HOME: h, NIXSEAL_NO_COMPILE_CACHE: "" }, uid), null);
    assert.deepEqual(fs.readdirSync(h), []);
  });

  test("no usable HOME: unset, /, relative, missing (never created)", () => {
    assert.equal(compileCacheDir({}, uid), null);
    assert.equal(compileCacheDir({ HOME: "/" }, uid), null);
    assert.equal(compileCacheDir({ HOME: "home" }, uid), null);
    const missing = path.join(dir, "not-created");
    assert.equal(compileCacheDir({ HOME: missing }, uid), null);
    assert.ok(!fs.existsSync(missing), "HOME was created");
  });

  test("a HOME another user owns, or others may write, is not used", () => {
    const h = home();
    assert.equal(compileCacheDir({ HOME: h }, uid + 1), null, "HOME of another uid");
    fs.chmodSync(h, 0o770);
    assert.equal(compileCacheDir({ HOME: h }, uid), null, "group-writable HOME");
    fs.chmodSync(h, 0o702);
    assert.equal(compileCacheDir({ HOME: h }, uid), null, "other-writable HOME");
    assert.deepEqual(fs.readdirSync(h), []);
  });

  test("a directory above HOME that others may write (and is not sticky) makes it unsafe", () => {
    const open = path.join(dir, `open-${n++}`);
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const h = path.join(open, "home");
    fs.mkdirSync(h, { mode: 0o700 });
    assert.equal(compileCacheDir({ HOME: h }, uid), null);
    // Sticky (as /tmp): nobody else can rename or remove home, so it is safe.
    fs.chmodSync(open, 0o1777);
    assert.equal(
      compileCacheDir({ HOME: h }, uid),
      path.join(fs.realpathSync(h), ".cache", "nixseal", "compile-cache"),
    );
  });

  test("a planted symlink or an open directory on the way is refused, and nothing is written through it", () => {
    const h = home();
    const elsewhere = path.join(dir, `elsewhere-${n++}`);
    fs.mkdirSync(elsewhere, { mode: 0o700 });
    fs.mkdirSync(path.join(h, ".cache"), { mode: 0o700 });
    fs.symlinkSync(elsewhere, path.join(h, ".cache", "nixseal"));
    assert.equal(compileCacheDir({ HOME: h }, uid), null);
    assert.deepEqual(fs.readdirSync(elsewhere), []);

    const h2 = home();
    fs.mkdirSync(path.join(h2, ".cache", "nixseal", "compile-cache"), { recursive: true, mode: 0o700 });
    fs.chmodSync(path.join(h2, ".cache", "nixseal", "compile-cache"), 0o777);
    assert.equal(compileCacheDir({ HOME: h2 }, uid), null);
  });

  test("a cache directory someone else pre-created is refused (root only: chown)", {
    skip: uid !== 0,
  }, () => {
    const h = home();
    const planted = path.join(h, ".cache", "nixseal");
    fs.mkdirSync(planted, { recursive: true, mode: 0o700 });
    fs.chownSync(planted, 65534, 65534);
    assert.equal(compileCacheDir({ HOME: h }, uid), null);
    assert.ok(!fs.existsSync(path.join(planted, "compile-cache")));
  });
});

describe("the CLI and its compile cache", () => {
  const env = (h: string, extra: Record<string, string | undefined> = {}) => ({
    HOME: h,
    XDG_CACHE_HOME: undefined,
    NIXSEAL_NO_COMPILE_CACHE: undefined,
    NODE_COMPILE_CACHE: undefined,
    ...extra,
  });

  test("a private HOME gets the cache, filled by a command; the output is the same with and without", () => {
    const h = home();
    const r = nixseal(["age", "--help"], { env: env(h) });
    assert.equal(r.status, 0, r.stderr);
    const cache = path.join(h, ".cache", "nixseal", "compile-cache");
    const versions = fs.readdirSync(cache);
    assert.equal(versions.length, 1, `one directory per Node version: ${versions.join(", ")}`);
    // The bundle's main file and the chunks `age --help` loads.
    assert.ok(fs.readdirSync(path.join(cache, versions[0]!)).length >= 2, "the modules of `age` were cached");

    const again = nixseal(["age", "--help"], { env: env(h) });
    const off = nixseal(["age", "--help"], { env: env(home(), { NIXSEAL_NO_COMPILE_CACHE: "1" }) });
    assert.equal(again.status, 0, again.stderr);
    assert.equal(off.status, 0, off.stderr);
    assert.deepEqual(again.stdout, r.stdout);
    assert.deepEqual(off.stdout, r.stdout);
  });

  test("NIXSEAL_NO_COMPILE_CACHE, or a HOME others may write: nothing is created in HOME", () => {
    const h = home();
    assert.equal(nixseal(["age", "--help"], { env: env(h, { NIXSEAL_NO_COMPILE_CACHE: "1" }) }).status, 0);
    assert.deepEqual(fs.readdirSync(h), []);
    const open = home();
    fs.chmodSync(open, 0o777);
    assert.equal(nixseal(["age", "--help"], { env: env(open) }).status, 0);
    assert.deepEqual(fs.readdirSync(open), []);
  });
});

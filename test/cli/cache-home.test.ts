/**
 * The rules cache and the home directory: nixseal never creates a missing HOME (a service with
 * HOME=/nonexistent), uses $XDG_CACHE_HOME or ~/.cache only inside a directory that exists, and
 * with --no-cache neither reads nor writes the cache.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");

let dir: string;
let cleanup: () => void;
let repo: string;
const RECIPIENT = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq";

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-cache-"));
  repo = path.join(dir, "repo");
  fs.mkdirSync(repo);
  fs.writeFileSync(path.join(repo, "secrets.nix"), `{ "a.age".publicKeys = [ "${RECIPIENT}" ]; }\n`);
});
after(() => cleanup());

/** Every file under `root` (none if it does not exist). */
function filesUnder(root: string): string[] {
  if (!fs.existsSync(root)) return [];
  return (fs.readdirSync(root, { recursive: true }) as string[])
    .map((f) => path.join(root, f))
    .filter((f) => fs.statSync(f).isFile());
}

function list(env: Record<string, string | undefined>, extra: string[] = []) {
  const r = nixseal(["list", "--json", ...extra], { cwd: repo, env });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout.toString()) as { name: string }[]).map((s) => s.name);
}

describe("the rules cache", { skip: NIX ? false : "nix-instantiate is not installed" }, () => {
  test("a missing HOME is not created: the command runs without a cache", () => {
    const home = path.join(dir, "nohome");
    const env = { ...isolatedUserEnv(home, ""), XDG_CACHE_HOME: undefined };
    assert.deepEqual(list(env), ["a.age"]);
    assert.equal(fs.existsSync(home), false, "HOME was created");
    // A relative XDG_CACHE_HOME is ignored (XDG base directory specification): it does not land
    // in the working directory either.
    assert.deepEqual(list({ ...env, XDG_CACHE_HOME: "relative-cache" }), ["a.age"]);
    assert.equal(fs.existsSync(path.join(repo, "relative-cache")), false);
    assert.equal(fs.existsSync(home), false);
  });

  test("XDG_CACHE_HOME inside a missing directory is not created; inside an existing one it is", () => {
    const home = path.join(dir, "home1");
    fs.mkdirSync(home);
    const missingParent = path.join(dir, "missing", "cache");
    assert.deepEqual(list(isolatedUserEnv(home, missingParent)), ["a.age"]);
    assert.equal(fs.existsSync(path.join(dir, "missing")), false);
    assert.deepEqual(filesUnder(home), [], "nothing written to the home instead");

    const cache = path.join(dir, "cache1");
    assert.deepEqual(list(isolatedUserEnv(home, cache)), ["a.age"]);
    const files = filesUnder(cache);
    assert.equal(files.length, 1);
    assert.match(files[0]!, /nixseal\/rules\/[0-9a-f]+\.json$/);
    assert.equal(fs.statSync(files[0]!).mode & 0o777, 0o600);
  });

  test("without XDG_CACHE_HOME: ~/.cache in an existing HOME", () => {
    const home = path.join(dir, "home2");
    fs.mkdirSync(home);
    const env = { ...isolatedUserEnv(home, ""), XDG_CACHE_HOME: undefined };
    assert.deepEqual(list(env), ["a.age"]);
    assert.equal(filesUnder(path.join(home, ".cache", "nixseal", "rules")).length, 1);
  });

  test("--no-cache neither reads nor writes the cache", () => {
    const home = path.join(dir, "home3");
    fs.mkdirSync(home);
    const cache = path.join(dir, "cache3");
    const env = isolatedUserEnv(home, cache);
    assert.deepEqual(list(env, ["--no-cache"]), ["a.age"]);
    assert.deepEqual(filesUnder(cache), [], "--no-cache wrote the cache");
    // Fill the cache, then change what it says: a run that reads it shows the change...
    assert.deepEqual(list(env), ["a.age"]);
    const [entry] = filesUnder(cache);
    const value = JSON.parse(fs.readFileSync(entry!, "utf8"));
    value["from-the-cache.age"] = value["a.age"];
    delete value["a.age"];
    fs.writeFileSync(entry!, JSON.stringify(value));
    assert.deepEqual(list(env), ["from-the-cache.age"]);
    // ...one with --no-cache does not, and leaves the entry as it was.
    const before = fs.readFileSync(entry!);
    assert.deepEqual(list(env, ["--no-cache"]), ["a.age"]);
    assert.deepEqual(fs.readFileSync(entry!), before);
  });
});

describe("init and a missing HOME", () => {
  test("init does not create the home directory for a new identity", () => {
    const home = path.join(dir, "init-nohome");
    const env = { ...isolatedUserEnv(home, path.join(dir, "init-cache")), XDG_CONFIG_HOME: undefined };
    const r = nixseal(["init", path.join(dir, "init-secrets")], { cwd: dir, env });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /does not exist/);
    assert.match(r.stderr, /hint: set HOME/);
    assert.equal(fs.existsSync(home), false, "HOME was created");
    assert.equal(fs.existsSync(path.join(dir, "init-secrets")), false);
  });
});

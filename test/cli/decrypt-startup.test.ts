/**
 * `nixseal decrypt` starts lean: decrypting one small secret, the thing scripts and activations
 * do once per secret, loads none of the Node modules it does not use. Each of these costs
 * milliseconds at every start (bench/startup.ts measures the time; this guards what is loaded):
 * node:child_process and node:net (nothing is run once the rules' evaluation is cached),
 * node:worker_threads (a small file needs no stream workers; a sops file no rekey pool), and
 * Node's ES module wrapper of node:fs, which loads fs/promises, the streams and readline.
 * What is loaded is read from Node's own list (process.moduleLoadList) as the process exits.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { pathToFileURL } from "node:url";
import { encryptNewDocument, YamlStore } from "../../src/sops/index.js";
import { CLI, isolatedUserEnv, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "age is not installed"
    : false;

/** Node's names of the modules a small decrypt must not load. */
const NOT_NEEDED = [
  "NativeModule child_process",
  "NativeModule net",
  "NativeModule tty",
  "NativeModule worker_threads",
  "NativeModule internal/fs/promises",
  "NativeModule internal/readline/interface",
];

let dir: string;
let cleanup: () => void;
let env: Record<string, string | undefined>;
let hook: string;
let identity: string;
let recipient: string;

before(() => {
  ({ dir, cleanup } = tempDir());
  const home = path.join(dir, "home");
  fs.mkdirSync(home);
  env = isolatedUserEnv(home, path.join(dir, "cache"));
  hook = path.join(dir, "loaded.mjs");
  // Loaded before nixseal with --import; it writes Node's list at exit (through require(), which
  // loads no wrapper of its own).
  fs.writeFileSync(
    hook,
    `import { createRequire } from "node:module";
process.on("exit", () => {
  createRequire(import.meta.url)("node:fs").writeFileSync(process.env.LOADED_LIST, process.moduleLoadList.join("\\n"));
});
`,
  );
  if (AGE_KEYGEN) {
    identity = path.join(dir, "key.txt");
    const r = run(AGE_KEYGEN, ["-o", identity]);
    assert.equal(r.status, 0, r.stderr);
    recipient = /^# public key: (age1\S+)$/m.exec(fs.readFileSync(identity, "utf8"))![1]!;
  }
});
after(() => cleanup());

/** Runs nixseal with the hook; returns its result and the modules Node loaded. */
function decryptLoading(args: string[], cwd: string) {
  const list = path.join(dir, "loaded.txt");
  fs.rmSync(list, { force: true });
  const r = run(process.execPath, ["--import", pathToFileURL(hook).href, CLI, ...args], {
    cwd,
    env: { ...env, LOADED_LIST: list },
  });
  assert.equal(r.status, 0, r.stderr);
  return { stdout: r.stdout.toString(), loaded: fs.readFileSync(list, "utf8").split("\n") };
}

describe("decrypt of one small secret loads only what it uses", { skip: missing }, () => {
  test("an age secret with an age identity: no process, net, tty, workers or fs/promises", () => {
    const repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), `{ "db.age".publicKeys = [ "${recipient}" ]; }\n`);
    const enc = run(AGE!, ["-r", recipient, "-o", path.join(repo, "db.age")], { input: "hunter2" });
    assert.equal(enc.status, 0, enc.stderr);
    const args = ["decrypt", "db.age", "-i", identity];
    // The first run evaluates secrets.nix with Nix (a process); later runs read the cached result.
    assert.equal(decryptLoading(args, repo).stdout, "hunter2");
    const { stdout, loaded } = decryptLoading(args, repo);
    assert.equal(stdout, "hunter2");
    assert.deepEqual(
      NOT_NEEDED.filter((m) => loaded.includes(m)),
      [],
    );
  });

  test("nixseal age -d of a small file: the same", () => {
    const file = path.join(dir, "small.age");
    const enc = run(AGE!, ["-r", recipient, "-o", file], { input: "hunter2" });
    assert.equal(enc.status, 0, enc.stderr);
    const { stdout, loaded } = decryptLoading(["age", "-d", "-i", identity, file], dir);
    assert.equal(stdout, "hunter2");
    assert.deepEqual(
      NOT_NEEDED.filter((m) => loaded.includes(m)),
      [],
    );
  });

  test("a sops file with an age identity: the same, and none of rekey's machinery", async () => {
    const store = new YamlStore();
    const file = path.join(dir, "app.yaml");
    fs.writeFileSync(
      file,
      await encryptNewDocument(store.parsePlain(Buffer.from("db:\n    password: hunter2\n")), store, {
        keyGroups: [[recipient]],
      }),
    );
    const { stdout, loaded } = decryptLoading(
      ["decrypt", file, "-i", identity, "--extract", '["db"]["password"]'],
      dir,
    );
    assert.equal(stdout, "hunter2");
    assert.deepEqual(
      NOT_NEEDED.filter((m) => loaded.includes(m)),
      [],
    );
  });
});

/**
 * What a `nixseal install` process loads: a re-activation with nothing to decrypt must not pay
 * for the decryption code (the key formats, src/age, a worker thread) nor for node:child_process
 * when it starts no program. Measured in the real command, in a private mount namespace.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { REPO } from "../helpers.js";
import {
  ageFile,
  type Host,
  installOk,
  installTestsSkipReason,
  makeHost,
  runPlan,
  secret,
  uniqueSecret,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason();

/**
 * The unbundled CLI (tsc's output): its modules are the files whose loading the test follows;
 * the bundle (what users run) cuts its chunks along the same import() boundaries.
 */
const MODULES_CLI = path.join(REPO, "dist", "src", "cli", "main.js");

/**
 * A module preloaded with --import: at exit it writes every file URL resolved (ES imports and
 * require calls alike) and every Node built-in loaded, to $LOADED_MODULES_OUT.
 */
const HOOK = `import * as fs from "node:fs";
import { registerHooks } from "node:module";
const urls = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    urls.add(r.url);
    return r;
  },
});
process.on("exit", () => {
  fs.writeFileSync(process.env.LOADED_MODULES_OUT, JSON.stringify({ urls: [...urls], builtins: process.moduleLoadList }));
});
`;

interface Loaded {
  urls: string[];
  builtins: string[];
}

function loadedBy(host: Host, label: string): { env: Record<string, string>; read: () => Loaded } {
  const hook = path.join(host.dir, "loaded-modules-hook.mjs");
  if (!fs.existsSync(hook)) fs.writeFileSync(hook, HOOK);
  const out = path.join(host.dir, `loaded-${label}.json`);
  return {
    env: { NODE_OPTIONS: `--import=${pathToFileURL(hook).href}`, LOADED_MODULES_OUT: out },
    read: () => JSON.parse(fs.readFileSync(out, "utf8")) as Loaded,
  };
}

/** The nixseal folders (src/NAME) among the URLs. */
function folders(l: Loaded): Set<string> {
  const out = new Set<string>();
  for (const u of l.urls) {
    const m = /\/src\/([a-z-]+)\//.exec(u);
    if (m && u.startsWith("file:") && !u.includes("/node_modules/")) out.add(m[1]!);
  }
  return out;
}

test("install: a re-activation with nothing changed loads no decryption code, no worker thread, no node:child_process and no stream for its stdout; a changed secret loads the key formats on the main thread only", async (t) => {
  if (skip !== null) return t.skip(skip);
  const host = makeHost();
  try {
    const files = await Promise.all(
      ["a", "b", "c"].map((n) => ageFile(host, n, uniqueSecret(`loaded-${n}`))),
    );
    const changed = await ageFile(host, "c2", uniqueSecret("loaded-c2"));
    const m1 = writeManifest(
      host,
      files.map((f, i) => secret(`s${i}`, f)),
    );
    const m2 = writeManifest(host, [secret("s0", files[0]!), secret("s1", files[1]!), secret("s2", changed)]);
    const unchanged = loadedBy(host, "unchanged");
    const oneChanged = loadedBy(host, "changed");
    const r = runPlan(host, [
      { op: "install", args: ["--manifest", m1] },
      { op: "install", args: ["--manifest", m1], env: unchanged.env, cli: MODULES_CLI },
      { op: "install", args: ["--manifest", m2], env: oneChanged.env, cli: MODULES_CLI },
    ]);
    for (const step of r) installOk(step);
    assert.match((r[1] as { stdout: string }).stdout, /no change \(3 unchanged\)/);
    assert.match((r[2] as { stdout: string }).stdout, /changed: s2/);

    const a = unchanged.read();
    const seen = folders(a);
    assert.ok(seen.has("install") && seen.has("cli"), `the hook saw nixseal's modules: ${[...seen]}`);
    for (const f of ["age", "ssh", "keys", "creds", "sops"])
      assert.ok(!seen.has(f), `nothing changed: src/${f} is not loaded (${[...seen]})`);
    assert.ok(!a.urls.some((u) => u.endsWith("/install/identities.js")), "no identity is loaded");
    for (const m of ["new-generation.js", "steps/decrypt-sources.js", "parallel-sources.js"])
      assert.ok(
        !a.urls.some((u) => u.endsWith(`/install/${m}`)),
        `nothing changed: src/install/${m} is not loaded`,
      );
    for (const b of ["NativeModule worker_threads", "NativeModule child_process"])
      assert.ok(!a.builtins.includes(b), `nothing changed: no ${b}`);
    // Its stdout is a pipe here: the report is written to it without a net.Socket stream.
    assert.ok(
      !a.builtins.includes("NativeModule net"),
      "the report is printed without building a socket stream",
    );

    const b = oneChanged.read();
    const seenB = folders(b);
    assert.ok(
      seenB.has("age") && seenB.has("ssh"),
      `one changed: the key formats are loaded (${[...seenB]})`,
    );
    // An ssh host key alone needs src/ssh and src/age: not src/keys (identity files, plugins).
    assert.ok(!seenB.has("keys"), `one changed, an ssh host key: src/keys is not loaded (${[...seenB]})`);
    assert.ok(
      b.urls.some((u) => u.endsWith("/install/new-generation.js")),
      "one changed: a new generation",
    );
    assert.ok(!b.urls.some((u) => u.endsWith("/install/decrypt-worker.js")), "one changed: no worker thread");
    assert.ok(
      !b.builtins.includes("NativeModule worker_threads"),
      "one changed: node:worker_threads not loaded",
    );
  } finally {
    host.cleanup();
  }
});

/**
 * The V8 flags nixseal runs with (src/cli/main.ts says why): the bundle's first line names them
 * through `env -S`, ./nixseal passes the same ones, and the bundle run as a program works.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { CLI, REPO } from "../helpers.js";

const FIRST_LINE = /^#!\/usr\/bin\/env -S node((?: --[a-z0-9-]+=\d+)+)$/;

function flagsOfBundle(): string[] {
  const first = fs.readFileSync(CLI, "utf8").split("\n", 1)[0]!;
  const m = FIRST_LINE.exec(first);
  assert.ok(m !== null, `the bundle's first line names node and its flags: ${first}`);
  return m[1]!.trim().split(" ");
}

test("the bundle's first line and ./nixseal give node the same flags, among them a small young generation", () => {
  const flags = flagsOfBundle();
  assert.ok(
    flags.some((f) => /^--max-semi-space-size=\d$/.test(f)),
    "a young generation of a few MiB",
  );
  const wrapper = fs.readFileSync(path.join(REPO, "nixseal"), "utf8");
  const exec = wrapper.split("\n").find((l) => l.startsWith("exec "));
  assert.ok(exec !== undefined);
  assert.equal(exec, `exec "$node" ${flags.join(" ")} "$here/dist/bundle/main.js" "$@"`);
});

test("the bundle runs as a program (env -S splits its first line), and through ./nixseal", () => {
  // env finds the node this test runs on first on PATH.
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}` };
  for (const argv of [[CLI], [path.join(REPO, "nixseal")]]) {
    const r = spawnSync(argv[0]!, ["--version"], { env, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^nixseal \d+\.\d+\.\d+/);
  }
});

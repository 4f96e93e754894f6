/**
 * The script runner (src/generate/runner.ts): every script of a run is started by one runner,
 * and still gets only its own environment and nothing of nixseal's: no inherited file
 * descriptor (the runner's channel to nixseal), no network as root. Real sh, real coreutils.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "the age binary (Debian package age) is not installed"
    : false;

let dir: string;
let cleanup: () => void;
let repo: string;
let adminKey: string;
let env: Record<string, string | undefined>;

describe("script runner", { skip: missing }, () => {
  before(() => {
    ({ dir, cleanup } = tempDir("nixseal-runner-"));
    const home = path.join(dir, "home");
    fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
    adminKey = path.join(home, ".config", "nixseal", "identity.txt");
    assert.equal(spawnSync(AGE_KEYGEN!, ["-o", adminKey]).status, 0);
    const admin = spawnSync(AGE_KEYGEN!, ["-y", adminKey]).stdout.toString().trim();
    env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1" };
    repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), "(import ./generated/rules.nix) // { }\n");
    // Several scripts: each lists its open descriptors and its environment.
    const gens = Array.from(
      { length: 6 },
      (_, i) => `  generators.s${i} = { files.fds.secret = false; files.env.secret = false;
    script = "ls -l /proc/self/fd/ > $out/fds; env | sort > $out/env; cat /proc/net/dev >> $out/env"; runtimeInputs = [ "ls" "env" "sort" "cat" ]; };`,
    ).join("\n");
    fs.writeFileSync(path.join(repo, "generators.nix"), `{ admins = [ "${admin}" ];\n${gens}\n}\n`);
  });
  after(() => cleanup());

  test("each script: no descriptor of nixseal's; only its own variables; no network as root", () => {
    const r = nixseal(["generate", "--json"], { cwd: repo, env });
    assert.equal(r.status, 0, r.stderr.toString());
    const isolation = JSON.parse(r.stdout.toString()).isolation;
    for (let i = 0; i < 6; i++) {
      const d = path.join(repo, "generated", `s${i}`);
      // Beside stdin (/dev/null), stdout and stderr, no socket: not the runner's channel to nixseal.
      const fds = fs
        .readFileSync(path.join(d, "fds"), "utf8")
        .split("\n")
        .map((l) => /\s(\d+) -> (.*)$/.exec(l))
        .filter((m) => m !== null)
        .map((m) => ({ fd: Number(m[1]), target: m[2]! }));
      assert.ok(fds.length >= 3, `script s${i}: ${JSON.stringify(fds)}`);
      const sockets = fds.filter((f) => f.fd > 2 && f.target.startsWith("socket:"));
      assert.deepEqual(sockets, [], `script s${i} inherited a socket`);
      const text = fs.readFileSync(path.join(d, "env"), "utf8");
      const names = text
        .split("\n")
        .filter((l) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(l))
        .map((l) => l.split("=")[0]);
      for (const n of names)
        assert.ok(
          ["PATH", "out", "in", "prompts", "TMPDIR", "PWD", "SHLVL", "_"].includes(n!),
          `variable ${n}`,
        );
      assert.ok(!names.includes("NODE_CHANNEL_FD"));
      // As root: a private network namespace has only the loopback interface.
      if (isolation.namespaces) {
        const interfaces = text
          .split("\n")
          .filter((l) => /^\s*[^\s:]+:\s+\d/.test(l))
          .map((l) => l.trim().split(":")[0]);
        assert.deepEqual(interfaces, ["lo"]);
      }
    }
    if (process.getuid?.() === 0) assert.equal(isolation.namespaces, true);
  });
});

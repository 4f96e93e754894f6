/**
 * `nixseal generate` end to end: real Nix evaluates generators.nix and secrets.nix, real sh and
 * coreutils run the scripts, the real `age` binary decrypts what was generated, real git stages
 * it, prompts are typed into a real terminal (tmux), and a real pass + gpg store is imported.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, isolatedUserEnv, nixseal, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const GIT = which("git");
const TMUX = which("tmux");
const PASS = which("pass");
const GPG = which("gpg");
const NIX_CLI = which("nix");
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "the age binary (Debian package age) is not installed"
    : !GIT
      ? "git is not installed"
      : false;

let dir: string;
let cleanup: () => void;
let repo: string;
let env: Record<string, string | undefined>;
let admin: string;
let adminKey: string;
let hostWeb: string;
let hostDb: string;

function ageKeygen(file: string): string {
  assert.equal(spawnSync(AGE_KEYGEN!, ["-o", file]).status, 0);
  return spawnSync(AGE_KEYGEN!, ["-y", file]).stdout.toString().trim();
}

/** Decrypts with the real age binary and the admin's key. */
function ageDecrypt(file: string, key = adminKey): Buffer {
  const r = spawnSync(AGE!, ["-d", "-i", key, file]);
  assert.equal(r.status, 0, `age -d ${file}: ${r.stderr}`);
  return r.stdout;
}

/** Every file below `root` (but .git) with its content's SHA-256. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name === ".git") continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(root, p), createHash("sha256").update(fs.readFileSync(p)).digest("hex"));
    }
  };
  walk(root);
  return out;
}

function changed(a: Map<string, string>, b: Map<string, string>): string[] {
  const keys = new Set([...a.keys(), ...b.keys()]);
  return [...keys].filter((k) => a.get(k) !== b.get(k)).sort();
}

/** The records of generated/.state.json, each as its JSON text, by instance. */
function states(): Map<string, string> {
  const v = JSON.parse(fs.readFileSync(path.join(repo, "generated", ".state.json"), "utf8"));
  assert.equal(v.version, 2);
  return new Map(Object.entries(v.instances).map(([id, r]) => [id, JSON.stringify(r)]));
}

/** The instances whose state record differs between two states() reads. */
function changedStates(a: Map<string, string>, b: Map<string, string>): string[] {
  const keys = new Set([...a.keys(), ...b.keys()]);
  return [...keys].filter((k) => a.get(k) !== b.get(k)).sort();
}

function git(args: string[], cwd = repo): string {
  const r = spawnSync(GIT!, args, { cwd, encoding: "utf8" });
  assert.equal(r.status, 0, `git ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

function generators(
  extra = "",
  opts: { pwValidation?: string; adminList?: string; sharedRotate?: string } = {},
): string {
  return `{
  admins = [ ${opts.adminList ?? `"${admin}"`} ];
  hosts.web = "${hostWeb}";
  hosts.db = "${hostDb}";
  generators.pw = {
    hosts = [ "web" "db" ];
    files.password = { };
    script = "head -c 24 /dev/urandom | base64 > $out/password";
    runtimeInputs = [ "head" "base64" ];
    validation = "${opts.pwValidation ?? "1"}";
  };
  generators.pwhash = {
    hosts = [ "web" "db" ];
    dependencies = [ "pw" ];
    files.hash = { secret = false; };
    script = "sha256sum < $in/pw/password | cut -d' ' -f1 > $out/hash";
    runtimeInputs = [ "sha256sum" "cut" ];
  };
  generators.shared = {
    share = true;
    files.token = { };
    script = "od -An -tx1 -N16 /dev/urandom | tr -d ' \\\\n' > $out/token";
    runtimeInputs = [ "od" "tr" ];
    ${opts.sharedRotate ? `rotate.every = "${opts.sharedRotate}";` : ""}
  };
  generators.login = {
    files.credentials = { };
    prompts.user = { type = "line"; description = "user name"; };
    prompts.secret = { type = "hidden"; description = "the password"; persist = true; };
    script = "{ cat $prompts/user; printf ':'; cat $prompts/secret; } > $out/credentials";
    runtimeInputs = [ "cat" ];
  };
${extra}}
`;
}

const prompts = (user: string, secret: string) => JSON.stringify({ login: { user, secret } });

function writePromptFile(content: string): string {
  const f = path.join(dir, "answers.json");
  fs.writeFileSync(f, content, { mode: 0o600 });
  return f;
}

function generate(args: string[], extraEnv: Record<string, string | undefined> = {}) {
  return nixseal(["generate", ...args], { cwd: repo, env: { ...env, ...extraEnv } });
}

describe("nixseal generate", { skip: missing }, () => {
  before(() => {
    ({ dir, cleanup } = tempDir("nixseal-generate-"));
    const home = path.join(dir, "home");
    fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
    adminKey = path.join(home, ".config", "nixseal", "identity.txt");
    admin = ageKeygen(adminKey);
    hostWeb = ageKeygen(path.join(dir, "web.txt"));
    hostDb = ageKeygen(path.join(dir, "db.txt"));
    env = {
      ...isolatedUserEnv(home, path.join(dir, "cache")),
      NO_COLOR: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@example.org",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@example.org",
      NIXSEAL_NOW: undefined,
    };
    repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    git(["init", "-q", "."]);
    fs.writeFileSync(path.join(repo, "secrets.nix"), "(import ./generated/rules.nix) // { }\n");
    fs.writeFileSync(path.join(repo, "generators.nix"), generators());
  });
  after(() => cleanup());

  test("first run: every output generated, encrypted to the right people, staged, not committed", () => {
    const r = generate(["--prompt-file", writePromptFile(prompts("alice", "s3cret-typed"))]);
    assert.equal(r.status, 0, r.stderr);
    const plan = r.stdout.toString();
    for (const id of ["pw/web", "pw/db", "pwhash/web", "pwhash/db", "shared", "login"])
      assert.match(plan, new RegExp(`^generate +${id}: not generated yet$`, "m"));
    // The dependent's public hash is the SHA-256 of the password its host got.
    for (const host of ["web", "db"]) {
      const pw = ageDecrypt(path.join(repo, "generated", "pw", host, "password.age"));
      assert.match(pw.toString(), /^[A-Za-z0-9+/]{32}\n$/);
      const hash = fs.readFileSync(path.join(repo, "generated", "pwhash", host, "hash"), "utf8");
      assert.equal(hash, `${createHash("sha256").update(pw).digest("hex")}\n`);
      // The host reads its own password, not the other host's.
      const other = host === "web" ? "db" : "web";
      ageDecrypt(path.join(repo, "generated", "pw", host, "password.age"), path.join(dir, `${host}.txt`));
      const refused = spawnSync(AGE!, [
        "-d",
        "-i",
        path.join(dir, `${other}.txt`),
        path.join(repo, "generated", "pw", host, "password.age"),
      ]);
      assert.notEqual(refused.status, 0, `${other} must not read ${host}'s password`);
    }
    assert.notEqual(
      ageDecrypt(path.join(repo, "generated", "pw", "web", "password.age")).toString(),
      ageDecrypt(path.join(repo, "generated", "pw", "db", "password.age")).toString(),
    );
    // Shared: both hosts read the one value.
    const token = ageDecrypt(path.join(repo, "generated", "shared", "token.age"), path.join(dir, "web.txt"));
    assert.deepEqual(
      ageDecrypt(path.join(repo, "generated", "shared", "token.age"), path.join(dir, "db.txt")),
      token,
    );
    assert.match(token.toString(), /^[0-9a-f]{32}$/);
    // Prompt answers reached the script; the persisted one is kept, encrypted to the admin.
    assert.equal(
      ageDecrypt(path.join(repo, "generated", "login", "credentials.age")).toString(),
      "alice:s3cret-typed",
    );
    assert.equal(
      ageDecrypt(path.join(repo, "generated", "login", "prompt.secret.age")).toString(),
      "s3cret-typed",
    );
    // The existing commands see the generated secrets through secrets.nix's import.
    const check = nixseal(["check"], { cwd: repo, env });
    assert.equal(check.status, 0, check.stdout.toString() + check.stderr);
    assert.match(check.stderr, /5 secrets match the rules/);
    const list = nixseal(["list", "--json"], { cwd: repo, env });
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout.toString(), /generated\/pw\/web\/password\.age/);
    const dec = nixseal(["decrypt", "generated/shared/token.age"], { cwd: repo, env });
    assert.equal(dec.status, 0, dec.stderr);
    assert.deepEqual(dec.stdout, token);
    // Staged, never committed; state records hold no secret.
    const status = git(["status", "--porcelain"]);
    assert.match(status, /^A {2}generated\/pw\/web\/password\.age$/m);
    assert.match(status, /^A {2}generated\/rules\.nix$/m);
    assert.equal(
      spawnSync(GIT!, ["rev-parse", "--verify", "-q", "HEAD"], { cwd: repo }).status,
      1,
      "nothing committed",
    );
    // One state file for every instance; none beside the outputs.
    assert.deepEqual([...states().keys()].sort(), [
      "login",
      "pw/db",
      "pw/web",
      "pwhash/db",
      "pwhash/web",
      "shared",
    ]);
    assert.ok(!fs.existsSync(path.join(repo, "generated", "pw", "web", ".state.json")));
    assert.match(status, /^A {2}generated\/\.state\.json$/m);
    const state = fs.readFileSync(path.join(repo, "generated", ".state.json"), "utf8");
    const pw = ageDecrypt(path.join(repo, "generated", "pw", "web", "password.age"))
      .toString()
      .trim();
    assert.ok(!state.includes(pw));
    assert.ok(!state.includes(createHash("sha256").update(`${pw}\n`).digest("hex")));
  });

  test("second run: nothing to do, no prompt, not a byte changed", () => {
    const before = snapshot(repo);
    const index = fs.readFileSync(path.join(repo, ".git", "index"));
    // No terminal and no --prompt-file: any prompt would fail the run.
    const r = generate([]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "");
    assert.match(r.stderr, /nothing to do \(6 up to date\)/);
    assert.deepEqual(changed(before, snapshot(repo)), []);
    assert.deepEqual(fs.readFileSync(path.join(repo, ".git", "index")), index);
    // A removed generated/rules.nix is written again, as it was; nothing is run.
    const rules = fs.readFileSync(path.join(repo, "generated", "rules.nix"));
    fs.rmSync(path.join(repo, "generated", "rules.nix"));
    const again = generate([]);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.stdout.toString(), "write generated/rules.nix: out of date\n");
    assert.deepEqual(fs.readFileSync(path.join(repo, "generated", "rules.nix")), rules);
    assert.deepEqual(changed(before, snapshot(repo)), []);
  });

  test("--dry-run prints the plan and writes nothing", () => {
    fs.writeFileSync(path.join(repo, "generators.nix"), generators("", { pwValidation: "2" }));
    const before = snapshot(repo);
    const r = generate(["--dry-run"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^regenerate pw\/web: validation changed$/m);
    assert.match(r.stdout.toString(), /^regenerate pwhash\/web: dependency pw\/web is regenerated$/m);
    assert.deepEqual(changed(before, snapshot(repo)), []);
  });

  test("a failing generator: nothing written, every failure listed", () => {
    fs.writeFileSync(
      path.join(repo, "generators.nix"),
      generators(
        `  generators.bad1 = { files.x = { }; script = "echo broken-one >&2; exit 4"; };
  generators.bad2 = { files.y = { }; script = "printf v > $out/other"; };
`,
        { pwValidation: "2" },
      ),
    );
    const before = snapshot(repo);
    const status = git(["status", "--porcelain"]);
    const r = generate([]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /generator bad1: its script failed: exited with status 4/);
    assert.match(r.stderr, /bad1 \| broken-one/);
    assert.match(r.stderr, /generator bad2: it wrote "other", which files does not declare/);
    assert.match(r.stderr, /nothing was written/);
    assert.deepEqual(changed(before, snapshot(repo)), []);
    assert.equal(git(["status", "--porcelain"]), status);
  });

  test("changed validation regenerates exactly that generator and its dependents", () => {
    fs.writeFileSync(path.join(repo, "generators.nix"), generators("", { pwValidation: "2" }));
    const before = snapshot(repo);
    const statesBefore = states();
    const r = generate([]);
    assert.equal(r.status, 0, r.stderr);
    const diff = changed(before, snapshot(repo));
    assert.deepEqual(
      diff.filter((f) => !f.endsWith(".state.json")),
      [
        "generated/pw/db/password.age",
        "generated/pw/web/password.age",
        "generated/pwhash/db/hash",
        "generated/pwhash/web/hash",
      ],
    );
    assert.deepEqual(
      diff.filter((f) => f.endsWith(".state.json")),
      ["generated/.state.json"],
    );
    assert.deepEqual(changedStates(statesBefore, states()), ["pw/db", "pw/web", "pwhash/db", "pwhash/web"]);
    const pw = ageDecrypt(path.join(repo, "generated", "pw", "web", "password.age"));
    assert.equal(
      fs.readFileSync(path.join(repo, "generated", "pwhash", "web", "hash"), "utf8"),
      `${createHash("sha256").update(pw).digest("hex")}\n`,
    );
  });

  test("a dependency regenerated in an earlier run makes its dependents run", () => {
    const before = snapshot(repo);
    const r1 = generate(["pw", "--regenerate", "pw"]);
    assert.equal(r1.status, 0, r1.stderr);
    assert.doesNotMatch(r1.stdout.toString(), /pwhash/, "NAME limits the run to pw");
    const r2 = generate(["--dry-run"]);
    assert.match(r2.stdout.toString(), /^regenerate pwhash\/web: dependency pw\/web changed$/m);
    assert.equal(generate([]).status, 0);
    const diff = changed(before, snapshot(repo)).filter((f) => !f.endsWith(".state.json"));
    assert.deepEqual(diff, [
      "generated/pw/db/password.age",
      "generated/pw/web/password.age",
      "generated/pwhash/db/hash",
      "generated/pwhash/web/hash",
    ]);
  });

  test("rotation: due by the recorded date (NIXSEAL_NOW), then not again", () => {
    fs.writeFileSync(
      path.join(repo, "generators.nix"),
      generators("", { pwValidation: "2", sharedRotate: "30d" }),
    );
    const soon = new Date(Date.now() + 20 * 86400_000).toISOString();
    const r0 = generate([], { NIXSEAL_NOW: soon });
    assert.match(r0.stderr, /nothing to do/);
    const later = new Date(Date.now() + 31 * 86400_000).toISOString();
    const before = snapshot(repo);
    const statesBefore = states();
    const r = generate([], { NIXSEAL_NOW: later });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^regenerate shared: rotation due \(generated .*, every 30d\)$/m);
    assert.deepEqual(changed(before, snapshot(repo)), [
      "generated/.state.json",
      "generated/shared/token.age",
    ]);
    assert.deepEqual(changedStates(statesBefore, states()), ["shared"]);
    assert.match(generate([], { NIXSEAL_NOW: later }).stderr, /nothing to do/);
  });

  test("a persisted answer is reused without asking; a plain one must be given again", () => {
    const noAnswer = generate(["--regenerate", "login"]);
    assert.equal(noAnswer.status, 1);
    assert.match(noAnswer.stderr, /no answer for login\.user, and no terminal to ask/);
    const r = generate([
      "--regenerate",
      "login",
      "--prompt-file",
      writePromptFile(JSON.stringify({ login: { user: "bob" } })),
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      ageDecrypt(path.join(repo, "generated", "login", "credentials.age")).toString(),
      "bob:s3cret-typed",
    );
  });

  test("recipients changed: outputs re-encrypted only, dependents untouched", () => {
    const second = path.join(dir, "admin2.txt");
    const admin2 = ageKeygen(second);
    fs.writeFileSync(
      path.join(repo, "generators.nix"),
      generators("", { pwValidation: "2", sharedRotate: "30d", adminList: `"${admin}" "${admin2}"` }),
    );
    const pwBefore = ageDecrypt(path.join(repo, "generated", "pw", "web", "password.age"));
    const generation = () => JSON.parse(states().get("pw/web")!).generation;
    const generationBefore = generation();
    const before = snapshot(repo);
    const r = generate([]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^rekey +pw\/web: recipients changed$/m);
    const diff = changed(before, snapshot(repo));
    assert.ok(!diff.some((f) => f.startsWith("generated/pwhash/")), diff.join(", "));
    assert.deepEqual(ageDecrypt(path.join(repo, "generated", "pw", "web", "password.age"), second), pwBefore);
    assert.equal(generation(), generationBefore, "the same value: its generation id stays");
    // The kept prompt answer is re-encrypted too, so check finds no drift.
    assert.match(r.stdout.toString(), /^rekey +login\/prompt\.secret: recipients changed$/m);
    assert.equal(
      ageDecrypt(path.join(repo, "generated", "login", "prompt.secret.age"), second).toString(),
      "s3cret-typed",
    );
    assert.equal(nixseal(["check"], { cwd: repo, env }).status, 0);
  });

  test("an output deleted by hand is generated again, with its dependents", () => {
    fs.rmSync(path.join(repo, "generated", "pw", "web", "password.age"));
    const dry = generate(["--dry-run"]);
    assert.match(dry.stdout.toString(), /^regenerate pw\/web: output password missing$/m);
    assert.match(dry.stdout.toString(), /^regenerate pwhash\/web: dependency pw\/web is regenerated$/m);
    const before = snapshot(repo);
    const r = generate([]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(changed(before, snapshot(repo)), [
      "generated/.state.json",
      "generated/pw/web/password.age",
      "generated/pwhash/web/hash",
    ]);
    assert.match(generate([]).stderr, /nothing to do/);
  });

  test("state records kept beside the outputs (older nixseal) are read, then moved into generated/.state.json", () => {
    // As an earlier nixseal left the repository: one generated/<id>/.state.json per instance, staged.
    const legacy = states();
    const index = path.join(repo, "generated", ".state.json");
    for (const [id, record] of legacy) {
      const file = path.join(repo, "generated", ...id.split("/"), ".state.json");
      fs.writeFileSync(file, `${JSON.stringify({ version: 1, ...JSON.parse(record) }, null, 2)}\n`);
    }
    fs.rmSync(index);
    git(["add", "-A", "generated"]);
    const before = snapshot(repo);
    const noop = generate([]);
    assert.equal(noop.status, 0, noop.stderr);
    assert.match(noop.stderr, /nothing to do \(6 up to date\)/);
    assert.deepEqual(changed(before, snapshot(repo)), []);
    // The next run that writes moves every record into the one file, generation ids kept.
    const r = generate(["--regenerate", "shared"]);
    assert.equal(r.status, 0, r.stderr);
    const now = states();
    assert.deepEqual(changedStates(legacy, now), ["shared"]);
    const left = changed(before, snapshot(repo)).filter((f) => f.endsWith(".state.json"));
    assert.deepEqual(left, [
      "generated/.state.json",
      "generated/login/.state.json",
      "generated/pw/db/.state.json",
      "generated/pw/web/.state.json",
      "generated/pwhash/db/.state.json",
      "generated/pwhash/web/.state.json",
      "generated/shared/.state.json",
    ]);
    for (const f of left.slice(1)) assert.ok(!fs.existsSync(path.join(repo, f)), `${f} is left`);
    assert.deepEqual(
      git(["ls-files", "generated"])
        .split("\n")
        .filter((f) => f.endsWith(".state.json")),
      ["generated/.state.json"],
      "the removals are staged",
    );
    assert.match(generate([]).stderr, /nothing to do/);
  });

  test("a damaged generated/.state.json is reported, naming the file; nothing is run or written", () => {
    const index = path.join(repo, "generated", ".state.json");
    const good = fs.readFileSync(index, "utf8");
    try {
      for (const [damage, why] of [
        [good.replace(/"generation":/, '"surprise":1,"generation":'), /the record of \S+ is malformed/],
        [good.replace('"version":2', '"version":3'), /version 3 is not 2/],
        [good.replace('"instances":{', '"instances":{"../x":{},'), /"\.\.\/x" is not an instance name/],
        [good.slice(0, 40), /not JSON/],
      ] as const) {
        fs.writeFileSync(index, damage);
        const before = snapshot(repo);
        const r = generate(["--regenerate", "shared"]);
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, /generated\/\.state\.json is not a valid state file/);
        assert.match(r.stderr, why);
        assert.match(r.stderr, /git checkout -- generated\/\.state\.json/);
        assert.deepEqual(changed(before, snapshot(repo)), []);
      }
    } finally {
      fs.writeFileSync(index, good);
    }
    assert.match(generate([]).stderr, /nothing to do/);
  });

  test("no plaintext in the repository or /tmp while generating", async () => {
    // The script joins two halves: the value never appears in generators.nix or its evaluation.
    const [half1, half2] = [`leak-marker-${process.pid}`, `-${Date.now()}`];
    const leak = half1 + half2;
    fs.writeFileSync(
      path.join(repo, "generators.nix"),
      generators(
        `  generators.marked = {
    files.value = { };
    script = "printf %s%s ${half1} ${half2} > $out/value; cp $out/value /tmp/nixseal-test-$$; cp $out/value $TMPDIR/copy; sleep 1";
    runtimeInputs = [ "cp" "sleep" ];
  };
`,
        { pwValidation: "2", sharedRotate: "30d" },
      ),
    );
    const seen = new Set<string>();
    const found: string[] = [];
    const look = (root: string, name: string | null) => {
      if (name === null) return;
      const p = path.join(root, name);
      seen.add(p);
      try {
        if (fs.readFileSync(p).includes(leak)) found.push(p);
      } catch {}
    };
    const watchers = [repo, os.tmpdir()].map((root) =>
      fs.watch(root, { recursive: true }, (_e, name) => look(root, name === null ? null : String(name))),
    );
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, [CLI, "generate"], {
      cwd: repo,
      env: Object.fromEntries(
        Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined),
      ) as NodeJS.ProcessEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (b) => {
      stderr += b;
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    for (const w of watchers) w.close();
    assert.equal(code, 0, stderr);
    assert.ok(seen.size > 0, "the watch saw the outputs being written");
    // And afterwards: nothing anywhere in the repository or /tmp holds it.
    const scan = (d: string) => {
      let entries: fs.Dirent[] = [];
      try {
        entries = fs.readdirSync(d, { withFileTypes: true });
      } catch {}
      for (const e of entries) {
        const p = path.join(d, e.name);
        if (e.isDirectory() && !e.isSymbolicLink()) scan(p);
        else if (e.isFile()) look(d, e.name);
      }
    };
    scan(repo);
    for (const e of fs.readdirSync(os.tmpdir())) if (e.startsWith("nixseal-test-")) look(os.tmpdir(), e);
    if (process.getuid?.() === 0) assert.deepEqual(found, []);
    else {
      // Without root there is no private /tmp: generate says so, and only the /tmp copy the script made leaks.
      assert.match(stderr, /without private mount and network namespaces/);
      assert.ok(
        found.every((f) => f.startsWith(os.tmpdir())),
        found.join(", "),
      );
    }
    assert.equal(ageDecrypt(path.join(repo, "generated", "marked", "value.age")).toString(), leak);
  });

  test("the time limit kills a script that hangs", () => {
    const other = path.join(dir, "timeout-repo");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "{ }\n");
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; generators.slow = { files.x = { }; timeout = 1; script = "sleep 60 & sleep 60"; runtimeInputs = [ "sleep" ]; }; }\n`,
    );
    const t0 = Date.now();
    const r = nixseal(["generate"], { cwd: other, env });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /generator slow: its script failed: killed after the time limit of 1 s/);
    assert.ok(Date.now() - t0 < 40_000, "killed long before the script's own end");
    assert.ok(!fs.existsSync(path.join(other, "generated")));
  });

  test("SIGTERM while a script runs: exit 143, the RAM directory and the script gone, nothing written", async () => {
    const other = path.join(dir, "signal-repo");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "{ }\n");
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; generators.fast = { files.x = { }; script = "echo v > $out/x"; };
         generators.slow = { files.x = { }; script = "echo $$ > $out/started; sleep 120"; runtimeInputs = [ "sleep" ]; }; }\n`,
    );
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, [CLI, "generate"], {
      cwd: other,
      env: Object.fromEntries(
        Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined),
      ) as NodeJS.ProcessEnv,
      stdio: ["ignore", "ignore", "pipe"],
    });
    // Its private directory, where the script writes its pid into $out (the script's /tmp may be private).
    const workDirs = () =>
      [process.env.XDG_RUNTIME_DIR ?? "/nonexistent", "/dev/shm"].flatMap((d) => {
        try {
          return fs
            .readdirSync(d)
            .filter((e) => e.startsWith(`nixseal-generate.${child.pid}.`))
            .map((e) => path.join(d, e));
        } catch {
          return [];
        }
      });
    const startedFile = (): string | null => {
      for (const w of workDirs()) {
        for (const n of fs.readdirSync(w)) {
          const f = path.join(w, n, "out", "started");
          if (fs.existsSync(f) && fs.readFileSync(f, "utf8").endsWith("\n")) return f;
        }
      }
      return null;
    };
    const end = Date.now() + 60_000;
    let started = startedFile();
    while (started === null && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
      started = startedFile();
    }
    assert.ok(started !== null, "the slow script started");
    const scriptPid = Number(fs.readFileSync(started, "utf8"));
    assert.equal(workDirs().length, 1, "its private directory exists while it runs");
    child.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 143);
    assert.deepEqual(workDirs(), []);
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      try {
        process.kill(scriptPid, 0);
        await new Promise((r) => setTimeout(r, 50));
      } catch {
        alive = false;
      }
    }
    assert.equal(alive, false, "the script was killed with nixseal");
    assert.ok(!fs.existsSync(path.join(other, "generated")), "nothing written");
    // What a SIGKILL would leave (the process gone: above pid_max) is removed by the next run.
    const base =
      process.env.XDG_RUNTIME_DIR && fs.existsSync(process.env.XDG_RUNTIME_DIR)
        ? process.env.XDG_RUNTIME_DIR
        : "/dev/shm";
    const stale = path.join(base, "nixseal-generate.4194305.abcdef");
    fs.mkdirSync(path.join(stale, "0", "out"), { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(stale, "0", "out", "x"), "left behind");
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; generators.fast = { files.x = { }; script = "echo v > $out/x"; }; }\n`,
    );
    const r = nixseal(["generate"], { cwd: other, env });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.existsSync(stale), false, "the stale directory was swept");
  });

  test("a cycle, unknown fields and a shared generator reading a per-host one are refused", () => {
    const other = path.join(dir, "invalid-repo");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "{ }\n");
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; generators.a = { files.x = { }; script = ""; dependencies = [ "b" ]; };
         generators.b = { files.x = { }; script = ""; dependencies = [ "a" ]; }; }\n`,
    );
    const cycle = nixseal(["generate"], { cwd: other, env });
    assert.equal(cycle.status, 2, cycle.stderr);
    assert.match(cycle.stderr, /the dependencies form a cycle: a -> b -> a/);
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; hosts.h = "${hostWeb}";
         generators.per = { hosts = [ "h" ]; files.x = { }; script = ""; };
         generators.sh = { share = true; files.x = { }; script = ""; dependencies = [ "per" ]; };
         generators.typo = { files.x = { }; script = ""; scirpt = ""; };
         generators."../up" = { files.x = { }; script = ""; }; }\n`,
    );
    const bad = nixseal(["generate"], { cwd: other, env });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /generators\.sh: is shared but depends on the per-host generator "per"/);
    assert.match(bad.stderr, /generators\.typo\.scirpt: unknown field/);
    assert.match(bad.stderr, /generators\.\.\.\/up: is not a valid generator name/);
    assert.ok(!fs.existsSync(path.join(other, "generated")));
  });

  test("prompts typed at a terminal: hidden and line, asked once, up front", {
    skip: TMUX ? false : "tmux is not installed",
  }, () => {
    const other = path.join(dir, "tty-repo");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "{ }\n");
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; hosts.a = "${hostWeb}"; hosts.b = "${hostDb}";
         generators.db = { hosts = [ "a" "b" ]; files.conf = { };
           prompts.name = { type = "line"; description = "database name"; };
           prompts.pass = { type = "hidden"; description = "database password"; };
           script = "printf '%s/%s' \\"$(cat $prompts/name)\\" \\"$(cat $prompts/pass)\\" > $out/conf"; runtimeInputs = [ "cat" ]; }; }\n`,
    );
    const socket = `nixseal-test-${process.pid}`;
    const runner = path.join(dir, "run-in-tmux.sh");
    const vars = Object.entries(env)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}='${v}'`)
      .join(" ");
    fs.writeFileSync(
      runner,
      `#!/bin/sh\ncd '${other}' && env ${vars} PATH='${process.env.PATH}' '${process.execPath}' '${CLI}' generate > '${dir}/tty.out' 2> '${dir}/tty.err'; echo $? > '${dir}/tty.rc'\n`,
      { mode: 0o700 },
    );
    const tmux = (...args: string[]) => spawnSync(TMUX!, ["-L", socket, ...args], { encoding: "utf8" });
    const pane = () => tmux("capture-pane", "-p").stdout ?? "";
    const waitFor = (re: RegExp) => {
      const end = Date.now() + 60_000;
      while (Date.now() < end) {
        if (re.test(pane())) return;
        spawnSync("sleep", ["0.1"]);
      }
      assert.fail(`the terminal never showed ${re}: ${pane()}`);
    };
    try {
      assert.equal(tmux("new-session", "-d", "-x", "160", "-y", "40", runner).status, 0);
      waitFor(/db: database name:\s*$/m);
      tmux("send-keys", "-l", "appdb");
      tmux("send-keys", "Enter");
      waitFor(/db: database password:\s*$/m);
      tmux("send-keys", "-l", "typed-hidden-pw");
      tmux("send-keys", "Enter");
      const end = Date.now() + 60_000;
      while (!fs.existsSync(path.join(dir, "tty.rc")) && Date.now() < end) spawnSync("sleep", ["0.1"]);
      assert.doesNotMatch(pane(), /typed-hidden-pw/, "a hidden answer is not echoed");
    } finally {
      tmux("kill-server");
    }
    assert.equal(
      fs.readFileSync(path.join(dir, "tty.rc"), "utf8").trim(),
      "0",
      fs.readFileSync(path.join(dir, "tty.err"), "utf8"),
    );
    // Asked once for the generator, used by both hosts' instances.
    for (const h of ["a", "b"])
      assert.equal(
        ageDecrypt(path.join(other, "generated", "db", h, "conf.age")).toString(),
        "appdb/typed-hidden-pw",
      );
  });

  test("--flake .#host: the generators of a NixOS configuration, read with nix eval", {
    skip: NIX_CLI ? false : "nix is not installed",
  }, () => {
    // A stand-in for a configuration with nixseal's module: the same JSON at the same attribute.
    const other = path.join(dir, "flake-repo");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "(import ./generated/rules.nix) // { }\n");
    fs.writeFileSync(
      path.join(other, "flake.nix"),
      `{ outputs = { self }: { nixosConfigurations.web.config.system.build.nixsealGenerators = {
           admins = [ "${admin}" ]; hosts.web = "${hostWeb}";
           generators.api = { hosts = [ "web" ]; files.token = { }; script = "printf from-flake > $out/token"; }; }; }; }\n`,
    );
    const r = nixseal(["generate", "--flake", ".#web"], { cwd: other, env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^generate api\/web: not generated yet$/m);
    assert.equal(
      ageDecrypt(
        path.join(other, "generated", "api", "web", "token.age"),
        path.join(dir, "web.txt"),
      ).toString(),
      "from-flake",
    );
    const again = nixseal(["generate", "--flake", ".#web"], { cwd: other, env });
    assert.match(again.stderr, /nothing to do/);
    const bad = nixseal(["generate", "--flake", ".#nohost"], { cwd: other, env });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /cannot evaluate .*nohost/);
  });

  test("--flake: runtimeInputs that nix eval did not build are built first; a failing build is a clear error", {
    skip: NIX_CLI ? false : "nix is not installed",
  }, () => {
    const other = path.join(dir, "flake-build");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "(import ./generated/rules.nix) // { }\n");
    // A derivation of its own (a unique name: never built before), made with /bin/sh only.
    const unique = `nixseal-greet-${process.pid}-${Date.now()}`;
    const system = `${process.arch === "arm64" ? "aarch64" : "x86_64"}-linux`;
    const flake = (extra: string) => `{ outputs = { self }: let
        greet = derivation {
          name = "${unique}"; system = "${system}";
          builder = "/bin/sh"; PATH = "/usr/bin:/bin";
          args = [ "-c" "mkdir -p $out/bin && printf '#!/bin/sh\\nprintf built\\n' > $out/bin/greet && chmod +x $out/bin/greet" ];
        };
      in { nixosConfigurations.web.config.system.build.nixsealGenerators = {
           admins = [ "${admin}" ]; hosts.web = "${hostWeb}";
           generators.greeting = { hosts = [ "web" ]; files.token = { }; script = "greet > $out/token";
             runtimeInputs = [ "\${greet}/bin" ]; };
           ${extra} }; }; }\n`;
    fs.writeFileSync(path.join(other, "flake.nix"), flake(""));
    const r = nixseal(["generate", "--flake", ".#web"], { cwd: other, env });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      ageDecrypt(path.join(other, "generated", "greeting", "web", "token.age")).toString(),
      "built",
    );
    // A derivation that cannot be built: the error says so, and nothing is written.
    fs.writeFileSync(
      path.join(other, "flake.nix"),
      flake(`generators.broken = { hosts = [ "web" ]; files.x = { }; script = "true";
        runtimeInputs = [ "\${derivation { name = "${unique}-broken"; system = "${system}"; builder = "/bin/sh"; args = [ "-c" "exit 3" ]; }}/bin" ]; };`),
    );
    const bad = nixseal(["generate", "--flake", ".#web"], { cwd: other, env });
    assert.equal(bad.status, 1, bad.stderr);
    assert.match(
      bad.stderr,
      /cannot build the runtimeInputs of generator "broken": nix-store --realise failed/,
    );
    assert.ok(!fs.existsSync(path.join(other, "generated", "broken")));
  });

  test("import.command: a value taken from a real pass store", {
    skip: PASS && GPG ? false : "pass or gpg is not installed",
  }, () => {
    const gnupg = fs.mkdtempSync(path.join(dir, "gnupg-"));
    const store = path.join(dir, "password-store");
    const passEnv = { ...env, GNUPGHOME: gnupg, PASSWORD_STORE_DIR: store };
    const run = (cmd: string, args: string[], input?: string) => {
      const r = spawnSync(cmd, args, {
        env: { ...process.env, ...passEnv } as NodeJS.ProcessEnv,
        input,
        encoding: "utf8",
      });
      assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    run(GPG!, [
      "--batch",
      "--passphrase",
      "",
      "--quick-gen-key",
      "nixseal-test@example.org",
      "default",
      "default",
      "never",
    ]);
    run(PASS!, ["init", "nixseal-test@example.org"]);
    run(PASS!, ["insert", "-m", "db"], "from-pass-123\nsecond line\n");
    const other = path.join(dir, "pass-repo");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "secrets.nix"), "{ }\n");
    fs.writeFileSync(
      path.join(other, "generators.nix"),
      `{ admins = [ "${admin}" ]; generators.db = { files.password = { }; import.command = [ "pass" "show" "db" ]; }; }\n`,
    );
    const r = nixseal(["generate"], { cwd: other, env: passEnv });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      ageDecrypt(path.join(other, "generated", "db", "password.age")).toString(),
      "from-pass-123\nsecond line\n",
    );
    spawnSync("gpgconf", ["--kill", "all"], { env: { ...process.env, GNUPGHOME: gnupg } });
  });
});

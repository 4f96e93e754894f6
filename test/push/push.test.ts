/**
 * nixseal push → nixseal receive over real OpenSSH (test/push/harness.ts): first push to three
 * hosts, an incremental push, a removed key, --dry-run, NixOps-style /run/keys, command and age
 * file sources, --upload-at, and the JSON report.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { nixseal, type RunResult, which } from "../helpers.js";
import {
  ensurePrincipals,
  type Fleet,
  type HostJson,
  idOf,
  pushTestsSkipReason,
  startFleet,
  type TestHost,
} from "./harness.js";

const skip = pushTestsSkipReason() ?? (which("age") === null ? "needs age" : null);

let fleet: Fleet;
let removePrincipals: () => void;
let work: string;
let identity: string;

function writePlan(name: string, plan: unknown): string {
  const f = path.join(work, name);
  fs.writeFileSync(f, JSON.stringify(plan, null, 2));
  return f;
}

function push(args: string[], env: Record<string, string | undefined> = {}): RunResult {
  return nixseal(
    ["push", "-i", identity, "--ssh-option", `UserKnownHostsFile=${fleet.knownHosts}`, ...args],
    {
      env: { NIX_SSHOPTS: `-F ${fleet.sshConfig}`, ...env },
      cwd: work,
    },
  );
}

function pushJson(args: string[]): {
  status: number | null;
  report: { hosts: Record<string, HostJson> };
  stderr: string;
} {
  const r = push([...args, "--json"]);
  return { status: r.status, report: JSON.parse(r.stdout.toString()), stderr: r.stderr };
}

function hostEntry(h: TestHost, keys: Record<string, unknown>): Record<string, unknown> {
  return { ...h.plan, keys };
}

describe("nixseal push over real ssh", { skip: skip ?? false }, () => {
  before(async () => {
    removePrincipals = ensurePrincipals(["nspush"], ["keys"]);
    fleet = await startFleet(3);
    work = path.join(fleet.dir, "deployer");
    fs.mkdirSync(work);
    identity = path.join(work, "id.txt");
    const r = spawnSync("age-keygen", ["-o", identity], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const recipient = /age1[0-9a-z]+/.exec(r.stderr)![0];
    const enc = spawnSync("age", ["-r", recipient, "-o", path.join(work, "tls.age")], {
      input: "TLS-KEY-v1\n",
    });
    assert.equal(enc.status, 0);
  });
  after(async () => {
    if (work !== undefined)
      spawnSync("gpgconf", ["--kill", "all"], {
        env: { ...process.env, GNUPGHOME: path.join(work, "gnupg") },
      });
    await fleet?.stop();
    removePrincipals?.();
  });

  test("first push: every key on every host, with owner, group, mode; keyUnits started; then only a changed key crosses", () => {
    const keys = (v: string) => ({
      db: {
        source: { command: ["printf", "%s", `db-password-${v}`] },
        owner: "nspush",
        group: "keys",
        mode: "0440",
        restartUnits: ["db.service"],
        keyUnit: "nixseal-key-db.service",
      },
      tls: { source: { file: "tls.age" }, name: "tls.pem", restartUnits: ["nginx.service"] },
      big: { source: { command: ["head", "-c", "65536", "/dev/zero"] }, reloadUnits: ["big.service"] },
    });
    const plan = (v: string) => ({
      version: 1,
      hosts: Object.fromEntries(fleet.hosts.map((h) => [h.name, hostEntry(h, keys(v))])),
    });
    const first = pushJson(["--plan", writePlan("p1.json", plan("one"))]);
    assert.equal(first.status, 0, first.stderr);
    for (const h of fleet.hosts) {
      const r = first.report.hosts[h.name]!;
      assert.equal(r.result, "ok");
      assert.deepEqual([...r.added].sort(), ["big", "db", "tls"]);
      assert.deepEqual(r.started, ["nixseal-key-db.service"]);
      const snap = h.snapshot("/run/keys");
      assert.match(snap.target!, /^\/run\/nixseal-keys\/[0-9a-f]{32}\/1$/);
      assert.equal(snap.files.db!.content, "db-password-one");
      assert.equal(snap.files.db!.mode, 0o440);
      assert.equal(snap.files.db!.uid, idOf("passwd", "nspush"));
      assert.equal(snap.files.db!.gid, idOf("group", "keys"));
      assert.equal(snap.files["tls.pem"]!.content, "TLS-KEY-v1\n");
      // The defaults: root, group keys, 0440.
      assert.equal(snap.files["tls.pem"]!.mode, 0o440);
      assert.equal(snap.files["tls.pem"]!.uid, 0);
      assert.equal(snap.files["tls.pem"]!.gid, idOf("group", "keys"));
      assert.equal(snap.files.big!.content?.length, 65536);
      assert.equal(h.receiveRuns(), 1, "one connection, one receive per host");
      assert.ok(
        h.systemctlCalls().includes("start -- nixseal-key-db.service"),
        h.systemctlCalls().join("\n"),
      );
    }
    const firstBytes = first.report.hosts.host1!.bytesSent;
    assert.ok(firstBytes > 65536, `${firstBytes}`);

    // One key changed: only it crosses the wire, only its units restart, the others stay the same file.
    const before1 = fleet.hosts[0]!.snapshot("/run/keys");
    const calls = fleet.hosts[0]!.systemctlCalls().length;
    const second = pushJson(["--plan", writePlan("p2.json", plan("two"))]);
    assert.equal(second.status, 0, second.stderr);
    const r = second.report.hosts.host1!;
    assert.deepEqual(r.changed, ["db"]);
    assert.deepEqual([...r.kept].sort(), ["big", "tls"]);
    assert.deepEqual(r.added, []);
    assert.deepEqual(r.restarted, ["db.service"]);
    assert.ok(r.bytesSent < 4096, `only the changed key was sent: ${r.bytesSent} bytes`);
    const after1 = fleet.hosts[0]!.snapshot("/run/keys");
    assert.equal(after1.files.db!.content, "db-password-two");
    assert.equal(after1.files.big!.ino, before1.files.big!.ino, "an unchanged key is the same file");
    assert.notEqual(after1.target, before1.target);
    assert.deepEqual(fleet.hosts[0]!.systemctlCalls().slice(calls), ["try-restart -- db.service"]);

    // Nothing changed: nothing sent, nothing restarted.
    const third = pushJson(["--plan", writePlan("p2.json", plan("two"))]);
    assert.equal(third.status, 0, third.stderr);
    assert.deepEqual([...third.report.hosts.host2!.kept].sort(), ["big", "db", "tls"]);
    assert.deepEqual(third.report.hosts.host2!.restarted, []);
    assert.equal(fleet.hosts[0]!.systemctlCalls().length, calls + 1);
  });

  /** Every key of these hosts removed (a plan with no keys). */
  function reset(hosts: TestHost[]): void {
    const r = push([
      "--plan",
      writePlan("reset.json", {
        version: 1,
        hosts: Object.fromEntries(hosts.map((h) => [h.name, hostEntry(h, {})])),
      }),
    ]);
    assert.equal(r.status, 0, r.stderr);
  }

  test("a removed key is deleted and its keyUnit stopped; --dry-run shows the plan and changes nothing", () => {
    const h = fleet.hosts[1]!;
    reset([h]);
    const planOf = (keys: Record<string, unknown>) =>
      writePlan("rm.json", { version: 1, hosts: { [h.name]: hostEntry(h, keys) } });
    const a = (v: string) => ({ source: { command: ["printf", v] }, restartUnits: ["a.service"] });
    let r = push([
      "--plan",
      planOf({ a: a("1"), b: { source: { command: ["printf", "b"] }, keyUnit: "key-b.service" } }),
    ]);
    assert.equal(r.status, 0, r.stderr);
    const before = h.snapshot("/run/keys");
    const calls = h.systemctlCalls().length;
    const runs = h.receiveRuns();
    const next = planOf({ a: a("2"), c: { source: { command: ["printf", "c"] }, keyUnit: "key-c.service" } });
    const dry = pushJson(["--plan", next, "--dry-run"]);
    assert.equal(dry.status, 0, dry.stderr);
    const d = dry.report.hosts[h.name]!;
    assert.equal(d.result, "planned");
    assert.deepEqual([d.added, d.changed, d.removed, d.kept], [["c"], ["a"], ["b"], []]);
    assert.deepEqual(
      [d.restarted, d.started, d.stopped],
      [["a.service"], ["key-c.service"], ["key-b.service"]],
    );
    assert.ok(d.bytesSent < 1024, `no key sent: ${d.bytesSent}`);
    assert.equal(h.receiveRuns(), runs + 1, "the dry run connected");
    assert.deepEqual(h.snapshot("/run/keys"), before, "the dry run changed nothing");
    assert.equal(h.systemctlCalls().length, calls, "and ran no systemctl");
    // The text report says the same.
    const text = push(["--plan", next, "--dry-run"]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout.toString(), /host2: planned: 1 added, 1 changed, 1 removed, 0 kept/);

    r = push(["--plan", next]);
    assert.equal(r.status, 0, r.stderr);
    const now = h.snapshot("/run/keys");
    assert.deepEqual(Object.keys(now.files).sort(), ["a", "c"]);
    assert.equal(now.files.a!.content, "2");
    const made = h.systemctlCalls().slice(calls);
    assert.ok(made.includes("stop -- key-b.service"), made.join("\n"));
    assert.ok(made.includes("start -- key-c.service"), made.join("\n"));
    assert.ok(made.includes("try-restart -- a.service"), made.join("\n"));
    assert.equal(made.length, 3, "one systemctl call per verb");
  });

  test("NixOps-style /run/keys (group keys, 0440): the directory is root:keys 0750; a second destDir beside it", () => {
    const h = fleet.hosts[2]!;
    reset([h]);
    const plan = writePlan("nixops.json", {
      version: 1,
      hosts: {
        [h.name]: hostEntry(h, {
          "db-password": { source: { command: ["printf", "pw"] }, group: "keys", mode: "0440" },
          "api-token": { source: { command: ["printf", "tok"] }, group: "keys", mode: "0440" },
          other: {
            source: { command: ["printf", "o"] },
            destDir: "/run/app/secrets",
            owner: "nspush",
            group: "nspush",
          },
        }),
      },
    });
    const r = push(["--plan", plan]);
    assert.equal(r.status, 0, r.stderr);
    const keys = h.snapshot("/run/keys") as ReturnType<TestHost["snapshot"]> & {
      dirMode: number;
      dirGid: number;
    };
    assert.equal(keys.dirMode, 0o750);
    assert.equal(keys.dirGid, idOf("group", "keys"));
    assert.equal(keys.files["db-password"]!.mode, 0o440);
    assert.equal(keys.files["db-password"]!.gid, idOf("group", "keys"));
    const app = h.snapshot("/run/app/secrets");
    assert.equal(app.files.other!.content, "o");
    assert.equal(app.files.other!.uid, idOf("passwd", "nspush"));
    // Removing every key of a destDir removes its symlink.
    const again = push([
      "--plan",
      writePlan("nixops2.json", {
        version: 1,
        hosts: { [h.name]: hostEntry(h, { x: { source: { command: ["printf", "x"] } } }) },
      }),
    ]);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(h.snapshot("/run/app/secrets").target, null);
    assert.deepEqual(Object.keys(h.snapshot("/run/keys").files), ["x"]);
  });

  const noPass = which("pass") === null || which("gpg") === null ? "needs pass and gpg" : false;
  test("sources: a command runs once for every host; pass through real pass and gpg", {
    skip: noPass,
  }, () => {
    const gnupg = path.join(work, "gnupg");
    fs.mkdirSync(gnupg, { mode: 0o700 });
    const store = path.join(work, "password-store");
    const env = { GNUPGHOME: gnupg, PASSWORD_STORE_DIR: store };
    const gen = spawnSync(
      "gpg",
      [
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "deployer@example.test",
        "default",
        "default",
        "never",
      ],
      { env: { ...process.env, ...env }, encoding: "utf8" },
    );
    assert.equal(gen.status, 0, gen.stderr);
    const init = spawnSync("pass", ["init", "deployer@example.test"], {
      env: { ...process.env, ...env },
      encoding: "utf8",
    });
    assert.equal(init.status, 0, init.stderr);
    const ins = spawnSync("pass", ["insert", "-m", "db/root"], {
      env: { ...process.env, ...env },
      input: "from-pass\n",
      encoding: "utf8",
    });
    assert.equal(ins.status, 0, ins.stderr);
    const counter = path.join(work, "runs");
    fs.rmSync(counter, { force: true });
    const keys = {
      p: { source: { pass: "db/root" } },
      c: { source: { command: ["sh", "-c", `echo run >> ${counter}; printf shared`] } },
    };
    const plan = writePlan("sources.json", {
      version: 1,
      hosts: Object.fromEntries(fleet.hosts.map((h) => [h.name, hostEntry(h, keys)])),
    });
    const r = push(["--plan", plan], env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.readFileSync(counter, "utf8"), "run\n", "the command ran once for three hosts");
    for (const h of fleet.hosts) {
      const snap = h.snapshot("/run/keys");
      assert.equal(snap.files.p!.content, "from-pass\n");
      assert.equal(snap.files.c!.content, "shared");
    }
    // A failing command: its stderr's last line, no connection made.
    const runs = fleet.hosts.map((h) => h.receiveRuns());
    const bad = writePlan("badsrc.json", {
      version: 1,
      hosts: { host1: hostEntry(fleet.hosts[0]!, { p: { source: { pass: "no/such" } } }) },
    });
    const f = push(["--plan", bad], env);
    assert.equal(f.status, 1);
    assert.match(
      f.stderr,
      /key host1\.p: command "pass show no\/such" failed \(exit 1\): Error: no\/such is not in the password store\./,
    );
    assert.deepEqual(
      fleet.hosts.map((h) => h.receiveRuns()),
      runs,
    );
  });

  test("the key travels only on ssh's stdin: never in ssh's argv or environment, the remote command line, sshd's log or the report", () => {
    const h = fleet.hosts[0]!;
    reset([h]);
    const secret = `push-secret-${randomBytes(12).toString("hex")}`;
    const recipient = spawnSync("age-keygen", ["-y", identity], { encoding: "utf8" }).stdout.trim();
    const enc = spawnSync("age", ["-r", recipient, "-o", path.join(work, "argv.age")], { input: secret });
    assert.equal(enc.status, 0);
    // A recording ssh first on PATH: its argv and environment, then the real ssh.
    const bin = path.join(work, "recording-bin");
    fs.mkdirSync(bin, { recursive: true });
    const seen = path.join(work, "ssh-seen");
    const realSsh = spawnSync("sh", ["-c", "command -v ssh"], { encoding: "utf8" }).stdout.trim();
    fs.writeFileSync(
      path.join(bin, "ssh"),
      `#!/bin/sh\necho "$*" >> ${seen}\nenv >> ${seen}\nexec ${realSsh} "$@"\n`,
      {
        mode: 0o755,
      },
    );
    const plan = writePlan("argv.json", {
      version: 1,
      hosts: { [h.name]: hostEntry(h, { argv: { source: { file: "argv.age" } } }) },
    });
    const r = push(["--plan", plan, "--json"], { PATH: `${bin}:${process.env.PATH}` });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(h.snapshot("/run/keys").files.argv!.content, secret, "the key arrived");
    const recorded = fs.readFileSync(seen, "utf8");
    assert.match(recorded, / receive/, "the recording ssh ran");
    // No terminal for the binary stream; no agent or X display lent to the host.
    assert.match(recorded, /^-T -a -x /m, "ssh is told: no tty, no agent forwarding, no X11");
    for (const [where, text] of [
      ["ssh's argv and environment", recorded],
      ["the remote command line", fs.readFileSync(path.join(h.dir, "receive.log"), "utf8")],
      ["sshd's log", h.sshdLog()],
      ["push's output", `${r.stdout}${r.stderr}`],
    ] as const) {
      assert.ok(!text.includes(secret), `the key is in ${where}`);
    }
  });

  test("--upload-at pushes only those keys and leaves the others in place", () => {
    const h = fleet.hosts[0]!;
    reset([h]);
    const plan = (v: string) =>
      writePlan("at.json", {
        version: 1,
        hosts: {
          [h.name]: hostEntry(h, {
            pre: { source: { command: ["printf", `pre${v}`] } },
            post: { source: { command: ["printf", `post${v}`] }, uploadAt: "post-activation" },
          }),
        },
      });
    let r = pushJson(["--plan", plan("1"), "--upload-at", "pre-activation"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.report.hosts[h.name]!.added, ["pre"]);
    r = pushJson(["--plan", plan("1"), "--upload-at", "post-activation"]);
    assert.deepEqual([r.report.hosts[h.name]!.added, r.report.hosts[h.name]!.removed], [["post"], []]);
    r = pushJson(["--plan", plan("2"), "--upload-at", "pre-activation"]);
    assert.deepEqual([r.report.hosts[h.name]!.changed, r.report.hosts[h.name]!.removed], [["pre"], []]);
    const snap = h.snapshot("/run/keys");
    assert.deepEqual([snap.files.pre!.content, snap.files.post!.content], ["pre2", "post1"]);
  });

  test("--flake: each configuration's config.system.build.nixsealPushPlan, through the real nix eval", {
    skip: which("nix") === null ? "needs nix" : false,
  }, () => {
    const flake = path.join(work, "flake");
    fs.mkdirSync(flake, { recursive: true });
    const planOf = (h: TestHost) =>
      `{ version = 1; hosts.${h.name} = { targetHost = "127.0.0.1"; targetPort = ${h.port}; targetUser = "root"; nixsealCommand = "${h.plan.nixsealCommand}"; keys.fk = { source.command = [ "printf" "from-flake" ]; keyUnit = "fk.service"; }; }; }`;
    const [h1, h2] = fleet.hosts as [TestHost, TestHost];
    fs.writeFileSync(
      path.join(flake, "flake.nix"),
      `{ outputs = { self }: { nixosConfigurations = {
          ${h1.name}.config.system.build.nixsealPushPlan = ${planOf(h1)};
          ${h2.name}.config.system.build.nixsealPushPlan = ${planOf(h2)};
          nokeys.config.system.build = { };
        }; }; }\n`,
    );
    const one = pushJson(["--flake", `path:${flake}#${h1.name}`, "--dry-run"]);
    assert.equal(one.status, 0, one.stderr);
    assert.deepEqual(Object.keys(one.report.hosts), [h1.name]);
    assert.deepEqual(one.report.hosts[h1.name]!.added, ["fk"]);
    const all = pushJson(["--flake", `path:${flake}`]);
    assert.equal(all.status, 0, all.stderr);
    assert.deepEqual(Object.keys(all.report.hosts).sort(), [h1.name, h2.name]);
    for (const h of [h1, h2]) assert.equal(h.snapshot("/run/keys").files.fk?.content, "from-flake");
    const missing = push(["--flake", `path:${flake}#nosuch`]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nix eval .*nosuch.* failed/);
  });
});

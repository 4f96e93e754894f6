/**
 * nixseal push → nixseal receive over real OpenSSH (test/push/harness.ts): first push to three
 * hosts, an incremental push, a removed key, --dry-run, NixOps-style /run/keys, command and age
 * file sources, --upload-at, and the JSON report.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { nixseal, type RunResult, which } from "../helpers.js";
import { ensurePrincipals, type Fleet, idOf, pushTestsSkipReason, startFleet, type TestHost } from "./harness.js";

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
  return nixseal(["push", "-i", identity, "--ssh-option", `UserKnownHostsFile=${fleet.knownHosts}`, ...args], {
    env: { NIX_SSHOPTS: `-F ${fleet.sshConfig}`, ...env },
    cwd: work,
  });
}

function pushJson(args: string[]): { status: number | null; report: any; stderr: string } {
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
    const enc = spawnSync("age", ["-r", recipient, "-o", path.join(work, "tls.age")], { input: "TLS-KEY-v1\n" });
    assert.equal(enc.status, 0);
  });
  after(() => {
    fleet?.stop();
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
      const r = first.report.hosts[h.name];
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
      assert.equal(snap.files["tls.pem"]!.mode, 0o400);
      assert.equal(snap.files["tls.pem"]!.uid, 0);
      assert.equal(snap.files.big!.content?.length, 65536);
      assert.equal(h.receiveRuns(), 1, "one connection, one receive per host");
      assert.ok(h.systemctlCalls().includes("start -- nixseal-key-db.service"), h.systemctlCalls().join("\n"));
    }
    const firstBytes = first.report.hosts.host1.bytesSent;
    assert.ok(firstBytes > 65536, `${firstBytes}`);

    // One key changed: only it crosses the wire, only its units restart, the others stay the same file.
    const before1 = fleet.hosts[0]!.snapshot("/run/keys");
    const calls = fleet.hosts[0]!.systemctlCalls().length;
    const second = pushJson(["--plan", writePlan("p2.json", plan("two"))]);
    assert.equal(second.status, 0, second.stderr);
    const r = second.report.hosts.host1;
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
    assert.deepEqual([...third.report.hosts.host2.kept].sort(), ["big", "db", "tls"]);
    assert.deepEqual(third.report.hosts.host2.restarted, []);
    assert.equal(fleet.hosts[0]!.systemctlCalls().length, calls + 1);
  });
});

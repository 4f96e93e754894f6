/**
 * nixseal push to a host whose /run/keys is a mount point, as on NixOS (a ramfs, mode 0750, group
 * keys), over real OpenSSH (test/push/harness.ts): the keys live inside it (src/push/receiver.ts,
 * the "inside" layout), the mount and its mode and group stay as they were, each /run/keys/<name>
 * resolves to the key with its owner and mode; a changed key is the only one sent, a removed key
 * disappears, a cut connection leaves the old complete set, a file nixseal did not make is never
 * replaced.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { nixseal, type RunResult } from "../helpers.js";
import {
  ensurePrincipals,
  type Fleet,
  type HostJson,
  idOf,
  pushTestsSkipReason,
  RELAY,
  startFleet,
  type TestHost,
} from "./harness.js";

const skip = pushTestsSkipReason();

let fleet: Fleet;
let work: string;
let removePrincipals: () => void;

function writePlan(name: string, plan: unknown): string {
  const f = path.join(work, name);
  fs.writeFileSync(f, JSON.stringify(plan, null, 2));
  return f;
}

function push(args: string[]): RunResult {
  return nixseal(["push", ...args], { env: { NIX_SSHOPTS: `-F ${fleet.sshConfig}` }, cwd: work });
}

function pushJson(plan: string): { status: number | null; host: HostJson; stderr: string } {
  const r = push(["--plan", plan, "--json"]);
  const report = JSON.parse(r.stdout.toString()) as { hosts: Record<string, HostJson> };
  return { status: r.status, host: Object.values(report.hosts)[0]!, stderr: r.stderr };
}

function planOf(h: TestHost, keys: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return writePlan("plan.json", { version: 1, hosts: { [h.name]: { ...h.plan, ...extra, keys } } });
}

/** /run/keys is still NixOS's mount: a ramfs directory, 0750, group keys. */
function assertMountAsNixosMadeIt(h: TestHost): void {
  const d = h.inspect("/run/keys")!;
  assert.equal(d.type, "dir");
  assert.equal(d.mountPoint, true, "/run/keys is still a mount point");
  assert.equal(d.target!.mode, 0o750);
  assert.equal(d.target!.uid, 0);
  assert.equal(d.target!.gid, idOf("group", "keys"));
}

describe("nixseal push to a NixOS /run/keys mount point", { skip: skip ?? false }, () => {
  before(async () => {
    removePrincipals = ensurePrincipals(["nspush"], ["keys"]);
    fleet = await startFleet(1, [{ keysMount: true }]);
    work = path.join(fleet.dir, "deployer");
    fs.mkdirSync(work);
    fs.writeFileSync(path.join(work, "relay.js"), RELAY);
  });
  after(async () => {
    await fleet?.stop();
    removePrincipals?.();
  });

  test("first push, one changed key (only it crosses), one removed; the mount keeps its mode and group", () => {
    const h = fleet.hosts[0]!;
    assertMountAsNixosMadeIt(h);
    const keys = (v: string) => ({
      db: {
        source: { command: ["printf", "%s", `db-${v}`] },
        owner: "nspush",
        group: "keys",
        mode: "0440",
        restartUnits: ["db.service"],
      },
      big: { source: { command: ["head", "-c", "65536", "/dev/zero"] } },
      gone: { source: { command: ["printf", "g"] }, mode: "0400" },
    });
    const first = pushJson(planOf(h, keys("1")));
    assert.equal(first.status, 0, first.stderr);
    assert.deepEqual([...first.host.added].sort(), ["big", "db", "gone"]);
    assertMountAsNixosMadeIt(h);
    const db = h.inspect("/run/keys/db")!;
    assert.equal(db.type, "symlink", "a key is a symlink switched with the whole set");
    assert.deepEqual(
      [db.content, db.target!.uid, db.target!.gid, db.target!.mode],
      ["db-1", idOf("passwd", "nspush"), idOf("group", "keys"), 0o440],
    );
    const gone = h.inspect("/run/keys/gone")!;
    assert.deepEqual([gone.content, gone.target!.uid, gone.target!.mode], ["g", 0, 0o400]);
    const big1 = h.inspect("/run/keys/big")!;
    assert.equal(big1.content?.length, 65536);

    // One key changed: only it crosses; the others stay the same file.
    const second = pushJson(planOf(h, keys("2")));
    assert.equal(second.status, 0, second.stderr);
    assert.deepEqual(second.host.changed, ["db"]);
    assert.deepEqual([...second.host.kept].sort(), ["big", "gone"]);
    assert.deepEqual(second.host.restarted, ["db.service"]);
    assert.ok(second.host.bytesSent < 4096, `only the changed key was sent: ${second.host.bytesSent}`);
    assert.equal(h.inspect("/run/keys/db")!.content, "db-2");
    assert.equal(
      h.inspect("/run/keys/big")!.target!.ino,
      big1.target!.ino,
      "an unchanged key is the same file",
    );

    // One key removed: its path is gone, the others stay.
    const { gone: _, ...rest } = keys("2");
    const third = pushJson(planOf(h, rest));
    assert.equal(third.status, 0, third.stderr);
    assert.deepEqual(third.host.removed, ["gone"]);
    assert.equal(h.inspect("/run/keys/gone"), null);
    assert.equal(h.inspect("/run/keys/db")!.content, "db-2");
    // Only the current generation is kept inside.
    assert.deepEqual(
      Object.keys(h.snapshot("/run/keys/.nixseal").files).sort(),
      ["current", h.inspect("/run/keys/.nixseal/current")!.link!].sort(),
    );
    assertMountAsNixosMadeIt(h);
  });

  test("a connection cut at several points: the old or the new complete set, never a mix", () => {
    const h = fleet.hosts[0]!;
    const set = (v: string) => ({
      a: { source: { command: ["printf", `a-${v}`] } },
      b: { source: { command: ["sh", "-c", `head -c 20000 /dev/zero | tr '\\0' '${v}'`] } },
    });
    const cutPlan = (v: string, limit: number) =>
      planOf(h, set(v), {
        sshOptions: ["-o", `ProxyCommand=${process.execPath} ${path.join(work, "relay.js")} %p ${limit}`],
      });
    let r = push(["--plan", planOf(h, set("x"))]);
    assert.equal(r.status, 0, r.stderr);
    const setOf = () => {
      const a = h.inspect("/run/keys/a")?.content?.slice(2);
      const b = h.inspect("/run/keys/b")?.content;
      assert.equal(b?.length, 20000);
      assert.equal(a, b![0], `a mix: ${a} ${b![0]}`);
      return a!;
    };
    assert.equal(setOf(), "x");
    const outcomes = { old: 0, new: 0 };
    // Through ssh a push of ~20 KB of keys is ~30 KB: cuts before, inside and after the stream.
    for (const limit of [3000, 6000, 9000, 12000, 15000, 18000, 21000, 24000, 10_000_000]) {
      const now = setOf();
      const next = now === "x" ? "y" : "x";
      r = push(["--plan", cutPlan(next, limit)]);
      const after = setOf();
      if (after === now) {
        outcomes.old++;
        assert.equal(r.status, 1, `cut at ${limit}: the push must fail (${r.stderr})`);
      } else outcomes.new++;
    }
    assert.ok(outcomes.old > 0 && outcomes.new > 0, JSON.stringify(outcomes));
    assertMountAsNixosMadeIt(h);
  });

  test("a file in /run/keys nixseal did not make (e.g. left by NixOps): never replaced, the push refused, nothing changed", () => {
    const h = fleet.hosts[0]!;
    let r = push(["--plan", planOf(h, { mine: { source: { command: ["printf", "m1"] } } })]);
    assert.equal(r.status, 0, r.stderr);
    h.shell("printf legacy > /run/keys/legacy && chmod 0600 /run/keys/legacy");
    const plan = planOf(h, {
      mine: { source: { command: ["printf", "m2"] } },
      legacy: { source: { command: ["printf", "new"] } },
    });
    // The dry run already says so; the push refuses it.
    for (const args of [["--dry-run"], []]) {
      r = push(["--plan", plan, ...args]);
      assert.equal(r.status, 1, `${args}: ${r.stderr}`);
      assert.match(r.stderr, /\/run\/keys\/legacy is a file nixseal did not make/);
      assert.match(r.stderr, /remove it on the host/);
    }
    const legacy = h.inspect("/run/keys/legacy")!;
    assert.deepEqual([legacy.type, legacy.content, legacy.target!.mode], ["file", "legacy", 0o600]);
    assert.equal(h.inspect("/run/keys/mine")!.content, "m1", "nothing changed");

    // Every key removed: nixseal's links and directory go, the other file and the mount stay.
    r = push(["--plan", planOf(h, {})]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(Object.keys(h.snapshot("/run/keys").files), ["legacy"]);
    assertMountAsNixosMadeIt(h);
  });
});

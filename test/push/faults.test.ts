/**
 * Faults of nixseal push over real OpenSSH (test/push/harness.ts): a connection cut at 50 random
 * points of the stream, an unreachable host, a changed host key, a RAM filesystem too small, a
 * unit that fails, a destDir under a symlink, and bad input reported before any connection.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { nixseal, prng, type RunResult } from "../helpers.js";
import {
  ensurePrincipals,
  type Fleet,
  freePort,
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

function push(args: string[], sshConfig = fleet.sshConfig): RunResult {
  return nixseal(["push", ...args], {
    env: { NIX_SSHOPTS: `-F ${sshConfig}` },
    cwd: work,
  });
}

function hostEntry(h: TestHost, keys: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { ...h.plan, ...extra, keys };
}

describe("nixseal push faults", { skip: skip ?? false }, () => {
  before(async () => {
    removePrincipals = ensurePrincipals([], ["keys"]);
    // Ten hosts: the cut test cuts ten connections per push; the other tests use the first three.
    fleet = await startFleet(10, [{}, {}, { runSize: "512k" }]);
    work = path.join(fleet.dir, "deployer");
    fs.mkdirSync(work);
    fs.writeFileSync(path.join(work, "relay.js"), RELAY);
  });
  after(async () => {
    await fleet?.stop();
    removePrincipals?.();
  });

  test("a connection cut at 50 random points: each host has the old or the new complete set, never a mix", (t) => {
    const hosts = fleet.hosts;
    const set = (v: string) => ({
      a: { source: { command: ["printf", `a-${v}`] } },
      b: { source: { command: ["sh", "-c", `head -c 20000 /dev/zero | tr '\\0' '${v}'`] } },
      c: { source: { command: ["printf", `c-${v}`] }, destDir: "/run/other-keys" },
    });
    const relay = path.join(work, "relay.js");
    const counted = path.join(work, "relay-count");
    // Each host of one push through its own relay: one cut per host, every host at a different
    // point (a cut is one connection, so the hosts do not disturb each other).
    const planOf = (values: string[], limits: (number | null)[]) =>
      writePlan("cut.json", {
        version: 1,
        hosts: Object.fromEntries(
          hosts.map((h, i) => {
            const limit = limits[i];
            const proxy =
              limit === null
                ? `${process.execPath} ${relay} %p ${2 ** 40} ${counted}-${h.name}`
                : `${process.execPath} ${relay} %p ${limit}`;
            return [h.name, hostEntry(h, set(values[i]!), { sshOptions: ["-o", `ProxyCommand=${proxy}`] })];
          }),
        ),
      });
    // What a host holds: the three keys, read in its namespace (a missing key fails the read).
    const setOf = (h: TestHost): string => {
      const r = spawnSync(
        "nsenter",
        [
          "-t",
          String(h.sshd.pid),
          "-m",
          "--",
          "/bin/sh",
          "-c",
          "cat /run/keys/a && echo && cat /run/keys/b && echo && cat /run/other-keys/c",
        ],
        { encoding: "utf8" },
      );
      assert.equal(r.status, 0, `${h.name}: a key is missing: ${r.stderr}`);
      const [a, b, c] = r.stdout.split("\n");
      const v = a?.slice(2);
      assert.ok(
        v !== undefined && b === v.repeat(20000) && c === `c-${v}`,
        `${h.name}: a mix: ${a} ${b?.slice(0, 3)}... (${b?.length} bytes) ${c}`,
      );
      return v;
    };
    // The first push, uncut, also measures how many bytes ssh sends for a push of these keys
    // (handshake included): the cuts fall before, inside and after the push stream. Every byte
    // offset of the stream itself is cut in process by test/push/receiver.test.ts; this covers
    // real ssh and sshd.
    const every = <T>(v: T): T[] => hosts.map(() => v);
    let r = push(["--plan", planOf(every("x"), every(null))]);
    assert.equal(r.status, 0, r.stderr);
    const total = Math.max(...hosts.map((h) => Number(fs.readFileSync(`${counted}-${h.name}`, "utf8"))));
    assert.ok(total > 20_000, `${total} bytes through the relay`);
    const now = hosts.map((h) => setOf(h));
    assert.deepEqual(now, every("x"));
    const random = prng(20261205);
    const POINTS = 50;
    const outcomes = { old: 0, new: 0 };
    for (let done = 0; done < POINTS; ) {
      const n = Math.min(hosts.length, POINTS - done);
      const next = now.map((v, i) => (i < n ? (v === "x" ? "y" : "x") : v));
      const limits = hosts.map((_, i) => (i < n ? 1 + Math.floor(random() * total) : null));
      r = nixseal(["push", "--plan", planOf(next, limits), "--json"], {
        env: { NIX_SSHOPTS: `-F ${fleet.sshConfig}` },
        cwd: work,
      });
      const report = JSON.parse(r.stdout.toString());
      for (let i = 0; i < n; i++) {
        const h = hosts[i]!;
        const after = setOf(h);
        assert.ok(after === now[i] || after === next[i], `${h.name} cut at ${limits[i]}: ${after}`);
        if (after === now[i]) {
          outcomes.old++;
          assert.equal(
            report.hosts[h.name].result,
            "failed",
            `${h.name} cut at ${limits[i]} of ${total}: the push must fail (${r.stderr})`,
          );
        } else outcomes.new++;
        now[i] = after;
      }
      done += n;
    }
    assert.equal(outcomes.old + outcomes.new, POINTS);
    t.diagnostic(`${total} bytes from ssh uncut; after the cuts: ${JSON.stringify(outcomes)}`);
    assert.ok(outcomes.old > 0, JSON.stringify(outcomes));
  });

  test("an unreachable host, a changed host key and a failing unit: reported, the other hosts done, nothing sent to the impostor", async () => {
    const [good, impostor, failing] = fleet.hosts as [TestHost, TestHost, TestHost];
    // known_hosts that names another key for the impostor's address.
    const other = path.join(work, "other_host_key");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    const known = fs
      .readFileSync(fleet.knownHosts, "utf8")
      .split("\n")
      .map((l) =>
        l.startsWith(`[127.0.0.1]:${impostor.port} `)
          ? `[127.0.0.1]:${impostor.port} ${fs.readFileSync(`${other}.pub`, "utf8").split(" ").slice(0, 2).join(" ")}`
          : l,
      )
      .join("\n");
    const knownFile = path.join(work, "known_hosts_changed");
    fs.writeFileSync(knownFile, known);
    const config = path.join(work, "ssh_config_changed");
    fs.writeFileSync(config, fs.readFileSync(fleet.sshConfig, "utf8").replace(fleet.knownHosts, knownFile));
    const closed = await freePort();
    const runs = impostor.receiveRuns();
    const key = { k: { source: { command: ["printf", "secret-value"] }, restartUnits: ["failing.service"] } };
    const plan = writePlan("fleet.json", {
      version: 1,
      hosts: {
        good: hostEntry(good, { k: { source: { command: ["printf", "secret-value"] } } }),
        impostor: hostEntry(impostor, { k: { source: { command: ["printf", "secret-value"] } } }),
        failing: hostEntry(failing, key),
        unreachable: {
          targetHost: "127.0.0.1",
          targetPort: closed,
          targetUser: "root",
          keys: { k: { source: { command: ["printf", "secret-value"] } } },
        },
      },
    });
    const r = nixseal(["push", "--plan", plan, "--json"], {
      env: { NIX_SSHOPTS: `-F ${config}` },
      cwd: work,
    });
    assert.equal(r.status, 1, r.stderr);
    const report = JSON.parse(r.stdout.toString());
    assert.deepEqual(Object.keys(report.hosts).sort(), ["failing", "good", "impostor", "unreachable"]);
    assert.equal(report.hosts.good.result, "ok");
    assert.equal(report.hosts.impostor.result, "failed");
    assert.match(report.hosts.impostor.problems[0].message, /Host key verification failed/);
    assert.equal(report.hosts.unreachable.result, "failed");
    assert.match(report.hosts.unreachable.problems[0].message, /Connection refused/);
    assert.equal(report.hosts.failing.result, "failed");
    assert.match(report.hosts.failing.problems[0].message, /failing\.service/);
    assert.equal(
      failing.snapshot("/run/keys").files.k?.content,
      "secret-value",
      "the key is in place; the unit failed",
    );
    assert.equal(impostor.receiveRuns(), runs, "no receive ran on the impostor");
    assert.match(r.stderr, /3 of 4 hosts failed/);
    assert.doesNotMatch(r.stdout.toString() + r.stderr, /secret-value/);
  });

  test("a RAM filesystem too small for the new set: the old set stays, the push fails", () => {
    const h = fleet.hosts[2]!;
    const planOf = (size: number, fill: string) =>
      writePlan("small.json", {
        version: 1,
        hosts: {
          [h.name]: hostEntry(h, {
            big: { source: { command: ["sh", "-c", `head -c ${size} /dev/zero | tr '\\0' '${fill}'`] } },
          }),
        },
      });
    let r = push(["--plan", planOf(100_000, "a")]);
    assert.equal(r.status, 0, r.stderr);
    r = push(["--plan", planOf(700_000, "b")]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /host3.*nothing changed.*(ENOSPC|no space)/i);
    assert.match(r.stderr, /hint: the RAM filesystem is full/);
    const snap = h.snapshot("/run/keys");
    assert.equal(snap.files.big?.content?.length, 100_000);
    assert.equal(snap.files.big?.content?.[0], "a");
  });

  test("a destDir under a symlink on the host: refused before anything changes there", () => {
    const h = fleet.hosts[1]!;
    const ln = spawnSync("nsenter", [
      "-t",
      String(h.sshd.pid),
      "-m",
      "--",
      "ln",
      "-s",
      "/tmp",
      "/run/linked",
    ]);
    assert.equal(ln.status, 0);
    const before = h.snapshot("/run/keys");
    const plan = writePlan("symlink.json", {
      version: 1,
      hosts: {
        [h.name]: hostEntry(h, {
          k: { source: { command: ["printf", "v"] }, destDir: "/run/linked/keys" },
          j: { source: { command: ["printf", "w"] } },
        }),
      },
    });
    const r = push(["--plan", plan]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /destDir \/run\/linked\/keys is under the symlink \/run\/linked/);
    assert.deepEqual(h.snapshot("/run/keys"), before);
    assert.equal(fs.existsSync("/tmp/keys"), false);
  });

  test("bad input: every problem reported at once, no connection made", () => {
    const logs = fleet.hosts.map((h) => h.sshdLog().split("Connection from").length);
    const h = fleet.hosts[0]!;
    const plan = writePlan("bad.json", {
      version: 1,
      hosts: {
        [h.name]: hostEntry(h, {
          "../escape": { source: { command: ["printf", "x"] } },
          ok: { source: { command: ["printf", "x"] }, destDir: "keys", colour: "red" },
          fails: { source: { command: ["sh", "-c", "echo first >&2; echo 'the last line' >&2; exit 3"] } },
          noid: { source: { file: "missing.age" } },
          named: { source: { command: ["true"] }, name: ".hidden" },
        }),
      },
    });
    const r = push(["--plan", plan]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /key name "\.\.\/escape"/);
    assert.match(r.stderr, /keys\.ok\.destDir: "keys" is not absolute/);
    assert.match(r.stderr, /keys\.ok\.colour: unknown field/);
    assert.match(r.stderr, /keys\.named\.name: "\.hidden"/);
    assert.match(r.stderr, /key host1\.fails: command "sh -c .*" failed \(exit 3\): the last line/);
    assert.match(r.stderr, /missing\.age/);
    assert.deepEqual(
      fleet.hosts.map((x) => x.sshdLog().split("Connection from").length),
      logs,
      "no sshd saw a connection",
    );
  });
});

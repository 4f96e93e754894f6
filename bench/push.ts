/**
 * Benchmark: deploy-time keys. H hosts (default 20, --hosts) × K keys each (default 100,
 * --files), each host a real sshd on 127.0.0.1 in its own mount namespace (test/push/harness.ts).
 *
 * - nixseal push: every key of a host in one stream over one ssh connection (its default of 8
 *   hosts at once); the connections are counted in each sshd's log (one per host, or it fails);
 * - the anchor, colmena-style: one `ssh` per key (`cat > tmp && chown && chmod && mv`), keys of a
 *   host one after another, 10 hosts at once (colmena's default --limit); it runs once (with
 *   20 × 100 it takes minutes), or not at all with --no-anchor;
 * - nixseal re-push with nothing changed (the host answers HMACs, no key is sent): wall time, and
 *   the deployer's CPU per host: (CPU of the re-push − CPU of a push of a plan without hosts) / H,
 *   where CPU is user + system of nixseal and of its ssh children (all of the deployer's CPU; the
 *   hosts' sshd and nixseal receive do not count). The per-run work (Node's start-up, reading the
 *   plan, one decryption per source) is thus shared by the H hosts. Split into nixseal's own
 *   process and its ssh children, and measured again with ssh's key exchange set to
 *   curve25519-sha256 (a choice of the user's ssh configuration; OpenSSH's default
 *   sntrup761x25519 costs the client tens of ms of CPU per connection by itself).
 *
 * The first push of each run starts from hosts without keys (an empty plan pushed, untimed).
 * Needs root, sshd, unshare and age; skipped otherwise.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { ensurePrincipals, pushTestsSkipReason, startFleet, type TestHost } from "../test/push/harness.js";
import type { BenchContext, Benchmark, BenchResult } from "./common.js";
import { cliArgv, which } from "./common.js";

/** Preloaded into nixseal: writes its own CPU time at exit (bench/cpu-at-exit.ts). */
const CPU_AT_EXIT = path.join(path.dirname(fileURLToPath(import.meta.url)), "cpu-at-exit.js");

interface Timed {
  ms: number;
  /** CPU (user + system) of the command and every child it waited for. */
  cpuMs: number;
  /** CPU of the nixseal process alone. */
  selfMs: number;
  status: number | null;
  stderr: string;
}

/** Runs nixseal; returns its wall time, its CPU time with its children's, and its own alone. */
function timed(argv: string[], env: Record<string, string>, work: string): Timed {
  const errFile = path.join(work, "stderr");
  const cpuFile = path.join(work, "cpu");
  fs.rmSync(cpuFile, { force: true });
  const t = process.hrtime.bigint();
  // The shell's cutime/cstime (fields 16 and 17 of /proc/PID/stat) count every child it waited for,
  // and their waited-for children (nixseal's ssh processes).
  const r = spawnSync(
    "/bin/sh",
    ["-c", '"$@" >/dev/null 2>"$ERRFILE"; s=$?; cat /proc/$$/stat; exit $s', "sh", ...argv],
    {
      encoding: "utf8",
      env: { ...process.env, ...env, ERRFILE: errFile, NIXSEAL_BENCH_CPU_FILE: cpuFile },
    },
  );
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  const fields = r.stdout.slice(r.stdout.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[13]) + Number(fields[14]);
  let stderr = "";
  try {
    stderr = fs.readFileSync(errFile, "utf8");
  } catch {}
  let selfMs = Number.NaN;
  try {
    selfMs = Number(fs.readFileSync(cpuFile, "utf8"));
  } catch {}
  return { ms, cpuMs: (ticks * 1000) / 100, selfMs, status: r.status, stderr };
}

async function colmenaStyle(
  hosts: TestHost[],
  sshConfig: string,
  files: string[],
  parallel: number,
): Promise<number> {
  const t = process.hrtime.bigint();
  let next = 0;
  const one = (h: TestHost, file: string) =>
    new Promise<void>((resolve, reject) => {
      const name = path.basename(file);
      const c = spawn(
        "ssh",
        [
          "-F",
          sshConfig,
          "-p",
          String(h.port),
          "root@127.0.0.1",
          `mkdir -p -m 0750 /run/colmena-keys && cat > /run/colmena-keys/${name}.tmp && chown root:root /run/colmena-keys/${name}.tmp && chmod 0400 /run/colmena-keys/${name}.tmp && mv /run/colmena-keys/${name}.tmp /run/colmena-keys/${name}`,
        ],
        { stdio: [fs.openSync(file, "r"), "ignore", "ignore"] },
      );
      c.on("close", (code) =>
        code === 0 ? resolve() : reject(new Error(`ssh to ${h.name} exited ${code}`)),
      );
    });
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < hosts.length) {
        const h = hosts[next++]!;
        for (const f of files) await one(h, f);
      }
    }),
  );
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export const pushBench: Benchmark = {
  name: "push",
  description:
    "nixseal push of H hosts × K keys (one ssh connection per host) vs one ssh per key (colmena-style)",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const why = pushTestsSkipReason() ?? (which("age") === null ? "needs age" : null);
    if (why !== null) {
      ctx.log(`push: skipped: ${why}`);
      return null;
    }
    const nHosts = ctx.option("--hosts") ?? 20;
    const nKeys = ctx.option("--files") ?? 100;
    const removePrincipals = ensurePrincipals([], ["keys"]);
    const plainDir = path.join(ctx.scratch, `nixseal-bench-push-${process.pid}`);
    const fleet = await startFleet(
      nHosts,
      Array.from({ length: nHosts }, () => ({ runSize: "64m" })),
    );
    try {
      const work = path.join(fleet.dir, "deployer");
      fs.mkdirSync(work);
      const identity = path.join(work, "id.txt");
      const kg = spawnSync("age-keygen", ["-o", identity], { encoding: "utf8" });
      const recipient = /age1[0-9a-z]+/.exec(kg.stderr)![0];
      // The keys: K plaintext files (the colmena-style loop sends them as they are) and the same
      // values encrypted with age (nixseal decrypts each once per run).
      fs.mkdirSync(plainDir, { mode: 0o700 });
      const plain: string[] = [];
      const keys: Record<string, unknown> = {};
      for (let i = 0; i < nKeys; i++) {
        const name = `key${i}`;
        const f = path.join(plainDir, name);
        fs.writeFileSync(f, `${name}-${"x".repeat(200)}\n`, { mode: 0o600 });
        plain.push(f);
        const enc = spawnSync("age", ["-r", recipient, "-o", path.join(work, `${name}.age`), f]);
        if (enc.status !== 0) throw new Error("age failed");
        keys[name] = {
          source: { file: `${name}.age` },
          group: "keys",
          mode: "0440",
          restartUnits: [`app${i % 10}.service`],
        };
      }
      const planOf = (withKeys: boolean) => {
        const file = path.join(work, withKeys ? "plan.json" : "empty.json");
        fs.writeFileSync(
          file,
          JSON.stringify({
            version: 1,
            hosts: Object.fromEntries(
              fleet.hosts.map((h) => [h.name, { ...h.plan, keys: withKeys ? keys : {} }]),
            ),
          }),
        );
        return file;
      };
      const full = planOf(true);
      const empty = planOf(false);
      // A plan without hosts: what a run costs before any host (Node's start-up, the plan).
      const none = path.join(work, "none.json");
      fs.writeFileSync(none, JSON.stringify({ version: 1, hosts: {} }));
      const sshOpts = `-F ${fleet.sshConfig}`;
      const cheapKex = `${sshOpts} -o KexAlgorithms=curve25519-sha256`;
      const push = (plan: string, opts = sshOpts) =>
        timed(
          [
            process.execPath,
            "--import",
            CPU_AT_EXIT,
            ...cliArgv(ctx.cli).slice(1),
            "push",
            "-i",
            identity,
            "--plan",
            plan,
          ],
          { NIX_SSHOPTS: opts },
          work,
        );
      const ok = (what: string, r: Timed): Timed => {
        if (r.status !== 0) throw new Error(`${what} failed: ${r.stderr}`);
        if (Number.isNaN(r.selfMs)) throw new Error(`${what}: nixseal did not report its CPU time`);
        return r;
      };
      const connections = () => fleet.hosts.map((h) => h.sshdLog().split("Connection from").length - 1);
      const first: number[] = [];
      const again: number[] = [];
      const perHost = {
        total: [] as number[],
        self: [] as number[],
        ssh: [] as number[],
        cheap: [] as number[],
      };
      const loop: number[] = [];
      ctx.log(`push: ${nHosts} hosts × ${nKeys} keys; warm-up`);
      ok("reset push", push(empty));
      ok("push", push(full));
      for (let run = 0; run < ctx.runs; run++) {
        ok("reset push", push(empty));
        const before = connections();
        const a = ok("push", push(full));
        const made = connections().map((n, i) => n - before[i]!);
        if (made.some((n) => n !== 1))
          throw new Error(`connections per host: ${made.join(", ")} (not one each)`);
        first.push(a.ms);
        // The re-pushes and the runs without hosts, interleaved (same conditions).
        const base = ok("push without hosts", push(none));
        const b = ok("re-push", push(full));
        const baseCheap = ok("push without hosts", push(none, cheapKex));
        const c = ok("re-push (curve25519)", push(full, cheapKex));
        again.push(b.ms);
        perHost.total.push((b.cpuMs - base.cpuMs) / nHosts);
        perHost.self.push((b.selfMs - base.selfMs) / nHosts);
        perHost.ssh.push((b.cpuMs - b.selfMs - (base.cpuMs - base.selfMs)) / nHosts);
        perHost.cheap.push((c.cpuMs - baseCheap.cpuMs) / nHosts);
        if (run === 0 && !ctx.flag("--no-anchor")) {
          ctx.log("  the colmena-style loop (once)");
          loop.push(await colmenaStyle(fleet.hosts, fleet.sshConfig, plain, 10));
        }
        ctx.log(
          `  run ${run + 1}/${ctx.runs}: push ${a.ms.toFixed(0)} ms${loop.length > 0 && run === 0 ? `, colmena-style ${loop[0]!.toFixed(0)} ms` : ""}, re-push ${b.ms.toFixed(0)} ms; deployer CPU per host ${perHost.total.at(-1)!.toFixed(1)} ms (nixseal ${perHost.self.at(-1)!.toFixed(1)}, ssh ${perHost.ssh.at(-1)!.toFixed(1)}), with curve25519 ${perHost.cheap.at(-1)!.toFixed(1)} ms`,
        );
      }
      const cpuRow = (name: string, xs: number[], target?: string) => ({
        name,
        nixseal: xs,
        anchorName: "",
        anchor: null,
        ...(target === undefined ? {} : { target }),
      });
      return {
        title: `push: ${nHosts} hosts × ${nKeys} keys over ssh`,
        rows: [
          {
            name: "first push (every key new; 8 hosts at once)",
            nixseal: first,
            anchorName: "colmena-style: one ssh per key, 10 hosts at once (1 run)",
            anchor: loop.length > 0 ? loop : null,
            target: "≤ 0.05× the loop",
          },
          { name: "re-push, nothing changed (wall)", nixseal: again, anchorName: "", anchor: null },
          cpuRow("re-push: deployer CPU per host (nixseal + ssh)", perHost.total, "≤ 50 ms"),
          cpuRow("… of which nixseal's process", perHost.self),
          cpuRow("… of which ssh (default key exchange)", perHost.ssh),
          cpuRow(
            "re-push: deployer CPU per host, ssh -o KexAlgorithms=curve25519-sha256",
            perHost.cheap,
            "≤ 50 ms",
          ),
        ],
        notes: [
          "Each host: a real sshd on 127.0.0.1 in its own mount namespace (test/push/harness.ts); nixseal receive runs there through node.",
          "The colmena-style loop writes each key with `cat > tmp && chown && chmod && mv` over its own ssh connection, keys of a host one after another, 10 hosts at once (colmena's default).",
          "nixseal push: one ssh connection per host (counted in each sshd's log in every run).",
          "Deployer CPU per host: (user + system CPU of nixseal push and its ssh children for the re-push − the same for a plan without hosts) / hosts, so the decryption of each source (once per run) is shared by the hosts; the rows below split it into nixseal's own process and ssh. The hosts' CPU (sshd, nixseal receive) is not counted. The CPU rows are ms, not wall time.",
          "With ssh's default key exchange (sntrup761x25519-sha512 in OpenSSH before 9.9) the ssh client spends tens of ms of CPU per connection on it; curve25519-sha256 is what the user's ssh configuration may choose (or a ControlMaster connection, which nixseal uses when configured).",
        ],
      };
    } finally {
      fs.rmSync(plainDir, { recursive: true, force: true });
      await fleet.stop();
      removePrincipals();
    }
  },
};

/**
 * Benchmark: deploy-time keys. H hosts (default 20, --hosts) × K keys each (default 100,
 * --files), each host a real sshd on 127.0.0.1 in its own mount namespace (test/push/harness.ts).
 *
 * - nixseal push: every key of a host in one stream over one ssh connection (8 hosts at once);
 * - the anchor, colmena-style: one `ssh` per key (`cat > file && chown && chmod`), keys of a
 *   host one after another, 8 hosts at once, as colmena uploads keys;
 * - nixseal re-push with nothing changed (the host answers HMACs, nothing is sent): wall time,
 *   and the deployer's CPU time per host (user + system of nixseal and its ssh children).
 *
 * The first push of each run starts from hosts without keys (an empty plan pushed, untimed).
 * Needs root, sshd, unshare and age; skipped otherwise.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { ensurePrincipals, pushTestsSkipReason, startFleet, type TestHost } from "../test/push/harness.js";
import type { BenchContext, Benchmark, BenchResult } from "./common.js";
import { which } from "./common.js";

/** Runs a command; returns its wall time and the CPU time (user + system) of it and its children. */
function timed(
  argv: string[],
  env: Record<string, string>,
): { ms: number; cpuMs: number; status: number | null; stderr: string } {
  const t = process.hrtime.bigint();
  // The shell's cutime/cstime (fields 16 and 17 of /proc/PID/stat) count every child it waited for,
  // and their waited-for children (nixseal's ssh processes).
  const r = spawnSync(
    "/bin/sh",
    ["-c", '"$@" >/dev/null 2>"$ERRFILE"; s=$?; cat /proc/$$/stat; exit $s', "sh", ...argv],
    {
      encoding: "utf8",
      env: { ...process.env, ...env },
    },
  );
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  const fields = r.stdout.slice(r.stdout.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[13]) + Number(fields[14]);
  let stderr = "";
  try {
    stderr = fs.readFileSync(env.ERRFILE!, "utf8");
  } catch {}
  return { ms, cpuMs: (ticks * 1000) / 100, status: r.status, stderr };
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
      const env = { NIX_SSHOPTS: `-F ${fleet.sshConfig}`, ERRFILE: path.join(work, "stderr") };
      const push = (plan: string) =>
        timed([process.execPath, ctx.cli, "push", "-i", identity, "--plan", plan], env);
      const first: number[] = [];
      const again: number[] = [];
      const againCpu: number[] = [];
      const loop: number[] = [];
      ctx.log(`push: ${nHosts} hosts × ${nKeys} keys; warm-up`);
      push(empty);
      push(full);
      await colmenaStyle(fleet.hosts, fleet.sshConfig, plain.slice(0, 2), 8);
      for (let run = 0; run < ctx.runs; run++) {
        const reset = push(empty);
        if (reset.status !== 0) throw new Error(`reset push failed: ${reset.stderr}`);
        const a = push(full);
        if (a.status !== 0) throw new Error(`push failed: ${a.stderr}`);
        first.push(a.ms);
        const b = push(full);
        if (b.status !== 0) throw new Error(`re-push failed: ${b.stderr}`);
        again.push(b.ms);
        againCpu.push(b.cpuMs / nHosts);
        loop.push(await colmenaStyle(fleet.hosts, fleet.sshConfig, plain, 8));
        ctx.log(
          `  run ${run + 1}/${ctx.runs}: push ${a.ms.toFixed(0)} ms, colmena-style ${loop.at(-1)!.toFixed(0)} ms, re-push ${b.ms.toFixed(0)} ms (${againCpu.at(-1)!.toFixed(0)} ms CPU per host)`,
        );
      }
      return {
        title: `push: ${nHosts} hosts × ${nKeys} keys over ssh (8 hosts at once)`,
        rows: [
          {
            name: "first push (every key new)",
            nixseal: first,
            anchorName: "colmena-style: one ssh per key",
            anchor: loop,
            target: "≤ 0.1× the loop",
          },
          { name: "re-push, nothing changed (wall)", nixseal: again, anchorName: "", anchor: null },
          {
            name: "re-push, nothing changed (deployer CPU per host)",
            nixseal: againCpu,
            anchorName: "",
            anchor: null,
          },
        ],
        notes: [
          "Each host: a real sshd on 127.0.0.1 in its own mount namespace (test/push/harness.ts); nixseal receive runs there through node.",
          "The colmena-style loop writes each key with `cat > tmp && chown && chmod && mv` over its own ssh connection.",
          "Deployer CPU: user + system time of nixseal push and its ssh children, divided by the number of hosts.",
        ],
      };
    } finally {
      fs.rmSync(plainDir, { recursive: true, force: true });
      await fleet.stop();
      removePrincipals();
    }
  },
};

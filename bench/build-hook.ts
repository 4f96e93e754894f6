/**
 * Benchmark: what nixseal's pre-build hook costs ordinary builds. N trivial derivations (default
 * 200) built through a nix-daemon with sandbox = true and max-jobs = 1, once with no hook (the
 * anchor), once with the `nixseal build-hook --wrapper pre` /bin/sh wrapper (grep, no Node for a
 * derivation that names no secret) and once with the hook run as `node main.js build-hook`
 * directly (what the wrapper saves). Each round builds fresh derivations (a salt), and the order
 * of the configurations alternates between rounds. Target: at most 5 ms added per build.
 *
 * Needs root, nix-daemon and nix-build; skipped otherwise. The daemon listens on a private
 * socket (NIX_DAEMON_SOCKET_PATH) and is stopped after each configuration. The builds' /bin/sh is
 * the test sandbox runtime's dash in the store (test/build-secrets/sandbox-runtime.ts): the
 * sandbox binds store paths only, never a host system directory.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { SANDBOX_RUNTIME_SKIP, sandboxRuntime, writeNixConf } from "../test/build-secrets/sandbox-runtime.js";
import type { BenchContext, Benchmark, BenchResult } from "./common.js";
import { cliArgv, which } from "./common.js";

interface Config {
  name: string;
  hook: string | null;
}

function startDaemon(
  dir: string,
  hook: string | null,
  sandboxPaths: string,
): { socket: string; child: ChildProcess; conf: string } {
  const conf = path.join(dir, `conf-${randomBytes(3).toString("hex")}`);
  fs.mkdirSync(conf);
  writeNixConf(path.join(conf, "nix.conf"), [
    "sandbox = true",
    "substituters =",
    "build-users-group = nixbld",
    "max-jobs = 1",
    `sandbox-paths = ${sandboxPaths}`,
    hook ? `pre-build-hook = ${hook}` : "",
  ]);
  const socket = path.join(conf, "sock");
  const child = spawn("nix-daemon", ["--daemon"], {
    detached: true,
    stdio: "ignore",
    env: { ...process.env, NIX_CONF_DIR: conf, NIX_DAEMON_SOCKET_PATH: socket },
  });
  const t = Date.now();
  while (!fs.existsSync(socket) && Date.now() - t < 10_000) spawnSync("sleep", ["0.05"]);
  return { socket, child, conf };
}

function stopDaemon(child: ChildProcess): void {
  if (child.pid !== undefined && child.exitCode === null) {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
  }
}

function expression(n: number, salt: string): string {
  const items = Array.from(
    { length: n },
    (_, i) =>
      `  d${i} = derivation { name = "nxs-bench-${salt}-${i}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${i} > $out" ]; };`,
  );
  return `{\n${items.join("\n")}\n}\n`;
}

/** Instantiates n fresh trivial derivations (a salt keeps them unbuilt); returns the .drv paths. */
function freshDrvs(dir: string, label: string, n: number): string[] {
  const salt = `${label.replace(/\W/g, "")}-${randomBytes(4).toString("hex")}`;
  const file = path.join(dir, `${salt}.nix`);
  fs.writeFileSync(file, expression(n, salt));
  const inst = spawnSync("nix-instantiate", [file], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (inst.status !== 0) throw new Error(`nix-instantiate: ${inst.stderr}`);
  return inst.stdout.trim().split("\n");
}

/** Builds the derivations through the daemon at `socket`; wall time in ms. */
function timeRealise(drvs: string[], socket: string, conf: string, label: string): number {
  const t = performance.now();
  const r = spawnSync("nix-store", ["--realise", ...drvs], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, NIX_REMOTE: `unix://${socket}`, NIX_CONF_DIR: conf },
  });
  const ms = performance.now() - t;
  if (r.status !== 0) {
    const why = r.stderr
      .split("\n")
      .filter((l) => !l.startsWith("  /nix/store/"))
      .join("\n")
      .slice(-3000);
    throw new Error(`nix-store --realise (${label}): ${why}`);
  }
  return ms;
}

export const buildHook: Benchmark = {
  name: "build-hook",
  description: "N trivial sandboxed builds through nix-daemon with and without nixseal's pre-build hook",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const missing = ["nix-daemon", "nix-store", "nix-instantiate"].filter((t) => which(t) === null);
    if (missing.length > 0 || process.getuid?.() !== 0) {
      ctx.log(`build-hook: skipped: needs root and ${missing.join(", ") || "nix"}`);
      return null;
    }
    if (SANDBOX_RUNTIME_SKIP) {
      ctx.log(`build-hook: skipped: the sandbox runtime ${SANDBOX_RUNTIME_SKIP}`);
      return null;
    }
    const sandboxPaths = sandboxRuntime().sandboxPaths;
    const n = ctx.option("--files") ?? 200;
    const dir = fs.mkdtempSync(path.join("/tmp", "nixseal-bench-hook-"));
    try {
      const policy = path.join(dir, "policy.json"); // absent: the fast path never reads it
      const wrapper = path.join(dir, "pre-hook-wrapper");
      const w = spawnSync(
        process.execPath,
        [...cliArgv(ctx.cli).slice(1), "build-hook", "--wrapper", "pre", "--policy", policy],
        {
          encoding: "utf8",
        },
      );
      if (w.status !== 0) throw new Error(`build-hook --wrapper: ${w.stderr}`);
      fs.writeFileSync(wrapper, w.stdout, { mode: 0o755 });
      const direct = path.join(dir, "pre-hook-node");
      fs.writeFileSync(
        direct,
        `#!/bin/sh\nexec ${cliArgv(ctx.cli)
          .map((a) => `'${a}'`)
          .join(" ")} build-hook --policy '${policy}' "$@"\n`,
        { mode: 0o755 },
      );
      const configs: Config[] = [
        { name: "no hook", hook: null },
        { name: "hook (sh wrapper)", hook: wrapper },
        { name: "hook (node directly)", hook: direct },
      ];
      // One daemon per configuration, all up for the whole run, so batches can interleave.
      const daemons = configs.map((c) => ({ config: c, ...startDaemon(dir, c.hook, sandboxPaths) }));
      const times = new Map<string, number[]>(configs.map((c) => [c.name, []]));
      const batch = Math.min(20, n);
      try {
        ctx.log(`  warm-up (${batch} builds per configuration)`);
        for (const d of daemons)
          timeRealise(freshDrvs(dir, d.config.name, batch), d.socket, d.conf, d.config.name);
        for (let round = 0; round < ctx.runs; round++) {
          const total = new Map<string, number>(configs.map((c) => [c.name, 0]));
          for (let done = 0, k = 0; done < n; done += batch, k++) {
            const size = Math.min(batch, n - done);
            const order = (round + k) % 2 === 0 ? daemons : [...daemons].reverse();
            for (const d of order) {
              const drvs = freshDrvs(dir, d.config.name, size);
              total.set(
                d.config.name,
                total.get(d.config.name)! + timeRealise(drvs, d.socket, d.conf, d.config.name),
              );
            }
          }
          for (const c of configs) {
            const ms = total.get(c.name)!;
            times.get(c.name)!.push(ms);
            ctx.log(
              `  run ${round + 1}/${ctx.runs}: ${c.name}: ${ms.toFixed(0)} ms (${(ms / n).toFixed(1)} ms/build)`,
            );
          }
        }
      } finally {
        for (const d of daemons) stopDaemon(d.child);
      }
      // The hook alone, on a .drv that names no secret: N runs of the wrapper against N runs of
      // the cheapest possible hook (a /bin/sh that exits), so the sandbox's noise is out.
      const plainDrv = freshDrvs(dir, "plain", 1)[0]!;
      const hookAlone = (hook: string) => {
        const t = performance.now();
        for (let i = 0; i < n; i++) {
          const r = spawnSync(hook, [plainDrv, `${plainDrv}.chroot`], { stdio: "ignore" });
          if (r.status !== 0) throw new Error(`${hook} failed`);
        }
        return performance.now() - t;
      };
      const emptyHook = path.join(dir, "empty-hook");
      fs.writeFileSync(emptyHook, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      const alone = { wrapper: [] as number[], empty: [] as number[] };
      for (let round = 0; round < ctx.runs; round++) {
        alone.wrapper.push(hookAlone(wrapper));
        alone.empty.push(hookAlone(emptyHook));
      }
      const perBuild = (name: string) => {
        const xs = [...times.get(name)!].sort((a, b) => a - b);
        const base = [...times.get("no hook")!].sort((a, b) => a - b);
        const med = (s: number[]) => s[s.length >> 1]!;
        return ((med(xs) - med(base)) / n).toFixed(1);
      };
      return {
        title: `build-hook: ${n} trivial sandboxed builds through nix-daemon, with and without the pre-build hook`,
        rows: [
          {
            name: `${n} builds, hook via the sh wrapper`,
            nixseal: times.get("hook (sh wrapper)")!,
            anchorName: "no pre-build hook",
            anchor: times.get("no hook")!,
            target: `≤ +5 ms/build (+${perBuild("hook (sh wrapper)")} ms/build)`,
          },
          {
            name: `the hook alone, ${n} runs on a .drv naming no secret (sh wrapper)`,
            nixseal: alone.wrapper,
            anchorName: "an empty /bin/sh hook",
            anchor: alone.empty,
            target: `(${(([...alone.wrapper].sort((a, b) => a - b)[alone.wrapper.length >> 1]! - [...alone.empty].sort((a, b) => a - b)[alone.empty.length >> 1]!) / n).toFixed(2)} ms/run over the empty hook)`,
          },
          {
            name: `${n} builds, hook as node main.js directly`,
            nixseal: times.get("hook (node directly)")!,
            anchorName: "no pre-build hook",
            anchor: times.get("no hook")!,
            target: `(+${perBuild("hook (node directly)")} ms/build)`,
          },
        ],
        notes: [
          "max-jobs = 1 (each hook run is on the critical path); sandbox = true; build users nixbld; three daemons (no hook, wrapper, node directly) up at once; fresh derivations in batches of 20, instantiated before timing (only `nix-store --realise` is timed), the configurations' order alternating per batch.",
        ],
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};

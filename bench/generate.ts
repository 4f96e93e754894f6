/**
 * generate: `nixseal generate` from scratch for 100 hosts × 10 generated passwords plus a
 * CA-style chain (a shared ssh CA key, a host key and certificate per host signed by it with
 * `ssh-keygen -s`): 1201 generator instances, the passwords and keys built-in (in-process), the
 * certificates one script each. Anchor, in the same run: the agenix-rekey way, a shell
 * loop that runs each script and one `age -e` process per secret file. Then `nixseal generate`
 * with nothing to do (generated/.state.json read, each output's lstat, nothing run or written). Targets: ≤ 2 s and
 * ≤ 200 ms. generators.nix is evaluated once before timing (the rules cache is warm, as it is
 * for every run after a change).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { X25519Identity } from "../src/age/x25519.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  measureOnce,
  type ResultRow,
  scratchDir,
  which,
} from "./common.js";

const HOSTS = 100;
const PASSWORDS = 10;

function generatorsNix(admin: string, hosts: Map<string, string>): string {
  const hostList = [...hosts.keys()].map((h) => `"${h}"`).join(" ");
  const lines = [`{ admins = [ "${admin}" ];`];
  for (const [h, key] of hosts) lines.push(`  hosts.${h} = "${key}";`);
  for (let i = 0; i < PASSWORDS; i++) {
    lines.push(
      `  generators.pw${i} = { hosts = [ ${hostList} ]; files.password = { }; builtin.password.length = 32; };`,
    );
  }
  // The CA and the host keys are builtins; the certificates are signed by one script per host,
  // which starts one program (ssh-keygen writes the certificate beside its input, in $in).
  lines.push(
    `  generators.ca = { share = true; files.key = { }; files."key.pub".secret = false; builtin = "ssh-ed25519"; };`,
  );
  lines.push(
    `  generators.hostkey = { hosts = [ ${hostList} ]; files.key = { }; files."key.pub".secret = false; builtin = "ssh-ed25519"; };`,
  );
  lines.push(`  generators.hostcert = { hosts = [ ${hostList} ]; dependencies = [ "ca" "hostkey" ]; files.cert.secret = false;
    script = "ssh-keygen -q -s $in/ca/key -I host -h -n host $in/hostkey/key.pub && read -r c < $in/hostkey/key-cert.pub && printf '%s\\n' \\"$c\\" > $out/cert";
    runtimeInputs = [ "ssh-keygen" ]; };`);
  lines.push("}");
  return `${lines.join("\n")}\n`;
}

/** The anchor: every script run by sh, every secret file encrypted by its own `age -e`. */
function anchorScript(dir: string, admin: string, hosts: Map<string, string>): string {
  const out = [
    `#!/bin/sh\nset -e\nw=$(mktemp -d /dev/shm/anchor.XXXXXX)\ntrap 'rm -rf "$w"' EXIT\ncd '${dir}'`,
  ];
  out.push(`mkdir -p anchor/ca; ssh-keygen -q -t ed25519 -N '' -C ca -f "$w/ca"`);
  const all = [...hosts.values()].map((k) => `-r ${k}`).join(" ");
  out.push(`age -e -r ${admin} ${all} -o anchor/ca/key.age "$w/ca"; cp "$w/ca.pub" anchor/ca/pub`);
  for (const [h, key] of hosts) {
    const r = `-r ${admin} -r ${key}`;
    for (let i = 0; i < PASSWORDS; i++) {
      out.push(
        `mkdir -p anchor/pw${i}/${h}; head -c 24 /dev/urandom | base64 | age -e ${r} -o anchor/pw${i}/${h}/password.age`,
      );
    }
    out.push(
      `mkdir -p anchor/hostcert/${h}; rm -f "$w/k" "$w/k.pub" "$w/k-cert.pub"; ssh-keygen -q -t ed25519 -N '' -C host -f "$w/k" && ssh-keygen -q -s "$w/ca" -I host -h -n host "$w/k.pub" && age -e ${r} -o anchor/hostcert/${h}/key.age "$w/k" && cp "$w/k-cert.pub" anchor/hostcert/${h}/cert`,
    );
  }
  return `${out.join("\n")}\n`;
}

export const generateBench: Benchmark = {
  name: "generate",
  description: "nixseal generate: 100 hosts × 10 passwords + an ssh CA chain, vs a script + age -e loop",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const age = which("age");
    if (!which("nix-instantiate") || !which("ssh-keygen")) {
      ctx.log("generate: skipped: needs nix-instantiate and ssh-keygen");
      return null;
    }
    const { dir, remove } = scratchDir(ctx.scratch, "generate");
    try {
      const home = path.join(dir, "home");
      fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
      const adminId = X25519Identity.generate();
      fs.writeFileSync(path.join(home, ".config", "nixseal", "identity.txt"), `${adminId.toString()}\n`, {
        mode: 0o600,
      });
      const admin = adminId.recipient().toString();
      const hosts = new Map<string, string>();
      for (let i = 0; i < HOSTS; i++)
        hosts.set(`host${String(i).padStart(3, "0")}`, X25519Identity.generate().recipient().toString());
      const repo = path.join(dir, "repo");
      fs.mkdirSync(repo);
      fs.writeFileSync(path.join(repo, "secrets.nix"), "(import ./generated/rules.nix) // { }\n");
      fs.writeFileSync(path.join(repo, "generators.nix"), generatorsNix(admin, hosts));
      const anchor = path.join(dir, "anchor.sh");
      fs.writeFileSync(anchor, anchorScript(dir, admin, hosts), { mode: 0o700 });
      const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(dir, "cache") };
      for (const k of ["NIXSEAL_IDENTITY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY", "RULES"]) delete env[k];
      const nixseal = (args: string[]) => {
        const r = spawnSync(process.execPath, [...cliArgv(ctx.cli).slice(1), ...args], {
          cwd: repo,
          env,
          encoding: "utf8",
        });
        if (r.status !== 0) throw new Error(`nixseal ${args.join(" ")}: ${r.stderr}`);
        return r;
      };
      // Warm the evaluation cache (and check that the set-up works).
      nixseal(["generate", "--dry-run"]);
      // The timed commands run through a shell so the scratch repository can be reset first.
      const runner = path.join(dir, "nixseal-generate.sh");
      fs.writeFileSync(
        runner,
        `#!/bin/sh\ncd '${repo}' && HOME='${home}' XDG_CACHE_HOME='${dir}/cache' exec ${cliArgv(ctx.cli)
          .map((a) => `'${a}'`)
          .join(" ")} generate >/dev/null\n`,
        { mode: 0o700 },
      );
      const fresh: number[] = [];
      const noop: number[] = [];
      const anchorMs: number[] = [];
      const cpu: string[] = [];
      const rounds = Math.max(1, Math.min(ctx.runs, 3));
      for (let round = 0; round < rounds; round++) {
        fs.rmSync(path.join(repo, "generated"), { recursive: true, force: true });
        fs.rmSync(path.join(dir, "anchor"), { recursive: true, force: true });
        const commands = [{ name: "generate (all 1201)", argv: [runner] }];
        const [first] = measureOnce(ctx, commands);
        fresh.push(first!.wallMs);
        const [second] = measureOnce(ctx, [{ name: "generate (nothing to do)", argv: [runner] }]);
        noop.push(second!.wallMs);
        const anchorRun = age ? measureOnce(ctx, [{ name: "anchor", argv: [anchor] }])[0]! : null;
        if (anchorRun) anchorMs.push(anchorRun.wallMs);
        // CPU time (hyperfine only; scripts and age included): on a loaded machine it says more than wall time.
        if (first!.cpuMs !== null)
          cpu.push(
            `round ${round + 1} CPU: generate ${first!.cpuMs.toFixed(0)} ms, nothing to do ${second!.cpuMs!.toFixed(0)} ms${anchorRun ? `, anchor ${anchorRun.cpuMs!.toFixed(0)} ms` : ""}`,
          );
        ctx.log(
          `  round ${round + 1}/${rounds}: generate ${first!.wallMs.toFixed(0)} ms, nothing to do ${second!.wallMs.toFixed(0)} ms${age ? `, anchor ${anchorMs.at(-1)!.toFixed(0)} ms` : ""}`,
        );
      }
      const files = spawnSync("find", [path.join(repo, "generated"), "-name", "*.age"], { encoding: "utf8" })
        .stdout.trim()
        .split("\n").length;
      const isolation =
        process.getuid?.() === 0
          ? "as root: the scripts in one pair of private mount and network namespaces per run (src/generate/runner.ts)"
          : "not root: scripts without namespaces";
      const rows: ResultRow[] = [
        {
          name: `generate from scratch (${HOSTS * PASSWORDS + 2 * HOSTS + 1} generators, ${files} .age files)`,
          nixseal: fresh,
          anchorName: age ? "sh loop: each script + one age -e per secret" : "",
          anchor: age ? anchorMs : null,
          target: "≤ 2000 ms",
        },
        { name: "generate, nothing to do", nixseal: noop, anchorName: "", anchor: null, target: "≤ 200 ms" },
      ];
      return {
        title: `generate: ${HOSTS} hosts × ${PASSWORDS} passwords + an ssh CA and a certificate per host`,
        rows,
        notes: [`Scripts ${isolation}; generators.nix evaluation cached (warmed by a --dry-run).`, ...cpu],
      };
    } finally {
      remove();
    }
  },
};

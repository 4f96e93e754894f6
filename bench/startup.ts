/**
 * startup: how fast each command starts, against Node's own start-up (`node -e 0`, the floor no
 * Node program goes below) in the same run, interleaved: `nixseal CMD --help` for every command
 * `nixseal --help` lists (the modules a command loads before it does anything), `nixseal
 * --version`, and real small runs: `nixseal decrypt` of a 7-byte age secret (rules from a cached
 * secrets.nix, an X25519 identity), the same without Node's compile cache, and `nixseal age -d`
 * of it. Targets: --version within 1.3× of `node -e 0`, the small decrypt within 2×.
 *
 * Default 15 rounds (--runs N): start-up times are short and noisy. The compile cache is the one
 * nixseal uses for this user (src/cli/compile-cache.ts); the warm-up round fills it.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { encrypt } from "../src/age/age.js";
import { X25519Identity } from "../src/age/x25519.js";
import { parseRecipientString } from "../src/keys/key-types.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  interleavedMeasurements,
  median,
  type ResultRow,
  scratchDir,
  type TimedCommand,
} from "./common.js";

const ANCHOR = "node -e 0";

/** The commands `nixseal --help` lists (the CLI may be a bundle: its source is not read). */
export function commandsOf(help: string): string[] {
  const list = help.slice(help.indexOf("\nCommands:\n"));
  return [...list.matchAll(/^ {2}([a-z][a-z0-9-]*) /gm)].map((m) => m[1]!);
}

export const startup: Benchmark = {
  name: "startup",
  description: "start-up of every command (CMD --help), --version and a small decrypt vs node -e 0",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const runs = ctx.option("--runs") ?? 15;
    const help = spawnSync(process.execPath, [...cliArgv(ctx.cli).slice(1), "--help"], { encoding: "utf8" });
    const names = commandsOf(help.stdout);
    if (names.length === 0) throw new Error(`no command list in the output of ${ctx.cli} --help`);
    const { dir, remove } = scratchDir(ctx.scratch, "startup");
    try {
      const id = X25519Identity.generate();
      const key = path.join(dir, "key.txt");
      fs.writeFileSync(key, `${id.encode()}\n`, { mode: 0o600 });
      const recipient = id.recipient().toString();
      const rules = path.join(dir, "secrets.nix");
      fs.writeFileSync(rules, `{ "db.age".publicKeys = [ "${recipient}" ]; }\n`);
      const secret = path.join(dir, "db.age");
      fs.writeFileSync(
        secret,
        await encrypt(Buffer.from("hunter2"), [parseRecipientString(recipient, "bench")]),
      );

      const node = process.execPath;
      const cli = (...args: string[]) => [...cliArgv(ctx.cli), ...args];
      // To stdout (hyperfine discards it): decrypt -o replaces its target atomically.
      const decryptArgs = ["decrypt", secret, "--rules", rules, "-i", key];
      const commands: TimedCommand[] = [
        { name: ANCHOR, argv: [node, "-e", "0"] },
        { name: "--version", argv: cli("--version") },
        { name: "decrypt (small age secret)", argv: cli(...decryptArgs) },
        {
          name: "decrypt, no compile cache",
          argv: ["/usr/bin/env", "NIXSEAL_NO_COMPILE_CACHE=1", ...cli(...decryptArgs)],
        },
        { name: "age -d (small file)", argv: cli("age", "-d", "-i", key, "-o", "/dev/null", secret) },
        ...names.map((n) => ({ name: `${n} --help`, argv: cli(n, "--help") })),
      ];
      const m = interleavedMeasurements(ctx, commands, runs);
      const wall = (name: string) => m.get(name)!.map((x) => x.wallMs);
      const targets: Record<string, string> = {
        "--version": "≤ 1.3× node -e 0",
        "decrypt (small age secret)": "≤ 2× node -e 0",
      };
      const rows: ResultRow[] = commands.slice(1).map((c) => ({
        name: `\`nixseal ${c.name}\``,
        nixseal: wall(c.name),
        anchorName: ANCHOR,
        anchor: wall(ANCHOR),
        target: targets[c.name],
      }));
      const notes = [
        `${runs} interleaved rounds after a warm-up round (which fills the compile cache). Wall time of ` +
          "the whole process. `decrypt` reads secrets.nix through nixseal's rules cache (filled by the " +
          'warm-up) and writes to stdout (discarded); "no compile cache" runs it with NIXSEAL_NO_COMPILE_CACHE=1 ' +
          "(through /usr/bin/env).",
      ];
      const cpu = (name: string) => m.get(name)!.map((x) => x.cpuMs);
      if (cpu(ANCHOR).every((x) => x !== null)) {
        const floor = median(cpu(ANCHOR) as number[]);
        const ratio = (name: string) => `${(median(cpu(name) as number[]) / floor).toFixed(2)}×`;
        const parts = commands.slice(1).map((c) => `${c.name} ${ratio(c.name)}`);
        ctx.log(`startup: CPU time against ${ANCHOR}: ${parts.join(", ")}`);
        notes.push(
          `CPU time (user + system, medians) against \`${ANCHOR}\`'s ${floor.toFixed(0)} ms, less sensitive ` +
            `to other load on the machine than wall time: ${parts.join(", ")}.`,
        );
      }
      return { title: "startup: every command against `node -e 0`", rows, notes };
    } finally {
      remove();
    }
  },
};

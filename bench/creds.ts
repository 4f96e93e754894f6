/**
 * creds: what systemd credentials cost in `nixseal install`. systemd-creds has no batch mode, so
 * each credential that changed costs one systemd-creds process; nixseal runs a few at a time
 * (syncCredentials) and skips unchanged ones without any process (keyed hash in the store).
 * Anchor, in the same run: a bash loop running `systemd-creds encrypt` once per credential from
 * plaintext files, the way a shell activation script would. All with a private host key in the
 * scratch directory (SYSTEMD_CREDENTIAL_SECRET), never the machine's own.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { closeCredstore, openCredstore, syncCredentials } from "../src/creds/credstore.js";
import { decryptCredential } from "../src/creds/systemd-creds.js";
import { type BenchContext, type Benchmark, type BenchResult, scratchDir, which } from "./common.js";

function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  return f().then((v) => [performance.now() - t, v]);
}

export const creds: Benchmark = {
  name: "creds",
  description: "systemd credentials: N changed / unchanged credentials synced vs a systemd-creds loop",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    if (which("systemd-creds") === null || which("bash") === null) {
      ctx.log("creds: skipped: needs systemd-creds and bash");
      return null;
    }
    const n = ctx.option("--files") ?? 200;
    const { dir, remove } = scratchDir(ctx.scratch, "creds");
    const savedSecret = process.env.SYSTEMD_CREDENTIAL_SECRET;
    try {
      fs.mkdirSync(path.join(dir, "hostkey"), { mode: 0o700 });
      process.env.SYSTEMD_CREDENTIAL_SECRET = path.join(dir, "hostkey", "credential.secret");
      const plainDir = path.join(dir, "plain");
      fs.mkdirSync(plainDir, { mode: 0o700 });
      const items = Array.from({ length: n }, (_, i) => {
        const name = `secret-${String(i).padStart(5, "0")}`;
        const plaintext = Buffer.from(`value of ${name}: ${"x".repeat(32)}\n`);
        fs.writeFileSync(path.join(plainDir, name), plaintext, { mode: 0o600 });
        return { name, plaintext, withKey: "host" as const };
      });
      const loop = path.join(dir, "loop.sh");
      fs.writeFileSync(
        loop,
        `set -e\nout="$1"; mkdir -p "$out"\nfor f in ${plainDir}/*; do n=$(basename "$f"); systemd-creds encrypt --name="$n" --with-key=host "$f" "$out/$n" 2>/dev/null; done\n`,
      );
      const created: number[] = [];
      const unchanged: number[] = [];
      const decrypts: number[] = [];
      const anchor: number[] = [];
      for (let round = 0; round <= ctx.runs; round++) {
        const storeDir = path.join(dir, `store-${round}`);
        // 1. every credential new: one systemd-creds process each, a few at a time.
        const [tCreated] = await timed(async () => {
          const store = await openCredstore(storeDir);
          const r = await syncCredentials(store, items);
          closeCredstore(store);
          if (r.problems.length > 0) throw new Error(r.problems[0]!.message);
        });
        // 2. a later activation, nothing changed: one process (the store's key), no re-encryption.
        const [tUnchanged] = await timed(async () => {
          const store = await openCredstore(storeDir);
          const r = await syncCredentials(store, items);
          closeCredstore(store);
          if ([...r.results.values()].some((s) => s !== "unchanged")) throw new Error("expected unchanged");
        });
        // 3. decrypting each (what a sealed identity costs, once per activation).
        const [tDecrypt] = await timed(async () => {
          for (const it of items.slice(0, Math.min(50, n))) {
            (await decryptCredential(it.name, path.join(storeDir, it.name))).fill(0);
          }
        });
        const t = performance.now();
        const r = spawnSync("bash", [loop, path.join(dir, `anchor-${round}`)], { stdio: "ignore" });
        const tAnchor = performance.now() - t;
        if (r.status !== 0) throw new Error("anchor loop failed");
        if (round === 0) {
          ctx.log(`  warm-up done (${n} credentials)`);
          continue;
        }
        created.push(tCreated);
        unchanged.push(tUnchanged);
        decrypts.push((tDecrypt / Math.min(50, n)) * n);
        anchor.push(tAnchor);
        ctx.log(
          `  round ${round}: created ${tCreated.toFixed(0)} ms, unchanged ${tUnchanged.toFixed(0)} ms, loop ${tAnchor.toFixed(0)} ms`,
        );
      }
      return {
        title: `creds: ${n} systemd credentials (host key) synced into a credential store`,
        rows: [
          {
            name: `${n} new credentials (syncCredentials)`,
            nixseal: created,
            anchorName: "bash loop, systemd-creds encrypt per file",
            anchor,
          },
          {
            name: `${n} unchanged credentials (a later activation)`,
            nixseal: unchanged,
            anchorName: "",
            anchor: null,
          },
          {
            name: `${n} decryptCredential, one after another (from 50)`,
            nixseal: decrypts,
            anchorName: "",
            anchor: null,
          },
        ],
        notes: [
          "In-process times of the library calls (no Node start-up); the anchor is one bash process. Per credential: the 'new' row divided by N.",
        ],
      };
    } finally {
      if (savedSecret === undefined) delete process.env.SYSTEMD_CREDENTIAL_SECRET;
      else process.env.SYSTEMD_CREDENTIAL_SECRET = savedSecret;
      remove();
    }
  },
};

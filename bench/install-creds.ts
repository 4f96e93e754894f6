/**
 * install-creds: `nixseal install` of N age secrets that are systemd credentials (sealed with the
 * host key into a credential store), one process with start-up, against what a shell activation
 * would do in the same run on the same files: per secret `age -d | systemd-creds encrypt` (two
 * processes, no change detection, so it does the same work on every activation). nixseal rows:
 * every credential new (store removed before each run), and a later activation where nothing
 * changed (no systemd-creds encrypt at all). A private credential host key in the scratch
 * directory (SYSTEMD_CREDENTIAL_SECRET), never the machine's own.
 */
import { spawnSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { encrypt } from "../src/age/age.js";
import { parseRecipientString } from "../src/keys/key-types.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  interleaved,
  scratchDir,
  which,
} from "./common.js";

export const installCreds: Benchmark = {
  name: "install-creds",
  description:
    "nixseal install of N secrets as systemd credentials vs an age -d | systemd-creds encrypt loop",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const tools = ["age", "ssh-keygen", "systemd-creds", "bash"].filter((t) => which(t) === null);
    if (tools.length > 0) {
      ctx.log(`install-creds: skipped: needs ${tools.join(", ")}`);
      return null;
    }
    if (process.geteuid?.() !== 0) {
      ctx.log("install-creds: skipped: needs root (systemd-creds with the host key)");
      return null;
    }
    const n = ctx.option("--files") ?? 100;
    const { dir, remove } = scratchDir(ctx.scratch, "install-creds");
    const savedSecret = process.env.SYSTEMD_CREDENTIAL_SECRET;
    try {
      fs.mkdirSync(path.join(dir, "hostkey"), { mode: 0o700 });
      process.env.SYSTEMD_CREDENTIAL_SECRET = path.join(dir, "hostkey", "credential.secret");
      const hostKey = path.join(dir, "ssh_host_ed25519_key");
      const k = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", hostKey]);
      if (k.status !== 0) throw new Error(`ssh-keygen failed: ${k.stderr}`);
      const recipient = parseRecipientString(
        fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" "),
        "benchmark host key",
      );
      const inDir = path.join(dir, "in");
      fs.mkdirSync(inDir);
      const secrets: unknown[] = [];
      const plain = new Map<string, Buffer>();
      ctx.log(`install-creds: encrypting ${n} secrets`);
      for (let i = 0; i < n; i++) {
        const name = `secret-${String(i).padStart(5, "0")}`;
        const value = randomBytes(randomInt(100, 301));
        plain.set(name, value);
        const file = path.join(inDir, `${name}.age`);
        fs.writeFileSync(file, await encrypt(value, [recipient]));
        secrets.push({
          name,
          file,
          format: "age",
          key: null,
          owner: "root",
          group: "root",
          mode: "0400",
          path: null,
          restartUnits: [],
          reloadUnits: [],
          credential: { name, withKey: "host", services: [`svc-${i % 50}.service`] },
        });
      }
      const store = path.join(dir, "credstore");
      const manifest = path.join(dir, "manifest.json");
      fs.writeFileSync(
        manifest,
        JSON.stringify({
          version: 1,
          secretsDir: path.join(dir, "secrets"),
          generationsDir: path.join(dir, "generations"),
          keepGenerations: 0,
          mount: "existing",
          credstoreDir: store,
          identities: [{ type: "ssh", path: hostKey }],
          secrets,
          templates: [],
          placeholders: {},
        }),
      );
      const loop = path.join(dir, "loop.sh");
      fs.writeFileSync(
        loop,
        [
          'in="$1"; key="$2"; out="$3"; mkdir -p "$out"',
          'for f in "$in"/*.age; do',
          '  n="$(basename "$f" .age)"',
          '  age --decrypt -i "$key" "$f" | systemd-creds encrypt --name="$n" --with-key=host - "$out/$n" 2>/dev/null || exit 1',
          "done",
          "",
        ].join("\n"),
      );
      const install = `${cliArgv(ctx.cli)
        .map((a) => JSON.stringify(a))
        .join(" ")} install --manifest ${JSON.stringify(manifest)}`;
      const times = interleaved(ctx, [
        {
          name: "nixseal, all new",
          argv: ["/bin/sh", "-c", `rm -rf ${JSON.stringify(store)} && exec ${install}`],
        },
        { name: "loop", argv: ["/bin/bash", loop, inDir, hostKey, path.join(dir, "loop-out")] },
        { name: "nixseal, unchanged", argv: ["/bin/sh", "-c", `exec ${install}`] },
      ]);
      // Checks: nothing re-encrypted in a later run, and the credentials hold the plaintexts.
      const again = spawnSync(
        process.execPath,
        [...cliArgv(ctx.cli).slice(1), "install", "--manifest", manifest, "--json"],
        {
          encoding: "utf8",
        },
      );
      const report = JSON.parse(again.stdout) as { ok: boolean; credentials: { unchanged: number } };
      if (!report.ok || report.credentials.unchanged !== n)
        throw new Error("expected every credential unchanged");
      for (const name of [...plain.keys()].slice(0, 5)) {
        const r = spawnSync("systemd-creds", ["decrypt", `--name=${name}`, path.join(store, name), "-"]);
        if (r.status !== 0 || !Buffer.from(r.stdout).equals(plain.get(name)!))
          throw new Error(`credential ${name} does not hold its secret`);
      }
      const anchor = times.get("loop")!;
      return {
        title: `install-creds: ${n} secrets installed as systemd credentials (host key)`,
        rows: [
          {
            name: `${n} credentials, all new`,
            nixseal: times.get("nixseal, all new")!,
            anchorName: "bash loop, age -d piped to systemd-creds encrypt, per secret",
            anchor,
          },
          {
            name: `${n} credentials, nothing changed`,
            nixseal: times.get("nixseal, unchanged")!,
            anchorName: "the same loop (it cannot tell)",
            anchor,
          },
        ],
        notes: [
          "One `nixseal install` process each (start-up included; the 'all new' run also removes the store first). Secrets of 100-300 random bytes, age-encrypted to an ssh-ed25519 host key; credentials sealed with --with-key=host. The loop has no change detection, so its time is the anchor of both rows.",
        ],
      };
    } finally {
      if (savedSecret === undefined) delete process.env.SYSTEMD_CREDENTIAL_SECRET;
      else process.env.SYSTEMD_CREDENTIAL_SECRET = savedSecret;
      remove();
    }
  },
};

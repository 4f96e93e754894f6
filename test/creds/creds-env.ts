/**
 * What the systemd credential tests share: a private credential host key per test (systemd-creds
 * reads $SYSTEMD_CREDENTIAL_SECRET instead of /var/lib/systemd/credential.secret, so the real
 * host key is never touched), and a software TPM2 (swtpm) reached through its TCTI.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { which } from "../helpers.js";

/** Why the systemd-creds tests cannot run here, or null if they can. */
export function systemdCredsMissing(): string | null {
  if (which("systemd-creds") === null) return "needs systemd-creds (Debian: systemd)";
  if (process.geteuid?.() !== 0) return "needs root (systemd-creds with the host key)";
  return null;
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
let persistentBase: string | null = null;

/**
 * A fresh credential host key location (created on first use by systemd-creds), under `dir`
 * unless that is a tmpfs: `--with-key=auto` refuses a host key on a temporary file system, so
 * then under /var/tmp (removed when the test process exits).
 */
export function hostKeyPath(dir: string, label: string): string {
  let base = dir;
  const type = fs.statfsSync(dir).type;
  if (type === TMPFS_MAGIC || type === RAMFS_MAGIC) {
    if (persistentBase === null) {
      const made = fs.mkdtempSync(path.join("/var/tmp", "nixseal-test-hostkeys-"));
      persistentBase = made;
      process.on("exit", () => fs.rmSync(made, { recursive: true, force: true }));
    }
    base = persistentBase;
  }
  const d = path.join(base, `hostkey-${label}`);
  fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  return path.join(d, "credential.secret");
}

/** Makes systemd-creds (run by this process) use that host key. */
export function useHostKey(secretPath: string): void {
  process.env.SYSTEMD_CREDENTIAL_SECRET = secretPath;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface SoftwareTpm {
  /** For --tpm2-device=: the swtpm TCTI of systemd's tpm2-tss. */
  device: string;
  stop(): void;
}

/**
 * Starts a software TPM2 with a fresh state in `dir`, or returns why it cannot: swtpm, and the
 * tpm2-tss libraries systemd-creds loads (libtss2-esys, libtss2-tcti-swtpm).
 */
export async function startSoftwareTpm(dir: string): Promise<SoftwareTpm | string> {
  const swtpm = which("swtpm");
  if (swtpm === null) return "needs swtpm (Debian: swtpm)";
  const libs = spawnSync("ldconfig", ["-p"], { encoding: "utf8" }).stdout ?? "";
  if (!libs.includes("libtss2-esys") || !libs.includes("libtss2-tcti-swtpm")) {
    return "needs the tpm2-tss libraries (Debian: libtss2-esys-3.0.2-0, libtss2-tcti-swtpm0)";
  }
  const state = fs.mkdtempSync(path.join(dir, "tpm-"));
  const pidFile = path.join(state, "swtpm.pid");
  for (let attempt = 0; attempt < 3; attempt++) {
    // The swtpm TCTI finds the control channel at the next port.
    const port = await freePort();
    const ctrl = port + 1;
    const r = spawnSync(
      swtpm,
      [
        "socket",
        "--tpm2",
        "--tpmstate",
        `dir=${state}`,
        "--server",
        `type=tcp,port=${port},bindaddr=127.0.0.1`,
        "--ctrl",
        `type=tcp,port=${ctrl},bindaddr=127.0.0.1`,
        "--flags",
        "not-need-init,startup-clear",
        "--pid",
        `file=${pidFile}`,
        "--daemon",
      ],
      { encoding: "utf8" },
    );
    if (r.status !== 0) continue;
    const pid = Number(fs.readFileSync(pidFile, "utf8").trim());
    return {
      device: `swtpm:host=127.0.0.1,port=${port}`,
      stop() {
        try {
          process.kill(pid, "SIGTERM");
        } catch {}
      },
    };
  }
  return "swtpm did not start";
}

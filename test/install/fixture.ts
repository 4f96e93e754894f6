/**
 * What the install tests share: a host (an ssh host key, a temp tree standing for /run and
 * /etc), encrypted files, manifests, real users and groups, and plans run by ns-driver.ts inside
 * a private mount namespace. Not a test itself (the runner loads it and finds none).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { encrypt } from "../../src/age/age.js";
import { parseRecipientString } from "../../src/keys/key-types.js";
import { tempDir, which } from "../helpers.js";
import type { Step, StepResult } from "./ns-driver.js";

const DRIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), "ns-driver.js");

/** Why these tests cannot run here, or null. */
export function installTestsSkipReason(): string | null {
  if (process.geteuid?.() !== 0) return "needs root (mounts, chown, useradd)";
  if (!which("unshare")) return "needs unshare (util-linux)";
  if (!which("ssh-keygen")) return "needs ssh-keygen";
  if (!which("useradd") || !which("groupadd")) return "needs useradd and groupadd";
  return null;
}

export function placeholderOf(name: string): string {
  return `<nixseal:${createHash("sha256").update(name).digest("hex")}:placeholder>`;
}

/** A plaintext no other test uses, so finding it anywhere means a leak. */
export function uniqueSecret(label: string): string {
  return `${label}-${randomBytes(12).toString("hex")}`;
}

export interface Host {
  dir: string;
  hostKey: string;
  hostPub: string;
  secretsDir: string;
  generationsDir: string;
  restartList: string;
  reloadList: string;
  dryRestartList: string;
  dryReloadList: string;
  cleanup(): void;
}

export function makeHost(): Host {
  const { dir, cleanup } = tempDir("nixseal-install-");
  fs.chmodSync(dir, 0o755); // owners of secrets must be able to follow the paths under it
  const hostKey = path.join(dir, "etc", "ssh", "ssh_host_ed25519_key");
  fs.mkdirSync(path.dirname(hostKey), { recursive: true });
  const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", hostKey]);
  assert.equal(r.status, 0, String(r.stderr));
  return {
    dir,
    hostKey,
    hostPub: fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" "),
    secretsDir: path.join(dir, "run", "nixseal", "secrets"),
    generationsDir: path.join(dir, "run", "nixseal", "generations"),
    restartList: path.join(dir, "run", "nixos", "activation-restart-list"),
    reloadList: path.join(dir, "run", "nixos", "activation-reload-list"),
    dryRestartList: path.join(dir, "run", "nixos", "dry-activation-restart-list"),
    dryReloadList: path.join(dir, "run", "nixos", "dry-activation-reload-list"),
    cleanup,
  };
}

/** An age file of `plaintext` for `recipient` (an ssh or age public key line): the real age when installed. */
export async function ageFile(
  host: Host,
  name: string,
  plaintext: string,
  recipient = host.hostPub,
): Promise<string> {
  const file = path.join(host.dir, "store", `${name}.age`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const age = which("age");
  if (age) {
    const r = spawnSync(age, ["-e", "-r", recipient, "-o", file], { input: plaintext });
    assert.equal(r.status, 0, String(r.stderr));
  } else {
    fs.writeFileSync(file, await encrypt(Buffer.from(plaintext), [parseRecipientString(recipient, "test")]));
  }
  return file;
}

export interface EntryInput {
  name: string;
  owner?: string | null;
  group?: string | null;
  mode?: string;
  path?: string | null;
  restartUnits?: string[];
  reloadUnits?: string[];
}

export function secret(
  name: string,
  file: string,
  more: Partial<EntryInput> & { format?: string; key?: string | null } = {},
) {
  return {
    name,
    file,
    format: more.format ?? "age",
    key: more.key ?? null,
    owner: more.owner === undefined ? "root" : more.owner,
    group: more.group === undefined ? "root" : more.group,
    mode: more.mode ?? "0400",
    path: more.path ?? null,
    restartUnits: more.restartUnits ?? [],
    reloadUnits: more.reloadUnits ?? [],
  };
}

export function template(name: string, content: string, more: Partial<EntryInput> = {}) {
  return {
    name,
    content,
    owner: more.owner === undefined ? "root" : more.owner,
    group: more.group === undefined ? "root" : more.group,
    mode: more.mode ?? "0400",
    path: more.path ?? null,
    restartUnits: more.restartUnits ?? [],
    reloadUnits: more.reloadUnits ?? [],
  };
}

let manifests = 0;
/** Writes a manifest for this host; placeholders for every secret. */
export function writeManifest(
  host: Host,
  secrets: ReturnType<typeof secret>[],
  templates: ReturnType<typeof template>[] = [],
  extra: Record<string, unknown> = {},
): string {
  const file = path.join(host.dir, `manifest-${++manifests}.json`);
  const m = {
    version: 1,
    secretsDir: host.secretsDir,
    generationsDir: host.generationsDir,
    keepGenerations: 1,
    restartListFile: host.restartList,
    reloadListFile: host.reloadList,
    dryRestartListFile: host.dryRestartList,
    dryReloadListFile: host.dryReloadList,
    identities: [{ type: "ssh", path: host.hostKey }],
    secrets,
    templates,
    placeholders: Object.fromEntries(secrets.map((s) => [s.name, placeholderOf(s.name)])),
    ...extra,
  };
  fs.writeFileSync(file, JSON.stringify(m, null, 2));
  return file;
}

/** Runs the steps in one private mount namespace (mounts vanish with it). */
export function runPlan(host: Host, steps: Step[]): StepResult[] {
  const plan = path.join(host.dir, `plan-${++manifests}.json`);
  fs.writeFileSync(plan, JSON.stringify(steps));
  const r = spawnSync(
    "unshare",
    ["--mount", "--propagation", "private", process.execPath, DRIVER, "--plan", plan],
    {
      encoding: "utf8",
      maxBuffer: 256 * 1024 * 1024,
    },
  );
  assert.equal(r.status, 0, `driver failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as StepResult[];
}

export type InstallResult = Extract<StepResult, { op: "install" }>;
export type Snapshot = Extract<StepResult, { op: "snapshot" }>;

/** The parsed --json report of an install step. */
export function jsonOf(r: StepResult | undefined): Record<string, unknown> {
  assert.ok(r && r.op === "install");
  try {
    return JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    assert.fail(`not JSON: ${r.stdout}\n${r.stderr}`);
  }
}

export interface TestUser {
  user: string;
  group: string;
  uid: number;
  gid: number;
}

/** A real user with its own group (nxs-prefixed, unique); remove with removeUsers. */
export function addUser(label: string): TestUser {
  const suffix = randomBytes(3).toString("hex");
  const user = `nxs${label}${suffix}`;
  const group = `nxsg${label}${suffix}`;
  let r = spawnSync("groupadd", [group], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  r = spawnSync("useradd", ["--no-create-home", "--gid", group, "--shell", "/usr/sbin/nologin", user], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  const uid = Number(spawnSync("id", ["-u", user], { encoding: "utf8" }).stdout.trim());
  const gid = Number(spawnSync("getent", ["group", group], { encoding: "utf8" }).stdout.split(":")[2]);
  return { user, group, uid, gid };
}

export function removeUsers(users: TestUser[]): void {
  for (const u of users) {
    spawnSync("userdel", [u.user]);
    spawnSync("groupdel", [u.group]);
  }
}

export function read(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** An install step that must have succeeded. */
export function installOk(r: unknown): InstallResult {
  const i = r as InstallResult;
  assert.equal(i.op, "install");
  assert.equal(i.status, 0, `install failed:\n${i.stdout}\n${i.stderr}`);
  return i;
}

/** A snapshot step's result. */
export function snap(r: unknown): Snapshot {
  const s = r as Snapshot;
  assert.equal(s.op, "snapshot");
  return s;
}

/**
 * The pre- and post-build hooks (Nix's `pre-build-hook` / `post-build-hook` settings).
 *
 * Pre: Nix 2.8 runs `HOOK DRV CHROOT` as root before every sandboxed build and reads its stdout:
 * `extra-sandbox-paths\n<target>=<source>\n...\n\n` adds bind mounts to that one build's sandbox
 * (any other first line fails the build). For a derivation that names a secret and that the
 * policy allows, the hook decrypts the secret into a per-build file and mounts it at
 * /run/nixseal-secret. For one it refuses, it mounts a file with the reasons at
 * /run/nixseal-refusal instead, so the fetcher can say why (the reasons hold names, URLs and
 * uids, never secret material), and logs them on stderr (the daemon's log).
 *
 * Post: `DRV_PATH` names the finished derivation; its directory is removed. Failed builds get no
 * post-build hook: each asking build sweeps directories of builds that have ended.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { NixsealError, readAllSync } from "../common/index.js";
import type { AgentAnswer, AgentRequest, AgentWant } from "./agent.js";
import { buildClientOf, uidOfUser } from "./client.js";
import { type Derivation, MAX_DRV_BYTES, parseDerivation } from "./drv.js";
import {
  type BuildSecretsPolicy,
  DEFAULT_RUNTIME_DIR,
  decide,
  policyDirsOf,
  readPolicy,
  SANDBOX_SECRET_PATH,
  SECRET_ATTR,
} from "./policy.js";
import {
  decryptBuildSecret,
  drvDirName,
  ensureRuntimeDir,
  materializeSecret,
  removeSecretDir,
  sweepSecretDirs,
} from "./secret-dir.js";

/** Where the reasons of a refusal appear inside the sandbox. */
export const SANDBOX_REFUSAL_PATH = "/run/nixseal-refusal";

/** The bytes the cheap check looks for: how Nix writes the marker attribute in a .drv. */
export const MARKER = Buffer.from(`("${SECRET_ATTR}",`);

export interface HookResult {
  /** What to print on stdout for Nix. */
  output: string;
  /** Lines for the log (stderr): decisions, never secret material. */
  log: string[];
}

/** Asks the user's agent to approve a secret (prompt = true) or to supply its value (source "agent"). */
export type AgentAsk = (request: AgentRequest) => Promise<AgentAnswer>;

export interface PreHookOptions {
  policyFile: string;
  /** The hook's parent (the daemon worker): who asked for the build is found from it. */
  ppid: number;
  /** How approvals and agent-supplied values are asked for; absent: such secrets are refused. */
  askAgent?: AgentAsk;
}

function readDrvBytes(drvPath: string): Buffer | null {
  let fd: number;
  try {
    fd = fs.openSync(drvPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > MAX_DRV_BYTES) return null;
    return readAllSync(fd, st.size);
  } finally {
    fs.closeSync(fd);
  }
}

function sandboxPaths(lines: string[]): string {
  return `extra-sandbox-paths\n${lines.join("\n")}\n\n`;
}

/**
 * Writes the refusal reasons for the fetcher to show, and returns the mount line for them. The
 * last line, "hint: ...", names the policy the hook read (the fetcher shows it as its hint).
 */
function refusalMount(
  runtimeDir: string,
  policyFile: string,
  dirName: string,
  chroot: string,
  text: string,
): string {
  const withHint = `${text}hint: see the build-secrets policy ${policyFile} (docs/build-secrets.md)\n`;
  return `${SANDBOX_REFUSAL_PATH}=${materializeSecret(runtimeDir, dirName, Buffer.from(withHint), "refusal", chroot)}`;
}

export async function preBuildHook(
  drvPath: string,
  chroot: string | undefined,
  options: PreHookOptions,
): Promise<HookResult> {
  const log: string[] = [];
  const bytes = readDrvBytes(drvPath);
  // The cheap check: most derivations never name a secret.
  if (bytes === null || !bytes.includes(MARKER)) return { output: "", log };

  let drv: Derivation;
  try {
    drv = parseDerivation(bytes, drvPath);
  } catch (e) {
    log.push(`refused ${drvPath}: ${(e as Error).message}`);
    return { output: "", log };
  }
  const name = drv.env.get(SECRET_ATTR);
  if (name === undefined) return { output: "", log };
  const shown = JSON.stringify(name.slice(0, 128));

  if (chroot === undefined) {
    log.push(
      `refused secret ${shown} to ${drvPath}: the sandbox is off (a build secret is only given to a sandboxed build; set sandbox = true)`,
    );
    return { output: "", log };
  }

  let policy: BuildSecretsPolicy;
  try {
    policy = readPolicy(options.policyFile);
  } catch (e) {
    const list = e instanceof NixsealError && e.problems.length > 0 ? e.problems : [e as Error];
    for (const p of list) log.push(`refused secret ${shown} to ${drvPath}: ${p.message}`);
    // Tell the build why, not only the daemon log: without a refusal the fetcher could only
    // guess that the hook did not run. Where to write it comes from the policy's text if it
    // names the directories and is root's; else the defaults.
    const dirs = policyDirsOf(options.policyFile) ?? {
      runtimeDir: DEFAULT_RUNTIME_DIR,
      storeDir: "/nix/store",
    };
    try {
      const text = `nixseal refused the build secret ${shown} to ${drvPath}: its build-secrets policy is unusable:\n${list
        .map((p) => `  - ${p.message.replace(/\n/g, " ")}\n`)
        .join("")}`;
      const mount = refusalMount(
        dirs.runtimeDir,
        options.policyFile,
        drvDirName(drvPath, dirs.storeDir),
        chroot,
        text,
      );
      return { output: sandboxPaths([mount]), log };
    } catch (e2) {
      log.push(`could not tell the build ${drvPath} why: ${(e2 as Error).message}`);
      return { output: "", log };
    }
  }
  const dirName = drvDirName(drvPath, policy.storeDir);
  ensureRuntimeDir(policy.runtimeDir);
  for (const swept of sweepSecretDirs(policy.runtimeDir, policy.storeDir)) {
    log.push(`swept the secret directory of ${swept} (its build has ended)`);
  }

  const client = buildClientOf(options.ppid);
  const decision = decide(drv, policy, client, (u) => uidOfUser(u));
  if (decision.kind === "not-asking") return { output: "", log };
  if (decision.kind === "refuse") {
    log.push(`refused secret ${shown} to ${drvPath}: ${decision.reasons.join("; ")}`);
    const text = `nixseal refused the build secret ${shown} to ${drvPath}:\n${decision.reasons.map((r) => `  - ${r}\n`).join("")}`;
    return {
      output: sandboxPaths([refusalMount(policy.runtimeDir, policy.file, dirName, chroot, text)]),
      log,
    };
  }

  const secret = decision.secret;
  const ask = (want: AgentWant): Promise<AgentAnswer> =>
    options.askAgent
      ? options.askAgent({
          secret: decision.name,
          drvPath,
          url: decision.url,
          want,
          prompt: secret.prompt,
          uid: client.uid,
          agentDir: policy.agentDir,
          timeoutMs: policy.agentTimeoutSeconds * 1000,
        })
      : Promise.resolve({ approved: false, reason: "no agent support in this hook" } as const);
  const refuseFor = (reason: string): HookResult => {
    log.push(`refused secret ${shown} to ${drvPath}: ${reason}`);
    const text = `nixseal refused the build secret ${shown} to ${drvPath}:\n  - ${reason}\n`;
    return {
      output: sandboxPaths([refusalMount(policy.runtimeDir, policy.file, dirName, chroot, text)]),
      log,
    };
  };

  let plaintext: Uint8Array | null = null;
  try {
    // The host's value: "host" always (approved first, so nothing is decrypted for a build the
    // user declines); "host-or-agent" when its file is there and decrypts.
    let hostProblem: string | null = null;
    let from = "the host";
    if (secret.source === "host" && secret.prompt) {
      const answer = await ask("approval");
      if (!answer.approved) {
        return refuseFor(`the secret needs approval from a nixseal agent, but ${answer.reason}`);
      }
      from = "the host, approved at the agent";
    }
    if (secret.source !== "agent") {
      try {
        plaintext = await decryptBuildSecret(secret.file!, policy.identities);
      } catch (e) {
        if (secret.source === "host") throw e;
        hostProblem = e instanceof NixsealError ? e.message : String(e);
      }
    }
    if (plaintext !== null) {
      if (secret.source === "host-or-agent" && secret.prompt) {
        const answer = await ask("approval");
        if (!answer.approved) {
          return refuseFor(`the secret needs approval from a nixseal agent, but ${answer.reason}`);
        }
        from = "the host, approved at the agent";
      }
    } else {
      if (hostProblem !== null) {
        log.push(
          `secret ${shown} for ${drvPath}: the host's file is not usable (${hostProblem}); asking the agent`,
        );
      }
      const answer = await ask("value");
      if (!answer.approved || answer.plaintext === null) {
        const why = answer.approved ? "it supplied no value" : answer.reason;
        return refuseFor(
          `the secret is supplied by the requesting user's nixseal agent${hostProblem !== null ? " (the host's file is not usable)" : ""}, but ${why}`,
        );
      }
      plaintext = answer.plaintext;
      from = "the requesting user's agent";
    }
    const file = materializeSecret(policy.runtimeDir, dirName, plaintext, "secret", chroot);
    log.push(`gave secret ${shown} to ${drvPath} (${client.how}; URL ${decision.url}; from ${from})`);
    return { output: sandboxPaths([`${SANDBOX_SECRET_PATH}=${file}`]), log };
  } catch (e) {
    const message = e instanceof NixsealError ? e.message : `internal error: ${(e as Error).message}`;
    log.push(`could not provide secret ${shown} to ${drvPath}: ${message}`);
    const text = `nixseal could not provide the build secret ${shown} to ${drvPath}:\n  - ${message}\n  (details in the nix-daemon log)\n`;
    return {
      output: sandboxPaths([refusalMount(policy.runtimeDir, policy.file, dirName, chroot, text)]),
      log,
    };
  } finally {
    plaintext?.fill(0);
  }
}

/**
 * Removes the directory of a finished build (post-build hook; `DRV_PATH` from Nix), in the
 * runtimeDir the policy names now. An unusable policy is logged loudly (the daemon log); the
 * directory it names is still cleaned if its text says where, never a guessed default.
 */
export function postBuildHook(drvPath: string, policyFile: string): HookResult {
  const log: string[] = [];
  let dirs: { runtimeDir: string; storeDir: string } | null;
  try {
    const policy = readPolicy(policyFile);
    dirs = { runtimeDir: policy.runtimeDir, storeDir: policy.storeDir };
  } catch (e) {
    dirs = policyDirsOf(policyFile);
    log.push(
      `post-build: error: the build-secrets policy is unusable: ${(e as Error).message}; ${
        dirs === null
          ? `the secret directory of ${path.basename(drvPath)} may remain until the policy is fixed and 'nixseal build-hook --sweep' runs`
          : `cleaning up in ${dirs.runtimeDir}, as its text says`
      }`,
    );
  }
  if (dirs === null) return { output: "", log };
  try {
    if (removeSecretDir(dirs.runtimeDir, drvDirName(drvPath, dirs.storeDir))) {
      log.push(`removed the secret directory of ${path.basename(drvPath)}`);
    }
  } catch (e) {
    log.push(`post-build: ${(e as Error).message}`);
  }
  return { output: "", log };
}

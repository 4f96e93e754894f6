/**
 * `nixseal build-hook --check`: is this host set up so that build secrets work, and fail loudly
 * when they cannot? Every problem of one run is listed, each with a hint: the policy parses, its
 * fetchers are this nixseal's fetcher, its interpreters and git programs exist, the nix.conf that
 * Nix itself reads (`nix show-config`, NIX_CONF_DIR included) turns the sandbox on and names both
 * hooks as working nixseal wrappers for this policy, the runtime directory is on a RAM-backed file
 * system, and the agents' directory is root's with mode 1733.
 *
 * Nothing here decrypts a secret or reads one.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { findExecutable, NixsealError, writeFileAtomic } from "../common/index.js";
import { type BuildSecretsPolicy, parsePolicy, readPolicy } from "./policy.js";

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
const MAX_HOOK_BYTES = 64 * 1024;

export interface CheckProblem {
  message: string;
  hint: string;
}

export interface CheckOptions {
  policyFile: string;
  /** The fetcher this nixseal ships (dist/src/build-secrets/fetcher.js). */
  fetcherFile: string;
  /** Environment for `nix show-config` (NIX_CONF_DIR, PATH). */
  env?: NodeJS.ProcessEnv;
}

export interface CheckReport {
  problems: CheckProblem[];
  /** What was found in order (for the report): e.g. "sandbox = true". */
  checked: string[];
}

/** The nix settings that matter here, as Nix itself reads them (null: nix could not say). */
function nixSettings(env: NodeJS.ProcessEnv): Record<string, unknown> | string {
  const nix = findExecutable("nix", env.PATH);
  if (nix === null) return "nix is not on PATH";
  const r = spawnSync(nix, ["--extra-experimental-features", "nix-command", "show-config", "--json"], {
    encoding: "utf8",
    env,
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.status !== 0) return `nix show-config failed: ${(r.stderr ?? "").trim().split("\n").pop() ?? ""}`;
  try {
    const doc = JSON.parse(r.stdout) as Record<string, { value: unknown }>;
    return Object.fromEntries(Object.entries(doc).map(([k, v]) => [k, v?.value]));
  } catch {
    return "nix show-config printed no JSON";
  }
}

function sameContent(a: string, b: string): boolean | null {
  try {
    return fs.readFileSync(a).equals(fs.readFileSync(b));
  } catch {
    return null;
  }
}

function checkHook(
  kind: "pre" | "post",
  value: unknown,
  policyFile: string,
  add: (message: string, hint: string) => void,
  checked: string[],
): void {
  const setting = `${kind}-build-hook`;
  const make = `nixseal build-hook --wrapper ${kind} --policy ${policyFile} > FILE; chmod 755 FILE`;
  if (typeof value !== "string" || value === "") {
    add(
      `${setting} is not set in nix.conf`,
      `${make}, then set ${setting} = FILE in nix.conf and restart nix-daemon`,
    );
    return;
  }
  checked.push(`${setting} = ${value}`);
  let st: fs.Stats;
  try {
    st = fs.statSync(value);
  } catch {
    add(`${setting} ${value} does not exist`, make);
    return;
  }
  if (!st.isFile() || (st.mode & 0o111) === 0) {
    add(`${setting} ${value} is not an executable file`, `chmod 755 ${value}`);
    return;
  }
  if ((st.mode & 0o022) !== 0 || st.uid !== 0) {
    add(
      `${setting} ${value} is writable by others than root (it runs as root)`,
      `chown root ${value}; chmod 755 ${value}`,
    );
  }
  const text = st.size <= MAX_HOOK_BYTES ? fs.readFileSync(value, "utf8") : "";
  const quoted = `'${policyFile.replace(/'/g, "'\\''")}'`;
  const calls = kind === "pre" ? /build-hook --policy / : /build-hook --post --policy /;
  if (!calls.test(text)) {
    add(`${setting} ${value} is not a nixseal ${kind}-build-hook wrapper`, make);
    return;
  }
  if (
    !text.includes(`--policy ${quoted}`) &&
    !text.includes(`--policy ${policyFile} `) &&
    !text.endsWith(`--policy ${policyFile}\n`)
  ) {
    add(`${setting} ${value} uses another policy than ${policyFile}`, make);
  }
  // The programs the wrapper runs must exist: a wrapper of an uninstalled nixseal fails silently.
  for (const m of text.matchAll(/^exec '([^']+)' '([^']+)'/gm)) {
    for (const f of [m[1]!, m[2]!]) {
      if (!fs.existsSync(f)) add(`${setting} ${value} runs ${f}, which does not exist`, make);
    }
  }
  const syntax = spawnSync("/bin/sh", ["-n", value], { encoding: "utf8" });
  if (syntax.status !== 0) add(`${setting} ${value} is not a valid sh script`, make);
}

/**
 * Where a program the fetcher's builds run could be swapped by someone other than root: the
 * program itself (after symlinks) or one of its directories, if not root's or writable by group or
 * others (a sticky directory like /tmp only lets root replace root's entry). Null: root's alone.
 * The Nix store passes (root's, read-only); a Node.js in a user's home does not.
 */
function replaceableAt(file: string): string | null {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    return null; // reported as missing by the caller
  }
  for (let at = real, leaf = true; ; leaf = false) {
    const st = fs.statSync(at);
    const writable = (st.mode & 0o022) !== 0 && (leaf || (st.mode & 0o1000) === 0);
    if (st.uid !== 0 || writable) return at;
    if (at === path.dirname(at)) return null;
    at = path.dirname(at);
  }
}

/** Runs every check; never throws for a problem it can describe. */
export function checkBuildSetup(options: CheckOptions): CheckReport {
  const problems: CheckProblem[] = [];
  const checked: string[] = [];
  const add = (message: string, hint: string) => problems.push({ message, hint });
  const env = options.env ?? process.env;

  let policy: BuildSecretsPolicy | null = null;
  try {
    policy = readPolicy(options.policyFile);
    checked.push(`policy ${options.policyFile}: ${policy.secrets.size} secret(s)`);
  } catch (e) {
    const list = e instanceof NixsealError && e.problems.length > 0 ? e.problems : [e as Error];
    for (const p of list) {
      add(p.message, (p instanceof NixsealError ? p.hint : undefined) ?? "see docs/build-secrets.md");
    }
  }

  if (policy !== null) {
    const fix = `nixseal build-hook --fetcher-path --update --policy ${policy.file}`;
    for (const secret of policy.secrets.values()) {
      const current = secret.fetcherStorePaths.filter((f) => sameContent(f, options.fetcherFile) === true);
      for (const f of secret.fetcherStorePaths) {
        if (!fs.existsSync(f)) {
          add(
            `secret "${secret.name}": its fetcher ${f} does not exist`,
            `an upgrade or a garbage collection removed it: ${fix}`,
          );
        } else if (sameContent(f, options.fetcherFile) === false && current.length === 0) {
          add(
            `secret "${secret.name}": its fetcher ${f} is not the fetcher this nixseal ships`,
            `after an upgrade the fetcher's store path changes: ${fix}`,
          );
        }
      }
      if (secret.file !== null && !fs.existsSync(secret.file)) {
        add(
          `secret "${secret.name}": its file ${secret.file} does not exist`,
          "encrypt the secret to the host's identity there",
        );
      }
    }
    for (const i of policy.interpreters) {
      try {
        fs.accessSync(i, fs.constants.X_OK);
      } catch {
        add(
          `interpreter ${i} is not an executable file`,
          "interpreters: the Node.js that runs the fetcher (docs/build-secrets.md)",
        );
        continue;
      }
      const at = replaceableAt(i);
      if (at !== null) {
        add(
          `interpreter ${i} can be replaced by others than root (${at} is not root's alone), and it is given the secret`,
          "list a Node.js in the Nix store, e.g. the nodejs package's bin/node",
        );
      }
    }
    for (const g of policy.gitPaths) {
      try {
        fs.accessSync(g, fs.constants.X_OK);
      } catch {
        add(
          `git ${g} (gitPaths) is not an executable file`,
          "gitPaths: a git in the store, e.g. nix-build '<nixpkgs>' -A gitMinimal",
        );
        continue;
      }
      const at = replaceableAt(g);
      if (at !== null) {
        add(
          `git ${g} (gitPaths) can be replaced by others than root (${at} is not root's alone), and it is given the secret`,
          "gitPaths: a git in the store, e.g. nix-build '<nixpkgs>' -A gitMinimal",
        );
      }
    }
    if (!policy.identities.some((i) => fs.existsSync(i.path))) {
      add(
        `none of the policy's identities exists (${policy.identities.map((i) => i.path).join(", ") || "none"})`,
        "list the host key that the secrets are encrypted to",
      );
    }
    // The runtime directory (or, before the first build, the directory it will be made in).
    let probe = policy.runtimeDir;
    while (!fs.existsSync(probe) && probe !== path.dirname(probe)) probe = path.dirname(probe);
    const type = fs.statfsSync(probe).type;
    if (type !== TMPFS_MAGIC && type !== RAMFS_MAGIC) {
      add(
        `runtimeDir ${policy.runtimeDir} is not on a RAM-backed file system (tmpfs or ramfs)`,
        "use a directory under /run, or mount a tmpfs there",
      );
    } else checked.push(`runtimeDir ${policy.runtimeDir} on tmpfs/ramfs`);
    if (fs.existsSync(policy.runtimeDir)) {
      const st = fs.lstatSync(policy.runtimeDir);
      if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o077) !== 0) {
        add(
          `runtimeDir ${policy.runtimeDir} is not a root-owned 0700 directory`,
          `rm -r ${policy.runtimeDir} (the hook makes it)`,
        );
      }
    }
    const prompts = [...policy.secrets.values()].some((s) => s.prompt);
    if (fs.existsSync(policy.agentDir) || prompts) {
      let st: fs.Stats | null = null;
      try {
        st = fs.lstatSync(policy.agentDir);
      } catch {}
      if (st === null || !st.isDirectory() || st.uid !== 0 || (st.mode & 0o7777) !== 0o1733) {
        add(
          `agentDir ${policy.agentDir} is not a root-owned directory with mode 1733${st === null ? " (it does not exist)" : ""}`,
          `install -d -m 1733 -o root ${policy.agentDir}`,
        );
      } else checked.push(`agentDir ${policy.agentDir} root 1733`);
    }
  }

  const settings = nixSettings(env);
  if (typeof settings === "string") {
    add(
      `cannot read Nix's settings: ${settings}`,
      "run this where nix is on PATH, with the NIX_CONF_DIR nix-daemon uses",
    );
  } else {
    if (settings.sandbox !== true) {
      add(
        `the sandbox is off (sandbox = ${JSON.stringify(settings.sandbox)}): Nix runs no pre-build hook then`,
        "set sandbox = true in nix.conf and restart nix-daemon",
      );
    } else checked.push("sandbox = true");
    const file = policy?.file ?? options.policyFile;
    checkHook("pre", settings["pre-build-hook"], file, add, checked);
    checkHook("post", settings["post-build-hook"], file, add, checked);
  }
  return { problems, checked };
}

/** The fetcher this nixseal ships, next to this module. */
export const FETCHER_FILE = fileURLToPath(new URL("./fetcher.js", import.meta.url));
/** The store name the fetcher gets (a `.mjs`, so every Node version loads it as a module). */
export const FETCHER_STORE_NAME = "nixseal-fetcher.mjs";

/**
 * Adds this nixseal's fetcher to the store as `nixseal-fetcher.mjs` and returns its store path:
 * the path `builtins.path { path = .../fetcher.js; name = "nixseal-fetcher.mjs"; }` gives too
 * (both add the file's contents under that name). It changes with every nixseal upgrade.
 */
export function addFetcherToStore(env: NodeJS.ProcessEnv = process.env): string {
  const nixStore = findExecutable("nix-store", env.PATH);
  if (nixStore === null) {
    throw new NixsealError("IO", "nix-store is not on PATH", {
      hint: "run this on the host that builds, with Nix installed",
    });
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nixseal-fetcher-"));
  try {
    const copy = path.join(dir, FETCHER_STORE_NAME);
    fs.copyFileSync(FETCHER_FILE, copy);
    fs.chmodSync(copy, 0o444);
    const r = spawnSync(nixStore, ["--add", copy], { encoding: "utf8", env });
    const out = (r.stdout ?? "").trim();
    if (r.status !== 0 || !out.startsWith("/")) {
      throw new NixsealError(
        "IO",
        `nix-store --add of the fetcher failed: ${(r.stderr ?? "").trim().split("\n").pop() ?? ""}`,
        {
          hint: "run it as root (or a user nix-daemon allows), with Nix working",
        },
      );
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Pins `storePath` as the fetcher of every secret of the policy: replaces the nixseal fetchers
 * there (store names ending in -nixseal-fetcher.mjs) and keeps any other. The policy must be
 * valid before and is checked again after; it is replaced atomically, mode 0644.
 */
export function updatePolicyFetcher(policyFile: string, storePath: string): string[] {
  const policy = readPolicy(policyFile);
  const doc = JSON.parse(fs.readFileSync(policyFile, "utf8")) as {
    secrets: Record<string, { fetcherStorePaths: string[] }>;
  };
  const changed: string[] = [];
  for (const [name, s] of Object.entries(doc.secrets)) {
    const kept = s.fetcherStorePaths.filter((p) => !p.endsWith(`-${FETCHER_STORE_NAME}`) || p === storePath);
    const next = kept.includes(storePath) ? kept : [...kept, storePath];
    if (JSON.stringify(next) !== JSON.stringify(s.fetcherStorePaths)) {
      s.fetcherStorePaths = next;
      changed.push(name);
    }
  }
  if (!storePath.startsWith(`${policy.storeDir}/`)) {
    throw new NixsealError("BUILD_POLICY", `${storePath} is not in the policy's store ${policy.storeDir}`, {
      hint: "the fetcher is pinned by its store path",
    });
  }
  if (changed.length > 0) {
    const text = `${JSON.stringify(doc, null, 2)}\n`;
    // What is written must be a valid policy too.
    parsePolicy(text, policyFile);
    writeFileAtomic(policyFile, Buffer.from(text), 0o644);
  }
  return changed;
}

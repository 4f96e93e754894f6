/**
 * The identities a command decrypts with. Files given with -i are the only ones used, as with
 * `age -i` (an identity from the environment must not open a file the user meant to open with
 * another key). Without -i, the defaults, merged in this order: NIXSEAL_IDENTITY (a file),
 * SOPS_AGE_KEY_FILE, SOPS_AGE_SSH_PRIVATE_KEY_FILE (an ssh private key), SOPS_AGE_KEY (the keys
 * themselves), ~/.config/nixseal/identity.txt, ~/.config/sops/age/keys.txt, ~/.ssh/id_ed25519,
 * ~/.ssh/id_rsa, then SOPS_AGE_KEY_CMD (a command printing keys). Either way, then the
 * ssh-to-age X25519 identities of the ssh-ed25519 keys among them (sops-nix users encrypt to
 * that recipient). Files named explicitly must exist; the well-known defaults are used only
 * where present.
 */
import * as os from "node:os";
import * as path from "node:path";
import { type Identity, type Stanza, X25519_STANZA, type X25519Identity } from "../age/index.js";
import { type Captured, captureOutput, nodeFs as fs, NixsealError, wipe } from "../common/index.js";
import { SshEd25519Identity, type SshKeyIdentity } from "../ssh/index.js";
import { loadIdentities } from "./identities.js";
import {
  type KeyContext,
  parseIdentityString,
  pluginNameOfIdentity,
  resolvePluginIdentities,
} from "./key-types.js";

export interface IdentitySource {
  /** -i files, in order. When there are any, they are the only identities used. */
  flags?: readonly string[];
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** How long SOPS_AGE_KEY_CMD may run (default KEY_COMMAND_TIMEOUT_MS). */
  keyCommandTimeoutMs?: number;
  /** Where the SOPS_AGE_KEY_CMD command line is logged (never its output); default: not logged. */
  log?: (line: string) => void;
}

/** The nixseal identity file a new user gets (`nixseal init`). */
export function defaultIdentityPath(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string {
  const config = env.XDG_CONFIG_HOME || path.join(home, ".config");
  return path.join(config, "nixseal", "identity.txt");
}

/** The identity files that would be used, in order (for messages and `nixseal list`). */
export function identityFiles(source: IdentitySource = {}): { file: string; required: boolean }[] {
  const flags = source.flags ?? [];
  if (flags.length > 0) return flags.map((file) => ({ file, required: true }));
  const env = source.env ?? process.env;
  const home = source.home ?? os.homedir();
  const config = env.XDG_CONFIG_HOME || path.join(home, ".config");
  const out: { file: string; required: boolean }[] = [];
  if (env.NIXSEAL_IDENTITY) out.push({ file: env.NIXSEAL_IDENTITY, required: true });
  if (env.SOPS_AGE_KEY_FILE) out.push({ file: env.SOPS_AGE_KEY_FILE, required: true });
  // sops: the ssh private key for ssh-ed25519/ssh-rsa recipients, instead of ~/.ssh/id_*.
  if (env.SOPS_AGE_SSH_PRIVATE_KEY_FILE)
    out.push({ file: env.SOPS_AGE_SSH_PRIVATE_KEY_FILE, required: true });
  for (const f of [
    defaultIdentityPath(env, home),
    path.join(config, "sops", "age", "keys.txt"),
    path.join(home, ".ssh", "id_ed25519"),
    path.join(home, ".ssh", "id_rsa"),
  ]) {
    out.push({ file: f, required: false });
  }
  return out;
}

/**
 * Loads every identity available. Each file is read once; identities are lazy where they can be
 * (a passphrase-protected ssh key asks only when a file is for it, and only once).
 */
export async function loadDefaultIdentities(source: IdentitySource, ctx: KeyContext): Promise<Identity[]> {
  const env = source.env ?? process.env;
  const files: string[] = [];
  const seen = new Set<string>();
  for (const { file, required } of identityFiles(source)) {
    const abs = path.resolve(file);
    if (seen.has(abs)) continue;
    seen.add(abs);
    if (!required && !fs.existsSync(abs)) continue;
    files.push(file);
  }
  const identities = files.length > 0 ? await loadIdentities(files, ctx) : [];
  const onlyFlags = (source.flags ?? []).length > 0;
  if (!onlyFlags && env.SOPS_AGE_KEY) {
    // Inline keys (sops' variable): lines of AGE-SECRET-KEY-1..., comments allowed.
    env.SOPS_AGE_KEY.split("\n").forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      identities.push(parseIdentityString(line, `SOPS_AGE_KEY line ${i + 1}`));
    });
  }
  if (!onlyFlags && env.SOPS_AGE_KEY_CMD) {
    identities.push(
      ...(await identitiesFromKeyCommand(env.SOPS_AGE_KEY_CMD, ctx, {
        env,
        timeoutMs: source.keyCommandTimeoutMs ?? KEY_COMMAND_TIMEOUT_MS,
        log: source.log,
      })),
    );
  }
  identities.push(...sshToAgeIdentities(identities));
  if (identities.length === 0) {
    throw new NixsealError("AGE_NO_MATCH", "no identity found to decrypt with", {
      hint: `create one with 'nixseal init', or pass -i FILE (looked in: ${identityFiles(source)
        .filter((f) => !f.required)
        .map((f) => f.file)
        .join(", ")})`,
    });
  }
  return identities;
}

// --- SOPS_AGE_KEY_CMD ---------------------------------------------------------------------------

/** The most a key command may print: key files are small; anything bigger is a mistake. */
export const KEY_COMMAND_MAX_OUTPUT = 1024 * 1024;
/** How long a key command may run (it may wait for a hardware token or a password manager). */
export const KEY_COMMAND_TIMEOUT_MS = 60_000;

/** One run per command line per process: the parsed identities, never the raw output. */
const keyCommandRuns = new Map<string, Promise<Identity[]>>();

function keyCommandError(message: string, hint: string): NixsealError {
  return new NixsealError("AGE_IDENTITY", `SOPS_AGE_KEY_CMD ${message}`, { hint });
}

/**
 * Runs SOPS_AGE_KEY_CMD with `sh -c` and reads identity lines from its standard output (at most
 * KEY_COMMAND_MAX_OUTPUT bytes, within the timeout). Its standard error goes to ours, standard
 * input is closed. The output is wiped once parsed and never appears in a message.
 * sops runs the command once per age key with SOPS_AGE_RECIPIENT set; nixseal runs it once per
 * process, without that variable (the keys it prints are tried against every recipient).
 */
export function identitiesFromKeyCommand(
  command: string,
  ctx: KeyContext,
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; log?: (line: string) => void } = {},
): Promise<Identity[]> {
  let run = keyCommandRuns.get(command);
  if (run === undefined) {
    options.log?.(`running SOPS_AGE_KEY_CMD: ${command}`);
    run = runKeyCommand(
      command,
      options.env ?? process.env,
      options.timeoutMs ?? KEY_COMMAND_TIMEOUT_MS,
    ).then((out) => {
      try {
        return parseKeyCommandOutput(out, ctx);
      } finally {
        wipe(out);
      }
    });
    keyCommandRuns.set(command, run);
  }
  return run;
}

async function runKeyCommand(command: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Buffer> {
  let r: Captured;
  try {
    // Its messages go to the user's terminal (a password manager may say why it failed).
    r = await captureOutput("sh", ["-c", command], {
      env,
      maxStdout: KEY_COMMAND_MAX_OUTPUT,
      timeoutMs,
      inheritStderr: true,
    });
  } catch {
    throw keyCommandError(
      "could not be started",
      "check that sh exists and SOPS_AGE_KEY_CMD is a command line",
    );
  }
  if (r.stopped === "timeout") {
    throw keyCommandError(
      `did not finish within ${Math.round(timeoutMs / 1000)} s`,
      "check that the command in SOPS_AGE_KEY_CMD prints the keys without waiting for input",
    );
  }
  if (r.stopped !== null) {
    throw keyCommandError(
      `printed more than ${KEY_COMMAND_MAX_OUTPUT / 1024} KiB`,
      "SOPS_AGE_KEY_CMD must print age identity lines (AGE-SECRET-KEY-1...), nothing else",
    );
  }
  if (r.code !== 0) {
    wipe(r.stdout);
    throw keyCommandError(
      r.signal ? `was killed by ${r.signal}` : `exited with status ${r.code}`,
      "run the command in SOPS_AGE_KEY_CMD by hand to see why it fails (its error output is shown above)",
    );
  }
  return r.stdout;
}

/** Identity lines as in an identity file: AGE-SECRET-KEY-1..., -PQ-1..., AGE-PLUGIN-..., # comments. */
function parseKeyCommandOutput(out: Buffer, ctx: KeyContext): Identity[] {
  const identities: Identity[] = [];
  const plugin: string[] = [];
  out
    .toString("utf8")
    .split("\n")
    .forEach((raw, i) => {
      const line = raw.replace(/\r$/, "").trim();
      if (line === "" || line.startsWith("#")) return;
      if (pluginNameOfIdentity(line) !== null) plugin.push(line);
      else identities.push(parseIdentityString(line, `SOPS_AGE_KEY_CMD output line ${i + 1}`));
    });
  identities.push(...resolvePluginIdentities(plugin, ctx));
  if (identities.length === 0) {
    throw keyCommandError(
      "printed no identity",
      "SOPS_AGE_KEY_CMD must print age identity lines (AGE-SECRET-KEY-1...)",
    );
  }
  return identities;
}

// --- ssh-to-age ---------------------------------------------------------------------------------

function isSshKeyIdentity(id: Identity): id is SshKeyIdentity {
  return "unlock" in id && "keyType" in id && "encrypted" in id;
}

/**
 * The X25519 identity ssh-to-age derives from an ssh-ed25519 private key, as a lazy identity.
 *
 * An X25519 stanza does not say whose it is, so a passphrase-protected key cannot tell whether a
 * stanza is for it without the passphrase. These identities therefore come last in the list (age
 * tries identities in order and stops at the first that opens the file), and one asks for its
 * passphrase only when a file has an X25519 stanza that no earlier identity opened. The ssh key
 * and its derived identity share one unlock, so the passphrase is asked at most once for both.
 * `deferred` tells callers that try several files in turn (a sops file's age entries) that this
 * identity may ask: try every entry with the other identities first.
 */
export class SshDerivedX25519Identity implements Identity {
  readonly description: string;
  private derived: Promise<X25519Identity | null> | null = null;

  constructor(private readonly ssh: SshKeyIdentity) {
    this.description = `age X25519 identity derived from the ${ssh.description} (ssh-to-age)`;
  }

  /** True if using this identity may ask for a passphrase. */
  get deferred(): boolean {
    return this.ssh.encrypted;
  }

  private derive(): Promise<X25519Identity | null> {
    this.derived ??= this.ssh
      .unlock()
      .then((id) => (id instanceof SshEd25519Identity ? id.toX25519Identity(this.description) : null));
    return this.derived;
  }

  async unwrapFileKey(stanzas: readonly Stanza[]): Promise<Uint8Array | null> {
    if (!stanzas.some((s) => s.type === X25519_STANZA)) return null;
    const x = await this.derive();
    return x === null ? null : x.unwrapFileKey(stanzas);
  }
}

/** The ssh-to-age identities of the ssh-ed25519 keys (or keys that may be) among `identities`. */
function sshToAgeIdentities(identities: readonly Identity[]): Identity[] {
  const plain: Identity[] = [];
  const protectedKeys: Identity[] = [];
  for (const id of identities) {
    if (!isSshKeyIdentity(id) || (id.keyType !== null && id.keyType !== "ssh-ed25519")) continue;
    (id.encrypted ? protectedKeys : plain).push(new SshDerivedX25519Identity(id));
  }
  return [...plain, ...protectedKeys];
}

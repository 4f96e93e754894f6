/**
 * The identities a command decrypts with when the user names none, merged in this order:
 * -i flags, NIXSEAL_IDENTITY (a file), SOPS_AGE_KEY_FILE, SOPS_AGE_KEY (the keys themselves),
 * ~/.config/nixseal/identity.txt, ~/.config/sops/age/keys.txt, ~/.ssh/id_ed25519, ~/.ssh/id_rsa.
 * Files named explicitly must exist; the well-known defaults are used only where present.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Identity } from "../age/types.js";
import { NixsealError } from "../common/errors.js";
import { loadIdentities } from "./identities.js";
import { type KeyContext, parseIdentityString } from "./key-types.js";

export interface IdentitySource {
  /** -i files, in order. */
  flags?: readonly string[];
  env?: NodeJS.ProcessEnv;
  home?: string;
}

/** The nixseal identity file a new user gets (`nixseal init`). */
export function defaultIdentityPath(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string {
  const config = env.XDG_CONFIG_HOME || path.join(home, ".config");
  return path.join(config, "nixseal", "identity.txt");
}

/** The identity files that would be used, in order (for messages and `nixseal list`). */
export function identityFiles(source: IdentitySource = {}): { file: string; required: boolean }[] {
  const env = source.env ?? process.env;
  const home = source.home ?? os.homedir();
  const config = env.XDG_CONFIG_HOME || path.join(home, ".config");
  const out: { file: string; required: boolean }[] = [];
  for (const f of source.flags ?? []) out.push({ file: f, required: true });
  if (env.NIXSEAL_IDENTITY) out.push({ file: env.NIXSEAL_IDENTITY, required: true });
  if (env.SOPS_AGE_KEY_FILE) out.push({ file: env.SOPS_AGE_KEY_FILE, required: true });
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
  if (env.SOPS_AGE_KEY) {
    // Inline keys (sops' variable): lines of AGE-SECRET-KEY-1..., comments allowed.
    env.SOPS_AGE_KEY.split("\n").forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      identities.push(parseIdentityString(line, `SOPS_AGE_KEY line ${i + 1}`));
    });
  }
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

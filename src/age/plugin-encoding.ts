/**
 * How plugin recipients and identities are spelled, and where their plugin programs live.
 * age-plugin spec: "Mapping recipients and identities to plugin binaries".
 *
 * - recipient: Bech32 with the HRP `age1<name>` (lowercase), e.g. `age1yubikey1q...`
 * - identity: Bech32 with the HRP `AGE-PLUGIN-<NAME>-` (uppercase), e.g. `AGE-PLUGIN-YUBIKEY-1Q...`
 * - program: `age-plugin-<name>`, searched on PATH (absolute entries only).
 */
import { findExecutable, NixsealError, wipe } from "../common/index.js";
import { decodeBech32, encodeBech32 } from "./bech32.js";

/** age-plugin spec: NAME = 1*(ALPHA / DIGIT / "-" / "_" / "." / "+"). No path separators. */
const NAME = /^[A-Za-z0-9._+-]+$/;
const RECIPIENT_PREFIX = "age1";
const IDENTITY_PREFIX = "age-plugin-";

export function isValidPluginName(name: string): boolean {
  return NAME.test(name);
}

/** The name of a plugin's program on PATH. */
export function pluginBinaryName(plugin: string): string {
  return `age-plugin-${plugin.toLowerCase()}`;
}

/** What a plugin recipient or identity string says: the (lowercase) plugin name and its data. */
export interface PluginKey {
  kind: "recipient" | "identity";
  plugin: string;
  data: Uint8Array;
}

/**
 * Classifies a string as a plugin recipient (`age1<name>1...`) or plugin identity
 * (`AGE-PLUGIN-<NAME>-1...`), or returns null. It does not know about native types that share
 * the `age1` prefix: callers try native recipients (X25519 `age1...`, hybrid `age1pq1...`,
 * tag `age1tag1...`) first, as age does, and only then this.
 */
export function parsePluginKey(s: string): PluginKey | null {
  const d = decodeBech32(s);
  if (d === null) return null;
  if (s === s.toLowerCase() && d.hrp.startsWith(RECIPIENT_PREFIX)) {
    const plugin = d.hrp.slice(RECIPIENT_PREFIX.length);
    if (isValidPluginName(plugin)) return { kind: "recipient", plugin, data: d.data };
  }
  if (s === s.toUpperCase() && d.hrp.startsWith(IDENTITY_PREFIX) && d.hrp.endsWith("-")) {
    const plugin = d.hrp.slice(IDENTITY_PREFIX.length, -1);
    if (isValidPluginName(plugin)) return { kind: "identity", plugin, data: d.data };
  }
  wipe(d.data);
  return null;
}

/** The plugin name of a plugin recipient or identity string, or null if it is not one. */
export function pluginNameOf(s: string): string | null {
  const k = parsePluginKey(s);
  if (k === null) return null;
  wipe(k.data);
  return k.plugin;
}

export function isPluginRecipient(s: string): boolean {
  return parsePluginKey(s)?.kind === "recipient";
}

export function isPluginIdentity(s: string): boolean {
  // Every identity line is asked this first: most are not plugins, and need no Bech32 decoding.
  if (!s.startsWith(IDENTITY_PREFIX.toUpperCase())) return false;
  const k = parsePluginKey(s);
  if (k === null) return false;
  wipe(k.data);
  return k.kind === "identity";
}

/** Parses `age1<name>1...`; the error does not repeat the string (the caller says where it is). */
export function parsePluginRecipient(s: string): { plugin: string; data: Uint8Array } {
  const k = parsePluginKey(s);
  if (k === null || k.kind !== "recipient") {
    if (k !== null) wipe(k.data);
    throw new NixsealError("AGE_RECIPIENT", `invalid plugin recipient (${s.length} characters)`, {
      hint: "a plugin recipient looks like age1<name>1...; check for a typo",
    });
  }
  return { plugin: k.plugin, data: k.data };
}

/** Parses `AGE-PLUGIN-<NAME>-1...`; the error never repeats the identity (it may hold a key). */
export function parsePluginIdentity(s: string): { plugin: string; data: Uint8Array } {
  const k = parsePluginKey(s);
  if (k === null || k.kind !== "identity") {
    throw new NixsealError("AGE_IDENTITY", "malformed plugin identity (AGE-PLUGIN-<NAME>-1...)", {
      hint: "the identity is damaged or truncated; check the identity file",
    });
  }
  return { plugin: k.plugin, data: k.data };
}

function checkName(plugin: string): void {
  if (!isValidPluginName(plugin)) {
    throw new NixsealError("AGE_PLUGIN", `invalid plugin name "${plugin.slice(0, 20)}"`, {
      hint: "a plugin name has only letters, digits and - _ . +",
    });
  }
}

export function encodePluginRecipient(plugin: string, data: Uint8Array): string {
  checkName(plugin);
  return encodeBech32(`${RECIPIENT_PREFIX}${plugin.toLowerCase()}`, data);
}

export function encodePluginIdentity(plugin: string, data: Uint8Array): string {
  checkName(plugin);
  return encodeBech32(`${IDENTITY_PREFIX}${plugin}-`, data, true);
}

/**
 * Finds `age-plugin-<name>` on PATH: the first absolute PATH entry holding an executable regular
 * file of that name. age-plugin spec: relative entries (including the empty one, which means the
 * working directory) MUST NOT be searched.
 */
export function findPluginBinary(plugin: string, searchPath: string | undefined = process.env.PATH): string {
  checkName(plugin);
  const binary = pluginBinaryName(plugin);
  const found = findExecutable(binary, searchPath);
  if (found !== null) return found;
  throw new NixsealError("AGE_PLUGIN", `plugin program ${binary} not found on PATH`, {
    hint: `install ${binary} and make sure it is on PATH`,
  });
}

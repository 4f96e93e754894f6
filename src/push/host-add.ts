/**
 * `nixseal host add`: a host's recipient recorded in the repository's hosts.nix, then the
 * secrets that name the host rekeyed for it. All local checks (the name, secrets.nix, hosts.nix's
 * form) come before any connection; hosts.nix is written atomically and checked by the real Nix;
 * if the rekey cannot decrypt a file, nothing is rewritten and hosts.nix is put back.
 */
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import { NixsealError } from "../common/index.js";
import { type KeyContext, parseRecipientString, readKeyFile } from "../keys/index.js";
import {
  findRulesFile,
  hostNameProblem,
  loadAgeSecrets,
  loadRules,
  loadSopsAndRekey,
  type RekeyResult,
  readHostsFile,
  renderHostsFile,
  rulesImportHostsFile,
  writeHostsFile,
} from "../vault/index.js";
import { remoteSealedRecipient, type SshTarget, scanHostKey } from "./host-keys.js";

export interface AddHostOptions {
  name: string;
  /** The host over ssh (not used with publicKey). */
  target?: SshTarget;
  /** Create a sealed identity on the host instead of reading its ssh host key. */
  sealed?: { commands: readonly string[]; file: string };
  /**
   * Or take the recipient from this file (a host key's .pub, or one age1... line), without any
   * connection: for a host not installed yet (nixos-anywhere --extra-files).
   */
  publicKey?: string;
  /** Record a new recipient for a NAME hosts.nix already has with another. */
  replace: boolean;
  rules?: string;
  noCache?: boolean;
  identities: () => Promise<Identity[]>;
  ctx: KeyContext;
}

export interface AddHostResult {
  name: string;
  recipient: string;
  source: "host-key" | "sealed" | "public-key";
  /** host-key: the key's fingerprint, and the known_hosts file that vouched for it (null: none). */
  fingerprint?: string;
  verifiedBy?: string | null;
  address?: string;
  /** sealed: the remote nixseal that ran, and the credential it wrote. */
  remoteCommand?: string;
  sealedFile?: string;
  hostsFile: string;
  /** What hosts.nix had for NAME before (undefined: nothing). */
  previous?: string;
  /** Whether hosts.nix was written (false: it already had this recipient). */
  changed: boolean;
  importsHostsFile: boolean;
  /** The secrets of secrets.nix that name the recipient now. */
  secrets: string[];
  rekey: RekeyResult | null;
}

/** The one recipient in a public key file; every other line is empty or a # comment. */
function recipientOfFile(file: string): string {
  const lines = readKeyFile(file)
    .toString("utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  if (lines.length !== 1) {
    throw new NixsealError("HOST", `${file} holds ${lines.length} keys, not one`, {
      file,
      hint: "pass the host key's .pub file (ssh-keygen writes one beside the key) or a file with one age1... line",
    });
  }
  return parseRecipientString(lines[0]!, file).toString();
}

export async function addHost(options: AddHostOptions): Promise<AddHostResult> {
  const { name } = options;
  const bad = hostNameProblem(name);
  if (bad !== null) {
    throw new NixsealError("USAGE", `invalid host name "${name.slice(0, 64)}": ${bad}`, {
      hint: "use a plain identifier such as web1 or db_primary (it becomes hosts.NAME in secrets.nix)",
    });
  }
  // Local problems first: nothing is asked of the network for a repository that cannot take the host.
  const rulesFile = findRulesFile({ rules: options.rules });
  const hosts = readHostsFile(path.dirname(rulesFile));
  try {
    loadRules({ rules: rulesFile, noCache: options.noCache });
  } catch (e) {
    // A secrets.nix that names hosts.NAME before NAME is in hosts.nix evaluates only once it is;
    // it is evaluated again after hosts.nix is written, and hosts.nix is put back if it still fails.
    if (!(e instanceof NixsealError && e.code === "RULES" && rulesImportHostsFile(rulesFile))) throw e;
  }

  const target = options.target;
  if (target === undefined && options.publicKey === undefined)
    throw new NixsealError("USAGE", "no host given", { hint: "pass --ssh [USER@]HOST or --public-key FILE" });
  const base =
    options.publicKey !== undefined
      ? { recipient: recipientOfFile(options.publicKey), source: "public-key" as const }
      : options.sealed
        ? await (async () => {
            const { recipient, command } = await remoteSealedRecipient(
              target!,
              options.sealed!.commands,
              options.sealed!.file,
            );
            return {
              recipient,
              source: "sealed" as const,
              remoteCommand: command,
              sealedFile: options.sealed!.file,
            };
          })()
        : await (async () => {
            const scanned = await scanHostKey(target!);
            return {
              recipient: scanned.recipient,
              source: "host-key" as const,
              fingerprint: scanned.fingerprint,
              verifiedBy: scanned.verifiedBy,
              address: scanned.address,
            };
          })();
  const { recipient } = base;
  const previous = hosts.hosts.get(name);
  const { normalizeRecipient } = await loadAgeSecrets();
  if (previous !== undefined && normalizeRecipient(previous) !== recipient && !options.replace) {
    throw new NixsealError("HOST", `host ${name} is already in ${hosts.file} with another recipient`, {
      file: hosts.file,
      hint: `if ${name}'s key really changed, run again with --replace: its secrets are then rekeyed for the new key only`,
    });
  }
  const changed = previous === undefined || normalizeRecipient(previous) !== recipient;
  let restore: (() => void) | null = null;
  if (changed) {
    const expected = new Map(hosts.hosts);
    expected.set(name, recipient);
    restore = writeHostsFile(hosts, renderHostsFile(hosts, name, recipient), expected);
  }
  const result: AddHostResult = {
    name,
    ...base,
    hostsFile: hosts.file,
    previous,
    changed,
    importsHostsFile: rulesImportHostsFile(rulesFile),
    secrets: [],
    rekey: null,
  };
  try {
    // hosts.nix just changed: the rules are evaluated again, not taken from the cache.
    const rules = loadRules({ rules: rulesFile, noCache: true });
    result.secrets = [...rules.secrets.values()]
      .filter((r) => r.publicKeys.some((k) => normalizeRecipient(k) === recipient))
      .map((r) => r.name)
      .sort();
    if (result.secrets.length > 0) {
      const { rekeyRepository } = await loadSopsAndRekey();
      result.rekey = await rekeyRepository(rules, {
        names: result.secrets,
        cwd: rules.dir,
        identities: options.identities,
        ctx: options.ctx,
      });
    }
  } catch (e) {
    restore?.();
    throw e;
  }
  if (result.rekey !== null && result.rekey.failed.length > 0 && result.rekey.rewritten.length === 0) {
    // Nothing was rewritten: the repository stays as it was, hosts.nix included.
    restore?.();
    result.changed = false;
  }
  return result;
}

/**
 * What every secrets-repository command shares: the common options (--rules, -i, --json,
 * --no-cache), the rules, and the identities to decrypt with (asked for lazily, once).
 */
import type { Identity } from "../age/index.js";
import { type KeyContext, loadDefaultIdentities, looksLikeSecretKey } from "../keys/index.js";
import { describeRecipient, loadRules, type Rules } from "../vault/index.js";
import type { Options } from "./args.js";
import { askPassphrase, pluginUI } from "./terminal.js";

export const VAULT_OPTIONS = {
  rules: { type: "string" },
  identity: { type: "string", short: "i", multiple: true },
  json: { type: "boolean" },
  "no-cache": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies Options;

export const VAULT_OPTIONS_HELP = `Common options:
    --rules FILE          The rules file (default: $RULES, else the first secrets.nix found
                          walking up from the current directory, else ./secrets/secrets.nix).
    -i, --identity FILE   An identity to decrypt with (repeatable). Given -i, only those are
                          used, as with age. Without -i: NIXSEAL_IDENTITY, SOPS_AGE_KEY_FILE,
                          SOPS_AGE_SSH_PRIVATE_KEY_FILE, SOPS_AGE_KEY,
                          ~/.config/nixseal/identity.txt, ~/.config/sops/age/keys.txt,
                          ~/.ssh/id_ed25519, ~/.ssh/id_rsa, then SOPS_AGE_KEY_CMD.
    --json                Machine-readable output on stdout, one JSON object; a failure prints
                          {"error": {"code", "message", "hint", "file"}}.
    --no-cache            Evaluate secrets.nix directly: the cache is neither read nor written.
`;

export interface VaultValues {
  rules?: string;
  identity?: string[];
  json?: boolean;
  "no-cache"?: boolean;
}

export function keyContext(): KeyContext {
  // Passphrases are asked at most once per key per command: identities cache what they unlock.
  return { passphrase: (what) => askPassphrase(what), pluginUI: pluginUI() };
}

/** The rules; `near` is a secret path the user typed (its directory is searched first). */
export function rulesOf(values: VaultValues, near?: string): Rules {
  return loadRules({ rules: values.rules, noCache: values["no-cache"] === true, near });
}

export function identitiesOf(values: VaultValues, ctx: KeyContext = keyContext()): Promise<Identity[]> {
  return loadDefaultIdentities({ flags: values.identity ?? [] }, ctx);
}

/**
 * A recipient of the rules as list and who show it. A secret key written into the rules by
 * mistake is flagged, and nothing of it is shown.
 */
export function shownRecipient(s: string): ReturnType<typeof describeRecipient> {
  if (looksLikeSecretKey(s)) {
    return { recipient: "(not shown)", kind: "unknown", label: "a SECRET key, not a recipient: remove it" };
  }
  return describeRecipient(s);
}

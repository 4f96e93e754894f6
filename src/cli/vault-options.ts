/**
 * The options every repository command shares, apart from vault-context.ts: a command that only
 * parses them (generate, check) does not load the key formats and the rules machinery with them.
 */
import type { Options } from "./args.js";

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

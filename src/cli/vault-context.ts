/**
 * What every secrets-repository command shares: the common options (--rules, -i, --json,
 * --no-cache), the rules, and the identities to decrypt with (asked for lazily, once).
 */
import type { Identity } from "../age/index.js";
import { type KeyContext, loadDefaultIdentities, looksLikeSecretKey } from "../keys/index.js";
import { loadAgeSecrets, loadRules, type Rules } from "../vault/index.js";
import { askPassphrase, pluginUI } from "./terminal.js";
import type { VaultValues } from "./vault-options.js";

export { VAULT_OPTIONS, VAULT_OPTIONS_HELP, type VaultValues } from "./vault-options.js";

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

type Shown = ReturnType<Awaited<ReturnType<typeof loadAgeSecrets>>["describeRecipient"]>;

/**
 * How list and who show a recipient of the rules. A secret key written into the rules by mistake
 * is flagged, and nothing of it is shown.
 */
export async function recipientShower(): Promise<(s: string) => Shown> {
  const { describeRecipient } = await loadAgeSecrets();
  return (s) =>
    looksLikeSecretKey(s)
      ? { recipient: "(not shown)", kind: "unknown", label: "a SECRET key, not a recipient: remove it" }
      : describeRecipient(s);
}

/**
 * The options that make a path a sops file, and a quick test whether it may be one, without
 * loading src/sops/: commands that handle both age secrets and sops files (decrypt, encrypt,
 * edit, check, rekey) import sops-file.ts, and with it src/sops/ and the YAML library, only
 * once a sops file may be involved. Whether it is one is still sops-file.ts's sopsStoreOf.
 */
import type { Options } from "./args.js";
import type { VaultValues } from "./vault-context.js";

export const SOPS_OPTIONS = {
  "input-type": { type: "string" },
  config: { type: "string" },
} as const satisfies Options;

export const SOPS_OPTIONS_HELP = `sops files (by extension .yaml/.yml/.json/.env/.ini, or --input-type):
    --input-type TYPE     Treat FILE as a sops file of TYPE: yaml, json, dotenv, ini or binary.
    --config FILE         The .sops.yaml to use (default: $SOPS_CONFIG, else the first .sops.yaml
                          found walking up from the current directory, as sops does).
`;

export interface SopsValues extends VaultValues {
  "input-type"?: string;
  config?: string;
}

/**
 * False only when NAME cannot be a sops file: no --input-type and none of the extensions src/sops
 * reads sops files by (a superset of storeNameByExtension's, checked by test/cli/sops-kind.test.ts).
 */
export function mayBeSopsFile(name: string, values: SopsValues): boolean {
  return values["input-type"] !== undefined || /\.(ya?ml|json|env|ini)$/i.test(name);
}

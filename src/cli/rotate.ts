/**
 * `nixseal rotate FILE`: a new data key (sops rotate): every value re-encrypted, a new MAC, the
 * data key wrapped for the same age recipients and key groups. The file's MAC is verified first.
 */
import * as tty from "node:tty";
import { NixsealError } from "../common/index.js";
import { closeDocument, encryptNewDocument } from "../sops/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { displayPath, openSopsFile, requireSopsStore, SOPS_OPTIONS, writeSopsFile } from "./sops-file.js";
import { identitiesOf, keyContext, VAULT_OPTIONS } from "./vault-context.js";

const HELP = `Usage: nixseal rotate FILE [-i IDENTITY]... [--json]

Gives the sops file FILE a new data key: every value is encrypted again, the MAC is computed
anew, and the new key is wrapped for the same age recipients and key groups as before (the
.sops.yaml is not consulted, as with sops rotate; use updatekeys to change recipients).
Rotate after someone lost access, so that a copy of the old data key opens nothing new.

Files with pgp, kms or other non-age keys cannot be rotated by nixseal (it cannot wrap the new
key for them): use sops for those.

Options:
    --input-type TYPE     The file's format when its extension does not say it: yaml, json,
                          dotenv, ini or binary.
    -i, --identity FILE   An identity to decrypt with (repeatable; default identities otherwise).
    --json                Print the result as JSON.
    -h, --help            This help.

Example:
    $ nixseal rotate secrets/hosts.yaml

Exit codes: 0 success, 1 failure (e.g. no identity can decrypt, MAC mismatch), 2 usage error.
`;

const OPTIONS = { ...VAULT_OPTIONS, ...SOPS_OPTIONS } as const;

export const command: Command = {
  name: "rotate",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal rotate --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new NixsealError("USAGE", "expected exactly one sops FILE", { hint: "nixseal rotate FILE" });
    }
    const file = positionals[0]!;
    const shown = displayPath(file);
    const store = requireSopsStore(file, values);
    const doc = await openSopsFile(file, store, await identitiesOf(values, keyContext()));
    let recipients = 0;
    try {
      const meta = doc.metadata;
      const others: string[] = [];
      meta.keyGroups.forEach((g, i) => {
        for (const [type, list] of g.other) {
          if (list.length > 0)
            others.push(`${list.length} ${type}${meta.keyGroups.length > 1 ? ` (group ${i + 1})` : ""}`);
        }
      });
      if (others.length > 0) {
        throw new NixsealError(
          "SOPS_UNSUPPORTED",
          `${shown}: the file has ${others.join(", ")} key entries; nixseal cannot wrap a new data key for them`,
          {
            hint: "rotate this file with sops rotate, or remove those keys from the file first",
            file: shown,
          },
        );
      }
      const keyGroups = meta.keyGroups.map((g) => g.age.map((e) => e.recipient));
      recipients = keyGroups.reduce((n, g) => n + g.length, 0);
      const out = await encryptNewDocument(doc.branches, store, {
        keyGroups,
        shamirThreshold: meta.shamirThreshold,
        rules: meta.rules,
        macOnlyEncrypted: meta.macOnlyEncrypted,
        file: shown,
      });
      writeSopsFile(file, out);
    } finally {
      closeDocument(doc);
    }
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ file: shown, rotated: true, recipients })}\n`);
    } else if (tty.isatty(2)) {
      process.stderr.write(`rotated ${shown}: new data key for ${recipients} recipient(s)\n`);
    }
    return 0;
  },
};

/** `nixseal decrypt NAME`: a secret to stdout, or to -o FILE (created 0600, atomically). */
import { writeFileAtomic } from "../common/atomic-file.js";
import { wipe } from "../common/bytes.js";
import { ioError, NixsealError } from "../common/errors.js";
import { writeAllSync } from "../common/fd-io.js";
import { decryptSecret, requireSecret } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { identitiesOf, keyContext, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal decrypt NAME [-o FILE] [--rules FILE] [-i IDENTITY]...

Decrypts a secret to standard output, or to FILE (created with mode 0600 and replaced only once
decryption succeeded). NAME is the name in secrets.nix or a path to the file.

Options:
    -o, --output FILE     Write the plaintext to FILE (0600) instead of standard output.
${VAULT_OPTIONS_HELP}
Example:
    $ nixseal decrypt db-password.age
    $ nixseal decrypt tls-key.age -o /run/user/1000/tls-key.pem

Exit codes: 0 success, 1 failure (e.g. no identity can decrypt), 2 usage or rules error.
`;

const OPTIONS = { ...VAULT_OPTIONS, output: { type: "string", short: "o" } } as const;

export const command: Command = {
  name: "decrypt",
  errorExitCode: 1,
  usageExitCode: 2,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal decrypt --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new NixsealError("USAGE", "expected exactly one secret NAME", { hint: "nixseal decrypt NAME" });
    }
    const rules = rulesOf(values, positionals[0]);
    const rule = requireSecret(rules, positionals[0]!);
    const ctx = keyContext();
    const plain = await decryptSecret(rule, await identitiesOf(values, ctx));
    try {
      if (values.output !== undefined && values.output !== "-") {
        writeFileAtomic(values.output, plain, 0o600);
      } else {
        try {
          writeAllSync(1, plain);
        } catch (e) {
          throw ioError("write", "standard output", e);
        }
      }
    } finally {
      wipe(plain);
    }
    return 0;
  },
};

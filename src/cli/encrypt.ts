/** `nixseal encrypt NAME`: plaintext from stdin (or --in FILE) into a secret, atomically. */
import * as fs from "node:fs";
import * as tty from "node:tty";
import { ioError, NixsealError, readAll, wipe } from "../common/index.js";
import type { SopsStore } from "../sops/index.js";
import { loadAgeSecrets, MAX_SECRET_FILE_SIZE, requireSecret } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { mayBeSopsFile, SOPS_OPTIONS, SOPS_OPTIONS_HELP } from "./sops-kind.js";
import { keyContext, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal encrypt NAME [--in FILE] [--rules FILE] [--json]

Encrypts the plaintext from standard input (or --in FILE) to the recipients the rules name for
NAME, and replaces the secret's file atomically. NAME is the name in secrets.nix or a path to
the file (with or without .age).

A FILE with a sops extension (.yaml, .yml, .json, .env, .ini) that secrets.nix does not list is
a sops file: the plaintext document is encrypted for the keys of the .sops.yaml creation rule
that matches FILE (key groups, shamir_threshold, (un)encrypted suffix/regex), as sops does.

Options:
    --in FILE             Read the plaintext from FILE instead of standard input.
${SOPS_OPTIONS_HELP}${VAULT_OPTIONS_HELP}
Example:
    $ printf %s "$DB_PASSWORD" | nixseal encrypt db-password.age
    $ nixseal encrypt tls-key.age --in /dev/shm/key.pem
    $ nixseal encrypt secrets/hosts.yaml --in /dev/shm/hosts.yaml

Exit codes: 0 success, 1 failure, 2 usage or rules error.
`;

const OPTIONS = { ...VAULT_OPTIONS, ...SOPS_OPTIONS, in: { type: "string" } } as const;

type SopsFileModule = typeof import("./sops-file.js");

async function encryptSops(
  { displayPath, encryptNewSopsFile }: SopsFileModule,
  file: string,
  store: SopsStore,
  plain: Buffer,
  values: { json?: boolean; config?: string },
): Promise<void> {
  const { keyGroups, recipients } = await encryptNewSopsFile(
    "nixseal encrypt",
    file,
    store,
    store.parsePlain(plain),
    values,
  );
  if (values.json) {
    process.stdout.write(
      `${JSON.stringify({ file: displayPath(file), format: store.name, keyGroups, recipients })}\n`,
    );
  } else if (tty.isatty(2)) {
    process.stderr.write(`encrypted ${displayPath(file)} for ${recipients} recipient(s)\n`);
  }
}

export const command: Command = {
  name: "encrypt",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal encrypt --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new NixsealError("USAGE", "expected exactly one secret NAME", {
        hint: "nixseal encrypt NAME < plaintext",
      });
    }
    // src/sops/ and the YAML library are loaded only for a name that may be a sops file.
    const sopsFile = mayBeSopsFile(positionals[0]!, values) ? await import("./sops-file.js") : null;
    const store = sopsFile?.sopsStoreOf(positionals[0]!, values) ?? null;
    const rules = store === null ? rulesOf(values, positionals[0]) : null;
    const rule = rules === null ? null : requireSecret(rules, positionals[0]!);
    const { recipientsFor, writeSecret } = await loadAgeSecrets();
    const recipients = rules === null || rule === null ? null : recipientsFor(rule, rules.file, keyContext());
    let fd = 0;
    if (values.in !== undefined && values.in !== "-") {
      try {
        fd = fs.openSync(values.in, "r");
      } catch (e) {
        throw ioError("read", values.in, e);
      }
    } else if (tty.isatty(0)) {
      process.stderr.write("Type the secret, then Ctrl-D on an empty line:\n");
    }
    let plain: Buffer | null;
    try {
      plain = await readAll(fd, MAX_SECRET_FILE_SIZE);
    } catch (e) {
      throw ioError("read", values.in ?? "standard input", e);
    } finally {
      if (fd !== 0) fs.closeSync(fd);
    }
    if (plain === null) {
      throw new NixsealError("USAGE", `the plaintext is larger than ${MAX_SECRET_FILE_SIZE >> 20} MiB`, {
        hint: "secrets are small; encrypt large files with 'nixseal age'",
      });
    }
    if (sopsFile !== null && store !== null) {
      try {
        await encryptSops(sopsFile, positionals[0]!, store, plain, values);
      } finally {
        wipe(plain);
      }
      return 0;
    }
    if (rule === null || recipients === null)
      throw new NixsealError("INTERNAL", "no rule", { hint: "report this bug" });
    try {
      await writeSecret(rule, plain, recipients);
    } finally {
      wipe(plain);
    }
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({ secret: rule.name, file: rule.file, recipients: rule.publicKeys.length })}\n`,
      );
    } else if (tty.isatty(2)) {
      process.stderr.write(`encrypted ${rule.name} for ${rule.publicKeys.length} recipient(s)\n`);
    }
    return 0;
  },
};

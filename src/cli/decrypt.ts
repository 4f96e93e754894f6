/** `nixseal decrypt NAME`: a secret to stdout, or to -o FILE (created 0600, atomically). */
import { ioError, NixsealError, wipe, writeAllSync, writeOutputFile } from "../common/index.js";
import { loadSecretReader, requireSecret } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { mayBeSopsFile, SOPS_OPTIONS, SOPS_OPTIONS_HELP } from "./sops-kind.js";
import { identitiesOf, keyContext, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal decrypt NAME [-o FILE] [--rules FILE] [-i IDENTITY]...
       nixseal decrypt FILE.yaml [--extract '["key"]["sub"]'] [--ignore-mac] [-o FILE]

Decrypts a secret to standard output, or to FILE (created with mode 0600 and replaced only once
decryption succeeded). NAME is the name in secrets.nix or a path to the file.

A FILE with a sops extension (.yaml, .yml, .json, .env, .ini) that secrets.nix does not list is
a sops file: the decrypted document is written in the same format, its MAC verified. Its data
key is unwrapped with the age identities, else (as sops does) with gpg and the user's GnuPG home
(GNUPGHOME, else ~/.gnupg) for its pgp entries.

Options:
    -o, --output FILE     Write the plaintext to FILE (0600) instead of standard output.
    --extract PATH        sops files: print only the value at PATH, e.g. '["db"]["password"]'
                          (a string as it is, a mapping or list in the file's format).
    --ignore-mac          sops files: decrypt even if the MAC does not verify.
${SOPS_OPTIONS_HELP}${VAULT_OPTIONS_HELP}
With --json, standard output is one object instead of the plaintext: {"file": FILE, "value":
TEXT} (age secrets also "secret": NAME; sops files "format" and, with --extract, "path"). TEXT is
exactly what would be printed without --json: as a string when it is valid UTF-8, else base64
with "encoding": "base64". With -o, the plaintext goes to the file and "value" is left out.

Example:
    $ nixseal decrypt db-password.age
    $ nixseal decrypt tls-key.age -o /run/user/1000/tls-key.pem
    $ nixseal decrypt secrets/hosts.yaml --extract '["db"]["password"]'

Exit codes: 0 success, 1 failure (e.g. no identity can decrypt), 2 usage or rules error.
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  ...SOPS_OPTIONS,
  output: { type: "string", short: "o" },
  extract: { type: "string" },
  "ignore-mac": { type: "boolean" },
} as const;

function writeStdout(data: Uint8Array): void {
  try {
    writeAllSync(1, data);
  } catch (e) {
    throw ioError("write", "standard output", e);
  }
}

/**
 * The plaintext for --json: a string when it is valid UTF-8 (a byte order mark kept), else
 * base64. (A JS string cannot be wiped; the bytes written are.)
 */
function jsonValue(data: Uint8Array): { value: string; encoding?: "base64" } {
  try {
    return { value: new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data) };
  } catch {
    return {
      value: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64"),
      encoding: "base64",
    };
  }
}

/**
 * Writes the plaintext to -o FILE (0600, atomically) or stdout; with --json, stdout gets one
 * object describing it (with the value unless it went to a file).
 */
export function writeOut(
  values: { output?: string; json?: boolean },
  data: Uint8Array,
  about: Record<string, string>,
): void {
  const toFile = values.output !== undefined && values.output !== "-";
  if (toFile) writeOutputFile(values.output!, data, 0o600);
  if (!values.json) {
    if (!toFile) writeStdout(data);
    return;
  }
  const line = Buffer.from(
    `${JSON.stringify(toFile ? { ...about, output: values.output } : { ...about, ...jsonValue(data) })}\n`,
    "utf8",
  );
  try {
    writeStdout(line);
  } finally {
    line.fill(0);
  }
}

export const command: Command = {
  name: "decrypt",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal decrypt --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new NixsealError("USAGE", "expected exactly one secret NAME", { hint: "nixseal decrypt NAME" });
    }
    if (mayBeSopsFile(positionals[0]!, values)) {
      // src/sops/ and the YAML library are loaded only for a name that may be a sops file.
      const { decryptIfSops } = await import("./decrypt-sops.js");
      const done = await decryptIfSops(positionals[0]!, values, writeOut);
      // The plaintext is written (synchronously: the -o file committed, stdout and stderr are
      // written in full before a write returns on Linux) and its buffers wiped: end here.
      // Returning to the event loop would let V8 finish the major garbage collection that a
      // large file's tree started, and Node tear down the heap, work for no one (5-8% of the
      // CPU time of a 10 000-value file: bench/RESULTS.md, "sops after sops-300").
      if (done !== null) process.exit(done);
    }
    if (values.extract !== undefined || values["ignore-mac"]) {
      throw new NixsealError("USAGE", "--extract and --ignore-mac apply to sops files only", {
        hint: "for an age secret, decrypt the whole file",
      });
    }
    const rules = rulesOf(values, positionals[0]);
    const rule = requireSecret(rules, positionals[0]!);
    const ctx = keyContext();
    const { decryptSecret } = await loadSecretReader();
    const plain = await decryptSecret(rule, await identitiesOf(values, ctx));
    try {
      writeOut(values, plain, { secret: rule.name, file: rule.file });
    } finally {
      wipe(plain);
    }
    return 0;
  },
};

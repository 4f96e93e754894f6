/**
 * `nixseal host-key new | seal | recipient`: a host identity sealed at rest as a systemd
 * credential (host key and/or TPM2), for the manifest's `{ "type": "systemd-creds" }` identities.
 * Keys are read from a file or standard input, never from argv; `new` generates the key in
 * memory and pipes it straight to systemd-creds, so it never touches a disk.
 */
import * as path from "node:path";
import * as tty from "node:tty";
import { NixsealError, wipe } from "../common/index.js";
import {
  CREDENTIAL_KEYS,
  type CredentialKey,
  encryptCredential,
  isCredentialKey,
  loadSealedIdentities,
  parseKeyMaterial,
  type SealedWith,
  type SystemdCredsOptions,
  validateCredentialName,
} from "../creds/index.js";
import { generateIdentity, readKeyFile } from "../keys/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { quoteArg } from "./report.js";

const HELP = `Usage:
    nixseal host-key new  [--with-key KEY] [--pq] -o FILE [--name NAME] [--force] [--json]
    nixseal host-key seal [--with-key KEY] [-i KEYFILE] -o FILE [--name NAME] [--force] [--json]
    nixseal host-key recipient FILE [--name NAME] [--json]

A host identity kept as an encrypted systemd credential: a copy of the disk without this host's
credential key (/var/lib/systemd/credential.secret) or its TPM2 yields no key. List FILE in the
NixOS module's identities as { type = "systemd-creds"; path = FILE; } and nixseal install
decrypts it in memory at activation. Needs systemd-creds (systemd >= 250) and root.

    new        Generates a fresh age X25519 identity (hybrid post-quantum with --pq) in memory
               and seals it into FILE. Prints only its recipient (age1...) on standard output:
               add it to your secrets.nix / .sops.yaml. The plaintext key never touches a disk.
    seal       Seals an existing age identity file or unencrypted ssh private key, read from
               KEYFILE or standard input, into FILE. Prints the recipients it decrypts for.
    recipient  Decrypts FILE in memory and prints the recipients of the key inside.

Options:
    --with-key KEY        What the credential is sealed with: auto (default: host key, plus the
                          TPM2 if there is one), host, tpm2, or host+tpm2.
    -i, --input KEYFILE   The key to seal (default: standard input; never pass a key in argv).
    -o, --output FILE     The sealed credential (written atomically, 0600; an existing FILE is
                          not replaced without --force).
    --name NAME           The credential name sealed into FILE (default: FILE's name, which is
                          what 'systemd-creds decrypt FILE' expects).
    --tpm2-device DEV     The TPM2 to use (default: systemd's choice, /dev/tpmrm0).
    --tpm2-pcrs PCRS      PCRs to bind to, such as 7 or 0+7 (default: systemd's).
    --pq                  new: a post-quantum hybrid identity (age1pq1...).
    --force               Replace an existing FILE (the key sealed in it is lost).
    --json                Machine-readable output.
    -h, --help            This help.

Examples:
    $ sudo nixseal host-key new -o /var/lib/nixseal/host-key.cred
    age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

    $ sudo nixseal host-key seal --with-key tpm2 -i /etc/ssh/ssh_host_ed25519_key \\
          -o /var/lib/nixseal/ssh-host-key.cred

Exit codes: 0 success, 1 failure (no systemd-creds, no TPM2, does not decrypt), 2 usage error.
`;

const OPTIONS = {
  "with-key": { type: "string" },
  input: { type: "string", short: "i" },
  output: { type: "string", short: "o" },
  name: { type: "string" },
  "tpm2-device": { type: "string" },
  "tpm2-pcrs": { type: "string" },
  pq: { type: "boolean" },
  force: { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const USAGE_HINT = "run 'nixseal host-key --help' for usage";

function usageError(message: string, hint = USAGE_HINT): NixsealError {
  return new NixsealError("USAGE", message, { hint });
}

/** A bad credential name on the command line is a usage error (exit 2). */
function checkName(name: string): void {
  try {
    validateCredentialName(name);
  } catch (e) {
    if (e instanceof NixsealError) throw usageError(e.message, `${e.hint}; or choose the name with --name`);
    throw e;
  }
}

function describeSeal(kind: SealedWith): string {
  switch (kind) {
    case "host":
      return "the host key (no TPM2)";
    case "tpm2":
    case "tpm2-with-public-key":
      return "the TPM2";
    default:
      return "the host key and the TPM2";
  }
}

export const command: Command = {
  name: "host-key",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, USAGE_HINT);
    if (values.help || positionals[0] === "help") {
      process.stdout.write(HELP);
      return 0;
    }
    const [verb, ...rest] = positionals;
    if (verb === undefined) throw usageError("missing subcommand: new, seal or recipient");
    const withKey = values["with-key"] ?? "auto";
    if (!isCredentialKey(withKey)) {
      throw usageError(`unknown --with-key ${quoteArg(withKey, 20)}`, `one of ${CREDENTIAL_KEYS.join(", ")}`);
    }
    const creds: SystemdCredsOptions = { tpm2Device: values["tpm2-device"] };
    if (values.name !== undefined) checkName(values.name);
    switch (verb) {
      case "new":
      case "seal": {
        if (rest.length > 0) throw usageError(`unexpected argument ${quoteArg(rest[0]!)}`);
        const output = values.output;
        if (output === undefined || output === "-") {
          throw usageError(
            "-o FILE is required",
            "the sealed key is written to a file: -o /var/lib/nixseal/host-key.cred",
          );
        }
        if (verb === "new" && values.input !== undefined)
          throw usageError("-i is for seal; new generates the key");
        if (verb === "seal" && values.pq) throw usageError("--pq is for new");
        const name = values.name ?? path.basename(output);
        checkName(name);
        return verb === "new"
          ? newKey(
              output,
              name,
              withKey,
              values.pq === true,
              values["tpm2-pcrs"],
              creds,
              values.json === true,
              values.force === true,
            )
          : sealKey(
              values.input ?? "-",
              output,
              name,
              withKey,
              values["tpm2-pcrs"],
              creds,
              values.json === true,
              values.force === true,
            );
      }
      case "recipient": {
        if (rest.length !== 1) throw usageError("expected exactly one sealed FILE");
        const file = rest[0]!;
        const material = await loadSealedIdentities({ path: file, name: values.name }, creds);
        if (values.json) {
          process.stdout.write(
            `${JSON.stringify({ file, kind: material.kind, recipients: material.recipients })}\n`,
          );
        } else {
          process.stdout.write(material.recipients.map((r) => `${r}\n`).join(""));
        }
        return 0;
      }
      default:
        throw usageError(`unknown subcommand ${quoteArg(verb)}`, "one of: new, seal, recipient");
    }
  },
};

async function newKey(
  output: string,
  name: string,
  withKey: CredentialKey,
  pq: boolean,
  tpm2Pcrs: string | undefined,
  creds: SystemdCredsOptions,
  json: boolean,
  force: boolean,
): Promise<number> {
  const { identity, recipient } = await generateIdentity(pq);
  const created = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  const data = Buffer.from(`# created: ${created}\n# public key: ${recipient}\n${identity}\n`, "utf8");
  let sealed: SealedWith;
  try {
    sealed = await encryptCredential(name, data, {
      ...creds,
      withKey,
      tpm2Pcrs,
      output,
      mode: 0o600,
      noClobber: !force,
    });
  } finally {
    wipe(data);
  }
  if (json) {
    process.stdout.write(`${JSON.stringify({ file: output, name, sealedWith: sealed, recipient })}\n`);
  } else {
    process.stdout.write(`${recipient}\n`);
    if (tty.isatty(2))
      process.stderr.write(`sealed a new identity into ${output} with ${describeSeal(sealed)}\n`);
  }
  return 0;
}

async function sealKey(
  input: string,
  output: string,
  name: string,
  withKey: CredentialKey,
  tpm2Pcrs: string | undefined,
  creds: SystemdCredsOptions,
  json: boolean,
  force: boolean,
): Promise<number> {
  if (input === "-" && tty.isatty(0)) {
    throw usageError(
      "reading the key from the terminal",
      "pipe the key in (nixseal host-key seal -o FILE < KEYFILE) or pass -i KEYFILE",
    );
  }
  const source = input === "-" ? "standard input" : input;
  const data = readKeyFile(input);
  let sealed: SealedWith;
  let recipients: string[];
  let kind: string;
  try {
    // Only a key nixseal can use is sealed: a typo'd path or a locked key fails now, not at boot.
    const material = await parseKeyMaterial(data, source);
    recipients = material.recipients;
    kind = material.kind;
    sealed = await encryptCredential(name, data, {
      ...creds,
      withKey,
      tpm2Pcrs,
      output,
      mode: 0o600,
      noClobber: !force,
    });
  } finally {
    wipe(data);
  }
  if (json) {
    process.stdout.write(`${JSON.stringify({ file: output, name, sealedWith: sealed, kind, recipients })}\n`);
  } else {
    process.stdout.write(recipients.map((r) => `${r}\n`).join(""));
    if (tty.isatty(2)) process.stderr.write(`sealed ${source} into ${output} with ${describeSeal(sealed)}\n`);
  }
  return 0;
}

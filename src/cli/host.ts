/**
 * `nixseal host add NAME --ssh DEST`: records a host's recipient in the repository's hosts.nix
 * and rekeys the secrets that name the host (src/push/host-add.ts does the work).
 */
import { NixsealError } from "../common/index.js";
import {
  type AddHostResult,
  addHost,
  DEFAULT_REMOTE_NIXSEAL,
  DEFAULT_SEALED_FILE,
  destinationProblem,
} from "../push/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printWarning, quoteArg, redactSecrets, safeText } from "./report.js";
import { identitiesOf, keyContext, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal host add NAME --ssh [USER@]HOST [--port N] [--ssh-option OPT]...
                        [--sealed [--sealed-file FILE] [--nixseal-command CMD]] [--replace]
                        [--rules FILE] [-i IDENTITY]... [--json]
       nixseal host add NAME --public-key FILE [--replace] [--rules FILE] [-i IDENTITY]...

Adds a host to the secrets repository: its recipient is recorded as NAME in hosts.nix, beside
secrets.nix (created if missing; one NAME = "recipient"; line per host), and the secrets whose
publicKeys name it are rekeyed so the host can decrypt them. secrets.nix uses hosts.nix with one
line, for example:

    let hosts = import ./hosts.nix; in { "db-password.age".publicKeys = [ hosts.web1 ]; }

The recipient is, by default, the host's ed25519 ssh host key, read with ssh-keyscan and
checked against every known_hosts file ssh would consult for HOST: a different key recorded
there is an error (never silently trusted); with no entry the fingerprint is printed and said
to be unverified: compare it with the host's (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).

With --sealed, 'nixseal host-key new -o FILE' runs on the host over ssh instead (as root, with
systemd-creds): a fresh age identity sealed by the host's credential key and TPM2, whose
recipient is recorded. List FILE in the host's nixseal.sealedIdentityPaths.

With --public-key FILE, no connection is made: the recipient is FILE's one key, a host key's
.pub (ssh-ed25519 or ssh-rsa) or an age1... line. For a host that is not installed yet, such as
one nixos-anywhere will install with --extra-files (docs/deploy-engines.md).

Options:
    --ssh DEST            The host, as ssh takes it ([user@]host or a ~/.ssh/config alias).
    --port N              The ssh port.
    --ssh-option OPT      Passed to ssh as -o OPT (repeatable), e.g. UserKnownHostsFile=FILE.
                          Host key checking cannot be turned off.
    --sealed              Create a sealed identity on the host (see above).
    --sealed-file FILE    Where the host keeps it (default ${DEFAULT_SEALED_FILE}).
    --nixseal-command CMD The nixseal program on the host (default ${DEFAULT_REMOTE_NIXSEAL[0]},
                          else nixseal on the remote PATH).
    --public-key FILE     Record FILE's key (a .pub file or an age1... line); no connection.
    --replace             NAME is already in hosts.nix with another key: record the new one.
${VAULT_OPTIONS_HELP}
Example:
    $ nixseal host add web1 --ssh root@web1.example.com
    nixseal host: web1.example.com:22: host key SHA256:... verified by /home/me/.ssh/known_hosts
    rewritten db-password.age
    nixseal host: web1 = ssh-ed25519 AAAA... in secrets/hosts.nix; 1 secret rekeyed

Exit codes: 0 success, 1 failure (host unreachable, host key differs from known_hosts, NAME taken
by another key, the remote command failed, a secret cannot be decrypted: nothing changed),
2 usage or rules error (bad NAME, no secrets.nix, a hosts.nix nixseal does not rewrite).
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  ssh: { type: "string" },
  port: { type: "string" },
  "ssh-option": { type: "string", multiple: true },
  sealed: { type: "boolean" },
  "sealed-file": { type: "string" },
  "nixseal-command": { type: "string" },
  replace: { type: "boolean" },
  "public-key": { type: "string" },
} as const;

const USAGE_HINT = "run 'nixseal host --help' for usage";

function usageError(message: string, hint = USAGE_HINT): NixsealError {
  return new NixsealError("USAGE", message, { hint });
}

/** ssh options nixseal never passes: they turn host key checking off. */
function sshOptionProblem(option: string): string | null {
  if (/[\n\r\0]/.test(option) || option.length > 1024) return "an ssh option is one line";
  const m = /^\s*(\w+)\s*[= ]\s*(.*?)\s*$/.exec(option);
  if (m === null) return `expected KEY=VALUE, not ${quoteArg(option)}`;
  const [key, value] = [m[1]!.toLowerCase(), m[2]!.toLowerCase()];
  if (key === "stricthostkeychecking" && (value === "no" || value === "off"))
    return "StrictHostKeyChecking=no would trust any host key";
  if ((key === "userknownhostsfile" || key === "globalknownhostsfile") && value === "/dev/null")
    return "a known_hosts file of /dev/null would trust any host key";
  return null;
}

function report(r: AddHostResult, json: boolean): void {
  const prog = "nixseal host";
  if (json) {
    const rekey = r.rekey;
    process.stdout.write(
      `${JSON.stringify({
        host: r.name,
        recipient: r.recipient,
        source: r.source,
        fingerprint: r.fingerprint ?? null,
        verifiedBy: r.verifiedBy ?? null,
        sealedFile: r.sealedFile ?? null,
        remoteCommand: r.remoteCommand ?? null,
        hostsFile: r.hostsFile,
        previous: r.previous ?? null,
        changed: r.changed,
        importsHostsFile: r.importsHostsFile,
        secrets: r.secrets,
        rewritten: rekey?.rewritten ?? [],
        unchanged: rekey?.unchanged ?? [],
        failed: (rekey?.failed ?? []).map((f) => ({
          secret: f.secret,
          file: f.file,
          error: redactSecrets(f.message),
          hint: f.hint === undefined ? null : redactSecrets(f.hint),
        })),
      })}\n`,
    );
  }
  if (r.source === "public-key") {
    // Nothing to verify over the network: the user made or copied the key.
  } else if (r.source === "host-key") {
    if (r.verifiedBy)
      process.stderr.write(
        `${prog}: ${r.address}: host key ${r.fingerprint} verified by ${safeText(r.verifiedBy)}\n`,
      );
    else
      printWarning(
        prog,
        `${r.address}: host key ${r.fingerprint} NOT verified (no known_hosts entry for this host): compare it with the host's, ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`,
      );
  } else {
    process.stderr.write(`${prog}: sealed a new identity into ${safeText(r.sealedFile ?? "")} on the host\n`);
  }
  if (!json && r.rekey)
    process.stdout.write(r.rekey.rewritten.map((n) => `rewritten ${safeText(n)}\n`).join(""));
  if (!r.importsHostsFile) {
    printWarning(
      prog,
      `secrets.nix does not import hosts.nix, so no secret names ${r.name} yet: add 'hosts = import ./hosts.nix;' to its let, then hosts.${r.name} to publicKeys, and run nixseal rekey`,
    );
  } else if (r.secrets.length === 0) {
    printWarning(
      prog,
      `no secret names ${r.name} yet: add hosts.${r.name} to publicKeys in secrets.nix, then run nixseal rekey`,
    );
  }
}

export const command: Command = {
  name: "host",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, USAGE_HINT);
    if (values.help || positionals[0] === "help") {
      process.stdout.write(HELP);
      return 0;
    }
    const [verb, name, ...rest] = positionals;
    if (verb === undefined) throw usageError("missing subcommand: add");
    if (verb !== "add") throw usageError(`unknown subcommand ${quoteArg(verb)}`, "the one subcommand is add");
    if (name === undefined) throw usageError("missing NAME", "nixseal host add NAME --ssh [USER@]HOST");
    if (rest.length > 0) throw usageError(`unexpected argument ${quoteArg(rest[0]!)}`);
    const destination = values.ssh;
    const publicKey = values["public-key"];
    if (publicKey !== undefined) {
      if (destination !== undefined || values.sealed || values.port !== undefined || values["ssh-option"])
        throw usageError(
          "--public-key takes the recipient from the file: no --ssh, --port, --ssh-option or --sealed",
        );
    } else if (destination === undefined)
      throw usageError("--ssh [USER@]HOST (or --public-key FILE) is required");
    const badDestination = destination === undefined ? null : destinationProblem(destination);
    if (badDestination !== null) throw usageError(badDestination);
    let port: number | undefined;
    if (values.port !== undefined) {
      port = /^\d{1,5}$/.test(values.port) ? Number(values.port) : Number.NaN;
      if (!(port >= 1 && port <= 65535))
        throw usageError(`invalid --port ${quoteArg(values.port, 10)}`, "a port is 1 to 65535");
    }
    const options = values["ssh-option"] ?? [];
    const problems = options.map(sshOptionProblem).filter((p): p is string => p !== null);
    if (problems.length > 0) throw NixsealError.many(problems.map((p) => usageError(`--ssh-option: ${p}`)));
    if (!values.sealed && (values["sealed-file"] !== undefined || values["nixseal-command"] !== undefined))
      throw usageError("--sealed-file and --nixseal-command go with --sealed");
    const sealedFile = values["sealed-file"] ?? DEFAULT_SEALED_FILE;
    if (!sealedFile.startsWith("/") || /[\n\r\0]/.test(sealedFile))
      throw usageError("--sealed-file must be an absolute path on the host");
    const remote = values["nixseal-command"];
    if (remote !== undefined && (remote === "" || /[\n\r\0]/.test(remote)))
      throw usageError("--nixseal-command must be one program path");
    const ctx = keyContext();
    let identities: ReturnType<typeof identitiesOf> | null = null;
    const result = await addHost({
      name,
      target: destination === undefined ? undefined : { destination, port, options },
      publicKey,
      sealed: values.sealed
        ? { commands: remote !== undefined ? [remote] : DEFAULT_REMOTE_NIXSEAL, file: sealedFile }
        : undefined,
      replace: values.replace === true,
      rules: values.rules,
      noCache: values["no-cache"] === true,
      identities: () => (identities ??= identitiesOf(values, ctx)),
      ctx,
    });
    const failed = result.rekey?.failed ?? [];
    // A failure prints its JSON as every command's does (main.ts), not the report.
    report(result, values.json === true && failed.length === 0);
    if (failed.length > 0) {
      for (const f of failed) printWarning("nixseal host", `${f.file} (secret "${f.secret}"): ${f.message}`);
      const nothing = result.rekey!.rewritten.length === 0;
      throw new NixsealError(
        "HOST",
        nothing
          ? `cannot rekey ${failed.length} secret${failed.length === 1 ? "" : "s"} for ${name}: nothing was changed, hosts.nix included`
          : `${failed.length} secret${failed.length === 1 ? "" : "s"} could not be rekeyed for ${name}`,
        { hint: "nixseal host add needs an identity that decrypts the host's secrets: pass it with -i" },
      );
    }
    if (!values.json) {
      const n = result.rekey?.rewritten.length ?? 0;
      process.stderr.write(
        `nixseal host: ${name} = ${result.recipient} ${result.changed ? "recorded in" : "already in"} ${safeText(result.hostsFile)}; ${n} secret${n === 1 ? "" : "s"} rekeyed\n`,
      );
    }
    return 0;
  },
};

/**
 * `nixseal init [DIR]`: the main job for a new user. Finds or creates an identity, creates
 * DIR/secrets.nix naming its recipient, prints the next steps. Idempotent; never overwrites.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PluginRecipient, X25519Identity } from "../age/index.js";
import { ioError, NixsealError, writeNewFileAtomic } from "../common/index.js";
import { defaultIdentityPath, loadIdentitiesAsRecipients } from "../keys/index.js";
import { RULES_FILE } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { keyContext } from "./vault-context.js";

const HELP = `Usage: nixseal init [DIR] [-i IDENTITY] [--json]

Sets up a secrets repository in DIR (default: ./secrets):
  1. an identity: -i FILE if given; else ~/.config/nixseal/identity.txt if it exists; else
     ~/.ssh/id_ed25519 if it exists; else a new age identity in ~/.config/nixseal/identity.txt
     (mode 0600);
  2. DIR/secrets.nix (agenix's format) naming that identity's recipient.
Safe to run again: nothing that exists is overwritten.

Options:
    -i, --identity FILE   Use this identity file (age or ssh private key).
    --json                Print what was found or created as JSON.
    -h, --help            Show this help.

Example:
    $ nixseal init
    created identity ~/.config/nixseal/identity.txt (age1...)
    created secrets/secrets.nix
    $ nixseal edit secrets/db-password.age    # after adding it to secrets.nix

Exit codes: 0 success, 1 failure, 2 usage error.
`;

const OPTIONS = {
  identity: { type: "string", short: "i" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function tilde(p: string): string {
  const home = os.homedir();
  return p.startsWith(`${home}/`) ? `~/${p.slice(home.length + 1)}` : p;
}

/** The identity to use: -i, the nixseal identity, ~/.ssh/id_ed25519, or a new one. */
async function findOrCreateIdentity(
  explicit: string | undefined,
): Promise<{ file: string; recipient: string; created: boolean }> {
  const home = os.homedir();
  const candidates = explicit
    ? [explicit]
    : [defaultIdentityPath(), path.join(home, ".ssh", "id_ed25519")].filter((f) => fs.existsSync(f));
  if (candidates.length > 0) {
    const file = candidates[0]!;
    // The recipient of an encrypted ssh key is read from its public part: no passphrase needed.
    const [recipient] = await loadIdentitiesAsRecipients([file], { ...keyContext(), passphrase: undefined });
    if (!recipient) throw new NixsealError("AGE_IDENTITY", `no identity in ${file}`, { file });
    const text = String(recipient);
    if (recipient instanceof PluginRecipient) {
      throw new NixsealError("AGE_IDENTITY", `cannot use ${file} as the repository identity`, {
        file,
        hint: "pass an age identity file or an ssh ed25519/rsa key with -i",
      });
    }
    return { file, recipient: text, created: false };
  }
  const file = defaultIdentityPath();
  // ~/.config (or $XDG_CONFIG_HOME) may be created, but never the home directory that holds it.
  const holder = path.dirname(path.dirname(path.dirname(file)));
  if (!fs.statSync(holder, { throwIfNoEntry: false })?.isDirectory()) {
    throw new NixsealError("IO", `cannot create the identity ${file}: ${holder} does not exist`, {
      file,
      hint: "set HOME (or XDG_CONFIG_HOME) to an existing directory, or pass -i FILE with an identity",
    });
  }
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ioError("create", path.dirname(file), e);
  }
  const id = X25519Identity.generate();
  const recipient = id.recipient().toString();
  const created = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  const data = Buffer.from(`# created: ${created}\n# public key: ${recipient}\n${id.encode()}\n`, "utf8");
  try {
    writeNewFileAtomic(file, data, 0o600);
  } finally {
    data.fill(0);
  }
  return { file, recipient, created: true };
}

function rulesTemplate(recipient: string, who: string): string {
  return `# Who may read which secret: nixseal (and agenix) rules.
# Add a secret:   "db-password.age".publicKeys = users ++ hosts;
# then:           nixseal edit db-password.age
let
  # ${who}, added by nixseal init
  me = ${JSON.stringify(recipient)};
  users = [ me ];

  # Machines that decrypt at activation: their ssh host keys, e.g.
  #   web = "ssh-ed25519 AAAA...";   (ssh-keyscan -t ed25519 web)
  hosts = [ ];
in
{
}
`;
}

export const command: Command = {
  name: "init",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal init --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length > 1)
      throw new NixsealError("USAGE", "too many arguments", { hint: "nixseal init [DIR]" });
    const dir = path.resolve(positionals[0] ?? "secrets");
    const identity = await findOrCreateIdentity(values.identity);
    const rulesFile = path.join(dir, RULES_FILE);
    let rulesCreated = false;
    let listed = true;
    if (fs.existsSync(rulesFile)) {
      // Never overwrite: only tell whether our recipient is in it.
      const text = fs.readFileSync(rulesFile, "utf8");
      listed = text.includes(identity.recipient.split(" ").slice(0, 2).join(" "));
    } else {
      try {
        fs.mkdirSync(dir, { recursive: true });
      } catch (e) {
        throw ioError("create", dir, e);
      }
      const who = `${os.userInfo().username}@${os.hostname()}`;
      writeNewFileAtomic(rulesFile, Buffer.from(rulesTemplate(identity.recipient, who)), 0o644);
      rulesCreated = true;
    }
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({
          identity: { file: identity.file, recipient: identity.recipient, created: identity.created },
          rules: { file: rulesFile, created: rulesCreated, listsIdentity: listed },
        })}\n`,
      );
      return 0;
    }
    const lines = [
      `${identity.created ? "created" : "using"} identity ${tilde(identity.file)}`,
      `  recipient: ${identity.recipient}`,
      `${rulesCreated ? "created" : "kept existing"} ${tilde(rulesFile)}`,
    ];
    if (!listed) {
      lines.push(
        `  note: this recipient is not in ${tilde(rulesFile)} yet; add it to the publicKeys of your secrets`,
      );
    }
    // Relative where the directory is at or under the working directory; absolute otherwise
    // ("../../tmp/x" is harder to read and to copy than "/tmp/x").
    const under = path.relative(process.cwd(), dir);
    const rel = under === "" ? "." : under.startsWith("..") || path.isAbsolute(under) ? dir : under;
    lines.push(
      "",
      "Next steps:",
      `  1. add a secret to ${path.join(rel, RULES_FILE)}:   "db-password.age".publicKeys = users;`,
      `  2. nixseal edit ${path.join(rel, "db-password.age")}`,
      "  3. commit secrets.nix and the .age files; keep the identity out of git (and back it up)",
    );
    process.stdout.write(`${lines.join("\n")}\n`);
    return 0;
  },
};

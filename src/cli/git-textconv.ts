/**
 * `nixseal git-textconv FILE` (internal): git's textconv filter for the "nixseal" diff driver
 * that `nixseal git-setup` registers. Prints the decrypted content for `git diff`, or a one-line
 * placeholder when it cannot decrypt. It never prompts (git diff may run without a terminal, and
 * a prompt per file would be unbearable): a passphrase-protected key is used only with
 * NIXSEAL_PASSPHRASE_FILE, plugins get the non-interactive UI. Plaintext goes to stdout (git's
 * pipe) only, never to a file; git-setup turns git's textconv cache off for the same reason.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import {
  decrypt,
  describeStanzas,
  type Identity,
  nonInteractivePluginUI,
  readHeader,
  type Stanza,
} from "../age/index.js";
import { NixsealError, wipe, writeAllSync } from "../common/index.js";
import { type KeyContext, loadDefaultIdentities } from "../keys/index.js";
import { MAX_SECRET_FILE_SIZE } from "../vault/index.js";
import type { Command } from "./main.js";
import { sanitize } from "./report.js";
import { askPassphrase } from "./terminal.js";

const HELP = `Usage: nixseal git-textconv FILE

Internal: the textconv command of git's "nixseal" diff driver (set up by 'nixseal git-setup').
Prints FILE decrypted with your default identities, or a placeholder line
"<nixseal: cannot decrypt: REASON>" when it cannot. Never prompts: a passphrase-protected key
is used only if NIXSEAL_PASSPHRASE_FILE names a file holding its passphrase.

Example:
    $ git config diff.nixseal.textconv
    '/usr/bin/node' '/opt/nixseal/dist/bundle/main.js' git-textconv
    $ git diff secrets/db-password.age

Exit codes: 0 (also with the placeholder, so git diff keeps going), 2 usage error.
`;

/**
 * An identity that, for display, treats "I would need a passphrase / a plugin prompt" as "not
 * mine" and remembers it, so the other identities are still tried and the placeholder can say why.
 */
class NonInteractiveIdentity implements Identity {
  readonly description: string;
  locked: NixsealError | null = null;
  constructor(private readonly inner: Identity) {
    this.description = inner.description;
  }
  async unwrapFileKey(stanzas: readonly Stanza[]): Promise<Uint8Array | null> {
    try {
      return await this.inner.unwrapFileKey(stanzas);
    } catch (e) {
      if (e instanceof NixsealError && (e.code === "KEY_ENCRYPTED" || e.code === "AGE_PLUGIN")) {
        this.locked = e;
        return null;
      }
      throw e;
    }
  }
}

function reasonOf(e: unknown, locked: NixsealError | null): string {
  if (!(e instanceof NixsealError)) return "internal error";
  switch (e.code) {
    case "AGE_NO_MATCH":
      if (locked?.code === "KEY_ENCRYPTED") {
        return "the matching key is passphrase-protected (set NIXSEAL_PASSPHRASE_FILE to use it here)";
      }
      if (locked?.code === "AGE_PLUGIN") return "the matching plugin needs interaction";
      return /no identity found/.test(e.message) ? "no identity found" : "no matching identity";
    case "AGE_HEADER":
    case "AGE_ARMOR":
      return "not a valid age file";
    case "AGE_HMAC":
    case "AGE_PAYLOAD":
    case "AGE_STANZA":
      return "the file is damaged or was modified";
    case "KEY_ENCRYPTED":
      return "an identity is passphrase-protected (set NIXSEAL_PASSPHRASE_FILE to use it here)";
    case "AGE_IDENTITY":
    case "KEY_FORMAT":
    case "KEY_UNSUPPORTED":
      return "an identity file cannot be used (run 'nixseal decrypt' for details)";
    case "IO":
      return "cannot read the file";
    default:
      return e.code.toLowerCase();
  }
}

/** What can be said about a file without decrypting it: a short hash and its recipients. */
function publicSummary(data: Uint8Array): string {
  const hash = createHash("sha256").update(data).digest("hex").slice(0, 16);
  try {
    return `<nixseal: ciphertext sha256:${hash}, recipients: ${describeStanzas(readHeader(data).stanzas)}>`;
  } catch {
    return `<nixseal: sha256:${hash}>`;
  }
}

function keyContext(): KeyContext {
  // A passphrase only from a file: never /dev/tty during git diff.
  const fromFile = process.env.NIXSEAL_PASSPHRASE_FILE ? (what: string) => askPassphrase(what) : undefined;
  return { passphrase: fromFile, pluginUI: nonInteractivePluginUI };
}

function out(data: Uint8Array | string): void {
  writeAllSync(1, typeof data === "string" ? Buffer.from(data, "utf8") : data);
}

export async function textconv(file: string): Promise<void> {
  let data: Buffer;
  try {
    const st = fs.statSync(file);
    if (st.size > MAX_SECRET_FILE_SIZE) throw new NixsealError("IO", "too large");
    data = fs.readFileSync(file);
  } catch (e) {
    out(
      `<nixseal: cannot decrypt: ${reasonOf(e instanceof NixsealError ? e : new NixsealError("IO", ""), null)}>\n`,
    );
    return;
  }
  let wrapped: NonInteractiveIdentity[] = [];
  let plain: Uint8Array | undefined;
  try {
    const ids = await loadDefaultIdentities({ flags: [] }, keyContext());
    wrapped = ids.map((i) => new NonInteractiveIdentity(i));
    plain = await decrypt(data, wrapped);
    out(plain);
  } catch (e) {
    const locked = wrapped.find((w) => w.locked !== null)?.locked ?? null;
    out(`<nixseal: cannot decrypt: ${sanitize(reasonOf(e, locked))}>\n${publicSummary(data)}\n`);
  } finally {
    wipe(plain);
  }
}

export const command: Command = {
  name: "git-textconv",
  errorExitCode: 2,
  async run(argv) {
    if (argv.length === 1 && (argv[0] === "-h" || argv[0] === "--help")) {
      process.stdout.write(HELP);
      return 0;
    }
    if (argv.length !== 1) {
      throw new NixsealError("USAGE", "git-textconv takes exactly one FILE", {
        hint: "git runs this for you; set it up with 'nixseal git-setup'",
      });
    }
    await textconv(argv[0]!);
    return 0;
  },
};

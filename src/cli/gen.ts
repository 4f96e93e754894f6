/**
 * `nixseal gen KIND`: the built-in generators that generator scripts call (docs/generators.md,
 * "Built-in generators"): passwords, random hex, age, ssh-ed25519 and WireGuard keys, and
 * sha512-crypt hashes. Each writes its secret file (0600) and its public file (0644) into $out
 * or --out DIR, never replacing a file; without a directory the secret goes to stdout, never to
 * a terminal. Secrets come from the random generator or stdin, never from argv or the
 * environment. The formats live below: src/common/ (text, sha-crypt), src/keys/ (key pairs).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tty from "node:tty";
import {
  checkShaCryptParameters,
  ioError,
  MAX_PASSWORD_LENGTH,
  NixsealError,
  PASSWORD_CHARSETS,
  type PasswordCharset,
  randomCharacters,
  randomHex,
  randomShaCryptSalt,
  readAll,
  SHA_CRYPT_DEFAULT_ROUNDS,
  SHA_CRYPT_MAX_PASSWORD,
  sha512Crypt,
  wipe,
  writeAllSync,
  writeNewFileAtomic,
} from "../common/index.js";
import { newAgeKeyPair, newSshEd25519KeyPair, newWireGuardKeyPair } from "../keys/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { askValue } from "./terminal.js";

const HELP = `Usage:
    nixseal gen password [--length N] [--charset alnum|base64|hex] [OUTPUT]
    nixseal gen hex N [OUTPUT]
    nixseal gen age-key [OUTPUT]
    nixseal gen ssh-ed25519 [--comment TEXT] [OUTPUT]
    nixseal gen wireguard [OUTPUT]
    nixseal gen hash --sha512-crypt [--rounds N] [--salt SALT] [OUTPUT]  (password on stdin)

    OUTPUT: [--out DIR] [--name NAME] [--public-name NAME] [--json]

Built-in generators for generator scripts (docs/generators.md). Each writes files into a
directory: --out DIR, else $out (what 'nixseal generate' gives a script). Secret files are
created 0600, public files 0644 (less the umask), each with its final mode; an existing file is
never replaced (exit 1, nothing written).

    password     NAME (default "password"): N characters (default 32), each drawn uniformly
                 from the set: alnum (A-Z a-z 0-9), base64 (A-Z a-z 0-9 + /) or hex (0-9 a-f).
    hex          NAME (default "hex"): N random bytes (1 to 65536) as lowercase hex.
    age-key      NAME (default "key"): an age identity file as age-keygen writes it;
                 NAME.pub: its recipient (age1...).
    ssh-ed25519  NAME (default "key"): an unencrypted OpenSSH ed25519 private key;
                 NAME.pub: its public key line ("ssh-ed25519 AAAA... TEXT").
    wireguard    NAME (default "key"): a private key as 'wg genkey' prints it;
                 NAME.pub: its public key as 'wg pubkey' prints it.
    hash         NAME (default "hash"): the sha512-crypt ($6$) hash of the password read
                 from stdin (one line; a final newline is not part of it), for NixOS's
                 users.users.<name>.hashedPasswordFile. At a terminal it is asked, twice,
                 hidden. Default rounds: ${SHA_CRYPT_DEFAULT_ROUNDS} (as mkpasswd and openssl passwd -6).

Values (password, hex, hash) are written without a final newline; key files end with one, as
their tools write them.

Without --out and without $out, the secret file's content goes to stdout, only when stdout is
not a terminal (a pipe or a file: secrets stay out of terminal scrollback; a hash may be shown),
and a public part to stderr as "Public key: ...".

Options:
    --out DIR          The directory to write into (it must exist).
    --name NAME        The secret file's name (the public file is NAME.pub): a plain file name.
    --public-name PUB  Key pairs: the public file's name instead of NAME.pub.
    --length N         password: the number of characters (1 to ${MAX_PASSWORD_LENGTH}, default 32).
    --charset SET      password: alnum (default), base64 or hex.
    --comment TEXT     ssh-ed25519: the key's comment (default: none).
    --sha512-crypt     hash: the hash scheme (the only one; required, so scripts say it).
    --rounds N         hash: sha512-crypt rounds (1000 to 999999999).
    --salt SALT        hash: the salt (1 to 16 of a-z A-Z 0-9 . /; default: 16 random).
    --json             Print {"files": [{"name", "path", "secret"}]} for the files written
                       (needs a directory).
    -h, --help         This help.

Examples:
    # in a generator script (files.password, files.hash):
    nixseal gen password --length 24
    nixseal gen hash --sha512-crypt < "$out/password"

    $ nixseal gen wireguard --out ./wg && cat wg/key.pub
    xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=

    $ nixseal gen hex 32 | wl-copy

Exit codes: 0 success, 1 failure (a file exists, the directory cannot be written, bad stdin),
2 usage error (unknown KIND or option, bad N, a secret asked to print to a terminal).
`;

const OPTIONS = {
  out: { type: "string" },
  name: { type: "string" },
  "public-name": { type: "string" },
  length: { type: "string" },
  charset: { type: "string" },
  comment: { type: "string" },
  "sha512-crypt": { type: "boolean" },
  rounds: { type: "string" },
  salt: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

type OptionName = keyof typeof OPTIONS;

const KINDS = ["password", "hex", "age-key", "ssh-ed25519", "wireguard", "hash"] as const;
type Kind = (typeof KINDS)[number];

/** The options each KIND takes besides the common ones. */
const KIND_OPTIONS: Record<Kind, readonly OptionName[]> = {
  password: ["length", "charset"],
  hex: [],
  "age-key": [],
  "ssh-ed25519": ["comment"],
  wireguard: [],
  hash: ["sha512-crypt", "rounds", "salt"],
};
const COMMON_OPTIONS: readonly OptionName[] = ["out", "name", "json", "help"];
/** The kinds with a public file (--public-name). */
const KEY_PAIRS: readonly Kind[] = ["age-key", "ssh-ed25519", "wireguard"];

const DEFAULT_NAME: Record<Kind, string> = {
  password: "password",
  hex: "hex",
  "age-key": "key",
  "ssh-ed25519": "key",
  wireguard: "key",
  hash: "hash",
};

const HELP_HINT = "run 'nixseal gen --help' for usage";
/** A plain file name: no path, no leading dot (so never "." or ".."), at most 255 bytes. */
const FILE_NAME = /^[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]{0,250}$/;

interface Output {
  /** The secret file's content. */
  secret: Uint8Array;
  /** The public file's content, if the kind has one. */
  public?: string;
}

function usage(message: string, hint = HELP_HINT): NixsealError {
  return new NixsealError("USAGE", message, { hint });
}

function integer(value: string, what: string, hint: string): number {
  if (!/^[0-9]{1,10}$/.test(value)) throw usage(`${what} must be a whole number`, hint);
  return Number(value);
}

/** The password to hash: stdin less one final newline, or asked twice at a terminal. */
async function readPassword(): Promise<Uint8Array> {
  if (tty.isatty(0)) {
    const first = Buffer.from(await askValue("Password:", true), "utf8");
    const second = Buffer.from(await askValue("Password again:", true), "utf8");
    const same = first.equals(second);
    wipe(second);
    if (!same) {
      wipe(first);
      throw new NixsealError("USAGE", "the passwords didn't match", { hint: "try again" });
    }
    if (first.length === 0) throw new NixsealError("USAGE", "the password is empty", { hint: "type one" });
    return first;
  }
  const data = await readAll(0, SHA_CRYPT_MAX_PASSWORD + 2);
  if (data === null) {
    throw new NixsealError("USAGE", `the password on stdin is longer than ${SHA_CRYPT_MAX_PASSWORD} bytes`, {
      hint: "give one password on one line",
    });
  }
  let end = data.length;
  if (end > 0 && data[end - 1] === 0x0a) end--;
  if (end > 0 && data[end - 1] === 0x0d) end--;
  const password = Uint8Array.from(data.subarray(0, end));
  const bad = data.subarray(0, end).findIndex((b) => b === 0x0a || b === 0x0d || b === 0);
  data.fill(0);
  if (password.length === 0 || bad !== -1) {
    wipe(password);
    throw new NixsealError(
      "USAGE",
      password.length === 0
        ? "no password on stdin"
        : "the password on stdin has more than one line or a NUL byte",
      { hint: "pipe one password on one line, e.g. nixseal gen hash --sha512-crypt < password-file" },
    );
  }
  return password;
}

async function generate(
  kind: Kind,
  values: Partial<Record<OptionName, string | boolean>>,
  positionals: string[],
) {
  const extra = kind === "hex" ? 1 : 0;
  if (positionals.length > extra) throw usage(`too many arguments for 'nixseal gen ${kind}'`);
  switch (kind) {
    case "password": {
      const lengthHint = `give --length N with N from 1 to ${MAX_PASSWORD_LENGTH}`;
      const length =
        values.length === undefined ? 32 : integer(String(values.length), "--length", lengthHint);
      const charset = String(values.charset ?? "alnum");
      if (!Object.hasOwn(PASSWORD_CHARSETS, charset)) {
        throw usage(`unknown --charset ${JSON.stringify(charset.slice(0, 20))}`, "use alnum, base64 or hex");
      }
      return { secret: randomCharacters(length, PASSWORD_CHARSETS[charset as PasswordCharset]) };
    }
    case "hex": {
      const hint = "e.g. 'nixseal gen hex 32' for 32 bytes (64 hex digits)";
      if (positionals[0] === undefined) throw usage("'nixseal gen hex' needs the number of bytes N", hint);
      return { secret: randomHex(integer(positionals[0], "N", hint)) };
    }
    case "age-key": {
      const pair = await newAgeKeyPair();
      return { secret: pair.secret, public: pair.public };
    }
    case "ssh-ed25519": {
      const pair = newSshEd25519KeyPair(String(values.comment ?? ""));
      return { secret: pair.secret, public: pair.public };
    }
    case "wireguard": {
      const pair = newWireGuardKeyPair();
      return { secret: pair.secret, public: pair.public };
    }
    case "hash": {
      if (values["sha512-crypt"] !== true) {
        throw usage("'nixseal gen hash' needs the scheme: --sha512-crypt", "nixseal gen hash --sha512-crypt");
      }
      const rounds =
        values.rounds === undefined
          ? SHA_CRYPT_DEFAULT_ROUNDS
          : integer(String(values.rounds), "--rounds", "give --rounds N with N from 1000 to 999999999");
      const salt = values.salt === undefined ? randomShaCryptSalt() : String(values.salt);
      // Checked before the password is read.
      checkShaCryptParameters(salt, rounds);
      const password = await readPassword();
      try {
        return { secret: Buffer.from(sha512Crypt(password, salt, rounds), "latin1") };
      } finally {
        wipe(password);
      }
    }
  }
}

/** The directory to write into: --out, else $out (a generator's), else none (stdout). */
function outputDirectory(out: string | undefined): string | null {
  const dir = out ?? process.env.out;
  if (dir === undefined || dir === "") return null;
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    const error = ioError("use the output directory", dir, e);
    if (out !== undefined) throw error;
    // $out is also set in `nix develop` shells, to a directory that may not exist.
    throw new NixsealError("IO", `${error.message} (from $out)`, {
      file: dir,
      hint: "$out is set in this environment: unset it, or give --out DIR",
    });
  }
  if (!st.isDirectory()) {
    throw new NixsealError("IO", `the output directory ${dir} is not a directory`, {
      file: dir,
      hint: out === undefined ? "$out is set: unset it or give --out DIR" : "give an existing directory",
    });
  }
  return dir;
}

interface Written {
  name: string;
  path: string;
  secret: boolean;
}

/** Writes the files, each new with its final mode; all or nothing. */
function writeFiles(dir: string, name: string, publicName: string, output: Output): Written[] {
  const files: { name: string; data: Uint8Array; mode: number; secret: boolean }[] = [
    { name, data: output.secret, mode: 0o600, secret: true },
  ];
  if (output.public !== undefined) {
    files.push({ name: publicName, data: Buffer.from(output.public, "utf8"), mode: 0o644, secret: false });
  }
  const existing = files.map((f) => path.join(dir, f.name)).filter((p) => fs.existsSync(p) || isLink(p));
  if (existing.length > 0) {
    throw NixsealError.many(
      existing.map(
        (p) =>
          new NixsealError("IO", `${p} exists; nixseal gen never replaces a file`, {
            file: p,
            hint: "remove it, or give another --name or --out",
          }),
      ),
    );
  }
  const written: Written[] = [];
  try {
    for (const f of files) {
      const p = path.join(dir, f.name);
      writeNewFileAtomic(p, f.data, f.mode);
      written.push({ name: f.name, path: p, secret: f.secret });
    }
  } catch (e) {
    // Only the files this run created are removed: nothing half-written stays.
    for (const w of written) fs.rmSync(w.path, { force: true });
    throw e;
  }
  return written;
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

export const command: Command = {
  name: "gen",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, HELP_HINT);
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const [kindArg, ...rest] = positionals;
    if (kindArg === undefined) throw usage("no KIND given", `one of ${KINDS.join(", ")}`);
    if (!(KINDS as readonly string[]).includes(kindArg)) {
      throw usage(`unknown KIND ${JSON.stringify(kindArg.slice(0, 20))}`, `one of ${KINDS.join(", ")}`);
    }
    const kind = kindArg as Kind;
    const misplaced = (Object.keys(values) as OptionName[]).filter(
      (o) =>
        !COMMON_OPTIONS.includes(o) &&
        !KIND_OPTIONS[kind].includes(o) &&
        !(o === "public-name" && KEY_PAIRS.includes(kind)),
    );
    if (misplaced.length > 0) {
      throw usage(
        `'nixseal gen ${kind}' does not take ${misplaced.map((o) => `--${o}`).join(", ")}`,
        HELP_HINT,
      );
    }
    const name = values.name ?? DEFAULT_NAME[kind];
    const publicName = values["public-name"] ?? `${name}.pub`;
    for (const [option, n] of [
      ["--name", name],
      ["--public-name", publicName],
    ] as const) {
      if (!FILE_NAME.test(n)) {
        throw usage(
          `${option} ${JSON.stringify(n.slice(0, 40))} is not a plain file name`,
          "letters, digits and . _ @ + = - (not first: .), at most 251 characters",
        );
      }
    }
    if (publicName === name) throw usage("--public-name is the secret file's name", "give two names");
    const dir = outputDirectory(values.out);
    if (dir === null && values.json) throw usage("--json lists the files written", "give --out DIR");
    const secretToTerminal = dir === null && tty.isatty(1);
    if (secretToTerminal && kind !== "hash") {
      throw usage(
        "refusing to print a secret to a terminal",
        "give --out DIR, or redirect stdout (> FILE, | wl-copy)",
      );
    }
    const output: Output = await generate(kind, values, rest);
    try {
      if (dir === null) {
        writeAllSync(1, output.secret);
        if (secretToTerminal) process.stdout.write("\n");
        if (output.public !== undefined) process.stderr.write(`Public key: ${output.public}`);
        return 0;
      }
      const written = writeFiles(dir, name, publicName, output);
      if (values.json) process.stdout.write(`${JSON.stringify({ files: written })}\n`);
      return 0;
    } finally {
      wipe(output.secret);
    }
  },
};

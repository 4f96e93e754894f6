/**
 * Built-in generators (docs/generators.md, "Built-in generators in generators.nix"): the kinds of
 * `nixseal gen` (password, hex, age-key, ssh-ed25519, wireguard, hash), run in-process by
 * `nixseal generate` instead of a script: no process is started, the values never touch a disk,
 * and they are encrypted in memory like a script's outputs. The files each kind produces are the
 * ones `nixseal gen` writes with its default names.
 */
import {
  integerField,
  isObject,
  type Json,
  MAX_PASSWORD_LENGTH,
  PASSWORD_CHARSETS,
  type PasswordCharset,
  type Problems,
  randomCharacters,
  randomHex,
  randomShaCryptSalt,
  readObject,
  SHA_CRYPT_DEFAULT_ROUNDS,
  SHA_CRYPT_MAX_PASSWORD,
  sha512Crypt,
  shown,
  stringField,
  typeName,
  wipe,
} from "../common/index.js";

export const BUILTIN_KINDS = ["password", "hex", "age-key", "ssh-ed25519", "wireguard", "hash"] as const;
export type BuiltinKind = (typeof BUILTIN_KINDS)[number];

/** Where `hash` reads the password: a dependency's file or a prompt's answer. */
export type HashInput = { dependency: string; file: string } | { prompt: string };

export type Builtin =
  | { kind: "password"; length: number; charset: PasswordCharset }
  | { kind: "hex"; bytes: number }
  | { kind: "age-key" }
  | { kind: "ssh-ed25519"; comment: string }
  | { kind: "wireguard" }
  | { kind: "hash"; input: HashInput; rounds: number };

/** The files a builtin produces (as `nixseal gen` names them). */
export function builtinFiles(b: Builtin): string[] {
  switch (b.kind) {
    case "password":
      return ["password"];
    case "hex":
      return ["hex"];
    case "hash":
      return ["hash"];
    default:
      return ["key", "key.pub"];
  }
}

const BUILTIN_HINT =
  'write builtin = "password"; or builtin.password = { length = 32; }; (kinds: password, hex, age-key, ssh-ed25519, wireguard, hash; see docs/generators.md)';

const HASH_INPUT = /^\$(?:in\/([A-Za-z_][A-Za-z0-9_-]{0,63})\/(.+)|prompts\/([A-Za-z_][A-Za-z0-9_-]{0,63}))$/;

const OPTIONS: Record<BuiltinKind, Record<string, { required: boolean; default?: unknown; read: never }>> = {
  password: {
    length: {
      required: false,
      default: 32,
      read: integerField(1, MAX_PASSWORD_LENGTH, "the number of characters, e.g. length = 32;") as never,
    },
    charset: {
      required: false,
      default: "alnum",
      read: stringField(
        (s) => (Object.hasOwn(PASSWORD_CHARSETS, s) ? null : "is not alnum, base64 or hex"),
        'write charset = "alnum"; ("base64", "hex")',
      ) as never,
    },
  },
  hex: {
    bytes: {
      required: false,
      default: 32,
      read: integerField(1, 65536, "the number of random bytes, e.g. bytes = 32;") as never,
    },
  },
  "age-key": {},
  "ssh-ed25519": {
    comment: {
      required: false,
      default: "",
      read: stringField(
        (s) => (s.length > 255 || /[\0-\x1f\x7f]/.test(s) ? "is too long or has control characters" : null),
        'a short comment, e.g. comment = "root@web1";',
      ) as never,
    },
  },
  wireguard: {},
  hash: {
    sha512Crypt: {
      required: true,
      read: stringField(
        (s) => (HASH_INPUT.test(s) ? null : "is not $in/<dependency>/<file> or $prompts/<prompt>"),
        'write sha512Crypt = "$in/db-password/password"; or "$prompts/password"; (a Nix string: $ is literal)',
      ) as never,
    },
    rounds: {
      required: false,
      default: SHA_CRYPT_DEFAULT_ROUNDS,
      read: integerField(1000, 999_999_999, "rounds = 5000; (as mkpasswd and openssl passwd -6)") as never,
    },
  },
};

/**
 * Reads `builtin`: a kind name, or an attribute set with exactly one kind and its options.
 * null when it is null; undefined after reporting a problem.
 */
export function readBuiltin(v: Json | null, at: string, p: Problems): Builtin | null | undefined {
  if (v === null) return null;
  let kind: string;
  let options: Json;
  if (typeof v === "string") {
    kind = v;
    options = {};
  } else if (isObject(v) && Object.keys(v).length === 1) {
    kind = Object.keys(v)[0]!;
    options = v[kind]!;
  } else {
    p.add(at, `must be a kind name or an attribute set with one kind, not ${typeName(v)}`, BUILTIN_HINT);
    return undefined;
  }
  if (!(BUILTIN_KINDS as readonly string[]).includes(kind)) {
    p.add(at, `"${shown(kind)}" is not a built-in kind`, BUILTIN_HINT);
    return undefined;
  }
  const k = kind as BuiltinKind;
  const where = typeof v === "string" ? at : `${at}.${k}`;
  const r = readObject(options, where, OPTIONS[k], p, BUILTIN_HINT);
  if (r === null) return undefined;
  switch (k) {
    case "password":
      return { kind: k, length: r.get("length") as number, charset: r.get("charset") as PasswordCharset };
    case "hex":
      return { kind: k, bytes: r.get("bytes") as number };
    case "ssh-ed25519":
      return { kind: k, comment: r.get("comment") as string };
    case "hash": {
      const m = HASH_INPUT.exec(r.get("sha512Crypt") as string)!;
      const input: HashInput = m[3] !== undefined ? { prompt: m[3] } : { dependency: m[1]!, file: m[2]! };
      return { kind: k, input, rounds: r.get("rounds") as number };
    }
    default:
      return { kind: k };
  }
}

/** What a builtin run gives: its files, or why it failed (no secret in the message). */
export type BuiltinResult = { ok: true; files: Map<string, Uint8Array> } | { ok: false; message: string };

/** The password to hash: the value less one final newline; one line, no NUL, not empty. */
function passwordOf(value: Uint8Array): Uint8Array | string {
  let end = value.length;
  if (end > 0 && value[end - 1] === 0x0a) end--;
  if (end > 0 && value[end - 1] === 0x0d) end--;
  if (end === 0) return "is empty";
  if (end > SHA_CRYPT_MAX_PASSWORD) return `is longer than ${SHA_CRYPT_MAX_PASSWORD} bytes`;
  const body = value.subarray(0, end);
  if (body.some((b) => b === 0x0a || b === 0x0d || b === 0)) return "has more than one line or a NUL byte";
  return Uint8Array.from(body);
}

/**
 * Runs a builtin. `inputs` are the dependencies' files by generator name, `answers` the prompts'
 * answers (both plaintext, owned by the caller).
 */
export async function runBuiltin(
  b: Builtin,
  inputs: ReadonlyMap<string, ReadonlyMap<string, Uint8Array>>,
  answers: ReadonlyMap<string, Uint8Array>,
): Promise<BuiltinResult> {
  const keys = await import("../keys/index.js");
  const pair = (k: { secret: Uint8Array; public: string }) =>
    new Map([
      ["key", k.secret],
      ["key.pub", Buffer.from(k.public, "utf8") as Uint8Array],
    ]);
  switch (b.kind) {
    case "password":
      return {
        ok: true,
        files: new Map([["password", randomCharacters(b.length, PASSWORD_CHARSETS[b.charset])]]),
      };
    case "hex":
      return { ok: true, files: new Map([["hex", randomHex(b.bytes)]]) };
    case "age-key":
      return { ok: true, files: pair(await keys.newAgeKeyPair()) };
    case "ssh-ed25519":
      return { ok: true, files: pair(keys.newSshEd25519KeyPair(b.comment)) };
    case "wireguard":
      return { ok: true, files: pair(keys.newWireGuardKeyPair()) };
    case "hash": {
      const what =
        "prompt" in b.input ? `$prompts/${b.input.prompt}` : `$in/${b.input.dependency}/${b.input.file}`;
      const value =
        "prompt" in b.input ? answers.get(b.input.prompt) : inputs.get(b.input.dependency)?.get(b.input.file);
      if (value === undefined) return { ok: false, message: `builtin hash: ${what} has no value` };
      const password = passwordOf(value);
      if (typeof password === "string") return { ok: false, message: `builtin hash: ${what} ${password}` };
      try {
        const hash = sha512Crypt(password, randomShaCryptSalt(), b.rounds);
        return { ok: true, files: new Map([["hash", Buffer.from(hash, "latin1") as Uint8Array]]) };
      } finally {
        wipe(password);
      }
    }
  }
}

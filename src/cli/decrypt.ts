/** `nixseal decrypt NAME`: a secret to stdout, or to -o FILE (created 0600, atomically). */
import { ioError, NixsealError, wipe, writeAllSync, writeFileAtomic } from "../common/index.js";
import {
  closeDocument,
  formatGoFloat,
  formatTreePath,
  isBranch,
  JsonStore,
  parseTreePath,
  SopsBranch,
  SopsComment,
  type SopsStore,
  SopsTime,
  type SopsValue,
  valueAt,
  YamlStore,
} from "../sops/index.js";
import { decryptSecret, requireSecret } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { displayPath, openSopsFile, SOPS_OPTIONS, SOPS_OPTIONS_HELP, sopsStoreOf } from "./sops-file.js";
import { identitiesOf, keyContext, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const HELP = `Usage: nixseal decrypt NAME [-o FILE] [--rules FILE] [-i IDENTITY]...
       nixseal decrypt FILE.yaml [--extract '["key"]["sub"]'] [--ignore-mac] [-o FILE]

Decrypts a secret to standard output, or to FILE (created with mode 0600 and replaced only once
decryption succeeded). NAME is the name in secrets.nix or a path to the file.

A FILE with a sops extension (.yaml, .yml, .json, .env, .ini) that secrets.nix does not list is
a sops file: the decrypted document is written in the same format, its MAC verified.

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
function writeOut(
  values: { output?: string; json?: boolean },
  data: Uint8Array,
  about: Record<string, string>,
): void {
  const toFile = values.output !== undefined && values.output !== "-";
  if (toFile) writeFileAtomic(values.output!, data, 0o600);
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

/** A JSON rendering of a value (lists for --extract; bigints exact, comments dropped). */
function jsonOf(v: SopsValue, indent: string): string {
  const inner = `${indent}\t`;
  if (isBranch(v)) {
    const items = v.items.filter((it) => typeof it.key === "string");
    if (items.length === 0) return "{}";
    return `{\n${items.map((it) => `${inner}${JSON.stringify(it.key)}: ${jsonOf(it.value, inner)}`).join(",\n")}\n${indent}}`;
  }
  if (Array.isArray(v)) {
    const elems = v.filter((x) => !(x instanceof SopsComment)) as SopsValue[];
    if (elems.length === 0) return "[]";
    return `[\n${elems.map((x) => `${inner}${jsonOf(x, inner)}`).join(",\n")}\n${indent}]`;
  }
  if (typeof v === "string") return JSON.stringify(v);
  if (v instanceof Uint8Array) return JSON.stringify(Buffer.from(v).toString("utf8"));
  return leafText(v);
}

function leafText(v: SopsValue): string {
  if (v === null) return "null";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatGoFloat(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (v instanceof SopsTime) return v.text;
  return String(v);
}

/** sops --extract: a string raw, a mapping in the file's format (YAML or JSON), a list as JSON. */
function extracted(v: SopsValue, store: SopsStore): Uint8Array {
  if (typeof v === "string") return Buffer.from(v, "utf8");
  if (v instanceof Uint8Array) return v;
  if (v instanceof SopsBranch) {
    return store.name === "yaml" ? new YamlStore().emitPlain([v]) : new JsonStore().emitPlain([v]);
  }
  if (Array.isArray(v)) return Buffer.from(`${jsonOf(v, "")}\n`, "utf8");
  return Buffer.from(leafText(v), "utf8");
}

async function decryptSops(file: string, store: SopsStore, values: Record<string, unknown>): Promise<number> {
  const path = typeof values.extract === "string" ? parseTreePath(values.extract) : null;
  const identities = await identitiesOf(values, keyContext());
  const doc = await openSopsFile(file, store, identities, values["ignore-mac"] === true, true);
  try {
    let out: Uint8Array;
    if (path !== null) {
      out = extracted(valueAt(doc.branches[0] ?? new SopsBranch(), path), store);
    } else {
      out = store.emitPlain(doc.branches);
    }
    const about: Record<string, string> = { file: displayPath(file), format: store.name };
    if (path !== null) about.path = formatTreePath(path);
    try {
      writeOut(values as { output?: string; json?: boolean }, out, about);
    } finally {
      if (out instanceof Buffer) out.fill(0);
    }
  } finally {
    closeDocument(doc);
  }
  return 0;
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
    const store = sopsStoreOf(positionals[0]!, values);
    if (store !== null) return decryptSops(positionals[0]!, store, values);
    if (values.extract !== undefined || values["ignore-mac"]) {
      throw new NixsealError("USAGE", "--extract and --ignore-mac apply to sops files only", {
        hint: "for an age secret, decrypt the whole file",
      });
    }
    const rules = rulesOf(values, positionals[0]);
    const rule = requireSecret(rules, positionals[0]!);
    const ctx = keyContext();
    const plain = await decryptSecret(rule, await identitiesOf(values, ctx));
    try {
      writeOut(values, plain, { secret: rule.name, file: rule.file });
    } finally {
      wipe(plain);
    }
    return 0;
  },
};

/**
 * `nixseal set FILE PATH < value`: one value of a sops file, as `sops set` does, with the value
 * on standard input (never in argv). The data key and the IVs of every other value are kept, so
 * the git diff shows the changed value, lastmodified and the MAC only.
 */
import * as tty from "node:tty";
import { ioError, NixsealError, readAll, wipe } from "../common/index.js";
import {
  closeDocument,
  formatTreePath,
  JsonStore,
  MAX_DOCUMENT_SIZE,
  parseTreePath,
  reencryptDocument,
  reencryptOneValue,
  SopsBranch,
  type SopsValue,
  setValueAt,
} from "../sops/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { displayPath, openSopsFile, requireSopsStore, SOPS_OPTIONS, writeSopsFile } from "./sops-file.js";
import { identitiesOf, keyContext, VAULT_OPTIONS } from "./vault-context.js";

const HELP = `Usage: nixseal set FILE PATH [--string] [-i IDENTITY]... < value

Sets the value at PATH in the sops file FILE (sops' path syntax: '["key"]["sub"][0]'). The value
is read from standard input as a JSON value ("text", 42, true, {"a": 1}, [1, 2]), or as a raw
string with --string (every byte kept, a trailing newline too: use printf %s). Missing keys are
created; an index equal to a list's length appends.

The file keeps its data key and recipients, and every other value keeps its ciphertext, so the
git diff shows only the changed value (plus lastmodified and the MAC).

Options:
    --string              Read the value as a raw string instead of JSON.
    --input-type TYPE     The file's format when its extension does not say it: yaml, json,
                          dotenv, ini or binary.
    -i, --identity FILE   An identity to decrypt with (repeatable; default identities otherwise).
    --json                Print what was set as JSON.
    -h, --help            This help.

Example:
    $ echo 5432 | nixseal set secrets/hosts.yaml '["db"]["port"]'
    $ printf %s "$NEW_PASSWORD" | nixseal set secrets/hosts.yaml '["db"]["password"]' --string

Exit codes: 0 success, 1 failure (e.g. no identity can decrypt), 2 usage error (bad path).
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  ...SOPS_OPTIONS,
  string: { type: "boolean" },
} as const;

/** A value as `sops set` reads it: one JSON value (integers exact). */
function parseJsonValue(text: Buffer): SopsValue {
  const wrapped = Buffer.concat([Buffer.from('{"v":'), text, Buffer.from("\n}")]);
  let branch: SopsBranch;
  try {
    branch = new JsonStore().parsePlain(wrapped)[0] ?? new SopsBranch();
  } catch {
    throw new NixsealError("USAGE", "the value on standard input is not one JSON value", {
      hint: 'quote strings as JSON ("text"), or pass --string to take the input as it is',
    });
  } finally {
    wipe(wrapped);
  }
  if (branch.items.length !== 1 || branch.items[0]!.key !== "v") {
    throw new NixsealError("USAGE", "the value on standard input is not one JSON value", {
      hint: 'quote strings as JSON ("text"), or pass --string to take the input as it is',
    });
  }
  return branch.items[0]!.value;
}

/** A value reencryptOneValue writes: a scalar that is encrypted (sops leaves "" unencrypted). */
function scalarToEncrypt(v: SopsValue): boolean {
  return (
    (typeof v === "string" && v !== "") ||
    typeof v === "number" ||
    typeof v === "bigint" ||
    typeof v === "boolean"
  );
}

export const command: Command = {
  name: "set",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  exitWhenDone: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal set --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 2) {
      throw new NixsealError("USAGE", "expected a sops FILE and a PATH", {
        hint: `nixseal set FILE '["key"]["sub"]' < value`,
      });
    }
    const [file, pathText] = positionals as [string, string];
    const store = requireSopsStore(file, values);
    const treePath = parseTreePath(pathText);
    if (tty.isatty(0)) process.stderr.write("Type the value, then Ctrl-D on an empty line:\n");
    let input: Buffer | null;
    try {
      input = await readAll(0, MAX_DOCUMENT_SIZE);
    } catch (e) {
      throw ioError("read", "standard input", e);
    }
    if (input === null) {
      throw new NixsealError("USAGE", `the value is larger than ${MAX_DOCUMENT_SIZE >> 20} MiB`, {
        hint: "sops values are small",
      });
    }
    let value: SopsValue;
    try {
      value = values.string ? input.toString("utf8") : parseJsonValue(input);
    } finally {
      wipe(input);
    }
    const identities = await identitiesOf(values, keyContext());
    // One value of a file in the narrow form: only its line, lastmodified and the MAC are
    // written anew, the rest of the file as read (reencryptOneValue), so only that value is
    // remembered while decrypting. Anything else (a new key, a mapping, another form) writes
    // the whole tree, which needs every value remembered: the file is then read again.
    const keys =
      treePath.length > 0 && treePath.every((k) => typeof k === "string") && scalarToEncrypt(value)
        ? (treePath as string[])
        : undefined;
    const open = async (only: readonly string[] | undefined) => {
      const doc = await openSopsFile(file, store, identities, false, false, only && [only]);
      try {
        if (doc.branches.length === 0) doc.branches.push(new SopsBranch());
        setValueAt(doc.branches[0]!, treePath, value);
      } catch (e) {
        closeDocument(doc);
        throw e;
      }
      return doc;
    };
    let doc = await open(keys);
    try {
      let out: Uint8Array | readonly Uint8Array[] | null =
        keys === undefined ? null : reencryptOneValue(doc, keys);
      if (out === null) {
        if (!doc.remembersAll) {
          closeDocument(doc);
          doc = await open(undefined);
        }
        out = reencryptDocument(doc, doc.branches, { file: displayPath(file) });
      }
      writeSopsFile(file, out);
    } finally {
      closeDocument(doc);
    }
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({ file: displayPath(file), path: formatTreePath(treePath) })}\n`,
      );
    } else if (tty.isatty(2)) {
      process.stderr.write(`set ${formatTreePath(treePath)} in ${displayPath(file)}\n`);
    }
    return 0;
  },
};

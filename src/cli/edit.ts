/**
 * `nixseal edit NAME`: decrypts a secret into a private directory on a RAM-backed filesystem,
 * opens $VISUAL/$EDITOR on it, and re-encrypts to the rules' recipients only if the content
 * changed. The directory is removed on every exit path (see src/vault/edit-session.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tty from "node:tty";
import { abortAllAtomicFiles, ioError, NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import type { SopsBranch, SopsDocument, SopsStore } from "../sops/index.js";
import {
  chooseEditBase,
  type EditorOutcome,
  EditSession,
  editorString,
  loadAgeSecrets,
  requireSecret,
  runEditor,
  sweepStaleEditDirs,
} from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printWarning, sanitize } from "./report.js";
import { mayBeSopsFile, SOPS_OPTIONS, SOPS_OPTIONS_HELP } from "./sops-kind.js";
import { hasTerminal, waitForEnter } from "./terminal.js";
import { identitiesOf, keyContext, rulesOf, VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-context.js";

const PROG = "nixseal edit";

/** How often the editor opens for one sops edit before an invalid document is given up on. */
const MAX_EDIT_ROUNDS = 10;

const HELP = `Usage: nixseal edit NAME [--rules FILE] [-i FILE]... [--allow-disk-tempdir] [--json]

Opens the secret NAME in your editor and saves it back encrypted to the recipients that
secrets.nix lists for it. NAME is the name in secrets.nix ("db-password.age") or a path to the
file, with or without ".age". A NAME with no file yet creates the secret.

While you edit, the plaintext lives only in a fresh 0700 directory on a RAM-backed filesystem
($XDG_RUNTIME_DIR, else /dev/shm, else /run/user/UID), in a 0600 file named like the secret
without ".age" (so "config.yaml.age" opens as config.yaml). The directory is removed, its files
overwritten with zeros first, when the editor exits, on errors and on Ctrl-C/SIGTERM/SIGHUP.

The editor is $VISUAL, else $EDITOR, else vi, run through /bin/sh as git does, so
EDITOR="code --wait" works (GUI editors must wait until the file is closed). vi needs a
terminal: without one (standard input and output not a terminal) and with neither VISUAL nor
EDITOR set, edit stops at once with an error, before anything is decrypted. vim and neovim are
started with swap, backup, undo and viminfo/shada files turned off. Other editors get no extra
flags: make sure yours keeps no backups or history of the file elsewhere.

The file is rewritten only if you changed the content; an unchanged secret stays byte-identical.
Nothing is written if the editor exits with an error, or if a new secret is left empty.

A FILE with a sops extension (.yaml, .yml, .json, .env, .ini) that secrets.nix does not list is
a sops file: you edit the decrypted document, and it is written back with the same data key
and keys; values you did not change keep their exact ciphertext, so git diffs show only what
changed. A document with a syntax error is not written: the error is shown and, at a terminal,
the editor opens again on your text after Enter (at most ${MAX_EDIT_ROUNDS} times in all). Without a
terminal there is no one to fix it: edit stops with the error and writes nothing. A new sops
file is encrypted for the keys of its .sops.yaml creation rule.

Options:
    --allow-disk-tempdir  Edit in $TMPDIR (on disk) when no RAM-backed directory exists.
    --ignore-mac          Open a sops file even if its MAC does not verify (it is written back
                          with a correct MAC).
${SOPS_OPTIONS_HELP}${VAULT_OPTIONS_HELP}
Example:
    $ EDITOR=nano nixseal edit hosts/web/db-password.age
    hosts/web/db-password.age: written (encrypted to 3 recipients)
    $ nixseal edit secrets/hosts.yaml

Exit codes: 0 success (also when unchanged), 1 failure (cannot decrypt, editor failed, no
terminal for vi, an invalid sops document, cannot write), 2 usage or configuration error (bad
flags, no secrets.nix, NAME not in the rules), 129/130/143 interrupted by SIGHUP/SIGINT/SIGTERM
(nothing written).
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  ...SOPS_OPTIONS,
  "allow-disk-tempdir": { type: "boolean" },
  "ignore-mac": { type: "boolean" },
} as const;

const SIGNAL_EXIT: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };

function editorFailure(outcome: EditorOutcome, editor: string): NixsealError {
  const shown = sanitize(editor.length > 60 ? `${editor.slice(0, 60)}...` : editor);
  switch (outcome.kind) {
    case "spawn-error":
      return new NixsealError("IO", `cannot start the editor "${shown}": ${outcome.message}`, {
        hint: "set VISUAL or EDITOR to an editor that is installed; nothing was written",
      });
    case "editor-signal":
      return new NixsealError("IO", `the editor "${shown}" was killed by ${outcome.signal}`, {
        hint: "nothing was written; run the edit again",
      });
    default: {
      const code = outcome.kind === "exit" ? outcome.code : 1;
      return new NixsealError("IO", `the editor "${shown}" exited with status ${code}`, {
        hint:
          code === 127
            ? "the editor was not found: set VISUAL or EDITOR to an installed editor; nothing was written"
            : "nothing was written; quit the editor normally (e.g. :wq in vim) to save",
      });
    }
  }
}

/**
 * Without a terminal the default editor (vi) would draw its screens into a pipe or a log and wait
 * for keys that never come: stop before anything is decrypted. An editor the user set is run
 * (it may be a GUI editor or a script).
 */
function requireUsableEditor(): void {
  const chosen = [process.env.VISUAL, process.env.EDITOR].some((v) => v !== undefined && v.trim() !== "");
  if (chosen || (tty.isatty(0) && tty.isatty(1))) return;
  throw new NixsealError(
    "NO_TERMINAL",
    "no editor to run: VISUAL and EDITOR are not set, and vi needs a terminal",
    {
      hint: "run nixseal edit in a terminal, or set EDITOR (e.g. EDITOR='code --wait', or a script editing the file named by $1); nothing was changed",
    },
  );
}

function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : file;
}

/**
 * Runs the editor once: the edited bytes, or the exit code when nixseal was interrupted (the
 * plaintext is removed, nothing is written). An editor that fails is an error.
 */
async function editorRound(session: EditSession): Promise<Buffer | number> {
  const outcome = await runEditor(session);
  if (outcome.kind === "interrupted") {
    session.dispose();
    abortAllAtomicFiles();
    process.stderr.write(
      `${PROG}: interrupted by ${outcome.signal}; nothing written, the plaintext was removed\n`,
    );
    return SIGNAL_EXIT[outcome.signal] ?? 1;
  }
  if (outcome.kind !== "exit" || outcome.code !== 0) throw editorFailure(outcome, editorString());
  return session.read();
}

type EditValues = ReturnType<typeof parseEditArgs>["values"];

function editBase(values: EditValues) {
  const base = chooseEditBase({ allowDisk: values["allow-disk-tempdir"] === true });
  if (!base.ramBacked) {
    printWarning(PROG, `no RAM-backed directory: the plaintext goes to ${base.dir} on disk while you edit`);
  }
  for (const stale of sweepStaleEditDirs(base.dir)) {
    printWarning(PROG, `removed ${stale}, left behind by an edit that was killed`);
  }
  return base;
}

function fileExists(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("read", file, e);
    return false;
  }
}

/**
 * sops edit: the decrypted document in the editor; an invalid one reopens the editor on the
 * user's text (sops does the same), so no edit is lost to a typo.
 */
async function editSops(
  values: EditValues,
  file: string,
  store: SopsStore,
  {
    creationRuleOf,
    encryptNewSopsFile,
    openSopsFile,
    displayPath: sopsDisplayPath,
    writeSopsFile,
  }: typeof import("./sops-file.js"),
): Promise<number> {
  const {
    changedLeaves,
    checkEncryptable,
    closeDocument,
    MAX_SPLICED_VALUES,
    reencryptDocument,
    reencryptValues,
  } = await import("../sops/index.js");
  const shown = sanitize(sopsDisplayPath(file));
  const exists = fileExists(file);
  // A new file needs a creation rule: fail before the user spends time in the editor.
  if (!exists) creationRuleOf(PROG, file, values);
  const base = editBase(values);
  let doc: SopsDocument | null = null;
  let original: Uint8Array = new Uint8Array(0);
  let edited: Buffer | undefined;
  let session: EditSession | undefined;
  try {
    if (exists) {
      doc = await openSopsFile(
        file,
        store,
        await identitiesOf(values, keyContext()),
        values["ignore-mac"] === true,
      );
      original = store.emitPlain(doc.branches);
    }
    session = EditSession.create(path.basename(file), original, base);
    let branches: SopsBranch[] | null = null;
    /** The keys of the values changed, when only values changed (as changedLeaves gives them). */
    let changed: string[][] | null = null;
    for (let round = 1; ; round++) {
      const result = await editorRound(session);
      if (typeof result === "number") return result;
      wipe(edited);
      edited = result;
      if (Buffer.from(original.buffer, original.byteOffset, original.byteLength).equals(edited)) break;
      if (!exists && edited.length === 0) break;
      try {
        // A few values changed in a large document: found line by line, no second tree. Its keys
        // are the decrypted file's and a plain value cannot be `ENC[...]`: nothing for
        // checkEncryptable to refuse.
        const onlyValues =
          doc === null ? null : store.editedValues?.(original, edited, doc.branches, MAX_SPLICED_VALUES);
        if (onlyValues) {
          ({ branches, changed } = onlyValues);
          break;
        }
        branches = store.parsePlain(edited);
        checkEncryptable(branches, store, shown);
        break;
      } catch (e) {
        rethrowUnlessNixseal(e);
        branches = null;
        if (round >= MAX_EDIT_ROUNDS) {
          throw new NixsealError(e.code, `${shown}: ${e.message}`, {
            hint: `still invalid after ${MAX_EDIT_ROUNDS} rounds in the editor; nothing was written`,
            file,
          });
        }
        if (!hasTerminal()) {
          // No one to fix it (a script, CI): stop now; reopening would only fail the same way.
          throw new NixsealError(e.code, `${shown}: ${e.message}`, {
            hint: "nothing was written, and without a terminal the editor is not opened again: run nixseal edit in a terminal, or have the editor write a valid document",
            file,
          });
        }
        // Only the parser's position, never the text: the error may reach a log.
        process.stderr.write(`${PROG}: ${shown}: ${sanitize(e.message)}\n`);
        if (
          !(await waitForEnter("Press Enter to return to the editor (Ctrl-C gives up, nothing is written): "))
        ) {
          process.stderr.write(`${PROG}: reopening the editor\n`);
        }
      }
    }
    session.dispose();

    let message: string;
    let written = false;
    if (branches === null) {
      message = exists ? `${shown}: unchanged, not rewritten` : `${shown}: left empty, nothing written`;
    } else if (doc !== null) {
      // Only values changed: they are spliced into the file as read; else the whole tree is
      // written (unchanged values keep their ciphertext either way).
      changed ??= changedLeaves(doc.branches, branches, MAX_SPLICED_VALUES);
      const spliced = changed === null ? null : reencryptValues(doc, branches, changed);
      writeSopsFile(file, spliced ?? reencryptDocument(doc, branches, { file: shown }));
      written = true;
      message = `${shown}: written (same data key and keys; unchanged values keep their ciphertext)`;
    } else {
      const { recipients } = await encryptNewSopsFile(PROG, file, store, branches, values);
      written = true;
      message = `${shown}: created (encrypted to ${recipients} recipient${recipients === 1 ? "" : "s"})`;
    }
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({ file: sopsDisplayPath(file), format: store.name, changed: written })}\n`,
      );
    } else {
      process.stderr.write(`${message}\n`);
    }
    return 0;
  } finally {
    session?.dispose();
    if (doc !== null) closeDocument(doc);
    wipe(original, edited);
  }
}

async function edit(values: EditValues, name: string): Promise<number> {
  requireUsableEditor();
  if (mayBeSopsFile(name, values)) {
    // src/sops/ and the YAML library are loaded only for a name that may be a sops file.
    const sopsFile = await import("./sops-file.js");
    const store = sopsFile.sopsStoreOf(name, values);
    if (store !== null) return editSops(values, name, store, sopsFile);
  }
  const rules = rulesOf(values, name);
  const rule = requireSecret(rules, name);
  const ctx = keyContext();
  const { decryptSecret, recipientsFor, writeSecret } = await loadAgeSecrets();
  // Recipients first: a broken rule fails before the user spends time in the editor.
  const recipients = recipientsFor(rule, rules.file, ctx);

  const base = editBase(values);

  const exists = fileExists(rule.file);
  const original: Uint8Array = exists
    ? await decryptSecret(rule, await identitiesOf(values, ctx))
    : new Uint8Array(0);

  let edited: Buffer | undefined;
  let session: EditSession | undefined;
  try {
    session = EditSession.create(rule.name, original, base);
    const result = await editorRound(session);
    if (typeof result === "number") return result;
    edited = result;
    // The plaintext is in memory now; the directory can go before the (slower) encryption.
    session.dispose();

    const changed = !Buffer.from(original.buffer, original.byteOffset, original.byteLength).equals(edited);
    let written = false;
    if (changed && !(edited.length === 0 && !exists)) {
      await writeSecret(rule, edited, recipients);
      written = true;
    }
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ secret: rule.name, file: rule.file, changed: written })}\n`);
    } else {
      const shown = sanitize(displayPath(rule.file));
      const n = recipients.length;
      const message = written
        ? `${shown}: ${exists ? "written" : "created"} (encrypted to ${n} recipient${n === 1 ? "" : "s"})`
        : exists
          ? `${shown}: unchanged, not rewritten`
          : `${shown}: left empty, nothing written`;
      process.stderr.write(`${message}\n`);
    }
    return 0;
  } finally {
    session?.dispose();
    wipe(original, edited);
    for (const r of recipients) (r as { wipe?: () => void }).wipe?.();
  }
}

function parseEditArgs(argv: string[]) {
  return parse(argv, OPTIONS, "run 'nixseal edit --help' for usage");
}

export const command: Command = {
  name: "edit",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  exitWhenDone: true,
  async run(argv) {
    const { values, positionals } = parseEditArgs(argv);
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new NixsealError(
        "USAGE",
        positionals.length === 0 ? "missing NAME" : "edit takes exactly one NAME",
        {
          hint: "usage: nixseal edit NAME (run 'nixseal edit --help' for details)",
        },
      );
    }
    return edit(values, positionals[0]!);
  },
};

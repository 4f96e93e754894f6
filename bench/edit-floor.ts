/**
 * A floor for `nixseal edit` of one value in the sops-write file (bench/sops-write.ts), and with
 * `--set` for `nixseal set` of one value: a bare script that does only what such an edit (or
 * set) cannot skip, and nothing else. No YAML tree, no
 * validation of the file's form, no rules, no stash, no checks of the edited text beyond the
 * lines that changed, no signal handling.
 *
 * - The file read; its one age entry found by text and unwrapped with nixseal's own
 *   `decrypt()` (src/age/age.ts, loaded with Node's compile cache as nixseal's modules are) and
 *   the identity file's X25519 key.
 * - Every `ENC[...]` line before `sops:` decrypted with node:crypto (AES-256-GCM, the key path
 *   as additional data, taken from the indentation): values and comments, as the editor shows
 *   both; the MAC (SHA-512 over the values, joined) checked against the stored one.
 * - The plaintext written 0600 into a fresh 0700 directory in /dev/shm, $EDITOR run on it
 *   through /bin/sh, the file read back and compared line by line with what was written.
 * - Each changed value line encrypted again (a new IV), the MAC computed again over every value
 *   and encrypted with a new lastmodified, the file written to a temp file in pieces (the lines
 *   as read around the changed ones) and renamed over the original; the plaintext removed.
 * - With `--set SERVICE KEY VALUE_FILE` there is no plaintext file and no editor: the value at
 *   SERVICE.KEY becomes VALUE_FILE's text (what `nixseal set` reads on standard input), and the
 *   rest is the same.
 *
 * The fixture's values are strings under one level of mappings, with a comment line before
 * each mapping; other shapes are not handled. Run by bench/sops-write.ts:
 * `EDITOR=... node dist/bench/edit-floor.js FILE IDENTITY_FILE`, or
 * `node dist/bench/edit-floor.js FILE IDENTITY_FILE --set SERVICE KEY VALUE_FILE`. Exits 1 if the
 * MAC does not verify or no line changed.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as module from "node:module";
import * as path from "node:path";

const [file, identityFile, mode, ...setArgs] = process.argv.slice(2);
if (!file || !identityFile || (mode !== undefined && (mode !== "--set" || setArgs.length !== 3)))
  throw new Error("usage: edit-floor.js FILE IDENTITY_FILE [--set SERVICE KEY VALUE_FILE]");
// The editor's module loaded at the start, as before `--set` existed; `--set` needs none.
const childProcess = mode === "--set" ? null : await import("node:child_process");
// The compile cache as nixseal has its own (Node's default directory), then only the two age
// modules the data key needs.
module.enableCompileCache?.();
const [{ decrypt }, { X25519Identity }] = await Promise.all([
  import("../src/age/age.js"),
  import("../src/age/x25519.js"),
]);

const text = fs.readFileSync(file, "latin1");
const metaAt = text.indexOf("\nsops:\n") + 1;
const armored = /-----BEGIN AGE ENCRYPTED FILE-----[\s\S]*?-----END AGE ENCRYPTED FILE-----/
  .exec(text.slice(metaAt))![0]
  .replace(/\n\s+/g, "\n");
const keyLine = fs
  .readFileSync(identityFile, "utf8")
  .split("\n")
  .find((l) => l.startsWith("AGE-SECRET-KEY-"))!;
const dataKey = Buffer.from(await decrypt(Buffer.from(armored), [X25519Identity.parse(keyLine)]));

const ENC = /ENC\[AES256_GCM,data:([^,]*),iv:([^,]*),tag:([^,]*),type:([a-z]+)\]/;

function open(enc: string, aad: string): string {
  const m = ENC.exec(enc)!;
  const d = createDecipheriv("aes-256-gcm", dataKey, Buffer.from(m[2]!, "base64"), { authTagLength: 16 });
  d.setAAD(Buffer.from(aad, "utf8"));
  d.setAuthTag(Buffer.from(m[3]!, "base64"));
  const out = d.update(Buffer.from(m[1]!, "base64")).toString("utf8");
  d.final();
  return out;
}

function seal(value: string, aad: string, type = "str"): string {
  const iv = randomBytes(32);
  const c = createCipheriv("aes-256-gcm", dataKey, iv, { authTagLength: 16 });
  c.setAAD(Buffer.from(aad, "utf8"));
  const data = Buffer.concat([c.update(value, "utf8"), c.final()]);
  return `ENC[AES256_GCM,data:${data.toString("base64")},iv:${iv.toString("base64")},tag:${c.getAuthTag().toString("base64")},type:${type}]`;
}

// Decrypt: per line of the data part, the plaintext line, and for values the key path.
const lines = text.slice(0, metaAt).split("\n");
lines.pop();
const plain: string[] = [];
const paths: (string | null)[] = [];
const values: string[] = [];
let parent = "";
for (const line of lines) {
  if (line.startsWith("#")) {
    // A comment between the mappings: the top level's (sops's additional data ":").
    plain.push(`#${open(line.slice(1), ":")}`);
    paths.push(null);
    continue;
  }
  const colon = line.indexOf(":");
  const key = line.slice(line.startsWith("    ") ? 4 : 0, colon);
  if (!line.startsWith("    ")) {
    // A mapping's own line: `key:`.
    parent = key;
    plain.push(line);
    paths.push(null);
    continue;
  }
  const aad = `${parent}:${key}:`;
  const value = open(line.slice(colon + 2), aad);
  values.push(value);
  plain.push(`    ${key}: ${value}`);
  paths.push(aad);
}
const macOf = (vs: readonly string[]) =>
  createHash("sha512").update(vs.join(""), "utf8").digest("hex").toUpperCase();
const lastModified = /\n {4}lastmodified: "([^"]+)"\n/.exec(text)![1]!;
const macLine = /\n {4}mac: (ENC\[[^\]]*\])\n/.exec(text)!;
if (open(macLine[1]!, lastModified) !== macOf(values)) {
  process.stderr.write("edit-floor: MAC mismatch\n");
  process.exit(1);
}

/** The plaintext lines after the edit: by the editor, or the one value `--set` gives. */
function editedLines(): string[] {
  if (mode === "--set") {
    const [service, key, valueFile] = setArgs as [string, string, string];
    const at = paths.indexOf(`${service}:${key}:`);
    if (at < 0) process.exit(1);
    const lines = plain.slice();
    lines[at] = `    ${key}: ${fs.readFileSync(valueFile, "utf8")}`;
    return lines;
  }
  // The editor on the plaintext, in a fresh private directory on tmpfs.
  const dir = fs.mkdtempSync("/dev/shm/edit-floor-");
  const plainFile = path.join(dir, path.basename(file!));
  const written = `${plain.join("\n")}\n`;
  fs.writeFileSync(plainFile, written, { mode: 0o600 });
  const ed = childProcess!.spawnSync("/bin/sh", ["-c", `${process.env.EDITOR} "$1"`, "sh", plainFile], {
    stdio: "inherit",
  });
  const back = fs.readFileSync(plainFile, "utf8");
  fs.writeFileSync(plainFile, Buffer.alloc(back.length));
  fs.rmSync(dir, { recursive: true });
  if (ed.status !== 0) process.exit(1);
  return back.split("\n");
}

// The changed value lines encrypted again, the MAC computed again, the file spliced.
const edited = editedLines();
const out: string[] = [];
let from = 0;
let changed = 0;
let v = 0;
let lineStart = 0;
const newValues = values.slice();
for (let i = 0; i < plain.length; lineStart += lines[i]!.length + 1, i++) {
  const aad = paths[i] ?? null;
  if (aad === null) continue;
  if (edited[i] !== plain[i]) {
    const colon = edited[i]!.indexOf(":");
    const value = edited[i]!.slice(colon + 2);
    newValues[v] = value;
    out.push(text.slice(from, lineStart), `${edited[i]!.slice(0, colon + 2)}${seal(value, aad)}\n`);
    from = lineStart + lines[i]!.length + 1;
    changed++;
  }
  v++;
}
if (changed === 0) process.exit(1);
const now = `${new Date().toISOString().slice(0, 19)}Z`;
const meta = text
  .slice(metaAt)
  .replace(/\n {4}lastmodified: "[^"]+"\n/, `\n    lastmodified: "${now}"\n`)
  .replace(/\n {4}mac: ENC\[[^\]]*\]\n/, `\n    mac: ${seal(macOf(newValues), now)}\n`);
out.push(text.slice(from, metaAt), meta);
const tmp = `${file}.floor-tmp`;
const fd = fs.openSync(tmp, "w", fs.statSync(file).mode & 0o777);
fs.writevSync(
  fd,
  out.map((s) => Buffer.from(s, "latin1")),
);
fs.closeSync(fd);
fs.renameSync(tmp, file);
dataKey.fill(0);

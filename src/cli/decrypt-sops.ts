/** `nixseal decrypt FILE.yaml`: the sops half of decrypt, loaded only when NAME may be a sops file. */
import * as os from "node:os";
import * as nodePath from "node:path";
import type { Identity } from "../age/index.js";
import { nodeFs as fs, NixsealError } from "../common/index.js";
import {
  closeDocument,
  formatGoFloat,
  formatTreePath,
  GpgHomeIdentity,
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
import type { writeOut } from "./decrypt.js";
import { displayPath, openSopsFile, type SopsValues, sopsStoreOf } from "./sops-file.js";
import { identitiesOf, keyContext } from "./vault-context.js";

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

/** Decrypts NAME if it is a sops file (sopsStoreOf); null if it is an age secret after all. */
export async function decryptIfSops(
  file: string,
  values: SopsValues & Record<string, unknown>,
  write: typeof writeOut,
): Promise<number | null> {
  const store = sopsStoreOf(file, values);
  return store === null ? null : decryptSops(file, store, values, write);
}

/** The user's GnuPG home as sops finds it (GNUPGHOME, else ~/.gnupg), or null if there is none. */
function userGnupgHome(env: NodeJS.ProcessEnv = process.env): string | null {
  const home = env.GNUPGHOME || nodePath.join(env.HOME || os.homedir(), ".gnupg");
  if (!nodePath.isAbsolute(home)) return null;
  try {
    return fs.statSync(home).isDirectory() ? home : null;
  } catch {
    return null;
  }
}

/**
 * The age identities, and the user's GnuPG home for pgp entries (as sops uses gpg): gpg runs only
 * if no age identity opens the file. With a GnuPG home, having no age identity is not an error.
 */
async function sopsIdentities(values: Record<string, unknown>): Promise<Identity[]> {
  const gnupgHome = userGnupgHome();
  let identities: Identity[];
  try {
    identities = await identitiesOf(values, keyContext());
  } catch (e) {
    if (gnupgHome === null || !(e instanceof NixsealError && e.code === "AGE_NO_MATCH")) throw e;
    identities = [];
  }
  // gpg may ask for the key's passphrase through its pinentry, as it does for sops.
  if (gnupgHome !== null) identities.push(new GpgHomeIdentity(gnupgHome, { interactive: true }));
  return identities;
}

async function decryptSops(
  file: string,
  store: SopsStore,
  values: Record<string, unknown>,
  write: typeof writeOut,
): Promise<number> {
  const path = typeof values.extract === "string" ? parseTreePath(values.extract) : null;
  const identities = await sopsIdentities(values);
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
      write(values as { output?: string; json?: boolean }, out, about);
    } finally {
      if (out instanceof Buffer) out.fill(0);
    }
  } finally {
    closeDocument(doc);
  }
  return 0;
}

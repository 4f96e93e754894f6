/**
 * What the tests of sops' pgp entries share: GnuPG homes made by the real gpg (their agents
 * stopped and their directories removed by `cleanUpGpg`), keys it generates, and sops files built
 * as sops builds them for pgp keys. Not a test itself (the runner loads it and finds none).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { X25519Identity } from "../../src/age/x25519.js";
import {
  closeDocument,
  decryptDocument,
  encryptNewDocument,
  reencryptDocument,
  SopsBranch,
  YamlStore,
} from "../../src/sops/index.js";
import { tempDir } from "../helpers.js";

export const cleanups: (() => void)[] = [];
/** Stops the agents and removes the homes made so far. */
export function cleanUpGpg(): void {
  for (const c of cleanups.reverse()) c();
  cleanups.length = 0;
}

/** A fresh GnuPG home (its agent stopped and the directory removed after the tests). */
export function gpgHome(): string {
  const { dir, cleanup } = tempDir("nixseal-gpg-test-");
  fs.chmodSync(dir, 0o700);
  cleanups.push(() => {
    spawnSync("gpgconf", ["--homedir", dir, "--kill", "gpg-agent"], { stdio: "ignore" });
    cleanup();
  });
  return dir;
}

export function gpg(
  home: string,
  args: string[],
  input?: Uint8Array | string,
): { stdout: Buffer; stderr: string } {
  const r = spawnSync("gpg", ["--homedir", home, "--batch", "--no-tty", ...args], {
    input: input ?? "",
    maxBuffer: 16 * 1024 * 1024,
  });
  assert.equal(r.status, 0, `gpg ${args.join(" ")}: ${r.stderr}`);
  return { stdout: r.stdout, stderr: String(r.stderr) };
}

/** A new key made by gpg (ed25519 with a cv25519 encryption subkey); its primary fingerprint. */
export function newKey(home: string, name: string): string {
  gpg(home, [
    "--passphrase",
    "",
    "--quick-gen-key",
    `${name} <${name}@example.org>`,
    "future-default",
    "default",
    "never",
  ]);
  const listing = gpg(home, ["--with-colons", "--list-secret-keys", `${name}@example.org`]).stdout.toString();
  const fpr = listing.split("\n").find((l) => l.startsWith("fpr:"));
  assert.ok(fpr, listing);
  return fpr.split(":")[9]!;
}

/** The primary fingerprint of the keys in an armored key file, as gpg reads it. */
export function fingerprintsOf(home: string, keyFile: string): string[] {
  const out = gpg(home, ["--with-colons", "--show-keys", keyFile]).stdout.toString();
  const lines = out.split("\n");
  const fps: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if ((lines[i]!.startsWith("pub:") || lines[i]!.startsWith("sec:")) && lines[i + 1]?.startsWith("fpr:"))
      fps.push(lines[i + 1]!.split(":")[9]!);
  }
  return fps;
}

export interface PgpRecipient {
  home: string;
  fp: string;
}

/**
 * A sops YAML file as sops writes one for pgp keys (and optionally age recipients): the data key
 * `gpg --encrypt --armor -r FP` for each pgp key, in entries of fp, enc and created_at.
 */
export async function sopsFileFor(
  plainYaml: string,
  pgp: PgpRecipient[],
  age: string[] = [],
): Promise<Buffer> {
  const store = new YamlStore();
  const scratch = X25519Identity.generate();
  const scratchRecipient = scratch.recipient().toString();
  const first = await encryptNewDocument(store.parsePlain(Buffer.from(plainYaml)), store, {
    keyGroups: [[scratchRecipient, ...age]],
  });
  const doc = await decryptDocument(first, store, { identities: [scratch] });
  try {
    const entries = pgp.map(
      (r) =>
        new SopsBranch([
          { key: "created_at", value: "2026-01-01T00:00:00Z" },
          {
            key: "enc",
            value: gpg(
              r.home,
              ["--trust-model", "always", "--encrypt", "--armor", "-r", r.fp],
              doc.dataKey,
            ).stdout.toString(),
          },
          { key: "fp", value: r.fp },
        ]),
    );
    const group = doc.metadata.keyGroups[0]!;
    group.age = group.age.filter((e) => e.recipient !== scratchRecipient);
    group.other.set("pgp", entries);
    return Buffer.from(reencryptDocument(doc));
  } finally {
    closeDocument(doc);
  }
}

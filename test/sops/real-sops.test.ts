/**
 * Files written by the real sops, from other projects' test suites (origins in
 * test/fixtures/sops/README.md), decrypt with nixseal to their known plaintext.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import type { Identity } from "../../src/age/types.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseIdentityString } from "../../src/keys/key-types.js";
import {
  closeDocument,
  DotenvStore,
  decryptDocument,
  JsonStore,
  reencryptDocument,
  SopsBranch,
  SopsComment,
  type SopsStore,
  YamlStore,
} from "../../src/sops/index.js";
import { REPO } from "../helpers.js";

const FIX = path.join(REPO, "test", "fixtures", "sops");

function identitiesFrom(keyFile: string): Identity[] {
  return fs
    .readFileSync(keyFile, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("AGE-SECRET-KEY-"))
    .map((l) => parseIdentityString(l.trim(), keyFile));
}

function read(...p: string[]): Buffer {
  return fs.readFileSync(path.join(FIX, ...p));
}

/** A plain-JS view of a branch for comparisons (comments dropped, ints as numbers). */
function toJs(v: unknown): unknown {
  if (v instanceof SopsBranch) {
    const o: Record<string, unknown> = Object.create(null);
    for (const it of v.items) if (typeof it.key === "string") o[it.key] = toJs(it.value);
    return o;
  }
  if (Array.isArray(v)) return v.filter((x) => !(x instanceof SopsComment)).map(toJs);
  if (typeof v === "bigint") return Number(v);
  return v;
}

const sopsAgeKeys = () => identitiesFrom(path.join(FIX, "sops-age", "key.txt"));
const expectedSopsAge = () => JSON.parse(read("sops-age", "secret.json").toString("utf8"));

for (const [name, store, version, without] of [
  // The YAML fixture predates the "0word" key of secret.json.
  ["secret.enc.yaml", new YamlStore(), "3.8.1", "0word"],
  ["secret.enc.json", new JsonStore(), "3.9.2", ""],
] as [string, SopsStore, string, string][]) {
  test(`humphd/sops-age ${name} (sops ${version}, 3 age recipients) decrypts to secret.json`, async () => {
    const doc = await decryptDocument(read("sops-age", name), store, { identities: sopsAgeKeys() });
    assert.equal(doc.macVerified, true);
    const expected = expectedSopsAge();
    if (without) delete expected[without];
    assert.deepEqual(JSON.parse(JSON.stringify(toJs(doc.branches[0]))), expected);
    assert.equal(doc.metadata.keyGroups.length, 1);
    assert.equal(doc.metadata.keyGroups[0]!.age.length, 3);
    assert.equal(doc.metadata.version, version);
    closeDocument(doc);
  });
}

test("humphd/sops-age secret.enc.json: an int written by old sops as type float stays a float", async () => {
  const doc = await decryptDocument(read("sops-age", "secret.enc.json"), new JsonStore(), {
    identities: sopsAgeKeys(),
  });
  assert.equal(doc.branches[0]!.get("int"), 7); // number (float), not 7n
  assert.equal(doc.branches[0]!.get("float"), 3.14);
  closeDocument(doc);
});

test("humphd/sops-age secret.enc.env (dotenv) decrypts", async () => {
  const doc = await decryptDocument(read("sops-age", "secret.enc.env"), new DotenvStore(), {
    identities: sopsAgeKeys(),
  });
  const b = doc.branches[0]!;
  assert.deepEqual(b.keys(), ["secret", "another_secret"]);
  assert.equal(b.get("secret"), "this is a secret");
  assert.equal(typeof b.get("another_secret"), "string");
  assert.equal(doc.metadata.keyGroups[0]!.age.length, 3);
  closeDocument(doc);
});

test("sops-nix test-assets/secrets.yaml (sops 3.7.1, age + pgp) decrypts with its age key", async () => {
  const identities = identitiesFrom(path.join(FIX, "sops-nix", "age-keys.txt"));
  const input = read("sops-nix", "secrets.yaml");
  const doc = await decryptDocument(input, new YamlStore(), { identities });
  const b = doc.branches[0]!;
  assert.equal(b.get("test_key"), "test_value"); // sops-nix main_test.go expects this
  const list = b.get("a_list");
  assert.ok(Array.isArray(list) && list.length === 2);
  const nested = b.get("nested");
  assert.ok(nested instanceof SopsBranch);
  assert.equal(typeof (nested.get("test") as SopsBranch).get("file"), "string");
  // The pgp entries are carried, untouched.
  const pgp = doc.metadata.keyGroups[0]!.other.get("pgp");
  assert.equal(pgp?.length, 2);
  assert.equal(doc.metadata.keyGroups[0]!.age.length, 2);

  // Re-encrypting unchanged values keeps their ciphertext byte for byte, pgp entries too.
  const again = Buffer.from(reencryptDocument(doc)).toString("utf8");
  const original = input.toString("utf8");
  for (const line of original.split("\n")) {
    if (line.includes("ENC[") && !line.includes("mac:"))
      assert.ok(again.includes(line.trim()), "unchanged value kept");
  }
  assert.ok(again.includes("fp: 7FB89715AADA920D65D25E63F9BA9DEBD03F57C0"));
  assert.ok(again.includes("-----BEGIN PGP MESSAGE-----"));
  closeDocument(doc);
});

test("sops-nix secrets.yaml without the right key: the error lists its recipients and the identities tried", async () => {
  const wrong = identitiesFrom(path.join(FIX, "sops-age", "key.txt"));
  await assert.rejects(
    decryptDocument(read("sops-nix", "secrets.yaml"), new YamlStore(), {
      identities: wrong,
      file: "secrets.yaml",
    }),
    (e: unknown) => {
      assert.ok(e instanceof NixsealError);
      assert.equal(e.code, "SOPS_NO_KEY");
      assert.match(
        e.message,
        /age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw: no matching identity/,
      );
      assert.match(e.message, /pgp 7FB89715AADA920D65D25E63F9BA9DEBD03F57C0: no GnuPG identity given/);
      assert.match(e.message, /pgp 2504791468B153B8A3963CC97BA53D1919C5DFD4: no GnuPG identity given/);
      assert.match(e.message, /tried: /);
      return true;
    },
  );
});

test("sops-nix secrets.env (pgp only) parses; decrypting says no usable key", async () => {
  await assert.rejects(
    decryptDocument(read("sops-nix", "secrets.env"), new DotenvStore(), { identities: sopsAgeKeys() }),
    (e: unknown) => e instanceof NixsealError && e.code === "SOPS_NO_KEY" && /pgp/.test(e.message),
  );
});

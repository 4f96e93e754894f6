/** The sops INI store: round trips, metadata flattening, both newline forms, hostile input, a real file. */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseIdentityString } from "../../src/keys/key-types.js";
import {
  closeDocument,
  decryptDocument,
  encryptNewDocument,
  IniStore,
  reencryptDocument,
  SopsBranch,
  SopsComment,
  storeNameByExtension,
} from "../../src/sops/index.js";
import { REPO } from "../helpers.js";

const FIX = path.join(REPO, "test", "fixtures", "sops", "ini");
const id = X25519Identity.generate();
const recipient = id.recipient().toString();
const store = new IniStore();

function codeOf(code: string, notIn?: string) {
  return (e: unknown) => {
    assert.ok(e instanceof NixsealError, String(e));
    assert.equal(e.code, code, e.message);
    if (notIn !== undefined)
      assert.ok(!e.message.includes(notIn) && !(e.hint ?? "").includes(notIn), e.message);
    return true;
  };
}

const text = (b: Uint8Array) => Buffer.from(b).toString("utf8");

async function encrypt(plain: string, keyGroups: string[][] = [[recipient]], shamirThreshold?: number) {
  return text(
    await encryptNewDocument(store.parsePlain(Buffer.from(plain)), store, {
      keyGroups,
      ...(shamirThreshold === undefined ? {} : { shamirThreshold }),
      now: new Date("2026-01-02T03:04:05Z"),
    }),
  );
}

test("the store for a .ini path is the INI store", () => {
  assert.equal(storeNameByExtension("secrets/app.ini"), "ini");
});

test("a file written by the real sops 3.12.2 (age) decrypts, MAC verified", async () => {
  const key = parseIdentityString(fs.readFileSync(path.join(FIX, "key.txt"), "utf8").trim(), "key.txt");
  const doc = await decryptDocument(fs.readFileSync(path.join(FIX, "secrets.enc.ini")), store, {
    identities: [key],
  });
  assert.equal(doc.macVerified, true);
  assert.equal(doc.metadata.version, "3.12.2");
  assert.deepEqual(doc.branches[0]!.keys(), ["Container", "Secrets", "Service"]);
  const secrets = doc.branches[0]!.get("Secrets") as SopsBranch;
  assert.equal(secrets.get("DATABASE_URL"), "env:postgres://admin:s3cret@db.internal:5432/planning");
  assert.equal(secrets.get("TLS_CERT"), "file:/run/secrets/tls.cert:aGVsbG8gd29ybGQ=");
  assert.equal(
    text(store.emitPlain(doc.branches)),
    "[Container]\nImage         = registry.example.com/planning-webapp:latest\nContainerName = planning-webapp\n\n" +
      "[Secrets]\nDATABASE_URL = env:postgres://admin:s3cret@db.internal:5432/planning\n" +
      "API_KEY      = env:sk-live-abc123xyz\nTLS_CERT     = file:/run/secrets/tls.cert:aGVsbG8gd29ybGQ=\n\n" +
      "[Service]\nRestart = on-failure\n",
  );
  // Re-encrypting unchanged values gives back the same value lines (IV reuse).
  const again = text(reencryptDocument(doc));
  const original = fs.readFileSync(path.join(FIX, "secrets.enc.ini"), "utf8");
  for (const line of original.split("\n").filter((l) => l.includes("type:str]") && !l.startsWith("mac"))) {
    assert.ok(again.includes(line), line);
  }
  closeDocument(doc);
});

test("metadata newlines: the double-escaped `\\n` form and the 3.13.0/3.13.1 triple-quoted form both read", async () => {
  const key = parseIdentityString(fs.readFileSync(path.join(FIX, "key.txt"), "utf8").trim(), "key.txt");
  const original = fs.readFileSync(path.join(FIX, "secrets.enc.ini"), "utf8");
  // What sops 3.13.0 and 3.13.1 wrote: the armored key on real lines inside """ ... """.
  const tripleQuoted = original.replace(
    /^(age__list_0__map_enc\s+= )(.*)$/m,
    (_m, head: string, value: string) => `${head}"""${value.replaceAll("\\n", "\n").replace(/\n$/, "")}\n"""`,
  );
  assert.notEqual(tripleQuoted, original);
  assert.match(tripleQuoted, /= """-----BEGIN AGE ENCRYPTED FILE-----\n[A-Za-z0-9+/=]+\n/);
  for (const file of [original, tripleQuoted]) {
    const doc = await decryptDocument(Buffer.from(file), store, { identities: [key] });
    assert.equal(doc.macVerified, true);
    assert.match(
      doc.metadata.keyGroups[0]!.age[0]!.enc,
      /^-----BEGIN AGE ENCRYPTED FILE-----\n.*\n-----END AGE ENCRYPTED FILE-----\n$/s,
    );
    closeDocument(doc);
  }
});

const PLAIN = `; about the database
[database]
; the host to use
host = db.internal
port = 5432
password = "  spaces kept  "
hashy = \`a#b;c\`
multi = """line one
line two"""

[empty]

[other section]
key_unencrypted = visible
`;

test("round trip: sections, order, comments, quoting, and the layout sops writes", async () => {
  const enc = await encrypt(PLAIN);
  for (const secret of [
    "db.internal",
    "5432",
    "spaces kept",
    "a#b",
    "line one",
    "about the database",
    "the host",
  ]) {
    assert.ok(!enc.includes(secret), secret);
  }
  assert.match(
    enc,
    /^; ENC\[AES256_GCM,data:[^\]]+type:comment\]\n\[database\]\n; ENC\[.*type:comment\]\nhost {5}= ENC\[/,
  );
  assert.match(enc, /\nkey_unencrypted = visible\n\n\[sops\]\n/);
  // The [sops] section: flattened, keys aligned, the armored key on one line with literal \n.
  assert.match(
    enc,
    /\nage__list_0__map_enc {7}= -----BEGIN AGE ENCRYPTED FILE-----\\n[A-Za-z0-9+/=\\n]+-----END AGE ENCRYPTED FILE-----\\n\n/,
  );
  assert.match(enc, new RegExp(`\\nage__list_0__map_recipient = ${recipient}\\n`));
  assert.match(enc, /\nlastmodified {15}= 2026-01-02T03:04:05Z\n/);
  assert.match(enc, /\nunencrypted_suffix {9}= _unencrypted\nversion {20}= [0-9.]+\n$/);

  const doc = await decryptDocument(Buffer.from(enc), store, { identities: [id] });
  assert.equal(doc.macVerified, true);
  const db = doc.branches[0]!.get("database") as SopsBranch;
  assert.deepEqual(db.items[0], { key: new SopsComment("about the database"), value: null });
  assert.equal(db.get("password"), "  spaces kept  ");
  assert.equal(db.get("hashy"), "a#b;c");
  assert.equal(db.get("multi"), "line one\nline two");
  assert.equal(
    text(store.emitPlain(doc.branches)),
    `; about the database
[database]
; the host to use
host     = db.internal
port     = 5432
password = "  spaces kept  "
hashy    = \`a#b;c\`
multi    = """line one
line two"""

[empty]

[other section]
key_unencrypted = visible
`,
  );
  closeDocument(doc);
});

test("keys before any section are the DEFAULT section (additional data DEFAULT:key:), written without a header", async () => {
  const enc = await encrypt("top = 1\n[s]\na = 2\n");
  assert.match(enc, /^top = ENC\[.*\]\n\n\[s\]\na = ENC\[/);
  const doc = await decryptDocument(Buffer.from(enc), store, { identities: [id] });
  assert.deepEqual(doc.branches[0]!.keys(), ["DEFAULT", "s"]);
  assert.equal((doc.branches[0]!.get("DEFAULT") as SopsBranch).get("top"), "1");
  assert.equal(text(store.emitPlain(doc.branches)), "top = 1\n\n[s]\na = 2\n");
  closeDocument(doc);
  // The value was encrypted with the path DEFAULT:top: — moving it to another section breaks it.
  const moved = enc.replace(/^top = (ENC\[[^\n]*\])\n\n\[s\]\na = ENC\[[^\n]*\]/, "top = x\n\n[s]\na = $1");
  await assert.rejects(
    decryptDocument(Buffer.from(moved), store, { identities: [id] }),
    codeOf("SOPS_DECRYPT"),
  );
});

test("an explicit [DEFAULT] header is the same section as the implicit one", () => {
  const [b] = store.parsePlain(Buffer.from("[DEFAULT]\nx = 1\n[a]\ny = 2\n"));
  assert.deepEqual(b!.keys(), ["DEFAULT", "a"]);
  assert.equal(text(store.emitPlain([b!])), "x = 1\n\n[a]\ny = 2\n");
});

test("ini.v1 reading rules: ':' delimiter, inline comments, surrounding quotes, continuation lines, quoted keys", () => {
  const [b] = store.parsePlain(
    Buffer.from('[s]\na: 1\nb = two ; note\nc = "three"\nd = fo\\\n  ur\n`e=f` = 5\n"g" = 6\n'),
  );
  const s = b!.get("s") as SopsBranch;
  assert.deepEqual(s.keys(), ["a", "b", "c", "d", "e=f", "g"]);
  assert.equal(s.get("a"), "1");
  assert.equal(s.get("b"), "two");
  assert.deepEqual(s.items[2], { key: new SopsComment("note"), value: null });
  assert.equal(s.get("c"), "three");
  assert.equal(s.get("d"), "four");
  assert.equal(s.get("e=f"), "5");
  assert.match(text(store.emitPlain([b!])), /\n`e=f` = 5\n/);
});

test("Shamir key groups are flattened into [sops] and read back", async () => {
  const [a, b, c] = [X25519Identity.generate(), X25519Identity.generate(), X25519Identity.generate()];
  const groups = [a, b, c].map((x) => [x.recipient().toString()]);
  const enc = await encrypt("[s]\nk = v\n", groups, 2);
  assert.match(enc, /\nkey_groups__list_0__map_age__list_0__map_recipient = age1/);
  assert.match(enc, /\nkey_groups__list_2__map_age__list_0__map_enc {7}= -----BEGIN AGE/);
  assert.match(enc, /\nshamir_threshold {35}= 2\n/);
  for (const two of [
    [a, b],
    [b, c],
    [a, c],
  ]) {
    const doc = await decryptDocument(Buffer.from(enc), store, { identities: two });
    assert.equal(doc.metadata.keyGroups.length, 3);
    assert.equal(doc.metadata.shamirThreshold, 2);
    assert.equal((doc.branches[0]!.get("s") as SopsBranch).get("k"), "v");
    closeDocument(doc);
  }
  await assert.rejects(decryptDocument(Buffer.from(enc), store, { identities: [a] }));
});

test("tampering with a value, the MAC or lastmodified is detected", async () => {
  const enc = await encrypt("[s]\nk = value\nj = other\n");
  const swapped = enc.replace(/^k = (ENC\[.*\])\nj = (ENC\[.*\])$/m, "k = $2\nj = $1");
  assert.notEqual(swapped, enc);
  await assert.rejects(
    decryptDocument(Buffer.from(swapped), store, { identities: [id] }),
    codeOf("SOPS_DECRYPT"),
  );
  const later = enc.replace("2026-01-02T03:04:05Z", "2026-01-02T03:04:06Z");
  await assert.rejects(decryptDocument(Buffer.from(later), store, { identities: [id] }));
});

test("hostile input: duplicate keys and sections, lines without '=', unclosed sections; no value in messages", async () => {
  const secret = "hunter2-secret";
  const bad = [
    `[s]\nk = ${secret}\nk = ${secret}\n`,
    `top = ${secret}\ntop = 2\n`,
    `[s]\na = ${secret}\n[t]\n[s]\nb = 1\n`,
    `[s]\n${secret}\n`,
    `[s\nk = ${secret}\n`,
    `[]\nk = ${secret}\n`,
    `[s]\n= ${secret}\n`,
    `[s]\nk = """${secret}\n`,
    `[s]\n- = ${secret}\n`,
  ];
  for (const input of bad) {
    assert.throws(() => store.parsePlain(Buffer.from(input)), codeOf("SOPS_FORMAT", secret), input);
  }
  assert.throws(
    () => store.parsePlain(Buffer.from([0x5b, 0x73, 0x5d, 0x0a, 0xff, 0x3d, 0x31])),
    codeOf("SOPS_FORMAT"),
  );
  // Two [sops] sections in an encrypted file.
  const enc = await encrypt("[s]\nk = v\n");
  const twice = `${enc}\n[sops]\nversion = 3.13.2\n`;
  assert.throws(() => store.parseEncrypted(Buffer.from(twice)), codeOf("SOPS_FORMAT"));
  // A plaintext with a [sops] section is refused by encrypt.
  await assert.rejects(encrypt("[sops]\nk = v\n"), codeOf("SOPS_RESERVED"));
});

test("nested values and impossible names cannot be written", () => {
  const nested = new SopsBranch([
    { key: "s", value: new SopsBranch([{ key: "k", value: new SopsBranch() }]) },
  ]);
  assert.throws(() => store.emitPlain([nested]), codeOf("SOPS_FORMAT"));
  const top = new SopsBranch([{ key: "k", value: "v" }]);
  assert.throws(() => store.emitPlain([top]), codeOf("SOPS_FORMAT"));
  const badName = new SopsBranch([{ key: "a]b", value: new SopsBranch() }]);
  assert.throws(() => store.emitPlain([badName]), codeOf("SOPS_FORMAT"));
});

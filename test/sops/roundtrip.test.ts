/** Round trips through every store, IV reuse, tampering and hostile input. */
import assert from "node:assert/strict";
import crypto, { createHash } from "node:crypto";
import { syncBuiltinESMExports } from "node:module";
import { test } from "node:test";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import {
  BinaryStore,
  DotenvStore,
  decryptDocument,
  encryptNewDocument,
  formatGoFloat,
  JsonStore,
  reencryptDocument,
  SopsBranch,
  SopsComment,
  type SopsStore,
  YamlStore,
} from "../../src/sops/index.js";

const id = X25519Identity.generate();
const recipient = id.recipient().toString();
const other = X25519Identity.generate();

async function roundTrip(store: SopsStore, plain: string | Uint8Array) {
  const input = typeof plain === "string" ? Buffer.from(plain) : plain;
  const enc = await encryptNewDocument(store.parsePlain(input), store, { keyGroups: [[recipient]] });
  const doc = await decryptDocument(enc, store, { identities: [id] });
  return { enc: Buffer.from(enc).toString("utf8"), doc, out: Buffer.from(store.emitPlain(doc.branches)) };
}

function codeOf(code: string) {
  return (e: unknown) => {
    assert.ok(e instanceof NixsealError, String(e));
    assert.equal(e.code, code, e.message);
    return true;
  };
}

const YAML_DOC = `# head comment
name: alice # inline
port: 8080
ratio: 0.5
big: 9223372036854775807
on: true
empty: ""
nothing: null
nested:
    # about the list
    list:
        - one
        # between
        - two
    deeper:
        key: value
public_unencrypted: visible
`;

test("YAML: round trip keeps values, types, comments and the layout sops writes", async () => {
  const { enc, doc, out } = await roundTrip(new YamlStore(), YAML_DOC);
  assert.ok(!enc.includes("alice") && !enc.includes("head comment") && !enc.includes("between"));
  assert.match(enc, /^#ENC\[AES256_GCM,.*type:comment\]$/m);
  assert.match(enc, /^port: ENC\[AES256_GCM,.*,type:int\]$/m);
  assert.match(enc, /^ratio: ENC\[.*type:float\]$/m);
  assert.match(enc, /^on: ENC\[.*type:bool\]$/m);
  assert.match(enc, /^empty: ""$/m); // sops: empty strings are not encrypted
  assert.match(enc, /^nothing: null$/m);
  assert.match(enc, /^public_unencrypted: visible$/m);
  // sops writes a comment inside a list as an ENC[...,type:comment] list element.
  assert.match(enc, /^ {8}- ENC\[.*type:comment\]$/m);
  // Metadata: sorted keys, 4-space indent, lastmodified quoted, enc block scalar.
  assert.match(
    enc,
    /\nsops:\n {4}age:\n {8}- enc: \|\n {14}-----BEGIN AGE ENCRYPTED FILE-----\n[\s\S]*-----END AGE ENCRYPTED FILE-----\n {10}recipient: age1[0-9a-z]+\n {4}lastmodified: "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\n {4}mac: ENC\[[^\]]+type:str\]\n {4}unencrypted_suffix: _unencrypted\n {4}version: 3\.13\.2\n$/,
  );
  const b = doc.branches[0]!;
  assert.equal(b.get("port"), 8080n);
  assert.equal(b.get("big"), 9223372036854775807n);
  assert.equal(b.get("ratio"), 0.5);
  assert.equal(b.get("on"), true);
  const text = out.toString("utf8");
  assert.match(text, /^# head comment\nname: alice # inline\n/);
  assert.match(text, /\n {4}# about the list\n {4}list:\n {8}- one\n {8}# between\n {8}- two\n/);
  assert.equal(new YamlStore().parsePlain(out).length, 1);
});

test("YAML: multi-document files carry the metadata in every document", async () => {
  const { enc, doc } = await roundTrip(new YamlStore(), "a: 1\n---\nb: 2\n");
  assert.equal(enc.match(/^sops:$/gm)?.length, 2);
  assert.equal(doc.branches.length, 2);
  assert.equal(doc.branches[1]!.get("b"), 2n);
});

test("JSON: round trip keeps order and int64 exactly", async () => {
  const src =
    '{"z": 1, "a": {"big": 9007199254740993, "neg": -9223372036854775808, "f": 1.5, "huge": 18446744073709551616, "s": "x<y>&"}, "l": [true, null, "q"]}';
  const { enc, doc, out } = await roundTrip(new JsonStore(), src);
  assert.match(enc, /^\{\n\t"z": "ENC\[/);
  const a = doc.branches[0]!.get("a") as SopsBranch;
  assert.equal(a.get("big"), 9007199254740993n);
  assert.equal(a.get("neg"), -9223372036854775808n);
  assert.equal(a.get("huge"), 2 ** 64); // beyond int64: a float, as sops
  assert.deepEqual(doc.branches[0]!.keys(), ["z", "a", "l"]);
  const text = out.toString("utf8");
  assert.match(text, /"big": 9007199254740993,/);
  assert.match(text, /"s": "x\\u003cy\\u003e\\u0026"/); // Go's HTML-safe escaping
});

test("dotenv: round trip with comments and newlines", async () => {
  const { enc, doc, out } = await roundTrip(new DotenvStore(), "# c\nA=1\nB=two words\nMULTI=a\\nb\n");
  assert.match(enc, /^#ENC\[.*type:comment\]\nA=ENC\[/);
  assert.match(enc, /\nsops_age__list_0__map_enc=-----BEGIN AGE ENCRYPTED FILE-----\\n/);
  assert.match(
    enc,
    /\nsops_lastmodified=.*\nsops_mac=ENC\[.*\nsops_unencrypted_suffix=_unencrypted\nsops_version=3\.13\.2\n$/,
  );
  assert.equal(doc.branches[0]!.get("MULTI"), "a\nb");
  assert.equal(doc.branches[0]!.get("A"), "1"); // dotenv values are strings
  assert.equal(out.toString("utf8"), "# c\nA=1\nB=two words\nMULTI=a\\nb\n");
});

test("binary: arbitrary bytes round trip", async () => {
  const bytes = Buffer.from([0, 255, 254, 10, 13, 0xc3, 0x28, 65]);
  const { enc, out } = await roundTrip(new BinaryStore(), bytes);
  assert.match(enc, /^\{\n\t"data": "ENC\[AES256_GCM,.*type:str\]",\n\t"sops": \{/);
  assert.deepEqual(out, bytes);
});

test("re-encryption keeps byte-identical ciphertext for unchanged values; changed ones differ", async () => {
  const store = new YamlStore();
  const enc1 = Buffer.from(
    await encryptNewDocument(store.parsePlain(Buffer.from(YAML_DOC)), store, { keyGroups: [[recipient]] }),
  ).toString("utf8");
  const doc = await decryptDocument(Buffer.from(enc1), store, { identities: [id] });
  doc.branches[0]!.set("port", 9090n);
  const enc2 = Buffer.from(reencryptDocument(doc)).toString("utf8");
  const line = (s: string, k: string) => s.split("\n").find((l) => l.startsWith(`${k}:`));
  assert.equal(line(enc2, "name"), line(enc1, "name"));
  assert.equal(line(enc2, "ratio"), line(enc1, "ratio"));
  assert.notEqual(line(enc2, "port"), line(enc1, "port"));
  assert.equal(enc1.split("\n")[0], enc2.split("\n")[0]); // the encrypted head comment too
  const again = await decryptDocument(Buffer.from(enc2), store, { identities: [id] });
  assert.equal(again.branches[0]!.get("port"), 9090n);
});

test("Shamir key groups: any threshold of groups decrypts", async () => {
  const third = X25519Identity.generate();
  const store = new JsonStore();
  const enc = await encryptNewDocument(store.parsePlain(Buffer.from('{"k": "v"}')), store, {
    keyGroups: [[recipient], [other.recipient().toString()], [third.recipient().toString()]],
    shamirThreshold: 2,
  });
  const text = Buffer.from(enc).toString("utf8");
  assert.match(text, /"key_groups": \[/);
  assert.match(text, /"shamir_threshold": 2,/);
  const doc = await decryptDocument(enc, store, { identities: [other, third] });
  assert.equal(doc.branches[0]!.get("k"), "v");
  await assert.rejects(decryptDocument(enc, store, { identities: [third] }), codeOf("SOPS_NO_KEY"));
});

// ---- tampering -------------------------------------------------------------------------------

async function encryptedYaml(): Promise<string> {
  const store = new YamlStore();
  return Buffer.from(
    await encryptNewDocument(store.parsePlain(Buffer.from("a: one\nb: two\npub_unencrypted: x\n")), store, {
      keyGroups: [[recipient]],
    }),
  ).toString("utf8");
}

async function decryptYaml(s: string, ignoreMac = false) {
  return decryptDocument(Buffer.from(s), new YamlStore(), { identities: [id], ignoreMac });
}

test("tampering: a value swapped to another key fails authentication (path is additional data)", async () => {
  const s = await encryptedYaml();
  const a = /^a: (.*)$/m.exec(s)![1]!;
  const b = /^b: (.*)$/m.exec(s)![1]!;
  const swapped = s.replace(`a: ${a}`, `a: ${b}`);
  await assert.rejects(decryptYaml(swapped), (e: unknown) => {
    codeOf("SOPS_DECRYPT")(e);
    assert.doesNotMatch((e as Error).message, /one|two/);
    return true;
  });
});

test("tampering: a changed ciphertext byte fails", async () => {
  const s = await encryptedYaml();
  const tampered = s.replace(
    /^a: ENC\[AES256_GCM,data:(.)/m,
    (_m, c: string) => `a: ENC[AES256_GCM,data:${c === "A" ? "B" : "A"}`,
  );
  await assert.rejects(decryptYaml(tampered), codeOf("SOPS_DECRYPT"));
});

test("tampering: an unencrypted value changed is caught by the MAC (and --ignore-mac overrides)", async () => {
  const s = await encryptedYaml();
  const tampered = s.replace("pub_unencrypted: x", "pub_unencrypted: y");
  await assert.rejects(decryptYaml(tampered), codeOf("SOPS_MAC"));
  const doc = await decryptYaml(tampered, true);
  assert.equal(doc.macVerified, false);
  assert.equal(doc.branches[0]!.get("pub_unencrypted"), "y");
});

test("tampering: a value removed is caught by the MAC", async () => {
  const s = await encryptedYaml();
  await assert.rejects(decryptYaml(s.replace(/^b: .*\n/m, "")), codeOf("SOPS_MAC"));
});

test("tampering: lastmodified or the MAC changed", async () => {
  const s = await encryptedYaml();
  const lm = s.replace(/lastmodified: "(\d{4})/, (_m, y: string) => `lastmodified: "${Number(y) - 1}`);
  await assert.rejects(decryptYaml(lm), codeOf("SOPS_MAC"));
  const mac = s.replace(
    /mac: ENC\[AES256_GCM,data:(.)/,
    (_m, c: string) => `mac: ENC[AES256_GCM,data:${c === "A" ? "B" : "A"}`,
  );
  await assert.rejects(decryptYaml(mac), codeOf("SOPS_MAC"));
});

test("the MAC is compared in constant time: timingSafeEqual on two buffers of the same length", async (t) => {
  const s = await encryptedYaml();
  // sops' MAC, computed here: SHA-512 over the values in order, in upper-case hex.
  const want = createHash("sha512").update("one").update("two").update("x").digest("hex").toUpperCase();
  const calls: { a: string; b: string; equal: boolean }[] = [];
  const real = crypto.timingSafeEqual;
  t.mock.method(crypto, "timingSafeEqual", (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
    const equal = real(a, b);
    const text = (v: NodeJS.ArrayBufferView) =>
      Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("latin1");
    calls.push({ a: text(a), b: text(b), equal });
    return equal;
  });
  syncBuiltinESMExports(); // the named import in src/sops sees the mock
  try {
    const doc = await decryptYaml(s);
    assert.equal(doc.macVerified, true);
    assert.ok(
      calls.some((c) => c.a === want && c.b === want && c.equal),
      `no constant-time comparison of the MAC among ${calls.length} calls`,
    );
    calls.length = 0;
    await assert.rejects(
      decryptYaml(s.replace("pub_unencrypted: x", "pub_unencrypted: y")),
      codeOf("SOPS_MAC"),
    );
    assert.ok(
      calls.some((c) => c.a === want && c.b.length === want.length && c.b !== want && !c.equal),
      "a changed value: the stored and the computed MAC compared in constant time, and found different",
    );
  } finally {
    t.mock.restoreAll();
    syncBuiltinESMExports();
  }
});

test("tampering: a changed enc of the only recipient is reported as damaged", async () => {
  const s = await encryptedYaml();
  const lines = s.split("\n");
  const i = lines.findIndex((l) => l.includes("BEGIN AGE ENCRYPTED FILE")) + 3;
  const l = lines[i]!;
  const pos = l.length - 5;
  lines[i] = l.slice(0, pos) + (l[pos] === "A" ? "B" : "A") + l.slice(pos + 1);
  await assert.rejects(decryptYaml(lines.join("\n")), (e: unknown) => {
    assert.ok(e instanceof NixsealError);
    assert.ok(e.code === "SOPS_METADATA" || e.code === "SOPS_NO_KEY", e.code);
    assert.match(e.message, /age1/);
    return true;
  });
});

test("encrypted_regex in Go's syntax (flags mid-pattern, named groups, \\z) picks the values Go would", async () => {
  const store = new YamlStore();
  const plain = "Password: a\nTOKEN: b\nuser: c\npasswords: d\nPASSWORD: e\n";
  const enc = Buffer.from(
    await encryptNewDocument(store.parsePlain(Buffer.from(plain)), store, {
      keyGroups: [[recipient]],
      rules: { encryptedRegex: "^(?i)(?P<kind>token|pass(?-i)word)\\z" },
    }),
  ).toString("utf8");
  const line = (k: string) => enc.split("\n").find((l) => l.startsWith(`${k}:`)) ?? "";
  // (?-i) makes the rest of its group case-sensitive again ("word"); \z is the end of the key.
  assert.match(line("Password"), /ENC\[AES256_GCM,/);
  assert.match(line("TOKEN"), /ENC\[AES256_GCM,/);
  assert.equal(line("user"), "user: c");
  assert.equal(line("passwords"), "passwords: d");
  assert.equal(line("PASSWORD"), "PASSWORD: e");
  const doc = await decryptDocument(Buffer.from(enc), store, { identities: [id] });
  assert.equal(Buffer.from(store.emitPlain(doc.branches)).toString("utf8"), plain);
});

// ---- hostile input ----------------------------------------------------------------------------

test("encrypt refuses a top-level sops key, an encrypted file, and sops_ keys in dotenv", async () => {
  const y = new YamlStore();
  const enc = (store: SopsStore, s: string) =>
    encryptNewDocument(store.parsePlain(Buffer.from(s)), store, { keyGroups: [[recipient]] });
  await assert.rejects(enc(y, "sops: 1\na: 2\n"), codeOf("SOPS_RESERVED"));
  await assert.rejects(enc(y, await encryptedYaml()), codeOf("SOPS_ENCRYPTED"));
  await assert.rejects(
    enc(y, "a: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n"),
    codeOf("SOPS_ENCRYPTED"),
  );
  await assert.rejects(enc(new DotenvStore(), "sops_x=1\n"), codeOf("SOPS_RESERVED"));
});

test("duplicate keys are an error in YAML, JSON and dotenv; no secret in the message", () => {
  assert.throws(
    () => new YamlStore().parsePlain(Buffer.from("a: s3cr3t\na: other\n")),
    (e: unknown) => {
      codeOf("SOPS_FORMAT")(e);
      assert.doesNotMatch((e as Error).message, /s3cr3t/);
      return true;
    },
  );
  assert.throws(() => new JsonStore().parsePlain(Buffer.from('{"a": 1, "a": 2}')), codeOf("SOPS_FORMAT"));
  assert.throws(() => new DotenvStore().parsePlain(Buffer.from("A=1\nA=2\n")), codeOf("SOPS_FORMAT"));
});

test("YAML syntax errors do not quote the source line", () => {
  assert.throws(
    () => new YamlStore().parsePlain(Buffer.from("a: [s3cr3t\n")),
    (e: unknown) => {
      codeOf("SOPS_FORMAT")(e);
      assert.doesNotMatch((e as Error).message, /s3cr3t/);
      return true;
    },
  );
});

test("__proto__ and constructor keys are ordinary keys", async () => {
  const src = '{"__proto__": {"polluted": "yes"}, "constructor": "c", "toString": "t"}';
  const { doc, out } = await roundTrip(new JsonStore(), src);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(doc.branches[0]!.keys(), ["__proto__", "constructor", "toString"]);
  assert.match(out.toString("utf8"), /"__proto__": \{\n\t\t"polluted": "yes"\n\t\}/);
  const y = await roundTrip(new YamlStore(), "__proto__:\n    polluted: yes\n");
  assert.ok(y.doc.branches[0]!.get("__proto__") instanceof SopsBranch);
});

test("strict JSON and bounded input", () => {
  const j = new JsonStore();
  for (const bad of [
    "[1]",
    '{"a": 1,}',
    '{"a": 01}',
    "{'a': 1}",
    '{"a": 1} x',
    '{"a": NaN}',
    '{"a": "\u0001"}',
  ]) {
    assert.throws(() => j.parsePlain(Buffer.from(bad)), codeOf("SOPS_FORMAT"), bad);
  }
  assert.throws(
    () => j.parsePlain(Buffer.from(`${'{"a":'.repeat(300)}1${"}".repeat(300)}`)),
    codeOf("SOPS_FORMAT"),
  );
  assert.throws(() => new YamlStore().parsePlain(Buffer.from("- a\n- b\n")), codeOf("SOPS_FORMAT"));
  assert.throws(() => new YamlStore().parsePlain(Buffer.from("1: a\n")), codeOf("SOPS_FORMAT"));
  assert.throws(
    () => new YamlStore().parsePlain(Buffer.from("a: 99999999999999999999\n")),
    codeOf("SOPS_FORMAT"),
  );
  const laughs = `a: &a ["x","x","x","x","x","x","x","x","x","x"]\n${Array.from(
    { length: 8 },
    (_, i) =>
      `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
        .fill(`*${String.fromCharCode(97 + i)}`)
        .join(",")}]`,
  ).join("\n")}\n`;
  assert.throws(() => new YamlStore().parsePlain(Buffer.from(laughs)), codeOf("SOPS_FORMAT"));
});

test("Go float formatting (strconv.FormatFloat 'f', -1)", () => {
  assert.equal(formatGoFloat(1e21), "1000000000000000000000");
  assert.equal(formatGoFloat(1.5e-7), "0.00000015");
  assert.equal(formatGoFloat(-2.5e25), "-25000000000000000000000000");
  assert.equal(formatGoFloat(0.1), "0.1");
  assert.equal(formatGoFloat(3), "3");
  assert.equal(formatGoFloat(-0), "-0");
  assert.equal(formatGoFloat(Number.POSITIVE_INFINITY), "+Inf");
});

test("comments survive decryption as comments, not values", async () => {
  const { doc } = await roundTrip(new YamlStore(), "l:\n    - a\n    # c\n    - b\n");
  const l = doc.branches[0]!.get("l") as unknown[];
  assert.equal(l.length, 3);
  assert.ok(l[1] instanceof SopsComment);
  assert.equal((l[1] as SopsComment).value, " c");
});

/**
 * Version 2 of the recipients record and what rekey does with it: the tags follow the documented
 * construction (computed here with node:crypto, independently of the code under test), the real
 * age binary decrypts files carrying them, rekey keeps the stanzas of recipients who stay byte
 * for byte and drops those of removed ones, wraps version 1 / agenix files anew for everyone,
 * --force wraps everything anew, and a tampered record is caught.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHmac, hkdfSync } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { decrypt, decryptHeader, encryptHeader, extractHeader, readHeader } from "../../src/age/age.js";
import type { Identity, Stanza } from "../../src/age/types.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { checkRepository } from "../../src/vault/check.js";
import {
  RECIPIENTS_RECORD_STANZA,
  readRecipientsRecord,
  recordStanza,
} from "../../src/vault/recipients-record.js";
import { rekeyRepository } from "../../src/vault/rekey.js";
import { makeRules, tempDir, which } from "../helpers.js";
import { PLUGIN_FIXTURES, payloadOf, rekeyOptions, writeAll } from "./rekey-fixtures.js";

const AGE = which("age");
const SSH_KEYGEN = which("ssh-keygen");

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

/** The documented tag construction, written out with node:crypto. */
function expectedTag(fileKey: Uint8Array, recipient: string): Buffer {
  const key = Buffer.from(hkdfSync("sha256", fileKey, Buffer.alloc(0), "nixseal.org/recipients/v2 tags", 32));
  return createHmac("sha256", key).update(recipient, "utf8").digest().subarray(0, 8);
}

/** The header's stanzas as they are written, one text block each (record included). */
function stanzaTexts(file: Uint8Array): string[] {
  const text = Buffer.from(file.subarray(0, readHeader(file).length)).toString("latin1");
  const body = text.slice(text.indexOf("\n") + 1, text.lastIndexOf("\n---"));
  return body.split(/(?=^-> )/m).map((s) => (s.endsWith("\n") ? s : `${s}\n`));
}

/** Decrypts with the real age binary and one identity: the plaintext, or null if age fails. */
function ageDecrypt(file: string, identity: X25519Identity): string | null {
  const idFile = path.join(dir, `id-${process.hrtime.bigint()}.txt`);
  fs.writeFileSync(idFile, `${identity.encode()}\n`, { mode: 0o600 });
  try {
    const r = spawnSync(AGE!, ["-d", "-i", idFile, file]);
    return r.status === 0 ? r.stdout.toString() : null;
  } finally {
    fs.rmSync(idFile);
  }
}

async function fileKeyOf(file: string, identity: Identity): Promise<Uint8Array> {
  return decryptHeader(extractHeader(fs.readFileSync(file)).header, [identity]);
}

function ids(n: number): { ids: X25519Identity[]; keys: string[] } {
  const list = Array.from({ length: n }, () => X25519Identity.generate());
  return { ids: list, keys: list.map((i) => i.recipient().toString()) };
}

describe("the version 2 recipients record", () => {
  test("tags each stanza with its recipient under the file key, as documented", async () => {
    const { ids: people, keys } = ids(3);
    const rules = makeRules(path.join(dir, "tags"), { "s.age": { publicKeys: keys } });
    await writeAll(rules);
    const file = rules.secrets.get("s.age")!.file;
    const stanzas = readHeader(fs.readFileSync(file)).stanzas;
    assert.equal(stanzas.length, 4);
    const record = stanzas[3]!;
    assert.equal(record.type, RECIPIENTS_RECORD_STANZA);
    assert.equal(record.args[1], "v2");
    const fileKey = await fileKeyOf(file, people[1]!);
    assert.deepEqual(
      Buffer.from(record.body),
      Buffer.concat(keys.map((k) => expectedTag(fileKey, k))),
      "one tag per stanza, in the stanzas' order",
    );
    // Without the file key the tags say nothing: another file to the same recipients has others.
    const other = makeRules(path.join(dir, "tags-other"), { "s.age": { publicKeys: keys } });
    await writeAll(other);
    const otherRecord = readHeader(fs.readFileSync(other.secrets.get("s.age")!.file)).stanzas[3]!;
    assert.equal(otherRecord.args[0], record.args[0], "the same digest: the same recipients");
    assert.notDeepEqual(Buffer.from(otherRecord.body), Buffer.from(record.body));
    assert.deepEqual(checkRepository(rules).problems, []);
  });

  test("ssh keys are tagged by their normalised form (comment dropped)", {
    skip: !SSH_KEYGEN && "ssh-keygen not installed",
  }, async () => {
    const keyFile = path.join(dir, "ssh-tag");
    execFileSync(SSH_KEYGEN!, ["-q", "-t", "ed25519", "-N", "", "-C", "a comment", "-f", keyFile]);
    const pub = fs.readFileSync(`${keyFile}.pub`, "utf8").trim();
    const alice = X25519Identity.generate();
    const rules = makeRules(path.join(dir, "ssh-tags"), {
      "s.age": { publicKeys: [pub, alice.recipient().toString()] },
    });
    await writeAll(rules);
    const file = rules.secrets.get("s.age")!.file;
    const record = readHeader(fs.readFileSync(file)).stanzas[2]!;
    const fileKey = await fileKeyOf(file, alice);
    const normalisedSsh = pub.split(" ").slice(0, 2).join(" ");
    assert.deepEqual(
      Buffer.from(record.body),
      Buffer.concat([
        expectedTag(fileKey, normalisedSsh),
        expectedTag(fileKey, alice.recipient().toString()),
      ]),
    );
  });

  test("the real age binary decrypts a file with 40 recipients and a multi-line record body", {
    skip: !AGE && "age not installed",
  }, async () => {
    const { ids: people, keys } = ids(40);
    const rules = makeRules(path.join(dir, "forty"), { "s.age": { publicKeys: keys } });
    await writeAll(rules);
    const file = rules.secrets.get("s.age")!.file;
    const bytes = fs.readFileSync(file);
    const record = readHeader(bytes).stanzas.at(-1)!;
    assert.equal(record.body.length, 40 * 8);
    // 320 bytes are 427 base64 characters: 6 full 64-column lines and a shorter one.
    const recordText = stanzaTexts(bytes).at(-1)!;
    assert.equal(recordText.split("\n").length - 2, 7);
    for (const i of [0, 19, 39]) assert.equal(ageDecrypt(file, people[i]!), "value of s.age");
    assert.equal(ageDecrypt(file, X25519Identity.generate()), null);
  });

  test("a file with a plugin recipient carries a version 1 record (a plugin may write several stanzas)", async () => {
    const savedPath = process.env.PATH;
    process.env.PATH = `${PLUGIN_FIXTURES}${path.delimiter}${savedPath ?? ""}`;
    try {
      const out = execFileSync(path.join(PLUGIN_FIXTURES, "age-plugin-nstest"), ["--generate"], {
        encoding: "utf8",
      });
      const plugin = /# public key: (\S+)/.exec(out)![1]!;
      const { keys } = ids(1);
      const rules = makeRules(path.join(dir, "plugin-v1"), { "p.age": { publicKeys: [keys[0]!, plugin] } });
      await writeAll(rules);
      const record = readHeader(fs.readFileSync(rules.secrets.get("p.age")!.file)).stanzas.at(-1)!;
      assert.equal(record.type, RECIPIENTS_RECORD_STANZA);
      assert.equal(record.args.length, 1);
      assert.equal(record.body.length, 0);
      assert.deepEqual(checkRepository(rules).problems, []);
    } finally {
      process.env.PATH = savedPath;
    }
  });

  test("reading: version 1 and 2 are read; wrong tag counts, stanzas after it, unknown versions are problems", () => {
    const digest = "A".repeat(43);
    const x: Stanza = { type: "X25519", args: ["a"], body: new Uint8Array(32) };
    const v1 = readRecipientsRecord([x, recordStanza(digest)]);
    assert.deepEqual(v1, { state: "present", digest, tags: null });
    const v2 = readRecipientsRecord([x, x, recordStanza(digest, new Uint8Array(16).fill(7))]);
    assert.equal(v2.state, "present");
    assert.equal(v2.state === "present" && v2.tags?.length, 2);
    const short = readRecipientsRecord([x, x, recordStanza(digest, new Uint8Array(8))]);
    assert.match(
      (short.state === "present" && short.problem) || "",
      /recipients record has 8 bytes of tags for 2 stanzas/,
    );
    const after = readRecipientsRecord([x, recordStanza(digest, new Uint8Array(8)), x]);
    assert.match((after.state === "present" && after.problem) || "", /1 stanza after the recipients record/);
    const v3: Stanza = { type: RECIPIENTS_RECORD_STANZA, args: [digest, "v3"], body: new Uint8Array(0) };
    const unknown = readRecipientsRecord([x, v3]);
    assert.equal(unknown.state, "malformed");
    assert.match(unknown.state === "malformed" ? unknown.reason : "", /unknown version \("v3"\)/);
  });
});

describe("rekey keeps the stanzas of recipients who stay", { skip: !AGE && "age not installed" }, () => {
  test("adding a recipient: the old stanzas stay byte for byte, only the new one is wrapped", async () => {
    const { ids: people, keys } = ids(4);
    const repo = path.join(dir, "add");
    await writeAll(makeRules(repo, { "s.age": { publicKeys: keys.slice(0, 3) } }));
    const file = path.join(repo, "s.age");
    const before = fs.readFileSync(file);
    const rules = makeRules(repo, { "s.age": { publicKeys: keys } });
    const r = await rekeyRepository(rules, rekeyOptions([people[0]!]));
    assert.deepEqual(r.rewritten, ["s.age"]);
    const after = fs.readFileSync(file);
    const [oldTexts, newTexts] = [stanzaTexts(before), stanzaTexts(after)];
    assert.equal(newTexts.length, 5);
    assert.deepEqual(newTexts.slice(0, 3), oldTexts.slice(0, 3), "the three stanzas kept as they were");
    assert.ok(!oldTexts.includes(newTexts[3]!), "a new stanza for the fourth recipient");
    assert.ok(payloadOf(after).equals(payloadOf(before)), "the payload is kept");
    for (const p of people) assert.equal(ageDecrypt(file, p), "value of s.age");
    // The record names and tags the new set: check agrees, and the next rekey has nothing to do.
    assert.deepEqual(checkRepository(rules).problems, []);
    const fileKey = await fileKeyOf(file, people[3]!);
    assert.deepEqual(
      Buffer.from(readHeader(after).stanzas[4]!.body),
      Buffer.concat(keys.map((k) => expectedTag(fileKey, k))),
    );
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([people[0]!]))).unchanged, ["s.age"]);
  });

  test("on worker threads too: 40 files keep their stanzas, and a version 1 file among them is wrapped anew", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "workers");
    const names = Array.from({ length: 40 }, (_, i) => `s${i}.age`);
    const entries = (k: string[]) => Object.fromEntries(names.map((n) => [n, { publicKeys: k }]));
    await writeAll(makeRules(repo, entries(keys.slice(0, 2))));
    // One file as an older nixseal wrote it: no tags.
    const v1File = path.join(repo, "s7.age");
    const parts = extractHeader(fs.readFileSync(v1File));
    const fileKey = await decryptHeader(parts.header, [people[0]!]);
    const old = parts.header.stanzas;
    const v1Header = await encryptHeader(fileKey, [
      { wrapFileKey: () => [old[0]!, old[1]!, recordStanza(old[2]!.args[0]!)] },
    ]);
    fs.writeFileSync(v1File, Buffer.concat([v1Header, parts.payload]));
    const before = new Map(names.map((n) => [n, stanzaTexts(fs.readFileSync(path.join(repo, n)))]));
    const rules = makeRules(repo, entries(keys));
    const r = await rekeyRepository(rules, rekeyOptions([people[0]!], { workers: 2 }));
    assert.equal(r.rewritten.length, 40);
    for (const n of names) {
      const texts = stanzaTexts(fs.readFileSync(path.join(repo, n)));
      assert.equal(texts.length, 4);
      if (n === "s7.age") for (const t of texts) assert.ok(!before.get(n)!.includes(t));
      else assert.deepEqual(texts.slice(0, 2), before.get(n)!.slice(0, 2), `${n}: kept`);
    }
    for (const p of people) assert.equal(ageDecrypt(path.join(repo, "s39.age"), p), "value of s39.age");
    assert.equal(ageDecrypt(path.join(repo, "s7.age"), people[2]!), "value of s7.age");
    assert.deepEqual(checkRepository(rules).problems, []);
  });

  test("more files than rekey keeps open at once (synced and closed in batches): every one rewritten, read by the added recipient, no temp file left", async () => {
    const { ids: people, keys } = ids(3);
    const names = Array.from({ length: 1100 }, (_, i) => `s${String(i).padStart(4, "0")}.age`);
    const entries = (k: string[]) => Object.fromEntries(names.map((n) => [n, { publicKeys: k }]));
    // With a worker (files written ahead while others are decrypted) and without one.
    for (const workers of [1, 0]) {
      const repo = path.join(dir, `batches-${workers}`);
      await writeAll(makeRules(repo, entries(keys.slice(0, 2))));
      const r = await rekeyRepository(
        makeRules(repo, entries(keys)),
        rekeyOptions([people[0]!], { workers }),
      );
      assert.deepEqual(r.failed, []);
      assert.equal(r.rewritten.length, names.length);
      for (const n of names) {
        const plain = await decrypt(fs.readFileSync(path.join(repo, n)), [people[2]!]);
        assert.equal(Buffer.from(plain).toString(), `value of ${n}`, `${n} (workers: ${workers})`);
      }
      assert.deepEqual(
        fs.readdirSync(repo).filter((f) => f.startsWith(".")),
        [],
      );
    }
  });

  test("files written ahead by workers are not renamed when a later file fails: nothing changes, no temp file is left", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "ahead-fails");
    const names = Array.from({ length: 200 }, (_, i) => `s${String(i).padStart(3, "0")}.age`);
    const entries = (k: string[]) => Object.fromEntries(names.map((n) => [n, { publicKeys: k }]));
    await writeAll(makeRules(repo, entries(keys.slice(0, 2))));
    // The last file (decrypted last) is for someone else: the run must write nothing.
    await writeAll(makeRules(repo, { "s199.age": { publicKeys: [keys[2]!] } }));
    const before = new Map(names.map((n) => [n, fs.readFileSync(path.join(repo, n))]));
    const rules = makeRules(repo, entries(keys));
    // The identity takes its time on the last file, so that the worker has wrapped the others
    // and their temp files are written (seen here) before the failure is known.
    let calls = 0;
    let writtenAhead = 0;
    const slow: Identity = {
      description: "alice, slow on the last file",
      async unwrapFileKey(stanzas) {
        if (++calls === names.length) {
          for (let i = 0; i < 100 && writtenAhead === 0; i++) {
            await new Promise((resolve) => setTimeout(resolve, 50));
            writtenAhead = fs.readdirSync(repo).filter((f) => f.endsWith(".tmp")).length;
          }
        }
        return people[0]!.unwrapFileKey(stanzas);
      },
    };
    const r = await rekeyRepository(rules, rekeyOptions([slow], { workers: 1 }));
    assert.ok(writtenAhead > 0, "temp files were written ahead");
    assert.deepEqual(
      r.failed.map((f) => f.secret),
      ["s199.age"],
    );
    assert.deepEqual(r.rewritten, []);
    for (const n of names)
      assert.ok(fs.readFileSync(path.join(repo, n)).equals(before.get(n)!), `${n} unchanged`);
    assert.deepEqual(
      fs.readdirSync(repo).filter((f) => f.endsWith(".tmp")),
      [],
    );
  });

  test("removing a recipient drops exactly their stanza; they can no longer decrypt the new file", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "remove");
    await writeAll(makeRules(repo, { "s.age": { publicKeys: keys } }));
    const file = path.join(repo, "s.age");
    const oldTexts = stanzaTexts(fs.readFileSync(file));
    const rules = makeRules(repo, { "s.age": { publicKeys: [keys[0]!, keys[2]!] } });
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([people[2]!]))).rewritten, ["s.age"]);
    const newTexts = stanzaTexts(fs.readFileSync(file));
    assert.deepEqual(newTexts.slice(0, 2), [oldTexts[0], oldTexts[2]]);
    assert.equal(newTexts.length, 3);
    assert.equal(ageDecrypt(file, people[0]!), "value of s.age");
    assert.equal(ageDecrypt(file, people[2]!), "value of s.age");
    assert.equal(ageDecrypt(file, people[1]!), null);
    assert.deepEqual(checkRepository(rules).problems, []);
  });

  test("replacing a recipient and reordering the rules keeps the others' stanzas in the new order", async () => {
    const { ids: people, keys } = ids(4);
    const repo = path.join(dir, "replace");
    await writeAll(makeRules(repo, { "s.age": { publicKeys: keys.slice(0, 3) } }));
    const file = path.join(repo, "s.age");
    const oldTexts = stanzaTexts(fs.readFileSync(file));
    const rules = makeRules(repo, { "s.age": { publicKeys: [keys[3]!, keys[2]!, keys[0]!] } });
    await rekeyRepository(rules, rekeyOptions([people[0]!]));
    const newTexts = stanzaTexts(fs.readFileSync(file));
    assert.deepEqual(newTexts.slice(1, 3), [oldTexts[2], oldTexts[0]]);
    assert.ok(!oldTexts.includes(newTexts[0]!));
    assert.equal(ageDecrypt(file, people[3]!), "value of s.age");
    assert.equal(ageDecrypt(file, people[1]!), null);
  });

  test("an agenix-style file (age, no record) and a version 1 file are wrapped anew for everyone, and get version 2", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "legacy");
    const rules0 = makeRules(repo, { "v1.age": { publicKeys: keys.slice(0, 2) } });
    await writeAll(rules0);
    const v1File = path.join(repo, "v1.age");
    // A file of an older nixseal: the same stanzas, a record without tags.
    const parts = extractHeader(fs.readFileSync(v1File));
    const fileKey = await decryptHeader(parts.header, [people[0]!]);
    const v1Header = await encryptHeader(fileKey, [
      {
        wrapFileKey: () => [
          ...parts.header.stanzas.slice(0, 2),
          recordStanza(parts.header.stanzas[2]!.args[0]!),
        ],
      },
    ]);
    fs.writeFileSync(v1File, Buffer.concat([v1Header, parts.payload]));
    const ageFile = path.join(repo, "agenix.age");
    const made = spawnSync(AGE!, ["-r", keys[0]!, "-r", keys[1]!, "-o", ageFile], { input: "from age" });
    assert.equal(made.status, 0, made.stderr.toString());
    const before = new Map([v1File, ageFile].map((f) => [f, stanzaTexts(fs.readFileSync(f))]));

    const rules = makeRules(repo, {
      "v1.age": { publicKeys: keys },
      "agenix.age": { publicKeys: keys },
    });
    const r = await rekeyRepository(rules, rekeyOptions([people[0]!]));
    assert.deepEqual(r.rewritten, ["agenix.age", "v1.age"]);
    for (const f of [v1File, ageFile]) {
      const texts = stanzaTexts(fs.readFileSync(f));
      for (const t of texts)
        assert.ok(!before.get(f)!.includes(t), `${path.basename(f)}: every stanza is new`);
      const record = readHeader(fs.readFileSync(f)).stanzas.at(-1)!;
      assert.deepEqual(record.args.slice(1), ["v2"]);
      assert.equal(record.body.length, 3 * 8);
      for (const p of people) assert.ok(ageDecrypt(f, p) !== null);
    }
    assert.deepEqual(checkRepository(rules).problems, []);
  });

  test("--force wraps every stanza anew", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "force");
    const rules = makeRules(repo, { "s.age": { publicKeys: keys } });
    await writeAll(rules);
    const file = path.join(repo, "s.age");
    const before = fs.readFileSync(file);
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([people[0]!]))).unchanged, ["s.age"]);
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([people[0]!], { force: true }))).rewritten, [
      "s.age",
    ]);
    const after = fs.readFileSync(file);
    const oldStanzas = readHeader(before).stanzas;
    const newStanzas = readHeader(after).stanzas;
    assert.equal(newStanzas.length, 4);
    for (let i = 0; i < 3; i++) {
      assert.notDeepEqual(newStanzas[i]!.args, oldStanzas[i]!.args, "a fresh ephemeral share");
      assert.notDeepEqual(Buffer.from(newStanzas[i]!.body), Buffer.from(oldStanzas[i]!.body));
    }
    assert.deepEqual(newStanzas[3]!.args, oldStanzas[3]!.args, "the same record digest");
    for (const p of people) assert.equal(ageDecrypt(file, p), "value of s.age");
  });

  test("a record body changed without the file key fails the header MAC: nothing is written", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "tampered");
    await writeAll(makeRules(repo, { "s.age": { publicKeys: keys.slice(0, 2) } }));
    const file = path.join(repo, "s.age");
    // Swap the two tags in the record's body text (each tag is 8 bytes: not on base64 boundaries,
    // so flip one character of the body instead).
    const bytes = fs.readFileSync(file);
    const text = bytes.toString("latin1");
    const at = text.indexOf(`-> ${RECIPIENTS_RECORD_STANZA} `);
    const bodyStart = text.indexOf("\n", at) + 1;
    const c = text[bodyStart]!;
    const tampered = Buffer.from(
      text.slice(0, bodyStart) + (c === "A" ? "B" : "A") + text.slice(bodyStart + 1),
      "latin1",
    );
    fs.writeFileSync(file, tampered);
    const rules = makeRules(repo, { "s.age": { publicKeys: keys } });
    const r = await rekeyRepository(rules, rekeyOptions([people[0]!]));
    assert.deepEqual(r.rewritten, []);
    assert.equal(r.failed.length, 1);
    assert.match(r.failed[0]!.message, /header MAC/);
    assert.ok(fs.readFileSync(file).equals(tampered), "nothing written");
  });

  test("a record body that is not base64 makes the header invalid: check reports it", async () => {
    const { keys } = ids(2);
    const repo = path.join(dir, "bad-base64");
    const rules = makeRules(repo, { "s.age": { publicKeys: keys } });
    await writeAll(rules);
    const file = path.join(repo, "s.age");
    const text = fs.readFileSync(file).toString("latin1");
    const at = text.indexOf(`-> ${RECIPIENTS_RECORD_STANZA} `);
    const bodyStart = text.indexOf("\n", at) + 1;
    fs.writeFileSync(file, Buffer.from(`${text.slice(0, bodyStart)}*${text.slice(bodyStart + 1)}`, "latin1"));
    const problems = checkRepository(rules).problems;
    assert.deepEqual(
      problems.map((p) => [p.severity, p.kind]),
      [["drift", "bad-header"]],
    );
    assert.match(problems[0]!.message, /base64/);
  });

  test("tags rewritten by someone holding the file key: check reports a wrong count, rekey wraps everyone anew", async () => {
    const { ids: people, keys } = ids(3);
    const repo = path.join(dir, "short-tags");
    await writeAll(makeRules(repo, { "s.age": { publicKeys: keys.slice(0, 2) } }));
    const file = path.join(repo, "s.age");
    const parts = extractHeader(fs.readFileSync(file));
    const fileKey = await decryptHeader(parts.header, [people[0]!]);
    const old = parts.header.stanzas;
    const header = await encryptHeader(fileKey, [
      { wrapFileKey: () => [old[0]!, old[1]!, recordStanza(old[2]!.args[0]!, old[2]!.body.subarray(0, 8))] },
    ]);
    fs.writeFileSync(file, Buffer.concat([header, parts.payload]));
    const sameRules = makeRules(repo, { "s.age": { publicKeys: keys.slice(0, 2) } });
    const problems = checkRepository(sameRules).problems;
    assert.deepEqual(
      problems.map((p) => [p.severity, p.kind]),
      [["drift", "recipients"]],
    );
    assert.match(problems[0]!.message, /recipients record has 8 bytes of tags for 2 stanzas/);
    const oldTexts = stanzaTexts(fs.readFileSync(file));
    const rules = makeRules(repo, { "s.age": { publicKeys: keys } });
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([people[0]!]))).rewritten, ["s.age"]);
    const newTexts = stanzaTexts(fs.readFileSync(file));
    for (const t of newTexts) assert.ok(!oldTexts.includes(t));
    assert.deepEqual(checkRepository(rules).problems, []);
    for (const p of people) assert.equal(ageDecrypt(file, p), "value of s.age");
  });
});

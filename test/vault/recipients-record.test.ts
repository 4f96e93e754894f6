/**
 * The recipients record: its digest (normalised, order- and duplicate-free), that the real age
 * binary and typage decrypt files carrying it, that it never lets classic and post-quantum
 * recipients mix, and compareHeader's verdicts for the ways a header can disagree with rules.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import * as typage from "age-encryption";
import { encrypt, readHeader } from "../../src/age/age.js";
import { HybridIdentity, loadMlKem } from "../../src/age/hybrid.js";
import { encodePluginRecipient } from "../../src/age/plugin.js";
import type { Stanza } from "../../src/age/types.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseRecipientString } from "../../src/keys/key-types.js";
import {
  classifyRecipient,
  compareHeader,
  expectationOf,
  RECIPIENTS_RECORD_STANZA,
  readRecipientsRecord,
  recipientsDigest,
  recordStanza,
  withRecipientsRecord,
} from "../../src/vault/recipients-record.js";
import { tempDir, which } from "../helpers.js";

const AGE = which("age");
const SSH_KEYGEN = which("ssh-keygen");

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

function sshKey(name: string, type = "ed25519"): string {
  const file = path.join(dir, name);
  execFileSync(SSH_KEYGEN!, ["-q", "-t", type, "-N", "", "-C", `${name}@test`, "-f", file]);
  return fs.readFileSync(`${file}.pub`, "utf8").trim();
}

const x = () => X25519Identity.generate().recipient().toString();

describe("the digest", () => {
  test("ignores order and duplicates, and differs when a recipient is added or removed", () => {
    const [a, b, c] = [x(), x(), x()];
    const d = (keys: string[]) => expectationOf(keys, "t").digest;
    assert.equal(d([a, b]), d([b, a]));
    assert.equal(d([a, b, a]), d([a, b]));
    assert.notEqual(d([a, b]), d([a, b, c]));
    assert.notEqual(d([a, b]), d([a]));
    assert.match(d([a]), /^[A-Za-z0-9+/]{43}$/);
    // A fixed input gives a fixed digest (format stability across versions).
    assert.equal(recipientsDigest(["a", "b"]), recipientsDigest(["b", "a", "a"]));
  });

  test("ssh keys are normalised: comment and spacing do not count", {
    skip: !SSH_KEYGEN && "ssh-keygen not installed",
  }, () => {
    const line = sshKey("user");
    const [type, b64] = line.split(" ");
    const variants = [line, `${type} ${b64}`, `${type}   ${b64}   another comment`, `  ${line}  `];
    const digests = new Set(variants.map((v) => expectationOf([v], "t").digest));
    assert.equal(digests.size, 1);
    const info = classifyRecipient(line, "t");
    assert.equal(info.normalised, `${type} ${b64}`);
    assert.equal(info.expected.kind, "tagged");
  });

  test("a bad key in the rules is an error naming where it is; all bad keys are reported", () => {
    assert.throws(
      () => expectationOf(["age1nope", "ecdsa-sha2-nistp256 AAAA x", x()], 'secrets.nix: secret "a.age"'),
      (e: unknown) => {
        assert.ok(e instanceof NixsealError);
        assert.equal(e.problems.length, 2);
        for (const p of e.problems) assert.match(p.message, /secrets\.nix: secret "a\.age"/);
        return true;
      },
    );
  });
});

describe("files carrying the record", () => {
  test("the real age binary decrypts them, binary and armored", {
    skip: !AGE && "age not installed",
  }, async () => {
    const id = X25519Identity.generate();
    const keyFile = path.join(dir, "age-key.txt");
    fs.writeFileSync(keyFile, `${id.encode()}\n`, { mode: 0o600 });
    const other = x();
    const keys = [id.recipient().toString(), other];
    const recipients = withRecipientsRecord(
      keys.map((k) => parseRecipientString(k, "t")),
      keys,
      "t",
    );
    for (const armor of [false, true]) {
      const file = await encrypt(Buffer.from("for age\n"), recipients, { armor });
      const types = readHeader(file).stanzas.map((s) => s.type);
      assert.deepEqual(types, ["X25519", "X25519", RECIPIENTS_RECORD_STANZA]);
      const p = path.join(dir, `rec-${armor}.age`);
      fs.writeFileSync(p, file);
      const r = spawnSync(AGE!, ["-d", "-i", keyFile, p]);
      assert.equal(r.status, 0, r.stderr.toString());
      assert.equal(r.stdout.toString(), "for age\n");
    }
  });

  test("typage decrypts them", async () => {
    const identity = await typage.generateX25519Identity();
    const recipient = await typage.identityToRecipient(identity);
    const recipients = withRecipientsRecord([parseRecipientString(recipient, "t")], [recipient], "t");
    const file = await encrypt(Buffer.from("for typage"), recipients);
    const d = new typage.Decrypter();
    d.addIdentity(identity);
    assert.equal(Buffer.from(await d.decrypt(file)).toString(), "for typage");
  });

  test("post-quantum files stay post-quantum only: the record takes its neighbours' labels", async () => {
    await loadMlKem();
    const pq = HybridIdentity.generate().recipient();
    const pqOnly = withRecipientsRecord([pq], [pq.toString()], "t");
    const file = await encrypt(Buffer.from("pq"), pqOnly);
    assert.deepEqual(
      readHeader(file).stanzas.map((s) => s.type),
      ["mlkem768x25519", RECIPIENTS_RECORD_STANZA],
    );
    const classic = parseRecipientString(x(), "t");
    const mixed = withRecipientsRecord([pq, classic], [pq.toString(), x()], "t");
    await assert.rejects(encrypt(Buffer.from("pq"), mixed), /can't be mixed/);
  });
});

describe("compareHeader", () => {
  const stanza = (type: string, ...args: string[]): Stanza => ({ type, args, body: new Uint8Array(32) });

  test("a file written for the rules, with its record, matches", async () => {
    const keys = [x(), x()];
    const recipients = withRecipientsRecord(
      keys.map((k) => parseRecipientString(k, "t")),
      keys,
      "t",
    );
    const file = await encrypt(Buffer.from("s"), recipients);
    const c = compareHeader(readHeader(file).stanzas, expectationOf(keys, "t"));
    assert.deepEqual(c.mismatches, []);
    assert.equal(c.record.state, "present");
  });

  test("a record for other recipients is drift", async () => {
    const keys = [x(), x()];
    const recipients = withRecipientsRecord(
      keys.map((k) => parseRecipientString(k, "t")),
      keys,
      "t",
    );
    const file = await encrypt(Buffer.from("s"), recipients);
    // Same count and types, one key swapped: only the record can tell.
    const c = compareHeader(readHeader(file).stanzas, expectationOf([keys[0]!, x()], "t"));
    assert.equal(c.mismatches.length, 1);
    assert.match(c.mismatches[0]!, /record differs/);
  });

  test("without a record, X25519 files are compared by count, and the unverifiable are counted", () => {
    const expect = expectationOf([x(), x()], "t");
    const two = compareHeader([stanza("X25519", "a"), stanza("X25519", "b")], expect);
    assert.deepEqual(two.mismatches, []);
    assert.equal(two.record.state, "absent");
    assert.equal(two.unverifiable, 2);
    const one = compareHeader([stanza("X25519", "a")], expect);
    assert.match(one.mismatches.join(), /1 X25519 stanza for 2 X25519 recipients/);
    const three = compareHeader(
      [stanza("X25519", "a"), stanza("X25519", "b"), stanza("X25519", "c")],
      expect,
    );
    assert.match(three.mismatches.join(), /3 X25519 stanzas for 2 X25519 recipients/);
  });

  test("rage's grease stanza is tolerated without a record but never verified; beside a record it is drift", () => {
    const expect = expectationOf([x()], "t");
    const rage = compareHeader([stanza("X25519", "a"), stanza("7$x-grease", "q")], expect);
    assert.deepEqual(rage.mismatches, []);
    assert.match(rage.unread!, /1 stanza of a type nobody in the rules reads \(7\$x-grease\)/);
    assert.ok(rage.unverified.includes(rage.unread!));
    assert.equal(rage.proven, false);
    // nixseal never writes grease: beside its record, the stanza is someone else's addition.
    const recorded = compareHeader(
      [stanza("X25519", "a"), stanza("7$x-grease", "q"), recordStanza(expect.digest)],
      expect,
    );
    assert.match(recorded.mismatches.join(), /1 stanza of a type the rules don't use \(7\$x-grease\)/);
    assert.match(
      compareHeader([stanza("X25519", "a"), stanza("piv-p256", "q")], expect).mismatches.join(),
      /type the rules don't use \(piv-p256\)/,
    );
  });

  test("ssh stanzas are checked by their tags", {
    skip: !SSH_KEYGEN && "ssh-keygen not installed",
  }, async () => {
    const user = sshKey("tags-user");
    const host = sshKey("tags-host");
    const rsa = sshKey("tags-rsa", "rsa");
    const keys = [user, host, rsa];
    const plain = await encrypt(
      Buffer.from("s"),
      keys.map((k) => parseRecipientString(k, "t")),
    );
    const stanzas = readHeader(plain).stanzas;
    const all = compareHeader(stanzas, expectationOf(keys, "t"));
    assert.deepEqual(all.mismatches, []);
    assert.equal(all.unverifiable, 0);
    // Every recipient is named by its stanza: right without a record, nothing taken on trust.
    assert.equal(all.proven, true);
    assert.deepEqual(all.verified, ["stanza count and types", "ssh key tags"]);
    assert.deepEqual(all.claimedByRecord, []);
    assert.deepEqual(all.unverified, []);
    // The rules lose the host key: its stanza is now for a key not in the rules.
    const fewer = compareHeader(stanzas, expectationOf([user, rsa], "t")).mismatches.join();
    assert.match(fewer, /1 ssh stanza for keys not in the rules/);
    // The rules gain a key: no stanza has its tag, and the message names the key's comment.
    const extra = sshKey("tags-new");
    const more = compareHeader(stanzas, expectationOf([...keys, extra], "t")).mismatches.join();
    assert.match(more, /no ssh-ed25519 stanza for the key "tags-new@test"/);
  });

  test("plugin recipients take the stanzas left over, of any type: exactly one each", () => {
    const plugin = encodePluginRecipient("nstest", new Uint8Array(32).fill(7));
    const expect = expectationOf([x(), plugin], "t");
    const one = compareHeader(
      [stanza("X25519", "a"), stanza("nstest", "z"), recordStanza(expect.digest)],
      expect,
    );
    assert.deepEqual(one.mismatches, []);
    assert.deepEqual(one.claimedByRecord, ["1 X25519 recipient", "1 plugin recipient"]);
    assert.equal(one.proven, false);
    assert.match(compareHeader([stanza("X25519", "a")], expect).mismatches.join(), /1 plugin recipient/);
    // A plugin writes at most one stanza per recipient (age-plugin spec): an X25519 stanza more
    // than the rules have is someone's, whatever the record says.
    assert.match(
      compareHeader(
        [stanza("X25519", "a"), stanza("X25519", "m"), stanza("nstest", "z"), recordStanza(expect.digest)],
        expect,
      ).mismatches.join(),
      /1 plugin recipient in the rules but 2 stanzas left for them/,
    );
  });

  test("what a match rests on: the stanzas for ssh keys, the record's word for X25519 recipients", {
    skip: !SSH_KEYGEN && "ssh-keygen not installed",
  }, () => {
    const host = sshKey("rests-host");
    const [a, b] = [x(), x()];
    const expect = expectationOf([host, a, b], "t");
    const tag = (expect.recipients[0]!.expected as { tag: string }).tag;
    const stanzas = [stanza("ssh-ed25519", tag, "s"), stanza("X25519", "a"), stanza("X25519", "m")];
    // Without a record: the X25519 recipients are verified by nothing.
    const bare = compareHeader(stanzas, expect);
    assert.deepEqual(bare.mismatches, []);
    assert.deepEqual(bare.verified, ["stanza count and types", "ssh key tags"]);
    assert.deepEqual(bare.claimedByRecord, []);
    assert.deepEqual(bare.unverified, ["2 X25519 recipients"]);
    assert.equal(bare.proven, false);
    // With a record for the rules: the record says who they are, and that is all anyone knows
    // (these stanzas could be for anybody: "m" is not b).
    const recorded = compareHeader([...stanzas, recordStanza(expect.digest)], expect);
    assert.deepEqual(recorded.mismatches, []);
    assert.deepEqual(recorded.verified, [
      "stanza count and types",
      "ssh key tags",
      "the record names the rules' recipients",
    ]);
    assert.deepEqual(recorded.claimedByRecord, ["2 X25519 recipients"]);
    assert.deepEqual(recorded.unverified, []);
    assert.equal(recorded.proven, false);
    // One stanza short or one too many, the record does not cover it.
    for (const wrong of [stanzas.slice(0, 2), [...stanzas, stanza("X25519", "z")]]) {
      assert.match(
        compareHeader([...wrong, recordStanza(expect.digest)], expect).mismatches.join(),
        /X25519 stanzas? for 2 X25519 recipients/,
      );
    }
  });

  test("a malformed or doubled record is drift", () => {
    const expect = expectationOf([x()], "t");
    const rec = (arg: string, body = new Uint8Array(0)): Stanza => ({
      type: RECIPIENTS_RECORD_STANZA,
      args: [arg],
      body,
    });
    const good = rec(expect.digest);
    assert.equal(readRecipientsRecord([good]).state, "present");
    assert.equal(readRecipientsRecord([good, good]).state, "malformed");
    assert.equal(readRecipientsRecord([rec("short")]).state, "malformed");
    assert.equal(readRecipientsRecord([rec(expect.digest, new Uint8Array(1))]).state, "malformed");
    assert.match(
      compareHeader([stanza("X25519", "a"), good, good], expect).mismatches.join(),
      /2 recipients records/,
    );
  });
});

test("a recipient list seen before is digested the same, and a bad list is refused even after a good one", () => {
  const a = X25519Identity.generate().recipient();
  const b = X25519Identity.generate().recipient();
  const keys = [a.toString(), b.toString()];
  const digestOf = (rs: ReturnType<typeof withRecipientsRecord>) =>
    (rs.at(-1)!.wrapFileKey(new Uint8Array(16)) as Stanza[])[0]!.args[0];
  const first = withRecipientsRecord([a, b], keys, "test");
  const again = withRecipientsRecord([a, b], [...keys], "test");
  assert.equal(digestOf(again), digestOf(first));
  assert.equal(digestOf(first), recipientsDigest(keys));
  // The same characters joined into one string are no list of two keys.
  assert.throws(() => withRecipientsRecord([a, b], [keys.join("\n")], "test"), NixsealError);
  assert.throws(() => withRecipientsRecord([a, b], [`${keys[0]}x`], "test"), NixsealError);
});

/**
 * rekeyRepository on repositories built by the test (rules given directly, no Nix): which files
 * it rewrites and how (header only: payload bytes kept), all or nothing, identities loaded only
 * when needed and a passphrase asked once, plugins run once for all files, a file changed under
 * it left alone, and the lock and the sweep of a killed run's temp files.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { decrypt, decryptHeader, encryptHeader, extractHeader, readHeader } from "../../src/age/age.js";
import type { Identity, Stanza } from "../../src/age/types.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import { type KeyContext, loadIdentities } from "../../src/keys/index.js";
import { checkRepository } from "../../src/vault/check.js";
import { expectationOf, RECIPIENTS_RECORD_STANZA, recordStanza } from "../../src/vault/recipients-record.js";
import { rekeyRepository } from "../../src/vault/rekey.js";
import { LOCK_FILE } from "../../src/vault/rekey-lock.js";
import type { Rules } from "../../src/vault/rules.js";
import { sweepStaleTempFiles } from "../../src/vault/temp-sweep.js";
import { makeRules, tempDir, which } from "../helpers.js";
import { PLUGIN_FIXTURES, payloadOf, rekeyOptions, writeAll } from "./rekey-fixtures.js";

const SSH_KEYGEN = which("ssh-keygen");
const AGE = which("age");

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

function snapshot(rules: Rules): Map<string, Buffer> {
  return new Map([...rules.secrets.values()].map((r) => [r.name, fs.readFileSync(r.file)]));
}

/**
 * Gives a file a new header under its own file key, with the stanzas `edit` makes of its old
 * ones: what anyone who can read a file (or write one: age has no sender authentication) can do.
 */
async function reheader(
  file: string,
  identity: Identity,
  edit: (stanzas: Stanza[], fileKey: Uint8Array) => Stanza[] | Promise<Stanza[]>,
): Promise<void> {
  const parts = extractHeader(fs.readFileSync(file));
  const fileKey = await decryptHeader(parts.header, [identity]);
  const header = await encryptHeader(fileKey, [{ wrapFileKey: (k) => edit(parts.header.stanzas, k) }]);
  fs.writeFileSync(file, Buffer.concat([header, parts.payload]));
}

function ageEncrypt(file: string, plaintext: string, recipients: string[], armor = false): void {
  const args = [...(armor ? ["-a"] : []), ...recipients.flatMap((r) => ["-r", r]), "-o", file];
  const r = spawnSync(AGE!, args, { input: plaintext });
  assert.equal(r.status, 0, r.stderr.toString());
}

function sshKeygen(file: string, comment: string): string {
  execFileSync(SSH_KEYGEN!, ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file]);
  return fs.readFileSync(`${file}.pub`, "utf8").trim();
}

function tempFiles(d: string): string[] {
  return fs.readdirSync(d).filter((f) => f.endsWith(".tmp"));
}

describe("rekeyRepository", () => {
  test("rewrites only the files whose recipients changed, header only; then nothing", async () => {
    const [alice, bob, carol] = [
      X25519Identity.generate(),
      X25519Identity.generate(),
      X25519Identity.generate(),
    ];
    const [a, b, c] = [alice, bob, carol].map((i) => i.recipient().toString()) as [string, string, string];
    const repo = path.join(dir, "basic");
    const rules = makeRules(repo, {
      "shared.age": { publicKeys: [a, b] },
      "armored.age": { publicKeys: [a, b], armor: true },
      "alice-only.age": { publicKeys: [a] },
      "sub/dir/-dash.age": { publicKeys: [a, b] },
    });
    await writeAll(rules);
    fs.chmodSync(path.join(repo, "shared.age"), 0o640);
    const before = snapshot(rules);
    const mtimeAliceOnly = fs.statSync(path.join(repo, "alice-only.age")).mtimeMs;

    // Nothing to do: no identity is even loaded.
    const idle = rekeyOptions([alice]);
    const r0 = await rekeyRepository(rules, idle);
    assert.equal(idle.calls, 0);
    assert.deepEqual(r0.rewritten, []);
    assert.equal(r0.unchanged.length, 4);

    for (const name of ["shared.age", "armored.age", "sub/dir/-dash.age"])
      rules.secrets.get(name)!.publicKeys.push(c);
    const o = rekeyOptions([bob]);
    const r = await rekeyRepository(rules, o);
    assert.equal(o.calls, 1);
    assert.deepEqual(r.failed, []);
    assert.deepEqual(r.rewritten, ["armored.age", "shared.age", "sub/dir/-dash.age"]);
    assert.deepEqual(r.unchanged, ["alice-only.age"]);
    assert.ok(before.get("alice-only.age")!.equals(fs.readFileSync(path.join(repo, "alice-only.age"))));
    assert.equal(fs.statSync(path.join(repo, "alice-only.age")).mtimeMs, mtimeAliceOnly);
    for (const name of r.rewritten) {
      const now = fs.readFileSync(path.join(repo, name));
      assert.ok(!now.equals(before.get(name)!), `${name} changed`);
      // Header only: the nonce and the encrypted payload are the very same bytes.
      assert.ok(payloadOf(now).equals(payloadOf(before.get(name)!)), `${name}: payload kept`);
      assert.equal(Buffer.from(await decrypt(now, [carol])).toString(), `value of ${name}`);
      assert.equal(Buffer.from(await decrypt(now, [alice])).toString(), `value of ${name}`);
      const types = readHeader(now).stanzas.map((s) => s.type);
      assert.deepEqual(types, ["X25519", "X25519", "X25519", RECIPIENTS_RECORD_STANZA]);
    }
    assert.ok(
      fs
        .readFileSync(path.join(repo, "armored.age"), "latin1")
        .startsWith("-----BEGIN AGE ENCRYPTED FILE-----"),
    );
    assert.equal(fs.statSync(path.join(repo, "shared.age")).mode & 0o777, 0o640, "mode kept");
    assert.deepEqual(tempFiles(repo), []);
    assert.ok(!fs.existsSync(path.join(repo, LOCK_FILE)));

    // Again: nothing changes.
    const after = snapshot(rules);
    const r2 = await rekeyRepository(rules, rekeyOptions([bob]));
    assert.deepEqual(r2.rewritten, []);
    for (const [name, bytes] of after) assert.ok(bytes.equals(fs.readFileSync(path.join(repo, name))));

    // Removing a recipient is a change too; carol can't read the new header.
    rules.secrets.get("shared.age")!.publicKeys = [a, b];
    const r3 = await rekeyRepository(rules, rekeyOptions([alice]));
    assert.deepEqual(r3.rewritten, ["shared.age"]);
    await assert.rejects(
      decrypt(fs.readFileSync(path.join(repo, "shared.age")), [carol]),
      /no identity matched/,
    );

    // --force rewrites everything; armor follows the rules.
    rules.secrets.get("armored.age")!.armor = false;
    const r4 = await rekeyRepository(rules, rekeyOptions([alice], { force: true }));
    assert.equal(r4.rewritten.length, 4);
    const dearmored = fs.readFileSync(path.join(repo, "armored.age"));
    assert.ok(dearmored.subarray(0, 21).toString() === "age-encryption.org/v1");
    assert.equal(Buffer.from(await decrypt(dearmored, [bob])).toString(), "value of armored.age");
  });

  test("NAMEs limit the rekey; a NAME not in the rules is an error before anything happens", async () => {
    const id = X25519Identity.generate();
    const k = id.recipient().toString();
    const rules = makeRules(path.join(dir, "names"), {
      "a.age": { publicKeys: [k] },
      "b.age": { publicKeys: [k] },
    });
    await writeAll(rules);
    const extra = X25519Identity.generate().recipient().toString();
    for (const r of rules.secrets.values()) r.publicKeys.push(extra);
    const r = await rekeyRepository(rules, rekeyOptions([id], { names: ["a.age"], cwd: rules.dir }));
    assert.deepEqual(r.rewritten, ["a.age"]);
    await assert.rejects(
      rekeyRepository(rules, rekeyOptions([id], { names: ["nope.age"], cwd: rules.dir })),
      (e: unknown) => e instanceof NixsealError && e.code === "NOT_IN_RULES",
    );
  });

  test("all or nothing: one bad file and nothing is written; every failure is listed", async () => {
    const mine = X25519Identity.generate();
    const theirs = X25519Identity.generate();
    const [m, t] = [mine.recipient().toString(), theirs.recipient().toString()];
    const repo = path.join(dir, "all-or-nothing");
    const rules = makeRules(repo, {
      "good-1.age": { publicKeys: [m] },
      "good-2.age": { publicKeys: [m] },
      "not-mine.age": { publicKeys: [t] },
      "garbage.age": { publicKeys: [m] },
      "truncated.age": { publicKeys: [m] },
      "absent.age": { publicKeys: [m] },
    });
    await writeAll(rules);
    fs.writeFileSync(path.join(repo, "garbage.age"), "this is not age\n");
    const trunc = fs.readFileSync(path.join(repo, "truncated.age"));
    fs.writeFileSync(path.join(repo, "truncated.age"), trunc.subarray(0, trunc.length - 5));
    fs.rmSync(path.join(repo, "absent.age"));
    const extra = X25519Identity.generate().recipient().toString();
    for (const r of rules.secrets.values()) r.publicKeys.push(extra);
    const before = fs.readdirSync(repo).map((f) => [f, fs.readFileSync(path.join(repo, f))] as const);

    const r = await rekeyRepository(rules, rekeyOptions([mine]));
    assert.deepEqual(r.rewritten, []);
    assert.deepEqual(
      r.failed.map((f) => f.file),
      ["garbage.age", "not-mine.age", "truncated.age"],
    );
    assert.match(
      r.failed[1]!.message,
      /no identity can decrypt it \(recipients: X25519; tried: X25519 identity\)/,
    );
    assert.match(r.failed[0]!.message, /not an age file/);
    assert.match(r.failed[2]!.message, /truncated/);
    assert.deepEqual(r.missing, ["absent.age"]);
    for (const [f, bytes] of before)
      assert.ok(bytes.equals(fs.readFileSync(path.join(repo, f))), `${f} unchanged`);
    assert.deepEqual(tempFiles(repo), []);
    assert.ok(!fs.existsSync(path.join(repo, LOCK_FILE)));

    // A dry run says what would be rewritten and writes nothing.
    for (const n of ["not-mine.age", "garbage.age", "truncated.age"]) rules.secrets.delete(n);
    const dry = await rekeyRepository(rules, rekeyOptions([mine], { dryRun: true }));
    assert.deepEqual(dry.rewritten, ["good-1.age", "good-2.age"]);
    for (const [f, bytes] of before)
      assert.ok(bytes.equals(fs.readFileSync(path.join(repo, f))), `${f} unchanged`);
  });

  test("worker threads and the main thread write the same valid files", async () => {
    const ids = Array.from({ length: 3 }, () => X25519Identity.generate());
    const keys = ids.map((i) => i.recipient().toString());
    for (const workers of [0, 2]) {
      const entries: Record<string, { publicKeys: string[] }> = {};
      for (let i = 0; i < 40; i++)
        entries[`s${i}.age`] = { publicKeys: i % 2 ? [keys[0]!] : [keys[0]!, keys[1]!] };
      const rules = makeRules(path.join(dir, `workers-${workers}`), entries);
      await writeAll(rules);
      for (const r of rules.secrets.values()) r.publicKeys.push(keys[2]!);
      const r = await rekeyRepository(rules, rekeyOptions([ids[0]!], { workers }));
      assert.equal(r.rewritten.length, 40);
      for (const rule of rules.secrets.values()) {
        const file = fs.readFileSync(rule.file);
        assert.equal(Buffer.from(await decrypt(file, [ids[2]!])).toString(), `value of ${rule.name}`);
      }
      const again = await rekeyRepository(rules, rekeyOptions([ids[0]!], { workers }));
      assert.equal(again.unchanged.length, 40, `workers=${workers}: every file now matches its rules`);
    }
  });

  test("a file changed while rekey runs is left as it is now", async () => {
    const id = X25519Identity.generate();
    const k = id.recipient().toString();
    const repo = path.join(dir, "concurrent");
    const rules = makeRules(repo, { "a.age": { publicKeys: [k] }, "b.age": { publicKeys: [k] } });
    await writeAll(rules);
    const extra = X25519Identity.generate().recipient().toString();
    for (const r of rules.secrets.values()) r.publicKeys.push(extra);
    const edited = Buffer.from("edited meanwhile by someone else, a valid file or not");
    let done = false;
    const r = await rekeyRepository(
      rules,
      rekeyOptions([id], {
        onProgress: (p) => {
          if (p.phase === "decrypting" && !done) {
            done = true;
            fs.writeFileSync(path.join(repo, "b.age"), edited);
          }
        },
      }),
    );
    assert.deepEqual(r.rewritten, ["a.age"]);
    assert.deepEqual(
      r.failed.map((f) => f.file),
      ["b.age"],
    );
    assert.match(r.failed[0]!.message, /changed while rekey was running/);
    assert.ok(fs.readFileSync(path.join(repo, "b.age")).equals(edited));
  });

  test("a passphrase-protected ssh key is asked for once for all files", {
    skip: !SSH_KEYGEN && "ssh-keygen not installed",
  }, async () => {
    const keyFile = path.join(dir, "id_pass");
    execFileSync(SSH_KEYGEN!, ["-q", "-t", "ed25519", "-N", "correct horse", "-C", "me@test", "-f", keyFile]);
    const pub = fs.readFileSync(`${keyFile}.pub`, "utf8").trim();
    const entries: Record<string, { publicKeys: string[] }> = {};
    for (let i = 0; i < 8; i++) entries[`p${i}.age`] = { publicKeys: [pub] };
    const rules = makeRules(path.join(dir, "passphrase"), entries);
    await writeAll(rules);
    const extra = X25519Identity.generate();
    for (const r of rules.secrets.values()) r.publicKeys.push(extra.recipient().toString());
    let asked = 0;
    const ctx: KeyContext = {
      passphrase: async () => {
        asked++;
        return Buffer.from("correct horse");
      },
    };
    const identities = await loadIdentities([keyFile], ctx);
    const r = await rekeyRepository(rules, { ...rekeyOptions(identities), ctx });
    assert.equal(r.rewritten.length, 8);
    assert.equal(asked, 1);
    for (const rule of rules.secrets.values()) {
      assert.equal(
        Buffer.from(await decrypt(fs.readFileSync(rule.file), [extra])).toString(),
        `value of ${rule.name}`,
      );
    }
  });

  test("plugins run once for all files: one recipient-v1 and one identity-v1 run", async () => {
    const savedPath = process.env.PATH;
    process.env.PATH = `${PLUGIN_FIXTURES}${path.delimiter}${savedPath ?? ""}`;
    const log = path.join(dir, "nstest.log");
    try {
      const out = execFileSync(path.join(PLUGIN_FIXTURES, "age-plugin-nstest"), ["--generate"], {
        encoding: "utf8",
      });
      const recipient = /# public key: (\S+)/.exec(out)![1]!;
      const identityLine = out.split("\n").find((l) => l.startsWith("AGE-PLUGIN-"))!;
      const idFile = path.join(dir, "nstest-identity.txt");
      fs.writeFileSync(idFile, `${identityLine}\n`, { mode: 0o600 });
      const x = X25519Identity.generate();
      const entries: Record<string, { publicKeys: string[] }> = {};
      for (let i = 0; i < 6; i++) entries[`n${i}.age`] = { publicKeys: [recipient] };
      const rules = makeRules(path.join(dir, "plugin"), entries);
      await writeAll(rules);
      for (const r of rules.secrets.values()) r.publicKeys.push(x.recipient().toString());
      process.env.NSTEST_LOG = log;
      const identities = await loadIdentities([idFile], {});
      const r = await rekeyRepository(rules, rekeyOptions(identities));
      assert.deepEqual(r.failed, []);
      assert.equal(r.rewritten.length, 6);
      const runs = fs
        .readFileSync(log, "utf8")
        .split("\n")
        .filter((l) => /recipient-v1|identity-v1/.test(l));
      assert.equal(runs.filter((l) => l.includes("identity-v1")).length, 1, runs.join("\n"));
      assert.equal(runs.filter((l) => l.includes("recipient-v1")).length, 1, runs.join("\n"));
      for (const rule of rules.secrets.values()) {
        const file = fs.readFileSync(rule.file);
        assert.equal(Buffer.from(await decrypt(file, [x])).toString(), `value of ${rule.name}`);
        assert.equal(Buffer.from(await decrypt(file, identities)).toString(), `value of ${rule.name}`);
      }
      // And with the rules unchanged, nothing runs at all.
      fs.writeFileSync(log, "");
      const again = await rekeyRepository(rules, rekeyOptions(identities));
      assert.equal(again.unchanged.length, 6);
      assert.equal(fs.readFileSync(log, "utf8"), "");
    } finally {
      delete process.env.NSTEST_LOG;
      if (savedPath === undefined) delete process.env.PATH;
      else process.env.PATH = savedPath;
    }
  });

  test("files from the real age binary (no record) are rewritten once", {
    skip: !AGE && "age not installed",
  }, async () => {
    const id = X25519Identity.generate();
    const k = id.recipient().toString();
    const repo = path.join(dir, "from-age");
    const rules = makeRules(repo, { "a.age": { publicKeys: [k] } });
    const r0 = spawnSync(AGE!, ["-r", k, "-o", path.join(repo, "a.age")], { input: "from age" });
    assert.equal(r0.status, 0, r0.stderr.toString());
    const r1 = await rekeyRepository(rules, rekeyOptions([id]));
    assert.deepEqual(r1.rewritten, ["a.age"]);
    const r2 = await rekeyRepository(rules, rekeyOptions([id]));
    assert.deepEqual(r2.unchanged, ["a.age"]);
  });
});

describe("what rekey can know: stanzas that name their key, and the record's word", {
  skip: (!AGE || !SSH_KEYGEN) && "age or ssh-keygen not installed",
}, () => {
  test("files of ssh keys only, as age wrote them (no record), are proven by their tags and stay byte-identical", async () => {
    const repo = path.join(dir, "ssh-only");
    fs.mkdirSync(repo, { recursive: true });
    const user = sshKeygen(path.join(dir, "ssh-only-user"), "user1@laptop");
    const host = sshKeygen(path.join(dir, "ssh-only-host"), "root@system1");
    const rules = makeRules(repo, {
      "secret1.age": { publicKeys: [user, host] },
      "secret2.age": { publicKeys: [user] },
      "armored-secret.age": { publicKeys: [user], armor: true },
    });
    for (const rule of rules.secrets.values())
      ageEncrypt(rule.file, `value of ${rule.name}`, rule.publicKeys, rule.armor);
    const before = snapshot(rules);
    const o = rekeyOptions([]);
    const r = await rekeyRepository(rules, o);
    assert.deepEqual(r.rewritten, []);
    assert.deepEqual(r.unchanged.sort(), ["armored-secret.age", "secret1.age", "secret2.age"]);
    assert.equal(o.calls, 0, "nothing to decrypt, so no identity is even loaded");
    for (const [name, bytes] of before)
      assert.ok(bytes.equals(fs.readFileSync(path.join(repo, name))), `${name} byte-identical`);
    const report = checkRepository(rules);
    assert.deepEqual(report.problems, []);
    for (const f of report.files) {
      assert.deepEqual(f.verified, ["stanza count and types", "ssh key tags"], f.file);
      assert.deepEqual([...f.claimedByRecord, ...f.unverified], [], f.file);
    }

    // A key added to the rules is drift: that file is rewritten (and gets the record).
    const newHost = sshKeygen(path.join(dir, "ssh-only-new"), "root@system2");
    rules.secrets.get("secret1.age")!.publicKeys.push(newHost);
    const userKey = await loadIdentities([path.join(dir, "ssh-only-user")], {});
    const r2 = await rekeyRepository(rules, rekeyOptions(userKey));
    assert.deepEqual(r2.rewritten, ["secret1.age"]);
    assert.deepEqual(
      readHeader(fs.readFileSync(path.join(repo, "secret1.age"))).stanzas.map((s) => s.type),
      ["ssh-ed25519", "ssh-ed25519", "ssh-ed25519", RECIPIENTS_RECORD_STANZA],
    );
  });

  test("a file for {alice, mallory} with the record for {alice, bob}: check says it rests on the record; --force is the remedy", async () => {
    const [alice, bob, mallory] = [
      X25519Identity.generate(),
      X25519Identity.generate(),
      X25519Identity.generate(),
    ];
    const [a, b, m] = [alice, bob, mallory].map((i) => i.recipient().toString()) as [string, string, string];
    const repo = path.join(dir, "forged-record");
    fs.mkdirSync(repo, { recursive: true });
    const rules = makeRules(repo, { "s.age": { publicKeys: [a, b] } });
    const file = path.join(repo, "s.age");
    // Written for alice and mallory, with the record of the rules' {alice, bob}: the header MAC
    // is right (its writer had the file key), and so is the count of X25519 stanzas.
    ageEncrypt(file, "the secret", [a, m]);
    await reheader(file, alice, (stanzas) => [...stanzas, recordStanza(expectationOf([a, b], "t").digest)]);
    assert.equal(Buffer.from(await decrypt(fs.readFileSync(file), [mallory])).toString(), "the secret");

    const report = checkRepository(rules);
    assert.deepEqual(report.problems, []);
    assert.deepEqual(report.files, [
      {
        secret: "s.age",
        file: "s.age",
        verified: ["stanza count and types", "the record names the rules' recipients"],
        claimedByRecord: ["2 X25519 recipients"],
        unverified: [],
      },
    ]);
    // rekey cannot know either (it holds alice's key, not bob's): the file stays as it is.
    const before = fs.readFileSync(file);
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([alice]))).unchanged, ["s.age"]);
    assert.ok(before.equals(fs.readFileSync(file)));
    // --force wraps the file key anew for exactly the rules' recipients.
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([alice], { force: true }))).rewritten, [
      "s.age",
    ]);
    await assert.rejects(decrypt(fs.readFileSync(file), [mallory]), /no identity matched/);
    assert.equal(Buffer.from(await decrypt(fs.readFileSync(file), [bob])).toString(), "the secret");
  });

  test("a stanza more than the record's recipients (a grease-typed one) is drift, and rekey rewrites the file without it", async () => {
    const alice = X25519Identity.generate();
    const a = alice.recipient().toString();
    const repo = path.join(dir, "grease-beside-record");
    const rules = makeRules(repo, { "s.age": { publicKeys: [a] } });
    await writeAll(rules);
    const file = path.join(repo, "s.age");
    // Any identity may claim any stanza type (a plugin's, say): this one could be anybody's.
    const extra: Stanza = { type: "zz-grease", args: ["x"], body: new Uint8Array(32).fill(1) };
    await reheader(file, alice, (stanzas) => [stanzas[0]!, extra, ...stanzas.slice(1)]);

    const report = checkRepository(rules);
    // The stanza is reported, and so is the record's tags, one per stanza that was there.
    assert.deepEqual(
      report.problems.map((p) => [p.severity, p.kind]),
      [
        ["drift", "recipients"],
        ["drift", "recipients"],
      ],
    );
    const messages = report.problems.map((p) => p.message).join("\n");
    assert.match(messages, /1 stanza of a type the rules don't use \(zz-grease\)/);
    assert.match(messages, /recipients record has 8 bytes of tags for 2 stanzas/);
    assert.deepEqual(report.files, []);
    const r = await rekeyRepository(rules, rekeyOptions([alice]));
    assert.deepEqual(r.rewritten, ["s.age"]);
    assert.deepEqual(
      readHeader(fs.readFileSync(file)).stanzas.map((s) => s.type),
      ["X25519", RECIPIENTS_RECORD_STANZA],
    );
    assert.deepEqual(checkRepository(rules).problems, []);
  });

  test("beside a plugin recipient, an X25519 stanza more than the rules have is drift, and rekey rewrites the file", async () => {
    const savedPath = process.env.PATH;
    process.env.PATH = `${PLUGIN_FIXTURES}${path.delimiter}${savedPath ?? ""}`;
    try {
      const out = execFileSync(path.join(PLUGIN_FIXTURES, "age-plugin-nstest"), ["--generate"], {
        encoding: "utf8",
      });
      const plugin = /# public key: (\S+)/.exec(out)![1]!;
      const [alice, mallory] = [X25519Identity.generate(), X25519Identity.generate()];
      const a = alice.recipient().toString();
      const rules = makeRules(path.join(dir, "plugin-extra"), { "p.age": { publicKeys: [a, plugin] } });
      await writeAll(rules);
      const file = rules.secrets.get("p.age")!.file;
      assert.deepEqual(checkRepository(rules).problems, []);
      // Mallory's stanza goes in before the record, which still names the rules' recipients.
      await reheader(file, alice, async (stanzas, fileKey) => [
        ...stanzas.slice(0, -1),
        ...(await mallory.recipient().wrapFileKey(fileKey)),
        stanzas.at(-1)!,
      ]);
      assert.equal(Buffer.from(await decrypt(fs.readFileSync(file), [mallory])).toString(), "value of p.age");

      const report = checkRepository(rules);
      assert.deepEqual(
        report.problems.map((p) => [p.severity, p.kind]),
        [["drift", "recipients"]],
      );
      assert.match(
        report.problems[0]!.message,
        /1 plugin recipient in the rules but 2 stanzas left for them/,
      );
      const r = await rekeyRepository(rules, rekeyOptions([alice]));
      assert.deepEqual(r.rewritten, ["p.age"]);
      await assert.rejects(decrypt(fs.readFileSync(file), [mallory]), /no identity matched/);
      assert.deepEqual(checkRepository(rules).problems, []);
    } finally {
      if (savedPath === undefined) delete process.env.PATH;
      else process.env.PATH = savedPath;
    }
  });

  test("rage's grease in a file of ssh keys without a record: not proven, a warning, rewritten once", async () => {
    const repo = path.join(dir, "rage-grease");
    fs.mkdirSync(repo, { recursive: true });
    const keyFile = path.join(dir, "rage-grease-user");
    const user = sshKeygen(keyFile, "user@rage");
    const rules = makeRules(repo, { "s.age": { publicKeys: [user] } });
    const file = path.join(repo, "s.age");
    ageEncrypt(file, "from rage", [user]);
    const [id] = await loadIdentities([keyFile], {});
    const grease: Stanza = { type: "0*a-grease", args: ["q"], body: new Uint8Array(20).fill(9) };
    await reheader(file, id!, (stanzas) => [...stanzas, grease]);

    const report = checkRepository(rules);
    assert.deepEqual(
      report.problems.map((p) => [p.severity, p.kind]),
      [["warning", "unrecorded"]],
    );
    assert.match(report.problems[0]!.message, /1 stanza of a type nobody in the rules reads \(0\*a-grease\)/);
    assert.deepEqual(report.files[0]!.unverified, [
      "1 stanza of a type nobody in the rules reads (0*a-grease)",
    ]);
    const r = await rekeyRepository(rules, rekeyOptions([id!]));
    assert.deepEqual(r.rewritten, ["s.age"]);
    assert.deepEqual(
      readHeader(fs.readFileSync(file)).stanzas.map((s) => s.type),
      ["ssh-ed25519", RECIPIENTS_RECORD_STANZA],
    );
    assert.deepEqual(checkRepository(rules).problems, []);
    assert.deepEqual((await rekeyRepository(rules, rekeyOptions([id!]))).unchanged, ["s.age"]);
  });
});

describe("the lock and the sweep", () => {
  /** A pid that surely belongs to no process any more. */
  function deadPid(): number {
    const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    });
    return Number(r.stdout);
  }

  function sweepRepo(name: string): Rules {
    const repo = path.join(dir, name);
    fs.mkdirSync(path.join(repo, "sub"), { recursive: true });
    return makeRules(repo, { "a.age": { publicKeys: [] }, "sub/b.age": { publicKeys: [] } });
  }

  test("a dead rekey's lock and temp files are swept; nothing else is", () => {
    const rules = sweepRepo("sweep");
    const repo = rules.dir;
    const started = Date.now() - 5000;
    fs.writeFileSync(
      path.join(repo, LOCK_FILE),
      JSON.stringify({ pid: deadPid(), host: os.hostname(), started }),
    );
    const ours = [
      path.join(repo, ".a.age.0123456789ab.tmp"),
      path.join(repo, "sub", ".b.age.ba9876543210.tmp"),
    ];
    for (const f of ours) fs.writeFileSync(f, "partial");
    const keep = [
      path.join(repo, ".c.age.0123456789ab.tmp"), // not a secret of the rules
      path.join(repo, ".a.age.tmp"), // not our pattern
      path.join(repo, "a.age.0123456789ab.tmp"),
      path.join(repo, "notes.tmp"),
    ];
    for (const f of keep) fs.writeFileSync(f, "theirs");
    const swept = sweepStaleTempFiles(rules).sort();
    assert.deepEqual(swept, [".a.age.0123456789ab.tmp", "sub/.b.age.ba9876543210.tmp"]);
    for (const f of ours) assert.ok(!fs.existsSync(f));
    for (const f of keep) assert.ok(fs.existsSync(f), `${f} kept`);
    assert.ok(!fs.existsSync(path.join(repo, LOCK_FILE)), "stale lock removed");
  });

  test("without a dead rekey, only temp files older than 10 minutes go", () => {
    const rules = sweepRepo("sweep-age");
    const young = path.join(rules.dir, ".a.age.aaaaaaaaaaaa.tmp");
    const old = path.join(rules.dir, ".a.age.bbbbbbbbbbbb.tmp");
    fs.writeFileSync(young, "in progress, maybe");
    fs.writeFileSync(old, "left by a killed edit");
    const elevenMinutesAgo = new Date(Date.now() - 11 * 60 * 1000);
    fs.utimesSync(old, elevenMinutesAgo, elevenMinutesAgo);
    assert.deepEqual(sweepStaleTempFiles(rules), [".a.age.bbbbbbbbbbbb.tmp"]);
    assert.ok(fs.existsSync(young));
  });

  test("a live rekey's lock stops another rekey before it reads anything", async () => {
    const rules = sweepRepo("busy");
    const lock = path.join(rules.dir, LOCK_FILE);
    fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, host: os.hostname(), started: Date.now() }));
    const temp = path.join(rules.dir, ".a.age.cccccccccccc.tmp");
    fs.writeFileSync(temp, "being written");
    assert.throws(() => sweepStaleTempFiles(rules), /another nixseal rekey is running \(pid \d+/);
    await assert.rejects(rekeyRepository(rules, rekeyOptions([])), /another nixseal rekey is running/);
    assert.ok(fs.existsSync(temp), "a live rekey's temp file is never touched");
    assert.ok(fs.existsSync(lock));
  });
});

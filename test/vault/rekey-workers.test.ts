/**
 * rekey with a worker thread that unwraps as well as wraps: files split between the main thread
 * and the worker, each file's key found, checked and re-wrapped by whichever takes it. What
 * users rely on: the files it writes open with the real age binary for every recipient, whatever
 * kind of identity opened them (X25519, ssh-ed25519, ssh-rsa); a file the worker can't decrypt
 * is reported exactly as the main thread reports it, and nothing is renamed; a file no identity
 * the worker has can open still goes to a plugin identity, once for all such files.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { decrypt } from "../../src/age/age.js";
import type { Identity, Stanza } from "../../src/age/types.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { loadIdentities } from "../../src/keys/index.js";
import { rekeyRepository } from "../../src/vault/rekey.js";
import { makeRules, tempDir, which } from "../helpers.js";
import { PLUGIN_FIXTURES, rekeyOptions, writeAll } from "./rekey-fixtures.js";

const AGE = which("age");
const SSH_KEYGEN = which("ssh-keygen");

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

/** Decrypts with the real age binary and an identity file: the plaintext, or null if age fails. */
function ageDecrypt(file: string, identityFile: string): string | null {
  const r = spawnSync(AGE!, ["-d", "-i", identityFile, file]);
  return r.status === 0 ? r.stdout.toString() : null;
}

/** An age identity file for `id`, and its recipient. */
function x25519File(name: string): { file: string; recipient: string } {
  const id = X25519Identity.generate();
  const file = path.join(dir, name);
  fs.writeFileSync(file, `${id.encode()}\n`, { mode: 0o600 });
  return { file, recipient: id.recipient().toString() };
}

/** An unencrypted ssh key of `type` made by ssh-keygen, and its public key line. */
function sshKey(name: string, type: "ed25519" | "rsa"): { file: string; recipient: string } {
  const file = path.join(dir, name);
  execFileSync(SSH_KEYGEN!, [
    "-q",
    "-t",
    type,
    ...(type === "rsa" ? ["-b", "2048"] : []),
    "-N",
    "",
    "-f",
    file,
  ]);
  return { file, recipient: fs.readFileSync(`${file}.pub`, "utf8").trim() };
}

/**
 * Counts the files `id` is asked about on this thread (decryptHeader asks the first identity
 * about every file): the worker makes its own copy of the identity, which is not counted.
 */
function counted(id: Identity): { calls: number } {
  const c = { calls: 0 };
  const unwrap = id.unwrapFileKey.bind(id);
  id.unwrapFileKey = (stanzas: readonly Stanza[]) => {
    c.calls++;
    return unwrap(stanzas);
  };
  return c;
}

function names(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(3, "0")}.age`);
}

describe("rekey with a worker that unwraps", () => {
  test("X25519, ssh-ed25519 and ssh-rsa identities: files split with the worker, each read by the real age binary with every recipient's identity", {
    skip: (!AGE && "age not installed") || (!SSH_KEYGEN && "ssh-keygen not installed"),
  }, async () => {
    const x = x25519File("x.txt");
    const ed = sshKey("id_ed25519", "ed25519");
    const rsa = sshKey("id_rsa", "rsa");
    const added = x25519File("added.txt");
    const groups = [
      { key: x, files: names("x", 40) },
      { key: ed, files: names("e", 40) },
      { key: rsa, files: names("r", 40) },
    ];
    const repo = path.join(dir, "kinds");
    const entries = (more: string[]) =>
      Object.fromEntries(
        groups.flatMap((g) => g.files.map((n) => [n, { publicKeys: [g.key.recipient, ...more] }])),
      );
    await writeAll(makeRules(repo, entries([])));
    // As `-i` loads them: the identities that can go to a worker.
    const identities = await loadIdentities([x.file, ed.file, rsa.file], {});
    const first = counted(identities[0]!);
    const r = await rekeyRepository(
      makeRules(repo, entries([added.recipient])),
      rekeyOptions(identities, { workers: 1 }),
    );
    assert.deepEqual(r.failed, []);
    assert.equal(r.rewritten.length, 120);
    // The worker takes two batches of 32 files as soon as it has them: it unwrapped those.
    assert.ok(first.calls <= 120 - 64, `the main thread unwrapped ${first.calls} of 120 files`);
    for (const g of groups) {
      for (const n of g.files) {
        const file = path.join(repo, n);
        assert.equal(ageDecrypt(file, g.key.file), `value of ${n}`, `${n} with its old recipient`);
        assert.equal(ageDecrypt(file, added.file), `value of ${n}`, `${n} with the added recipient`);
      }
    }
  });

  test("a file the worker can't decrypt is reported as the main thread reports it, and nothing is renamed", async () => {
    const [alice, bob, carol] = [
      X25519Identity.generate(),
      X25519Identity.generate(),
      X25519Identity.generate(),
    ];
    const [a, b, c] = [alice, bob, carol].map((i) => i.recipient().toString());
    const list = names("s", 100);
    // The first files are the worker's (it takes the oldest): one is for someone else, one has
    // a damaged payload.
    const damage = async (repo: string) => {
      await writeAll(makeRules(repo, Object.fromEntries(list.map((n) => [n, { publicKeys: [a!] }]))));
      await writeAll(makeRules(repo, { "s000.age": { publicKeys: [c!] } }));
      const f = path.join(repo, "s003.age");
      const bytes = fs.readFileSync(f);
      bytes[bytes.length - 1]! ^= 1;
      fs.writeFileSync(f, bytes);
    };
    const results = [];
    for (const workers of [0, 1]) {
      const repo = path.join(dir, `fails-${workers}`);
      await damage(repo);
      const before = new Map(list.map((n) => [n, fs.readFileSync(path.join(repo, n))]));
      const rules = makeRules(repo, Object.fromEntries(list.map((n) => [n, { publicKeys: [a!, b!] }])));
      const r = await rekeyRepository(rules, rekeyOptions([alice], { workers }));
      assert.deepEqual(r.rewritten, [], `workers: ${workers}`);
      for (const n of list)
        assert.ok(
          fs.readFileSync(path.join(repo, n)).equals(before.get(n)!),
          `${n} unchanged (workers: ${workers})`,
        );
      assert.deepEqual(
        fs.readdirSync(repo).filter((f) => f.startsWith(".")),
        [],
        `no temp file left (workers: ${workers})`,
      );
      results.push(r.failed);
    }
    const [here, worker] = results;
    assert.deepEqual(
      here!.map((f) => f.secret),
      ["s000.age", "s003.age"],
    );
    assert.match(here![0]!.message, /no identity can decrypt it/);
    assert.ok(here![0]!.hint);
    assert.ok(here![1]!.hint);
    assert.deepEqual(worker, here);
  });

  test("a plugin identity beside an X25519 one: files the worker's identity can't open go to the plugin, in one run", async () => {
    const savedPath = process.env.PATH;
    process.env.PATH = `${PLUGIN_FIXTURES}${path.delimiter}${savedPath ?? ""}`;
    const log = path.join(dir, "nstest-workers.log");
    try {
      const out = execFileSync(path.join(PLUGIN_FIXTURES, "age-plugin-nstest"), ["--generate"], {
        encoding: "utf8",
      });
      const pluginRecipient = /# public key: (\S+)/.exec(out)![1]!;
      const idFile = path.join(dir, "nstest-workers-identity.txt");
      fs.writeFileSync(idFile, `${out.split("\n").find((l) => l.startsWith("AGE-PLUGIN-"))!}\n`, {
        mode: 0o600,
      });
      const [x, added] = [X25519Identity.generate(), X25519Identity.generate()];
      const list = names("p", 80);
      // Half the files for x, half for the plugin only; the rules now name x and another
      // X25519 key for all: no plugin recipient, so every file goes to the worker, whose x
      // opens only the first half.
      const repo = path.join(dir, "plugin-workers");
      await writeAll(
        makeRules(
          repo,
          Object.fromEntries(
            list.map((n, i) => [n, { publicKeys: [i < 40 ? x.recipient().toString() : pluginRecipient] }]),
          ),
        ),
      );
      process.env.NSTEST_LOG = log;
      const identities = [x, ...(await loadIdentities([idFile], {}))];
      const rules = makeRules(
        repo,
        Object.fromEntries(
          list.map((n) => [n, { publicKeys: [x.recipient().toString(), added.recipient().toString()] }]),
        ),
      );
      const r = await rekeyRepository(rules, rekeyOptions(identities, { workers: 1 }));
      assert.deepEqual(r.failed, []);
      assert.equal(r.rewritten.length, 80);
      const runs = fs
        .readFileSync(log, "utf8")
        .split("\n")
        .filter((l) => l.includes("identity-v1"));
      assert.equal(runs.length, 1, runs.join("\n"));
      for (const n of list) {
        const file = fs.readFileSync(path.join(repo, n));
        assert.equal(Buffer.from(await decrypt(file, [added])).toString(), `value of ${n}`);
        assert.equal(Buffer.from(await decrypt(file, [x])).toString(), `value of ${n}`);
      }
    } finally {
      delete process.env.NSTEST_LOG;
      if (savedPath === undefined) delete process.env.PATH;
      else process.env.PATH = savedPath;
    }
  });
});

/**
 * checkRepository on repositories built by the test (rules given directly, no Nix): every kind
 * of problem it reports, one per file and secret, and what it must not report.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { encrypt } from "../../src/age/age.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { NixsealError } from "../../src/common/errors.js";
import { parseRecipientString } from "../../src/keys/key-types.js";
import { checkRepository, findAgeFiles } from "../../src/vault/check.js";
import type { Rules } from "../../src/vault/rules.js";
import { writeSecret } from "../../src/vault/secrets.js";
import { makeRules, tempDir } from "../helpers.js";

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

const x = () => X25519Identity.generate().recipient().toString();

async function write(rules: Rules, name: string): Promise<void> {
  const rule = rules.secrets.get(name)!;
  await writeSecret(
    rule,
    Buffer.from(`value of ${name}`),
    rule.publicKeys.map((k) => parseRecipientString(k, "t")),
  );
}

describe("checkRepository", () => {
  test("a repository written by nixseal is clean, whatever the layout", async () => {
    const [a, b] = [x(), x()];
    const rules = makeRules(path.join(dir, "clean"), {
      "one.age": { publicKeys: [a, b] },
      "-dash.age": { publicKeys: [a] },
      "hosts/web/db.age": { publicKeys: [b], armor: true },
    });
    for (const name of rules.secrets.keys()) await write(rules, name);
    // Things check must not look at: dot directories and files of other extensions.
    fs.mkdirSync(path.join(rules.dir, ".git", "x"), { recursive: true });
    fs.writeFileSync(path.join(rules.dir, ".git", "x", "old.age"), "not ours");
    fs.writeFileSync(path.join(rules.dir, "README.md"), "hi");
    const report = checkRepository(rules);
    assert.deepEqual(report.problems, []);
    assert.equal(report.secrets, 3);
  });

  test("reports every problem, one per file and secret, drift or warning", async () => {
    const [a, b, c] = [x(), x(), x()];
    const repo = path.join(dir, "drift");
    const rules = makeRules(repo, {
      "ok.age": { publicKeys: [a] },
      "added.age": { publicKeys: [a] },
      "missing.age": { publicKeys: [a] },
      "garbage.age": { publicKeys: [a] },
      "armor.age": { publicKeys: [a], armor: true },
      "agenix.age": { publicKeys: [a, b] },
      "agenix-short.age": { publicKeys: [a, b] },
      "link.age": { publicKeys: [a] },
    });
    for (const n of ["ok.age", "added.age", "armor.age"]) await write(rules, n);
    fs.writeFileSync(path.join(repo, "garbage.age"), "hello\n");
    // Written by age-like tools: no record.
    const recips = (keys: string[]) => keys.map((k) => parseRecipientString(k, "t"));
    fs.writeFileSync(path.join(repo, "agenix.age"), await encrypt(Buffer.from("s"), recips([a, b])));
    fs.writeFileSync(path.join(repo, "agenix-short.age"), await encrypt(Buffer.from("s"), recips([a])));
    fs.symlinkSync(path.join(repo, "ok.age"), path.join(repo, "link.age"));
    fs.mkdirSync(path.join(repo, "sub"));
    fs.writeFileSync(path.join(repo, "sub", "stray.age"), "x");
    // The rules change after the files were written.
    rules.secrets.get("added.age")!.publicKeys = [a, c];
    rules.secrets.get("armor.age")!.armor = false;

    const report = checkRepository(rules);
    const by = (file: string) => report.problems.filter((p) => p.file === file);
    assert.deepEqual(by("ok.age"), []);
    assert.equal(by("added.age")[0]?.kind, "recipients");
    assert.equal(by("added.age")[0]?.severity, "drift");
    assert.equal(by("added.age")[0]?.secret, "added.age");
    assert.deepEqual(
      by("missing.age").map((p) => p.kind),
      ["missing-file"],
    );
    assert.deepEqual(
      by("garbage.age").map((p) => p.kind),
      ["bad-header"],
    );
    assert.deepEqual(
      by("armor.age").map((p) => p.kind),
      ["armor"],
    );
    assert.deepEqual(
      by("agenix.age").map((p) => [p.kind, p.severity]),
      [["unrecorded", "warning"]],
    );
    assert.match(by("agenix.age")[0]!.message, /2 of 2 recipients can't be verified.*nixseal rekey/);
    assert.deepEqual(
      by("agenix-short.age").map((p) => [p.kind, p.severity]),
      [["recipients", "drift"]],
    );
    assert.deepEqual(
      by("link.age").map((p) => p.kind),
      ["unreadable"],
    );
    assert.match(by("link.age")[0]!.message, /symbolic link/);
    assert.deepEqual(by("sub/stray.age"), [
      {
        severity: "drift",
        kind: "not-in-rules",
        secret: null,
        file: "sub/stray.age",
        message: "not listed in secrets.nix",
      },
    ]);
  });

  test("a bad key in the rules is a rules error (exit 2), every one reported", () => {
    const rules = makeRules(path.join(dir, "badkey"), {
      "a.age": { publicKeys: ["age1typo"] },
      "b.age": { publicKeys: ["ssh-dss AAAAB3NzaC1kc3MAAACBAP1 me"] },
    });
    assert.throws(
      () => checkRepository(rules),
      (e: unknown) =>
        e instanceof NixsealError &&
        e.code === "RULES" &&
        e.problems.length === 2 &&
        e.problems[0]!.file === rules.file,
    );
  });

  test("findAgeFiles never follows a symlinked directory (no loops, nothing outside)", () => {
    const repo = path.join(dir, "links");
    fs.mkdirSync(path.join(repo, "real"), { recursive: true });
    fs.writeFileSync(path.join(repo, "real", "a.age"), "x");
    fs.symlinkSync(repo, path.join(repo, "loop"));
    fs.symlinkSync("/etc", path.join(repo, "etc"));
    assert.deepEqual(findAgeFiles(repo), [path.join(repo, "real", "a.age")]);
  });
});

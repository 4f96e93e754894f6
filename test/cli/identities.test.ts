/** Identity files through the built CLI: an empty one is "no identity", not "passphrase-protected". */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { isolatedUserEnv, nixseal, tempDir } from "../helpers.js";

let dir: string;
let cleanup: () => void;
let home: string;
let env: Record<string, string | undefined>;
let alice: string; // identity file
let aliceRecipient: string;

function keygen(file: string): string {
  const r = nixseal(["age-keygen", "-o", file]);
  assert.equal(r.status, 0, r.stderr);
  return /Public key: (age1\S+)/.exec(r.stderr)![1]!;
}

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-ids-"));
  home = path.join(dir, "home");
  fs.mkdirSync(path.join(home, ".config", "nixseal"), { recursive: true });
  alice = path.join(dir, "alice.txt");
  aliceRecipient = keygen(alice);
  env = { ...isolatedUserEnv(home, path.join(dir, "cache")), NO_COLOR: "1", SOPS_CONFIG: undefined };
});
after(() => cleanup());

describe("an empty identity file", () => {
  test("-i /dev/null or an empty file: 'no identity in FILE', with a hint, not a passphrase prompt", () => {
    const empty = path.join(dir, "empty.txt");
    fs.writeFileSync(empty, "");
    const file = nixseal(["age", "-r", aliceRecipient], { input: "x" }).stdout;
    for (const id of ["/dev/null", empty]) {
      for (const args of [
        ["age", "-d", "-i", id],
        ["age", "-e", "-i", id],
        ["age-keygen", "-y", id],
        ["decrypt", "x.yaml", "-i", id],
      ]) {
        const r = nixseal(args, { cwd: dir, env, input: file });
        const what = args.join(" ");
        assert.ok(r.status === 1, `${what}: ${r.status} ${r.stderr}`);
        assert.match(
          r.stderr,
          new RegExp(`no identity in ${id.replace(/[.]/g, "\\.")} \\(it is empty\\)`),
          what,
        );
        assert.match(r.stderr, /hint: an identity file holds AGE-SECRET-KEY-1\.\.\. lines/, what);
        assert.doesNotMatch(r.stderr, /passphrase/, what);
      }
    }
    // A file of comments only says so.
    const comments = path.join(dir, "comments.txt");
    fs.writeFileSync(comments, "# nothing here\n");
    const r = nixseal(["age", "-d", "-i", comments], { env, input: file });
    assert.match(r.stderr, /no identity in .*comments\.txt \(only comments\)/);
  });
});

/**
 * hosts.nix (src/vault/hosts-file.ts): strict reading (every line of another form named, nothing
 * rewritten), names that are plain Nix identifiers, recipients that cannot break out of a Nix
 * string, rewrites that keep comments and order, and a result the real Nix evaluates as written.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import {
  hostNameProblem,
  readHostsFile,
  renderHostsFile,
  writeHostsFile,
} from "../../src/vault/hosts-file.js";
import { isError, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF1/NzFWPsX6O0e8rIzLXfVxhtzKhH+8l/Gti5OG9oRS";
const AGE = "age1lvyvwawkr0mcnnnncaghunadrqkmuf9e6507x9y920xxpp866cnql7dp2z";

let dir = "";
let cleanup = () => {};
let n = 0;
before(() => {
  ({ dir, cleanup } = tempDir("nixseal-hosts-"));
});
after(() => cleanup());

function repo(hostsNix?: string): string {
  const d = path.join(dir, `r${n++}`);
  fs.mkdirSync(d);
  if (hostsNix !== undefined) fs.writeFileSync(path.join(d, "hosts.nix"), hostsNix);
  return d;
}

test("host names: plain Nix identifiers, no keywords, bounded", () => {
  for (const ok of ["web1", "db_primary", "_x", "web-1", "A"]) assert.equal(hostNameProblem(ok), null, ok);
  for (const bad of [
    "",
    "1web",
    "web.1",
    "a b",
    'x"y',
    "$" + "{x}",
    "a/b",
    "if",
    "inherit",
    "or",
    "x".repeat(64),
    "__proto__!",
  ])
    assert.notEqual(hostNameProblem(bad), null, bad);
});

test("a missing hosts.nix is empty; the new file names the import line and evaluates as written", {
  skip: NIX ? false : "nix-instantiate is not installed",
}, () => {
  const d = repo();
  const hosts = readHostsFile(d);
  assert.equal(hosts.exists, false);
  const text = renderHostsFile(hosts, "web1", ED);
  assert.match(text, /hosts = import \.\/hosts\.nix;/);
  writeHostsFile(hosts, text, new Map([["web1", ED]]));
  const r = run(NIX!, ["--eval", "--strict", "--json", path.join(d, "hosts.nix")]);
  assert.deepEqual(JSON.parse(r.stdout.toString()), { web1: ED });
  assert.deepEqual([...readHostsFile(d).hosts], [["web1", ED]]);
});

test("a rewrite replaces NAME's line in place and keeps comments, order and trailing comments", () => {
  const d = repo(`# mine\n{\n  web1 = "${AGE}"; # the old one\n\n  # databases\n  db = "${ED}";\n}\n`);
  const hosts = readHostsFile(d);
  assert.equal(
    renderHostsFile(hosts, "web1", ED),
    `# mine\n{\n  web1 = "${ED}"; # the old one\n\n  # databases\n  db = "${ED}";\n}\n`,
  );
  assert.equal(
    renderHostsFile(hosts, "cache", AGE),
    `# mine\n{\n  web1 = "${AGE}"; # the old one\n\n  # databases\n  db = "${ED}";\n  cache = "${AGE}";\n}\n`,
  );
});

test("every line of another form is reported at once, with its number", () => {
  const d = repo(
    `{\n  web1 = "${AGE}";\n  db = "a" + "b";\n  web1 = "${ED}";\n  x = "\${builtins.readFile /etc/passwd}";\n  if = "${AGE}";\n}\nextra\n`,
  );
  assert.throws(
    () => readHostsFile(d),
    (e: Error & { problems?: Error[] }) => {
      const text = [e.message, ...(e.problems ?? []).map((p) => p.message)].join("\n");
      for (const want of [
        /hosts\.nix:3: not a NAME/,
        /hosts\.nix:4: host web1 is listed twice/,
        /hosts\.nix:5: not a NAME/,
        /hosts\.nix:6: .*keyword/,
        /hosts\.nix:8: text after the closing/,
      ])
        assert.match(text, want);
      return true;
    },
  );
  assert.throws(() => readHostsFile(repo(`{ web1 = "${AGE}"; }\n`)), isError("RULES", /expected \{/));
  assert.throws(() => readHostsFile(repo(`{\n  web1 = "${AGE}";\n`)), isError("RULES", /not closed/));
});

test("recipients that could leave the Nix string, and symlinks, are refused", () => {
  const hosts = readHostsFile(repo());
  for (const bad of ['age1x"; evil = "', "age1$" + "{x}", "ssh-ed25519 AAAA\\n", "age1\nx"])
    assert.throws(() => renderHostsFile(hosts, "web1", bad), isError("USAGE"), bad);
  const d = repo();
  fs.writeFileSync(path.join(dir, "elsewhere.nix"), `{\n}\n`);
  fs.symlinkSync(path.join(dir, "elsewhere.nix"), path.join(d, "hosts.nix"));
  assert.throws(() => readHostsFile(d), isError("RULES", /not a regular file/));
});

test("a write whose result Nix does not evaluate as expected is put back", {
  skip: NIX ? false : "nix-instantiate is not installed",
}, () => {
  const before = `{\n  db = "${ED}";\n}\n`;
  const d = repo(before);
  const hosts = readHostsFile(d);
  assert.throws(
    () => writeHostsFile(hosts, renderHostsFile(hosts, "web1", AGE), new Map([["web1", AGE]])),
    isError("RULES", /does not evaluate to the hosts nixseal wrote/),
  );
  assert.equal(fs.readFileSync(path.join(d, "hosts.nix"), "utf8"), before);
});

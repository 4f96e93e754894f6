/**
 * The sops commands through the built CLI: decrypt (files written by the real sops, --extract,
 * --ignore-mac), encrypt (.sops.yaml rules), set, updatekeys and rotate, with the real `age`
 * binary as the independent check of the wrapped data key.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import YAML from "yaml";
import { X25519Identity } from "../../src/age/x25519.js";
import { encryptNewDocument, YamlStore } from "../../src/sops/index.js";
import { CLI, isolatedUserEnv, nixseal, REPO, run, tempDir, which } from "../helpers.js";
import { makeHost, secret, writeManifest } from "../install/fixture.js";

const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const NIX = which("nix-instantiate");
const FIX = path.join(REPO, "test", "fixtures", "sops");

let dir: string;
let cleanup: () => void;
let env: Record<string, string | undefined>;

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-sops-cli-"));
  const home = path.join(dir, "home");
  fs.mkdirSync(home);
  env = {
    ...isolatedUserEnv(home, path.join(dir, "cache")),
    SOPS_CONFIG: undefined,
    SOPS_AGE_KEY_CMD: undefined,
    SOPS_AGE_SSH_PRIVATE_KEY_FILE: undefined,
    NO_COLOR: "1",
  };
});
after(() => cleanup());

let workCount = 0;
/** A fresh work dir (its own .sops.yaml scope) under the test's temp dir. */
function work(): string {
  const w = path.join(dir, `w${workCount++}`);
  fs.mkdirSync(w);
  return w;
}

function sh(cwd: string, args: string[], input?: string, extra: Record<string, string | undefined> = {}) {
  const r = nixseal(args, { cwd, env: { ...env, ...extra }, input });
  return { ...r, out: r.stdout.toString("utf8") };
}

/** A new X25519 key pair in `w`: [identity file, recipient]. */
function keygen(w: string, name: string): [string, string] {
  const file = path.join(w, name);
  const r = spawnSync(AGE_KEYGEN!, ["-o", file]);
  assert.equal(r.status, 0, String(r.stderr));
  const recipient = spawnSync(AGE_KEYGEN!, ["-y", file]).stdout.toString("utf8").trim();
  return [file, recipient];
}

function sopsYaml(w: string, rules: string): void {
  fs.writeFileSync(path.join(w, ".sops.yaml"), `creation_rules:\n${rules}`);
}

/** The ENC[...] lines of a file (values and comments), in order. */
function encLines(text: string): string[] {
  return text.split("\n").filter((l) => l.includes("ENC[AES256_GCM") && !/^\s*mac:|^sops_mac=/.test(l));
}

const missing = !AGE || !AGE_KEYGEN ? "age / age-keygen not installed" : false;

describe("sops files written by the real sops decrypt through the CLI", () => {
  test("sops-nix secrets.yaml (sops 3.7.1, age + pgp) with SOPS_AGE_KEY_FILE", () => {
    const w = work();
    fs.copyFileSync(path.join(FIX, "sops-nix", "secrets.yaml"), path.join(w, "secrets.yaml"));
    const r = sh(w, ["decrypt", "secrets.yaml"], undefined, {
      SOPS_AGE_KEY_FILE: path.join(FIX, "sops-nix", "age-keys.txt"),
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.out,
      "test_key: test_value\na_list:\n    - e1\n    - e3\nnested:\n    test:\n        file: another value\n",
    );
    const one = sh(w, ["decrypt", "secrets.yaml", "--extract", '["nested"]["test"]["file"]'], undefined, {
      SOPS_AGE_KEY_FILE: path.join(FIX, "sops-nix", "age-keys.txt"),
    });
    assert.equal(one.status, 0, one.stderr);
    assert.equal(one.out, "another value");
    const list = sh(w, ["decrypt", "secrets.yaml", "--extract", '["a_list"][1]'], undefined, {
      SOPS_AGE_KEY_FILE: path.join(FIX, "sops-nix", "age-keys.txt"),
    });
    assert.equal(list.out, "e3");
  });

  test("sops-age secret.enc.json (sops 3.9.2) and secret.enc.env (dotenv) with -i", () => {
    const w = work();
    for (const f of ["secret.enc.json", "secret.enc.env"]) {
      fs.copyFileSync(path.join(FIX, "sops-age", f), path.join(w, f));
    }
    const key = path.join(FIX, "sops-age", "key.txt");
    const json = sh(w, ["decrypt", "secret.enc.json", "-i", key]);
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(
      JSON.parse(json.out),
      JSON.parse(fs.readFileSync(path.join(FIX, "sops-age", "secret.json"), "utf8")),
    );
    const branch = sh(w, ["decrypt", "secret.enc.json", "-i", key, "--extract", '["complex"]']);
    assert.equal(branch.status, 0, branch.stderr);
    assert.deepEqual(JSON.parse(branch.out), { value: "this is a secret", array: ["one", "two", "three"] });
    const out = path.join(w, "plain.env");
    const env = sh(w, ["decrypt", "secret.enc.env", "-i", key, "-o", out]);
    assert.equal(env.status, 0, env.stderr);
    assert.equal(fs.readFileSync(out, "utf8"), "secret=this is a secret\nanother_secret=7\n");
    assert.equal(fs.statSync(out).mode & 0o777, 0o600);
  });

  test("--extract: a path that is not in the file or does not parse is a usage error", () => {
    const w = work();
    fs.copyFileSync(path.join(FIX, "sops-age", "secret.enc.json"), path.join(w, "s.json"));
    const key = path.join(FIX, "sops-age", "key.txt");
    for (const [p, msg] of [
      ['["nope"]', /no such key/],
      ['["secret"]["x"]', /not a mapping/],
      ['["complex"]["array"][3]', /out of range/],
      ['["complex"', /invalid path/],
      ["['complex']", /invalid path/],
      ['["complex"][01]', /invalid path/],
      ["", /empty path/],
    ] as const) {
      const r = sh(w, ["decrypt", "s.json", "-i", key, "--extract", p]);
      assert.equal(r.status, 2, `${p}: ${r.stderr}`);
      assert.match(r.stderr, msg);
      assert.equal(r.out, "");
    }
  });

  test("a file only pgp keys can open decrypts with the user's GnuPG home (GNUPGHOME), no age identity needed", {
    skip: which("gpg") === null ? "needs gpg" : false,
  }, () => {
    const w = work();
    const gnupg = path.join(w, "gnupg");
    fs.mkdirSync(gnupg, { mode: 0o700 });
    try {
      const imp = spawnSync("gpg", [
        "--homedir",
        gnupg,
        "--batch",
        "--import",
        path.join(FIX, "sops-nix", "key.asc"),
      ]);
      assert.equal(imp.status, 0, String(imp.stderr));
      fs.copyFileSync(path.join(FIX, "sops-nix", "secrets.env"), path.join(w, "secrets.env"));
      const r = sh(w, ["decrypt", "secrets.env", "--extract", '["example_key"]'], undefined, {
        GNUPGHOME: gnupg,
      });
      assert.equal(r.status, 0, r.stderr.toString());
      assert.equal(r.out, "example_value");
    } finally {
      spawnSync("gpgconf", ["--homedir", gnupg, "--kill", "gpg-agent"]);
    }
  });

  test("a file only pgp keys can open: the error lists the file's keys and the identities tried", () => {
    const w = work();
    fs.copyFileSync(path.join(FIX, "sops-nix", "secrets.env"), path.join(w, "secrets.env"));
    const r = sh(w, ["decrypt", "secrets.env", "-i", path.join(FIX, "sops-age", "key.txt")]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no identity can decrypt the data key/);
    assert.match(r.stderr, /pgp 7FB89715AADA920D65D25E63F9BA9DEBD03F57C0: no GnuPG identity given/);
    assert.match(r.stderr, /pgp 2504791468B153B8A3963CC97BA53D1919C5DFD4: no GnuPG identity given/);
    assert.match(r.stderr, /tried: age identity from .*key\.txt/);
  });
});

const YAML_DOC = `# the database
db:
    user: alice
    password: s3cret # rotate yearly
    port: 5432
hosts:
    - one
    - two
public_unencrypted: visible
`;
const JSON_DOC = '{\n\t"token": "abc",\n\t"n": 9007199254740993,\n\t"nested": {\n\t\t"on": true\n\t}\n}\n';
const ENV_DOC = "# api\nAPI_KEY=xyz\nEMPTY=\nURL=https://example.org/?a=b\n";

describe("encrypt and decrypt round trips", { skip: missing }, () => {
  for (const [name, doc] of [
    ["app.yaml", YAML_DOC],
    ["app.json", JSON_DOC],
    ["app.env", ENV_DOC],
  ] as const) {
    test(`${name}: encrypt to the .sops.yaml rule, the real age unwraps the data key, decrypt gives the document back`, () => {
      const w = work();
      const [idFile, recipient] = keygen(w, "key.txt");
      sopsYaml(w, `    - path_regex: ^app\\.(yaml|json|env)$\n      age: ${recipient}\n`);
      const enc = sh(w, ["encrypt", name], doc);
      assert.equal(enc.status, 0, enc.stderr);
      const text = fs.readFileSync(path.join(w, name), "utf8");
      // Values of 5+ characters only: a 3-letter value ("abc") turns up by chance in the base64
      // of ciphertexts about once in a hundred runs.
      for (const secret of ["alice", "s3cret", "rotate yearly", "the database", "https://example.org"]) {
        assert.ok(!text.includes(secret), `${secret} is encrypted`);
      }
      const values = name === "app.json" ? ['"abc"'] : name === "app.env" ? ["API_KEY=xyz"] : [];
      for (const v of values) assert.ok(!text.includes(v), `${v} is encrypted`);
      if (name === "app.yaml") assert.match(text, /public_unencrypted: visible/);
      assert.ok(text.includes(recipient));
      // Independent check: the real age opens the wrapped data key with the identity.
      const armored =
        name === "app.env"
          ? text
              .split("\n")
              .find((l) => l.startsWith("sops_age__list_0__map_enc="))!
              .slice("sops_age__list_0__map_enc=".length)
              .replace(/\\n/g, "\n")
          : name === "app.json"
            ? (JSON.parse(text).sops.age[0].enc as string)
            : text.slice(text.indexOf("-----BEGIN"), text.indexOf("-----END AGE ENCRYPTED FILE-----") + 32);
      const key = spawnSync(AGE!, ["-d", "-i", idFile], { input: armored.replace(/^ +/gm, "") });
      assert.equal(key.status, 0, String(key.stderr));
      assert.equal(key.stdout.length, 32);
      const dec = sh(w, ["decrypt", name, "-i", idFile]);
      assert.equal(dec.status, 0, dec.stderr);
      assert.equal(dec.out, doc);
      // --in FILE reads the plaintext from a file.
      fs.writeFileSync(path.join(w, "plain"), doc);
      const again = sh(w, ["encrypt", name, "--in", path.join(w, "plain"), "--json"]);
      assert.equal(again.status, 0, again.stderr);
      assert.deepEqual(JSON.parse(again.out), {
        file: name,
        format: name === "app.env" ? "dotenv" : name.slice(4),
        keyGroups: 1,
        recipients: 1,
      });
      assert.equal(sh(w, ["decrypt", name, "-i", idFile]).out, doc);
    });
  }

  test("encrypted_regex and key groups with a Shamir threshold come from the rule", () => {
    const w = work();
    const [a, ra] = keygen(w, "a.txt");
    const [b, rb] = keygen(w, "b.txt");
    const [, rc] = keygen(w, "c.txt");
    sopsYaml(
      w,
      `    - path_regex: secrets/.*\\.yaml$\n      encrypted_regex: ^(password|token)$\n      shamir_threshold: 2\n      key_groups:\n        - age: [${ra}]\n        - age: [${rb}]\n        - age: [${rc}]\n`,
    );
    fs.mkdirSync(path.join(w, "secrets"));
    const r = sh(w, ["encrypt", "secrets/x.yaml"], "user: bob\npassword: hunter2\n");
    assert.equal(r.status, 0, r.stderr);
    const text = fs.readFileSync(path.join(w, "secrets", "x.yaml"), "utf8");
    assert.match(text, /^user: bob$/m);
    assert.ok(!text.includes("hunter2"));
    assert.match(text, /key_groups:/);
    assert.match(text, /shamir_threshold: 2/);
    assert.match(text, /encrypted_regex: \^\(password\|token\)\$/);
    // One group is not enough, two are.
    const one = sh(w, ["decrypt", "secrets/x.yaml", "-i", a]);
    assert.equal(one.status, 1);
    assert.match(one.stderr, /2 key groups needed to decrypt the data key, got 1/);
    const two = sh(w, ["decrypt", "secrets/x.yaml", "-i", a, "-i", b]);
    assert.equal(two.status, 0, two.stderr);
    assert.equal(two.out, "user: bob\npassword: hunter2\n");
  });

  test("errors: no .sops.yaml, no matching rule, reserved sops key, already encrypted input", () => {
    const w = work();
    const [, recipient] = keygen(w, "key.txt");
    const none = sh(w, ["encrypt", "a.yaml"], "a: 1\n");
    assert.equal(none.status, 2);
    assert.match(none.stderr, /no \.sops\.yaml found/);
    assert.match(none.stderr, /hint:/);
    sopsYaml(w, `    - path_regex: ^only\\.yaml$\n      age: ${recipient}\n`);
    const noRule = sh(w, ["encrypt", "a.yaml"], "a: 1\n");
    assert.equal(noRule.status, 2);
    assert.match(noRule.stderr, /no matching creation rules found in .*\.sops\.yaml for a\.yaml/);
    assert.match(noRule.stderr, /hint: add a creation rule/);
    assert.ok(!fs.existsSync(path.join(w, "a.yaml")));
    const reserved = sh(w, ["encrypt", "only.yaml"], "sops: 1\n");
    assert.equal(reserved.status, 1);
    assert.match(reserved.stderr, /"sops" is reserved/);
    assert.equal(sh(w, ["encrypt", "only.yaml"], "a: 1\n").status, 0);
    const encrypted = fs.readFileSync(path.join(w, "only.yaml"), "utf8");
    const twice = sh(w, ["encrypt", "only.yaml"], encrypted);
    assert.equal(twice.status, 1);
    assert.match(twice.stderr, /already encrypted/);
    assert.equal(fs.readFileSync(path.join(w, "only.yaml"), "utf8"), encrypted, "left as it was");
    const bad = sh(w, ["encrypt", "only.yaml"], "a: 1\na: 2\n");
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /duplicate|unique/i);
  });

  test("MAC mismatch is an error, --ignore-mac decrypts anyway; a foreign identity lists recipients", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    const [stranger] = keygen(w, "stranger.txt");
    sopsYaml(w, `    - age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "s.yaml"], YAML_DOC).status, 0);
    const file = path.join(w, "s.yaml");
    fs.writeFileSync(
      file,
      fs.readFileSync(file, "utf8").replace("public_unencrypted: visible", "public_unencrypted: edited"),
    );
    const r = sh(w, ["decrypt", "s.yaml", "-i", idFile]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /MAC mismatch/);
    assert.match(r.stderr, /--ignore-mac/);
    assert.equal(r.out, "");
    const forced = sh(w, ["decrypt", "s.yaml", "-i", idFile, "--ignore-mac"]);
    assert.equal(forced.status, 0, forced.stderr);
    assert.match(forced.out, /public_unencrypted: edited/);
    const foreign = sh(w, ["decrypt", "s.yaml", "-i", stranger]);
    assert.equal(foreign.status, 1);
    assert.ok(foreign.stderr.includes(`${recipient}: no matching identity`), foreign.stderr);
    assert.match(foreign.stderr, /tried: .*stranger\.txt/);
  });
});

describe("age secrets keep their meaning", {
  skip: missing || (!NIX ? "nix-instantiate not installed" : false),
}, () => {
  test("a NAME with a sops extension that secrets.nix lists stays an age secret", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    fs.writeFileSync(path.join(w, "secrets.nix"), `{ "conf.yaml".publicKeys = [ "${recipient}" ]; }\n`);
    const r = sh(w, ["encrypt", "conf.yaml"], "not: [valid yaml");
    assert.equal(r.status, 0, r.stderr);
    assert.ok(
      fs.readFileSync(path.join(w, "conf.yaml")).subarray(0, 21).toString() === "age-encryption.org/v1",
    );
    const d = sh(w, ["decrypt", "conf.yaml", "-i", idFile]);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(d.out, "not: [valid yaml");
    // Not listed: a sops file, even with a secrets.nix present.
    sopsYaml(w, `    - age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "other.yaml"], "a: b\n").status, 0);
    assert.match(fs.readFileSync(path.join(w, "other.yaml"), "utf8"), /^a: ENC\[AES256_GCM/);
    assert.equal(sh(w, ["decrypt", "other.yaml", "-i", idFile]).out, "a: b\n");
  });
});

describe("set", { skip: missing }, () => {
  test("changes exactly one value's ciphertext line; the others keep theirs; the MAC verifies", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "s.yaml"], YAML_DOC).status, 0);
    const file = path.join(w, "s.yaml");
    fs.chmodSync(file, 0o640);
    const before = encLines(fs.readFileSync(file, "utf8"));
    const r = sh(w, ["set", "s.yaml", '["db"]["password"]', "-i", idFile], '"n3w"\n');
    assert.equal(r.status, 0, r.stderr);
    const afterText = fs.readFileSync(file, "utf8");
    const after = encLines(afterText);
    assert.equal(after.length, before.length);
    const changed = after.filter((l, i) => l !== before[i]);
    assert.equal(changed.length, 1, changed.join("\n"));
    assert.match(changed[0]!, /^ {4}password: ENC\[/);
    assert.equal(fs.statSync(file).mode & 0o777, 0o640, "mode kept");
    const d = sh(w, ["decrypt", "s.yaml", "-i", idFile]);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(d.out, YAML_DOC.replace("password: s3cret", "password: n3w"));
    // JSON values, new keys, list append, --string raw input.
    assert.equal(sh(w, ["set", "s.yaml", '["db"]["port"]', "-i", idFile], "6543").status, 0);
    assert.equal(sh(w, ["set", "s.yaml", '["new"]["deep"]', "-i", idFile], '{"x": [true, 1.5]}').status, 0);
    assert.equal(sh(w, ["set", "s.yaml", '["hosts"][2]', "-i", idFile], '"three"').status, 0);
    assert.equal(sh(w, ["set", "s.yaml", '["cert"]', "--string", "-i", idFile], "line1\nline2\n").status, 0);
    const all = sh(w, ["decrypt", "s.yaml", "-i", idFile, "--extract", '["db"]["port"]']);
    assert.equal(all.out, "6543");
    assert.equal(sh(w, ["decrypt", "s.yaml", "-i", idFile, "--extract", '["hosts"][2]']).out, "three");
    assert.equal(sh(w, ["decrypt", "s.yaml", "-i", idFile, "--extract", '["cert"]']).out, "line1\nline2\n");
    assert.deepEqual(
      JSON.parse(sh(w, ["decrypt", "s.yaml", "-i", idFile, "--extract", '["new"]["deep"]["x"]']).out),
      [true, 1.5],
    );
  });

  test("a file in the narrow form: one value's line, lastmodified and the MAC change; written whole when its metadata block is in another order", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - age: ${recipient}\n`);
    const plain = "db:\n    user: admin\n    password: s3cret\napi: tok\n";
    const lines = (f: string) => fs.readFileSync(path.join(w, f), "utf8").split("\n");
    // lastmodified changes unless the write is in the same second as the encryption.
    const changedKeys = (a: string[], b: string[]) =>
      a
        .flatMap((l, i) => (l === b[i] ? [] : [l.slice(0, l.indexOf(":") + 1)]))
        .filter((k) => k !== "    lastmodified:")
        .sort();
    assert.equal(sh(w, ["encrypt", "n.yaml"], plain).status, 0);
    // The same file with two metadata lines swapped: still read in the narrow form, but written
    // whole (the metadata block is written in nixseal's order).
    const swapped = lines("n.yaml")
      .join("\n")
      .replace(/( {4}unencrypted_suffix: .*\n)( {4}version: .*\n)/, "$2$1");
    assert.notEqual(swapped, lines("n.yaml").join("\n"));
    fs.writeFileSync(path.join(w, "m.yaml"), swapped);
    for (const f of ["n.yaml", "m.yaml"]) {
      const before = lines(f);
      const r = sh(w, ["set", f, '["db"]["password"]', "-i", idFile], '"n3w"\n');
      assert.equal(r.status, 0, r.stderr);
      const after = lines(f);
      const expected = ["    mac:", "    password:"];
      if (f === "m.yaml") expected.push("    unencrypted_suffix:", "    version:");
      assert.deepEqual(changedKeys(after, before), expected.sort(), f);
      assert.equal(sh(w, ["decrypt", f, "-i", idFile]).out, plain.replace("s3cret", "n3w"), f);
    }
  });

  test("dotenv and JSON files; bad input is refused and the file is left as it was", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "a.env"], ENV_DOC).status, 0);
    assert.equal(sh(w, ["set", "a.env", '["API_KEY"]', "--string", "-i", idFile], "abc").status, 0);
    assert.equal(sh(w, ["decrypt", "a.env", "-i", idFile]).out, ENV_DOC.replace("xyz", "abc"));
    assert.equal(sh(w, ["encrypt", "a.json"], JSON_DOC).status, 0);
    const big = sh(w, ["set", "a.json", '["n"]', "-i", idFile], "9223372036854775807");
    assert.equal(big.status, 0, big.stderr);
    assert.equal(sh(w, ["decrypt", "a.json", "-i", idFile, "--extract", '["n"]']).out, "9223372036854775807");
    const original = fs.readFileSync(path.join(w, "a.json"));
    for (const [args, input, code, msg] of [
      [["set", "a.json", '["token"]'], "not json", 2, /not one JSON value/],
      [["set", "a.json", '["token"]'], '"a", "b": 2', 2, /not one JSON value/],
      [["set", "a.json", '["token"]["x"]'], '"v"', 2, /not a mapping/],
      [["set", "a.json", "token"], '"v"', 2, /invalid path/],
      [["set", "a.json", '["sops"]'], '"v"', 1, /reserved/],
      [["set", "a.json"], '"v"', 2, /expected a sops FILE and a PATH/],
      [["set", "a.age", '["x"]'], '"v"', 2, /not a sops file/],
    ] as const) {
      const r = sh(w, [...args, "-i", idFile], input);
      assert.equal(r.status, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    assert.deepEqual(fs.readFileSync(path.join(w, "a.json")), original);
  });
});

describe("updatekeys", { skip: missing }, () => {
  test("a recipient added to .sops.yaml can decrypt; values, MAC and lastmodified are untouched", () => {
    const w = work();
    const [a, ra] = keygen(w, "a.txt");
    const [b, rb] = keygen(w, "b.txt");
    sopsYaml(w, `    - path_regex: \\.(yaml|json)$\n      age: ${ra}\n`);
    assert.equal(sh(w, ["encrypt", "s.yaml"], YAML_DOC).status, 0);
    assert.equal(sh(w, ["encrypt", "t.json"], JSON_DOC).status, 0);
    const file = path.join(w, "s.yaml");
    const before = fs.readFileSync(file, "utf8");
    assert.equal(sh(w, ["decrypt", "s.yaml", "-i", b]).status, 1);
    sopsYaml(w, `    - path_regex: \\.(yaml|json)$\n      age: ${ra},${rb}\n`);
    const dry = sh(w, ["updatekeys", "s.yaml", "--dry-run"]);
    assert.equal(dry.status, 0, dry.stderr);
    assert.equal(dry.out, `s.yaml: would update: added ${rb}\n`);
    assert.equal(fs.readFileSync(file, "utf8"), before, "dry run writes nothing");
    const r = sh(w, ["updatekeys", "s.yaml", "t.json", "-i", a]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.out, `s.yaml: added ${rb}\nt.json: added ${rb}\n`);
    const afterText = fs.readFileSync(file, "utf8");
    assert.deepEqual(encLines(afterText), encLines(before), "every value keeps its ciphertext");
    for (const re of [/^ {4}mac: .*$/m, /^ {4}lastmodified: .*$/m]) {
      assert.equal(afterText.match(re)![0], before.match(re)![0]);
    }
    // a's entry is kept byte for byte, b's is new.
    const armorOf = (t: string) => t.slice(t.indexOf("-----BEGIN"), t.indexOf("-----END") + 8);
    assert.equal(armorOf(afterText), armorOf(before));
    const d = sh(w, ["decrypt", "s.yaml", "-i", b]);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(d.out, YAML_DOC);
    assert.equal(sh(w, ["decrypt", "t.json", "-i", b]).out, JSON_DOC);
    const again = sh(w, ["updatekeys", "s.yaml", "--json"]);
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.out), {
      file: "s.yaml",
      added: [],
      removed: [],
      changed: false,
      written: false,
    });
    // Removing a: a can no longer decrypt.
    sopsYaml(w, `    - path_regex: \\.(yaml|json)$\n      age: ${rb}\n`);
    const rm = sh(w, ["updatekeys", "s.yaml", "-i", b]);
    assert.equal(rm.status, 0, rm.stderr);
    assert.equal(rm.out, `s.yaml: removed ${ra}\n`);
    assert.equal(sh(w, ["decrypt", "s.yaml", "-i", a]).status, 1);
  });

  test("every file's problem is reported; good files are still updated; pgp entries are kept", () => {
    const w = work();
    const [a, ra] = keygen(w, "a.txt");
    const [, rb] = keygen(w, "b.txt");
    sopsYaml(
      w,
      `    - path_regex: ^ok\\.yaml$\n      age: ${ra}\n    - path_regex: ^secrets\\.yaml$\n      age: ${ra}\n      pgp: 2504791468b153b8a3963cc97ba53d1919c5dfd4\n`,
    );
    assert.equal(sh(w, ["encrypt", "ok.yaml"], "a: b\n").status, 0);
    // The sops-nix fixture: 2 age (not ours) + 2 pgp keys.
    fs.copyFileSync(path.join(FIX, "sops-nix", "secrets.yaml"), path.join(w, "secrets.yaml"));
    sopsYaml(
      w,
      `    - path_regex: ^ok\\.yaml$\n      age: ${ra},${rb}\n    - path_regex: ^secrets\\.yaml$\n      age: ${ra}\n      pgp: 2504791468b153b8a3963cc97ba53d1919c5dfd4\n`,
    );
    const before = fs.readFileSync(path.join(w, "secrets.yaml"), "utf8");
    const r = sh(w, ["updatekeys", "nothere.yaml", "secrets.yaml", "ok.yaml", "-i", a]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /nothere\.yaml.*no such file|no matching creation rules.*nothere/);
    assert.match(r.stderr, /pgp 2504791468b153b8a3963cc97ba53d1919c5dfd4.*kept unchanged/);
    assert.match(r.stderr, /secrets\.yaml: no identity can decrypt the data key/);
    assert.equal(fs.readFileSync(path.join(w, "secrets.yaml"), "utf8"), before, "failed file untouched");
    assert.equal(r.out, `ok.yaml: added ${rb}\n`);
    // With the fixture's own age key: the age entries change, the pgp entries stay as they were.
    const own = sh(w, ["updatekeys", "secrets.yaml"], undefined, {
      SOPS_AGE_KEY_FILE: path.join(FIX, "sops-nix", "age-keys.txt"),
    });
    assert.equal(own.status, 0, own.stderr);
    const after = fs.readFileSync(path.join(w, "secrets.yaml"), "utf8");
    const pgpOf = (t: string) =>
      t.slice(t.indexOf("    pgp:"), t.indexOf("    unencrypted_suffix")).replace(/^ +/gm, "");
    assert.ok(pgpOf(before).includes("BEGIN PGP MESSAGE"));
    // Same entries (sops 3.7.1 indented block scalars by 2 more; nixseal writes sops' current layout).
    assert.equal(pgpOf(after), pgpOf(before));
    assert.ok(after.includes(ra));
    assert.deepEqual(encLines(after), encLines(before));
    assert.equal(sh(w, ["decrypt", "secrets.yaml", "-i", a]).out.split("\n")[0], "test_key: test_value");
  });
});

describe("rotate", { skip: missing }, () => {
  test("a new data key: every ciphertext changes, the same recipients decrypt, the real age agrees", () => {
    const w = work();
    const [a, ra] = keygen(w, "a.txt");
    const [b, rb] = keygen(w, "b.txt");
    sopsYaml(w, `    - age: ${ra},${rb}\n`);
    assert.equal(sh(w, ["encrypt", "s.yaml"], YAML_DOC).status, 0);
    const file = path.join(w, "s.yaml");
    const before = fs.readFileSync(file, "utf8");
    const oldKey = spawnSync(AGE!, ["-d", "-i", a], {
      input: before.slice(before.indexOf("-----BEGIN"), before.indexOf("-----END") + 32).replace(/^ +/gm, ""),
    }).stdout;
    const r = sh(w, ["rotate", "s.yaml", "-i", a, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.out), { file: "s.yaml", rotated: true, recipients: 2 });
    const after = fs.readFileSync(file, "utf8");
    const [eb, ea] = [encLines(before), encLines(after)];
    assert.equal(ea.length, eb.length);
    for (let i = 0; i < ea.length; i++) assert.notEqual(ea[i], eb[i]);
    const newKey = spawnSync(AGE!, ["-d", "-i", b], {
      input: after
        .slice(after.lastIndexOf("-----BEGIN"), after.lastIndexOf("-----END") + 32)
        .replace(/^ +/gm, ""),
    }).stdout;
    assert.equal(newKey.length, 32);
    assert.notDeepEqual(newKey, oldKey);
    for (const id of [a, b]) assert.equal(sh(w, ["decrypt", "s.yaml", "-i", id]).out, YAML_DOC);
  });

  test("refuses files with pgp entries and files whose MAC does not verify", () => {
    const w = work();
    fs.copyFileSync(path.join(FIX, "sops-nix", "secrets.yaml"), path.join(w, "secrets.yaml"));
    const before = fs.readFileSync(path.join(w, "secrets.yaml"));
    const ageKeys = { SOPS_AGE_KEY_FILE: path.join(FIX, "sops-nix", "age-keys.txt") };
    const r = sh(w, ["rotate", "secrets.yaml"], undefined, ageKeys);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /2 pgp key entries; nixseal cannot wrap a new data key/);
    assert.deepEqual(fs.readFileSync(path.join(w, "secrets.yaml")), before);
    const [a, ra] = keygen(w, "a.txt");
    sopsYaml(w, `    - age: ${ra}\n`);
    assert.equal(sh(w, ["encrypt", "s.yaml"], YAML_DOC).status, 0);
    const file = path.join(w, "s.yaml");
    fs.writeFileSync(file, fs.readFileSync(file, "utf8").replace("visible", "tampered"));
    const m = sh(w, ["rotate", "s.yaml", "-i", a]);
    assert.equal(m.status, 1);
    assert.match(m.stderr, /MAC mismatch/);
  });
});

/** An $EDITOR: a shell script run with the file to edit as $1; it counts its runs in `runs`. */
function editorScript(w: string, body: string): string {
  const file = path.join(w, `editor-${Math.random().toString(36).slice(2)}.sh`);
  fs.writeFileSync(file, `#!/bin/sh\nset -e\necho run >> '${w}/runs'\n${body}\n`, { mode: 0o755 });
  return file;
}

function runs(w: string): number {
  try {
    return fs.readFileSync(path.join(w, "runs"), "utf8").split("\n").filter(Boolean).length;
  } catch {
    return 0;
  }
}

const SCRIPT = which("script");

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

/**
 * Runs nixseal at a terminal (a pty made by script(1)) and presses Enter after each of the
 * first `enters` editor runs, one at a time as a person would (each waits for the editor run
 * before it). `out` is what the terminal showed: nixseal's stdout and stderr.
 */
function shAtTerminal(w: string, args: string[], enters: number, extra: Record<string, string | undefined>) {
  const cmd = [process.execPath, CLI, ...args].map(shellQuote).join(" ");
  const runsFile = shellQuote(path.join(w, "runs"));
  const feeder = `i=0; while [ $i -lt ${enters} ]; do i=$((i+1)); t=0; while [ "$(cat ${runsFile} 2>/dev/null | wc -l)" -lt $i ] && [ $t -lt 600 ]; do sleep 0.05; t=$((t+1)); done; sleep 0.2; echo; done; sleep 1`;
  const r = run("/bin/sh", ["-c", `(${feeder}) | ${shellQuote(SCRIPT!)} -qec ${shellQuote(cmd)} /dev/null`], {
    cwd: w,
    env: { ...env, ...extra },
  });
  return { status: r.status, out: `${r.stdout.toString("utf8")}${r.stderr}` };
}

describe("edit sops files", { skip: missing }, () => {
  test("one value changed: only its line's ciphertext changes, the MAC verifies, unchanged edit writes nothing", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - path_regex: \\.yaml$\n      age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "app.yaml"], YAML_DOC).status, 0);
    const before = fs.readFileSync(path.join(w, "app.yaml"), "utf8");
    const ed = editorScript(w, `sed -i 's/user: alice/user: bob/' "$1"`);
    const r = sh(w, ["edit", "app.yaml", "-i", idFile, "--json"], undefined, { EDITOR: ed });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.out), { file: "app.yaml", format: "yaml", changed: true });
    const after = fs.readFileSync(path.join(w, "app.yaml"), "utf8");
    const [b, a] = [encLines(before), encLines(after)];
    assert.equal(b.length, a.length);
    const differing = b.filter((l, i) => l !== a[i]);
    assert.equal(differing.length, 1, "only the user line changed");
    assert.match(differing[0]!, /^\s*user: ENC/);
    assert.equal(sh(w, ["decrypt", "app.yaml", "-i", idFile]).out, YAML_DOC.replace("alice", "bob"));

    const noop = editorScript(w, "true");
    const same = sh(w, ["edit", "app.yaml", "-i", idFile], undefined, { EDITOR: noop });
    assert.equal(same.status, 0, same.stderr);
    assert.match(same.stderr, /unchanged, not rewritten/);
    assert.equal(fs.readFileSync(path.join(w, "app.yaml"), "utf8"), after);
  });

  test("a file in the narrow form: values changed are spliced (only their lines, lastmodified and the MAC change); a key added writes the whole tree, unchanged values keeping their ciphertext", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - age: ${recipient}\n`);
    const plain = "db:\n    user: admin\n    password: s3cret\n    port: 5432\napi: tok\nlist:\n    - a\n";
    assert.equal(sh(w, ["encrypt", "n.yaml"], plain).status, 0);
    const lines = () => fs.readFileSync(path.join(w, "n.yaml"), "utf8").split("\n");
    const changedKeys = (a: string[], b: string[]) => {
      assert.equal(a.length, b.length, "the same number of lines");
      return a
        .flatMap((l, i) => (l === b[i] ? [] : [l.slice(0, l.indexOf(":") + 1)]))
        .filter((k) => k !== "    lastmodified:")
        .sort();
    };
    // Two values, one of them a string becoming an int.
    let before = lines();
    const two = editorScript(w, `sed -i -e 's/password: s3cret/password: n3w/' -e 's/api: tok/api: 7/' "$1"`);
    let r = sh(w, ["edit", "n.yaml", "-i", idFile], undefined, { EDITOR: two });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(changedKeys(lines(), before), ["    mac:", "    password:", "api:"]);
    let expected = plain.replace("s3cret", "n3w").replace("api: tok", "api: 7");
    assert.equal(sh(w, ["decrypt", "n.yaml", "-i", idFile]).out, expected);
    // A value in a list (a file with a list is not in the narrow form): the whole tree is
    // written, the other values keeping their ciphertext all the same.
    before = lines();
    const listed = editorScript(w, `sed -i 's/- a$/- b/' "$1"`);
    r = sh(w, ["edit", "n.yaml", "-i", idFile], undefined, { EDITOR: listed });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(changedKeys(lines(), before), ["    - ENC[AES256_GCM,data:", "    mac:"]);
    expected = expected.replace("- a", "- b");
    assert.equal(sh(w, ["decrypt", "n.yaml", "-i", idFile]).out, expected);
    // A key added: the whole tree; every value read keeps its ciphertext line.
    before = lines();
    const added = editorScript(w, `sed -i 's/^api: 7$/api: 7\\nnew: fresh/' "$1"`);
    r = sh(w, ["edit", "n.yaml", "-i", idFile], undefined, { EDITOR: added });
    assert.equal(r.status, 0, r.stderr);
    const after = lines();
    const kept = encLines(before.join("\n")).filter((l) => !after.includes(l));
    assert.deepEqual(kept, [], "no value read got a new ciphertext");
    assert.equal(encLines(after.join("\n")).length, encLines(before.join("\n")).length + 1);
    assert.equal(
      sh(w, ["decrypt", "n.yaml", "-i", idFile]).out,
      expected.replace("api: 7\n", "api: 7\nnew: fresh\n"),
    );
  });

  test("values of a document of mappings changed to other plain strings: the edited text is read line by line, and only their lines, lastmodified and the MAC change", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - age: ${recipient}\n`);
    const plain =
      "# the database\ndb:\n    user: admin\n    password: s3cret\n    nested:\n        token: t0k\napi: k3y\n";
    assert.equal(sh(w, ["encrypt", "m.yaml"], plain).status, 0);
    const before = fs.readFileSync(path.join(w, "m.yaml"), "utf8").split("\n");
    const ed = editorScript(
      w,
      `sed -i -e 's/password: s3cret/password: n3w-pass/' -e 's/token: t0k/token: t1k/' "$1"`,
    );
    const r = sh(w, ["edit", "m.yaml", "-i", idFile], undefined, { EDITOR: ed });
    assert.equal(r.status, 0, r.stderr);
    const after = fs.readFileSync(path.join(w, "m.yaml"), "utf8").split("\n");
    assert.equal(after.length, before.length);
    // lastmodified has a resolution of one second: within the second it was written, it stays.
    const changed = after
      .flatMap((l, i) => (l === before[i] ? [] : [l.slice(0, l.indexOf(":") + 1)]))
      .filter((k) => k !== "    lastmodified:")
      .sort();
    assert.deepEqual(changed, ["        token:", "    mac:", "    password:"]);
    assert.equal(
      sh(w, ["decrypt", "m.yaml", "-i", idFile]).out,
      plain.replace("s3cret", "n3w-pass").replace("t0k", "t1k"),
    );
  });

  test("a real sops file with pgp entries: edited with the same data key, pgp entries kept", () => {
    const w = work();
    fs.copyFileSync(path.join(FIX, "sops-nix", "secrets.yaml"), path.join(w, "secrets.yaml"));
    const key = path.join(FIX, "sops-nix", "age-keys.txt");
    const pgpOf = () => YAML.parse(fs.readFileSync(path.join(w, "secrets.yaml"), "utf8")).sops.pgp;
    const pgpBefore = pgpOf();
    assert.ok(pgpBefore.length >= 1);
    const ed = editorScript(w, `sed -i 's/test_value/changed value/' "$1"`);
    const r = sh(w, ["edit", "secrets.yaml"], undefined, { EDITOR: ed, SOPS_AGE_KEY_FILE: key });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(pgpOf(), pgpBefore, "the pgp entry is kept");
    const dec = sh(w, ["decrypt", "secrets.yaml", "--extract", '["test_key"]'], undefined, {
      SOPS_AGE_KEY_FILE: key,
    });
    assert.equal(dec.out, "changed value");
  });

  test("at a terminal, invalid syntax reopens the editor on the user's text; fixed on the second round, it is written", {
    skip: SCRIPT ? false : "script (util-linux) is not installed",
  }, () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - path_regex: \\.yaml$\n      age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "app.yaml"], YAML_DOC).status, 0);
    // Round 1 breaks the document (and keeps the user's change); round 2 must see that text.
    const ed = editorScript(
      w,
      `echo "$1" >> '${w}/edited-paths'
if [ "$(wc -l < '${w}/runs')" -eq 1 ]; then
  sed -i 's/port: 5432/port: 6543/' "$1"; echo 'broken: [unclosed' >> "$1"
else
  grep -q 'port: 6543' "$1" || { echo 'lost the edit' >&2; exit 3; }
  sed -i '/^broken:/d' "$1"
fi`,
    );
    const r = shAtTerminal(w, ["edit", "app.yaml", "-i", idFile], 1, { EDITOR: ed });
    assert.equal(r.status, 0, r.out);
    assert.equal(runs(w), 2);
    assert.match(r.out, /app\.yaml: invalid YAML document: .* at line \d+, column \d+/);
    assert.match(r.out, /Press Enter to return to the editor/);
    assert.ok(!r.out.includes("unclosed") && !r.out.includes("6543"), "no document text in the error");
    assert.equal(sh(w, ["decrypt", "app.yaml", "-i", idFile]).out, YAML_DOC.replace("5432", "6543"));
    // The plaintext's private directory is gone, and it was never inside the repository.
    const edited = fs.readFileSync(path.join(w, "edited-paths"), "utf8").trim().split("\n");
    assert.equal(new Set(edited).size, 1, "both rounds edit the same file");
    assert.ok(!edited[0]!.startsWith(w), "the plaintext is not written beside the secret");
    assert.ok(!fs.existsSync(path.dirname(edited[0]!)), "the edit directory is removed");
  });

  test("at a terminal, a document that stays invalid: nothing written after the last round, the file is as it was", {
    skip: SCRIPT ? false : "script (util-linux) is not installed",
  }, () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - path_regex: \\.json$\n      age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "app.json"], JSON_DOC).status, 0);
    const before = fs.readFileSync(path.join(w, "app.json"));
    const ed = editorScript(w, `printf '{"token": ' > "$1"`);
    const r = shAtTerminal(w, ["edit", "app.json", "-i", idFile], 9, { EDITOR: ed });
    assert.equal(r.status, 1, r.out);
    assert.equal(runs(w), 10);
    assert.match(r.out, /still invalid after 10 rounds in the editor; nothing was written/);
    assert.deepEqual(fs.readFileSync(path.join(w, "app.json")), before);
  });

  test("without a terminal, a syntax error ends the edit at once: nothing written, the editor not reopened", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - path_regex: \\.json$\n      age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "app.json"], JSON_DOC).status, 0);
    const before = fs.readFileSync(path.join(w, "app.json"));
    const ed = editorScript(w, `printf '{"token": ' > "$1"`);
    const r = sh(w, ["edit", "app.json", "-i", idFile], undefined, { EDITOR: ed });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(runs(w), 1, "the editor ran once");
    assert.match(r.stderr, /error: app\.json: invalid JSON/);
    assert.match(
      r.stderr,
      /hint: nothing was written, and without a terminal the editor is not opened again/,
    );
    assert.doesNotMatch(r.stderr, /reopening/);
    assert.deepEqual(fs.readFileSync(path.join(w, "app.json")), before);
  });

  test("a new sops file is encrypted for its creation rule; without a rule the editor never opens", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - path_regex: ^new\\.env$\n      age: ${recipient}\n`);
    const ed = editorScript(w, `printf 'TOKEN=abc\\n' > "$1"`);
    const r = sh(w, ["edit", "new.env"], undefined, { EDITOR: ed });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /new\.env: created \(encrypted to 1 recipient\)/);
    assert.equal(sh(w, ["decrypt", "new.env", "-i", idFile]).out, "TOKEN=abc\n");

    const none = sh(w, ["edit", "other.yaml"], undefined, { EDITOR: ed });
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /no matching creation rule/i);
    assert.equal(runs(w), 1, "the editor did not run for a file without a rule");
    assert.ok(!fs.existsSync(path.join(w, "other.yaml")));
  });
});

describe("check and rekey cover sops files", { skip: missing }, () => {
  function setup() {
    const w = work();
    const [a, ra] = keygen(w, "a.txt");
    const [b, rb] = keygen(w, "b.txt");
    sopsYaml(w, `    - path_regex: ^secrets/.*\\.(yaml|json)$\n      age: ${ra}\n`);
    fs.mkdirSync(path.join(w, "secrets"));
    assert.equal(sh(w, ["encrypt", "secrets/one.yaml"], YAML_DOC).status, 0);
    assert.equal(sh(w, ["encrypt", "secrets/two.json"], JSON_DOC).status, 0);
    return { w, a, ra, b, rb };
  }

  test("check: a sops-only repository is clean, then drifts when .sops.yaml gains a key; rekey fixes it", () => {
    const { w, a, ra, b, rb } = setup();
    const clean = sh(w, ["check", "--json"]);
    assert.equal(clean.status, 0, clean.stderr);
    const report = JSON.parse(clean.out);
    assert.equal(report.rules, null);
    assert.equal(report.secrets, 2);
    assert.deepEqual(report.problems, []);

    sopsYaml(w, `    - path_regex: ^secrets/.*\\.(yaml|json)$\n      age: ${ra},${rb}\n`);
    const drift = sh(w, ["check"]);
    assert.equal(drift.status, 1);
    for (const f of ["secrets/one.yaml", "secrets/two.json"]) {
      assert.match(drift.out, new RegExp(`drift: ${f.replace(".", "\\.")} .*missing ${rb}`));
    }
    const valuesBefore = encLines(fs.readFileSync(path.join(w, "secrets/one.yaml"), "utf8"));

    // b cannot decrypt yet; rekey with a re-wraps the same data key for b.
    assert.equal(sh(w, ["decrypt", "secrets/one.yaml", "-i", b]).status, 1);
    const rekey = sh(w, ["rekey", "-i", a]);
    assert.equal(rekey.status, 0, rekey.stderr);
    assert.match(rekey.out, /rewritten secrets\/one\.yaml/);
    assert.match(rekey.out, /rewritten secrets\/two\.json/);
    assert.equal(sh(w, ["decrypt", "secrets/one.yaml", "-i", b]).out, YAML_DOC);
    assert.equal(sh(w, ["decrypt", "secrets/two.json", "-i", b]).out, JSON_DOC);
    assert.deepEqual(
      encLines(fs.readFileSync(path.join(w, "secrets/one.yaml"), "utf8")),
      valuesBefore,
      "values and MAC keep their ciphertext",
    );
    assert.equal(sh(w, ["check"]).status, 0);
    // Nothing left to do: the files stay byte-identical.
    const bytes = fs.readFileSync(path.join(w, "secrets/two.json"));
    assert.equal(sh(w, ["rekey", "-i", a]).status, 0);
    assert.deepEqual(fs.readFileSync(path.join(w, "secrets/two.json")), bytes);
  });

  test("check: a sops file no creation rule matches is reported", () => {
    const { w, ra } = setup();
    fs.copyFileSync(path.join(w, "secrets/one.yaml"), path.join(w, "stray.yaml"));
    const r = sh(w, ["check"]);
    assert.equal(r.status, 1);
    assert.match(r.out, /drift: stray\.yaml .*no creation rule/);
    assert.ok(ra.length > 0);
  });

  test("rekey is all or nothing across sops files: one that cannot be opened leaves every file as it was", () => {
    const { w, ra, rb } = setup();
    const [, rc] = keygen(w, "c.txt");
    // other.yaml is only for c, whose key the rekey does not have.
    sopsYaml(
      w,
      `    - path_regex: ^secrets/other\\.yaml$\n      age: ${rc}\n    - path_regex: ^secrets/\n      age: ${ra}\n`,
    );
    assert.equal(sh(w, ["encrypt", "secrets/other.yaml"], YAML_DOC).status, 0);
    sopsYaml(w, `    - path_regex: ^secrets/.*\\.(yaml|json)$\n      age: ${ra},${rb}\n`);
    const before = ["one.yaml", "two.json", "other.yaml"].map((f) =>
      fs.readFileSync(path.join(w, "secrets", f)),
    );
    const r = sh(w, ["rekey", "-i", path.join(w, "a.txt")]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /secrets\/other\.yaml.*no identity can decrypt the data key/);
    assert.match(r.stderr, /nothing was changed/);
    const after = ["one.yaml", "two.json", "other.yaml"].map((f) =>
      fs.readFileSync(path.join(w, "secrets", f)),
    );
    assert.deepEqual(after, before);
  });

  test("a sops file secrets.nix lists answers to its publicKeys", {
    skip: !NIX ? "nix-instantiate not installed" : false,
  }, () => {
    const { w, a, ra, b, rb } = setup();
    fs.writeFileSync(
      path.join(w, "secrets.nix"),
      `{ "secrets/one.yaml".publicKeys = [ "${ra}" "${rb}" ]; }\n`,
    );
    const r = sh(w, ["check", "--json"]);
    assert.equal(r.status, 1, r.stderr);
    const problems = JSON.parse(r.out).problems;
    assert.equal(problems.length, 1);
    assert.equal(problems[0].secret, "secrets/one.yaml");
    assert.match(problems[0].message, /differ from secrets\.nix: missing /);
    const rekey = sh(w, ["rekey", "-i", a]);
    assert.equal(rekey.status, 0, rekey.stderr);
    assert.equal(sh(w, ["decrypt", "secrets/one.yaml", "-i", b, "--input-type", "yaml"]).out, YAML_DOC);
    assert.equal(sh(w, ["check"]).status, 0);
  });
});

describe("hostile sops files fail fast", { skip: missing }, () => {
  /** `levels` mappings, each holding the one before it twice: 2^levels leaves from a few bytes a level. */
  function anchorChain(levels: number): string {
    let s = "a0: &a0 {x: v, y: v}\n";
    for (let i = 1; i <= levels; i++) s += `a${i}: &a${i} {x: *a${i - 1}, y: *a${i - 1}}\n`;
    return s;
  }

  /** The CLI, killed after 10 s (a regression fails instead of stalling the suite); its wall time. */
  function timed(w: string, args: string[]) {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [CLI, ...args], {
      cwd: w,
      env: { ...process.env, ...env } as NodeJS.ProcessEnv,
      input: "",
      timeout: 10_000,
      killSignal: "SIGKILL",
    });
    const ms = performance.now() - t0;
    assert.notEqual(r.signal, "SIGKILL", `nixseal ${args[0]} still running after 10 s`);
    return { status: r.status, stderr: String(r.stderr), ms };
  }

  test("chained YAML anchors: decrypt and install --check refuse the file within a second of their start-up", () => {
    const w = work();
    const [idFile, recipient] = keygen(w, "key.txt");
    sopsYaml(w, `    - path_regex: \\.yaml$\n      age: ${recipient}\n`);
    assert.equal(sh(w, ["encrypt", "app.yaml"], "db:\n    password: s3cret\n").status, 0);
    const sopsFile = path.join(w, "app.yaml");
    const host = makeHost();
    try {
      const m = writeManifest(host, [secret("db", sopsFile, { format: "yaml", key: "db/password" })]);
      // The same commands on the file as it was: what start-up and a small file cost on this machine.
      const decryptBefore = timed(w, ["decrypt", "app.yaml", "-i", idFile]);
      assert.equal(decryptBefore.status, 0, decryptBefore.stderr);
      const checkBefore = timed(w, ["install", "--check", "--manifest", m]);
      assert.equal(checkBefore.status, 0, checkBefore.stderr);

      // Anchors added to its document, and six more documents of them (3.6 KB in all).
      const chain = anchorChain(17);
      fs.writeFileSync(sopsFile, `${chain}${fs.readFileSync(sopsFile, "utf8")}${`---\n${chain}`.repeat(6)}`);
      const size = fs.statSync(sopsFile).size;
      assert.ok(size > 3500 && size < 5000, String(size));

      const d = timed(w, ["decrypt", "app.yaml", "-i", idFile]);
      assert.equal(d.status, 1, d.stderr);
      // The file is named: a user decrypting several files must know which one is broken.
      assert.match(
        d.stderr,
        /error: app\.yaml: invalid YAML document: aliases expand to more than \d+ nodes/,
      );
      assert.match(d.stderr, /hint: .*anchors and aliases/);
      assert.ok(d.ms < decryptBefore.ms + 1000, `decrypt took ${Math.round(d.ms)} ms`);

      const c = timed(w, ["install", "--check", "--manifest", m]);
      assert.equal(c.status, 1, c.stderr);
      assert.match(
        c.stderr,
        /secret "db" from \S*app\.yaml: invalid YAML document: aliases expand to more than/,
      );
      assert.ok(c.ms < checkBefore.ms + 1000, `install --check took ${Math.round(c.ms)} ms`);
    } finally {
      host.cleanup();
    }
  });
});

test("decrypt of a large sops file to a pipe: every byte arrives although decrypt ends the process as soon as it has written", async () => {
  // ~16 000 values, a plaintext of ~600 KiB: many times a pipe's buffer, so the output must be
  // written in full before the process ends, not queued.
  const id = X25519Identity.generate();
  const keyFile = path.join(dir, "large-keys.txt");
  fs.writeFileSync(keyFile, `${id.encode()}\n`, { mode: 0o600 });
  let plain = "";
  for (let s = 0; s < 160; s++) {
    plain += `service_${s}:\n`;
    for (let k = 0; k < 100; k++) plain += `    key_${k}: value-${s}-${k}-${"x".repeat(k % 17)}\n`;
  }
  const store = new YamlStore();
  const branches = store.parsePlain(Buffer.from(plain));
  const expected = Buffer.from(store.emitPlain(branches));
  assert.ok(expected.length > 500 * 1024, String(expected.length));
  const file = path.join(dir, "large.sops.yaml");
  fs.writeFileSync(
    file,
    await encryptNewDocument(branches, store, { keyGroups: [[id.recipient().toString()]] }),
  );
  const r = nixseal(["decrypt", file, "-i", keyFile], { env: { HOME: path.join(dir, "large-home") } });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.equals(expected), `got ${r.stdout.length} of ${expected.length} bytes`);
});

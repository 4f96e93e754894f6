/**
 * The quick test the commands make before loading src/sops/ (src/cli/sops-kind.ts): it may say
 * "may be" too often, never "cannot be" for a name src/sops reads as a sops file.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { mayBeSopsFile } from "../../src/cli/sops-kind.js";
import { storeNameByExtension } from "../../src/sops/index.js";

const NAMES = [
  "secrets.yaml",
  "secrets.YML",
  "a/b/c.Yaml",
  "app.json",
  "APP.JSON",
  ".env",
  "prod.env",
  "config.ini",
  "db.age",
  "db.yaml.age",
  "notes.txt",
  "yaml",
  "x.jsonl",
  "x.envrc",
  "x.ini.bak",
  "",
];

test("every name src/sops reads as a sops file by its extension may be one", () => {
  for (const name of NAMES) {
    if (storeNameByExtension(name) !== null) assert.ok(mayBeSopsFile(name, {}), name);
  }
});

test("age secrets and other names are not, unless --input-type says so", () => {
  for (const name of ["db.age", "db.yaml.age", "notes.txt", "x.jsonl", "x.ini.bak"]) {
    assert.equal(storeNameByExtension(name), null, name);
    assert.equal(mayBeSopsFile(name, {}), false, name);
    assert.equal(mayBeSopsFile(name, { "input-type": "binary" }), true, name);
  }
});

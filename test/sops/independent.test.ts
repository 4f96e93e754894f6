/**
 * An independent check of what nixseal writes, from the sops format alone and without src/sops:
 * the real `age` binary unwraps the data key, node:crypto AES-GCM decrypts every value with its
 * path as additional data, and the MAC is recomputed (SHA-512 over the plaintexts, upper-case
 * hex, encrypted with lastmodified as additional data).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createDecipheriv, createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { tempDir, which } from "../helpers.js";

const ENC = /^ENC\[AES256_GCM,data:(.*),iv:(.*),tag:(.*),type:(.*)\]$/;

function aesOpen(value: string, key: Buffer, aad: string): { text: string; type: string } {
  const m = ENC.exec(value);
  assert.ok(m, "an ENC[...] value");
  const d = createDecipheriv("aes-256-gcm", key, Buffer.from(m[2]!, "base64"));
  d.setAAD(Buffer.from(aad));
  d.setAuthTag(Buffer.from(m[3]!, "base64"));
  const text = Buffer.concat([d.update(Buffer.from(m[1]!, "base64")), d.final()]).toString("utf8");
  return { text, type: m[4]! };
}

test("a nixseal-written JSON sops file decrypts by the spec alone (age binary + node:crypto)", async (t) => {
  const age = which("age");
  const keygen = which("age-keygen");
  if (!age || !keygen) return t.skip("age binary not installed");
  const { dir, cleanup } = tempDir();
  try {
    const keyFile = path.join(dir, "key.txt");
    assert.equal(spawnSync(keygen, ["-o", keyFile]).status, 0);
    const recipient = spawnSync(keygen, ["-y", keyFile]).stdout.toString().trim();

    // Written by nixseal through its CLI-independent library entry point, in a child process, so
    // this test file itself imports nothing from src/sops.
    const plain =
      '{"db": {"user": "admin", "port": 5432, "ratio": 0.25, "tls": true}, "list": ["a", "b"], "note_unencrypted": "hi"}';
    const script = `
      import { JsonStore, encryptNewDocument } from ${JSON.stringify(path.resolve("dist/src/sops/index.js"))};
      const s = new JsonStore();
      const out = await encryptNewDocument(s.parsePlain(Buffer.from(process.argv[1])), s, { keyGroups: [[process.argv[2]]] });
      process.stdout.write(out);`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script, plain, recipient]);
    assert.equal(r.status, 0, r.stderr.toString());
    const file = JSON.parse(r.stdout.toString("utf8"));

    // 1. the data key, with the real age
    assert.deepEqual(Object.keys(file.sops), ["age", "lastmodified", "mac", "unencrypted_suffix", "version"]);
    assert.deepEqual(Object.keys(file.sops.age[0]), ["enc", "recipient"]);
    assert.equal(file.sops.age[0].recipient, recipient);
    const encFile = path.join(dir, "enc.age");
    fs.writeFileSync(encFile, file.sops.age[0].enc);
    const dk = spawnSync(age, ["-d", "-i", keyFile, encFile]);
    assert.equal(dk.status, 0, dk.stderr.toString());
    const dataKey = dk.stdout;
    assert.equal(dataKey.length, 32);

    // 2. every value, with its path as additional data; list elements share their key's path
    const user = aesOpen(file.db.user, dataKey, "db:user:");
    assert.deepEqual(user, { text: "admin", type: "str" });
    assert.deepEqual(aesOpen(file.db.port, dataKey, "db:port:"), { text: "5432", type: "int" });
    assert.deepEqual(aesOpen(file.db.ratio, dataKey, "db:ratio:"), { text: "0.25", type: "float" });
    assert.deepEqual(aesOpen(file.db.tls, dataKey, "db:tls:"), { text: "True", type: "bool" });
    assert.deepEqual(aesOpen(file.list[0], dataKey, "list:"), { text: "a", type: "str" });
    assert.deepEqual(aesOpen(file.list[1], dataKey, "list:"), { text: "b", type: "str" });
    assert.equal(file.note_unencrypted, "hi");
    assert.equal(/iv:([^,]*)/.exec(file.db.user)![1]!.length, 44); // 32-byte IV
    assert.throws(() => aesOpen(file.db.user, dataKey, "db:port:"));

    // 3. the MAC: SHA-512 over all plaintexts in order (unencrypted ones too), upper-case hex
    const h = createHash("sha512");
    for (const p of ["admin", "5432", "0.25", "True", "a", "b", "hi"]) h.update(p);
    const mac = aesOpen(file.sops.mac, dataKey, file.sops.lastmodified);
    assert.deepEqual(mac, { text: h.digest("hex").toUpperCase(), type: "str" });
    assert.match(file.sops.lastmodified, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  } finally {
    cleanup();
  }
});

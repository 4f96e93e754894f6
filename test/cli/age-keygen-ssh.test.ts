/**
 * `nixseal age-keygen -y` given ssh public keys: an ssh-ed25519 key becomes the age1... recipient
 * ssh-to-age derives, checked against an independent computation (noble's Edwards -> Montgomery
 * map, @scure/base's Bech32) and against the real age and age-keygen; an ssh-rsa key stays its
 * own line, which the real age encrypts to. Identity files keep age-keygen's behaviour.
 */
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { ed25519 } from "@noble/curves/ed25519.js";
import { bech32 } from "@scure/base";
import { nixseal, run, tempDir, which } from "../helpers.js";

const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const SSH_KEYGEN = which("ssh-keygen");
const NIX = which("nix-instantiate");

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir("nixseal-keygen-ssh-"));
});
after(() => cleanup());

/** An Ed25519 key pair from node:crypto: its seed and its "ssh-ed25519 AAAA..." line (RFC 8709). */
function ed25519PubLine(comment: string): { seed: Buffer; publicKey: Buffer; line: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const seed = Buffer.from(privateKey.export({ format: "der", type: "pkcs8" }).subarray(16));
  const pub = Buffer.from(publicKey.export({ format: "der", type: "spki" }).subarray(12));
  const field = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const blob = Buffer.concat([field(Buffer.from("ssh-ed25519")), field(pub)]);
  return { seed, publicKey: pub, line: `ssh-ed25519 ${blob.toString("base64")} ${comment}` };
}

const ageRecipientOf = (montgomery: Uint8Array) => bech32.encode("age", bech32.toWords(montgomery), false);
const ageIdentityOf = (scalar: Uint8Array) =>
  bech32.encode("age-secret-key-", bech32.toWords(scalar), false).toUpperCase();

function sshKeygen(type: string, name: string, bits?: number): string {
  const file = path.join(dir, name);
  const args = ["-q", "-t", type, "-N", "", "-C", `${name}@test`, "-f", file];
  if (bits !== undefined) args.push("-b", String(bits));
  const r = run(SSH_KEYGEN!, args);
  assert.equal(r.status, 0, r.stderr);
  return file;
}

describe("age-keygen -y with ssh public keys", () => {
  test("ssh-ed25519: the age1 recipient of the key's Montgomery form, as an independent computation gives", () => {
    for (let i = 0; i < 5; i++) {
      const { publicKey, line } = ed25519PubLine(`key${i}@host`);
      const expected = ageRecipientOf(ed25519.utils.toMontgomery(publicKey));
      const file = path.join(dir, `k${i}.pub`);
      fs.writeFileSync(file, `${line}\n`);
      const fromFile = nixseal(["age-keygen", "-y", file]);
      assert.equal(fromFile.status, 0, fromFile.stderr);
      assert.equal(fromFile.stdout.toString(), `${expected}\n`);
      const fromStdin = nixseal(["age-keygen", "-y"], { input: line });
      assert.equal(fromStdin.stdout.toString(), `${expected}\n`, fromStdin.stderr);
    }
  });

  test("ssh-ed25519: the real age-keygen derives the same recipient from SHA-512(seed), and the real age decrypts", {
    skip: AGE && AGE_KEYGEN ? false : "age / age-keygen not installed",
  }, () => {
    const { seed, line } = ed25519PubLine("host");
    const printed = nixseal(["age-keygen", "-y"], { input: line });
    assert.equal(printed.status, 0, printed.stderr);
    const recipient = printed.stdout.toString().trim();
    // The X25519 identity ssh-to-age makes of the private key: the first half of SHA-512(seed).
    const idFile = path.join(dir, "derived.txt");
    const scalar = createHash("sha512").update(seed).digest().subarray(0, 32);
    fs.writeFileSync(idFile, `${ageIdentityOf(scalar)}\n`, { mode: 0o600 });
    const fromAge = run(AGE_KEYGEN!, ["-y", idFile]);
    assert.equal(fromAge.status, 0, fromAge.stderr);
    assert.equal(fromAge.stdout.toString().trim(), recipient);
    const enc = run(AGE!, ["-r", recipient], { input: "the host's secret" });
    assert.equal(enc.status, 0, enc.stderr);
    const dec = run(AGE!, ["-d", "-i", idFile], { input: enc.stdout });
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), "the host's secret");
  });

  test("an ssh-keygen host key: age encrypts to the printed age1 recipient, nixseal decrypt -i with the ssh key decrypts", {
    skip: AGE && SSH_KEYGEN && NIX ? false : "age / ssh-keygen / nix-instantiate not installed",
  }, () => {
    const key = sshKeygen("ed25519", "host_ed25519");
    const r = nixseal(["age-keygen", "-y", `${key}.pub`]);
    assert.equal(r.status, 0, r.stderr);
    const recipient = r.stdout.toString().trim();
    assert.match(recipient, /^age1[02-9ac-hj-np-z]{58}$/);
    const enc = run(AGE!, ["-r", recipient], { input: "db password" });
    assert.equal(enc.status, 0, enc.stderr);
    // As a host would: a repository whose rule names the recipient, decrypted with the ssh key.
    const repo = path.join(dir, "repo-ed25519");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), `{ "x.age".publicKeys = [ "${recipient}" ]; }\n`);
    fs.writeFileSync(path.join(repo, "x.age"), enc.stdout);
    const dec = nixseal(["decrypt", "-i", key, "x.age"], { cwd: repo });
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), "db password");
  });

  test("ssh-rsa: printed as its own line (no age1 form), which the real age encrypts to and the key decrypts", {
    skip: AGE && SSH_KEYGEN ? false : "age / ssh-keygen not installed",
  }, () => {
    const key = sshKeygen("rsa", "host_rsa", 2048);
    const pub = fs.readFileSync(`${key}.pub`, "utf8").trim();
    const r = nixseal(["age-keygen", "-y", `${key}.pub`]);
    assert.equal(r.status, 0, r.stderr);
    const printed = r.stdout.toString();
    // The key itself, without its comment.
    assert.equal(printed, `${pub.split(" ").slice(0, 2).join(" ")}\n`);
    const enc = run(AGE!, ["-r", printed.trim()], { input: "rsa secret" });
    assert.equal(enc.status, 0, enc.stderr);
    const dec = run(AGE!, ["-d", "-i", key], { input: enc.stdout });
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), "rsa secret");
  });

  test("ssh-keyscan output: host-prefixed lines converted, comments ignored, ecdsa skipped with a warning", () => {
    const a = ed25519PubLine("");
    const b = ed25519PubLine("");
    const ecdsa =
      "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=";
    const scan = [
      "# web1:22 SSH-2.0-OpenSSH_9.6",
      `web1 ${ecdsa}`,
      "# web1:22 SSH-2.0-OpenSSH_9.6",
      `web1 ${a.line.trim()}`,
      "",
      `[web2]:2222,10.0.0.2 ${b.line.trim()}`,
    ].join("\n");
    const r = nixseal(["age-keygen", "-y"], { input: scan });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stdout.toString(),
      `${ageRecipientOf(ed25519.utils.toMontgomery(a.publicKey))}\n${ageRecipientOf(ed25519.utils.toMontgomery(b.publicKey))}\n`,
    );
    assert.match(r.stderr, /standard input:2: skipped an ecdsa-sha2-nistp256 key/);
  });

  test("bad input: every bad line reported at once, nothing printed; only unsupported keys is an error", () => {
    const good = ed25519PubLine("ok");
    const input = [
      good.line,
      "ssh-ed25519 AAAAnot-base64!",
      "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
      "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==",
    ].join("\n");
    const r = nixseal(["age-keygen", "-y"], { input });
    assert.equal(r.status, 1);
    assert.equal(r.stdout.length, 0);
    assert.match(r.stderr, /standard input:2: malformed ssh public key/);
    assert.match(r.stderr, /standard input:3: a known_hosts marker line/);
    assert.match(r.stderr, /standard input:4: /);
    const onlyEcdsa = nixseal(["age-keygen", "-y"], {
      input:
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= x\n",
    });
    assert.equal(onlyEcdsa.status, 1);
    assert.match(
      onlyEcdsa.stderr,
      /no ssh-ed25519 or ssh-rsa key in standard input \(only ecdsa-sha2-nistp256\)/,
    );
    assert.match(onlyEcdsa.stderr, /hint: .*ssh-keyscan -t ed25519/);
  });

  test("an age identity file still gives what the real age-keygen -y gives (from a file and from stdin)", {
    skip: AGE_KEYGEN ? false : "age-keygen not installed",
  }, () => {
    const key = path.join(dir, "age-key.txt");
    assert.equal(run(AGE_KEYGEN!, ["-o", key]).status, 0);
    const expected = run(AGE_KEYGEN!, ["-y", key]).stdout.toString();
    assert.equal(nixseal(["age-keygen", "-y", key]).stdout.toString(), expected);
    const stdin = nixseal(["age-keygen", "-y"], { input: fs.readFileSync(key) });
    assert.equal(stdin.status, 0, stdin.stderr);
    assert.equal(stdin.stdout.toString(), expected);
  });
});

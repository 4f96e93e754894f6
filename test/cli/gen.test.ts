/**
 * `nixseal gen`: every output read back by the real tool that uses it (ssh-keygen, age,
 * openssl passwd) or checked against node:crypto on a path of its own; files new with their
 * final modes, never replacing one; no secret printed to a terminal.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { PASSWORD_CHARSETS, randomCharacters } from "../../src/common/index.js";
import { CLI, nixseal, run, tempDir, which } from "../helpers.js";

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir("nixseal-gen-"));
});
after(() => cleanup());

let n = 0;
function freshDir(): string {
  const d = path.join(dir, `out${n++}`);
  fs.mkdirSync(d, { mode: 0o700 });
  return d;
}

function mode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

/** mkpasswd (Debian whois) checks the hashes too where it is installed; openssl always does. */
const MKPASSWD = which("mkpasswd");

/** The umask the CLI runs with (inherited from this process). */
const UMASK = (() => {
  const m = process.umask();
  return m;
})();

/** RFC 7748 X25519(k, 9) with BigInt (section 5's ladder): a path independent of node:crypto. */
function x25519Base(k: Uint8Array): Buffer {
  const p = 2n ** 255n - 19n;
  const mod = (a: bigint) => ((a % p) + p) % p;
  const pow = (b: bigint, e: bigint) => {
    let r = 1n;
    for (b = mod(b); e > 0n; e >>= 1n, b = mod(b * b)) if (e & 1n) r = mod(r * b);
    return r;
  };
  const bytes = Uint8Array.from(k);
  bytes[0]! &= 248;
  bytes[31]! &= 127;
  bytes[31]! |= 64;
  const scalar = BigInt(`0x${Buffer.from(bytes).reverse().toString("hex")}`);
  const x1 = 9n;
  let [x2, z2, x3, z3, swap] = [1n, 0n, x1, 1n, 0n];
  for (let t = 254n; t >= 0n; t--) {
    const kt = (scalar >> t) & 1n;
    if (swap ^ kt) [x2, x3, z2, z3] = [x3, x2, z3, z2];
    swap = kt;
    const A = mod(x2 + z2);
    const AA = mod(A * A);
    const B = mod(x2 - z2);
    const BB = mod(B * B);
    const E = mod(AA - BB);
    const C = mod(x3 + z3);
    const D = mod(x3 - z3);
    const DA = mod(D * A);
    const CB = mod(C * B);
    x3 = mod((DA + CB) ** 2n);
    z3 = mod(x1 * mod((DA - CB) ** 2n));
    x2 = mod(AA * BB);
    z2 = mod(E * (AA + 121665n * E));
  }
  if (swap) [x2, z2] = [x3, z3];
  const u = mod(x2 * pow(z2, p - 2n));
  return Buffer.from(u.toString(16).padStart(64, "0"), "hex").reverse();
}

describe("key pairs read by their real tools", () => {
  test("ssh-ed25519: ssh-keygen -y on key gives key.pub; 0600 and 0644; age encrypts to it", () => {
    const out = freshDir();
    const r = nixseal(["gen", "ssh-ed25519", "--comment", "root@web1", "--out", out]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.length, 0, "nothing on stdout with a directory");
    const key = path.join(out, "key");
    const pub = fs.readFileSync(path.join(out, "key.pub"), "utf8");
    assert.equal(mode(key), 0o600 & ~UMASK);
    assert.equal(mode(path.join(out, "key.pub")), 0o644 & ~UMASK);
    assert.match(fs.readFileSync(key, "utf8"), /^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    const derived = run("ssh-keygen", ["-y", "-f", key]);
    assert.equal(derived.status, 0, derived.stderr);
    assert.equal(derived.stdout.toString(), pub);
    assert.match(pub, /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]{48} root@web1\n$/);
    // The key works as an age identity for the real age.
    const enc = run("age", ["-e", "-R", path.join(out, "key.pub")], { input: "hello ssh" });
    assert.equal(enc.status, 0, enc.stderr);
    const dec = run("age", ["-d", "-i", key], { input: enc.stdout });
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), "hello ssh");
  });

  test("ssh-ed25519 without a comment: the public line has none, as ssh-keygen -y prints it", () => {
    const out = freshDir();
    assert.equal(nixseal(["gen", "ssh-ed25519", "--out", out]).status, 0);
    const derived = run("ssh-keygen", ["-y", "-f", path.join(out, "key")]);
    assert.equal(derived.stdout.toString(), fs.readFileSync(path.join(out, "key.pub"), "utf8"));
    assert.equal(derived.stdout.toString().trim().split(" ").length, 2);
  });

  test("age-key: age encrypts to key.pub and decrypts with key; age-keygen -y agrees", () => {
    const out = freshDir();
    const r = nixseal(["gen", "age-key", "--out", out, "--name", "host"]);
    assert.equal(r.status, 0, r.stderr);
    const key = path.join(out, "host");
    const recipient = fs.readFileSync(path.join(out, "host.pub"), "utf8");
    assert.match(recipient, /^age1[0-9a-z]{58}\n$/);
    assert.match(
      fs.readFileSync(key, "utf8"),
      /^# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n# public key: age1[0-9a-z]{58}\nAGE-SECRET-KEY-1[0-9A-Z]{58}\n$/,
    );
    assert.equal(mode(key), 0o600 & ~UMASK);
    const y = run("age-keygen", ["-y", key]);
    assert.equal(y.status, 0, y.stderr);
    assert.equal(y.stdout.toString(), recipient);
    const enc = run("age", ["-e", "-r", recipient.trim()], { input: "hello age" });
    const dec = run("age", ["-d", "-i", key], { input: enc.stdout });
    assert.equal(dec.status, 0, dec.stderr);
    assert.equal(dec.stdout.toString(), "hello age");
  });

  test("wireguard: a clamped 32-byte key in base64 and its X25519 public key (RFC 7748, BigInt)", () => {
    for (let i = 0; i < 5; i++) {
      const out = freshDir();
      const r = nixseal(["gen", "wireguard", "--out", out]);
      assert.equal(r.status, 0, r.stderr);
      const keyText = fs.readFileSync(path.join(out, "key"), "utf8");
      const pubText = fs.readFileSync(path.join(out, "key.pub"), "utf8");
      // As `wg genkey` and `wg pubkey` print them: 44 characters of padded base64 and a newline.
      assert.match(keyText, /^[A-Za-z0-9+/]{43}=\n$/);
      assert.match(pubText, /^[A-Za-z0-9+/]{43}=\n$/);
      const secret = Buffer.from(keyText.trim(), "base64");
      assert.equal(secret.length, 32);
      // Clamped (RFC 7748): low 3 bits clear, bit 255 clear, bit 254 set.
      assert.equal(secret[0]! & 7, 0);
      assert.equal(secret[31]! & 0xc0, 0x40);
      assert.equal(x25519Base(secret).toString("base64"), pubText.trim());
      if (which("wg")) {
        const wg = run("wg", ["pubkey"], { input: keyText });
        assert.equal(wg.stdout.toString(), pubText);
      }
    }
  });
});

describe("values", () => {
  test("password: 32 alphanumerics by default, no final newline, to stdout when it is a pipe", () => {
    const r = nixseal(["gen", "password"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^[A-Za-z0-9]{32}$/);
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) seen.add(nixseal(["gen", "password"]).stdout.toString());
    assert.equal(seen.size, 3, "each run draws anew");
  });

  test("password --length and --charset write exactly that into $out/NAME", () => {
    const cases: [string, RegExp][] = [
      ["alnum", /^[A-Za-z0-9]{100}$/],
      ["base64", /^[A-Za-z0-9+/]{100}$/],
      ["hex", /^[0-9a-f]{100}$/],
    ];
    for (const [charset, shape] of cases) {
      const out = freshDir();
      // $out, as `nixseal generate` gives a script.
      const r = nixseal(["gen", "password", "--length", "100", "--charset", charset, "--name", "db"], {
        env: { out },
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(fs.readFileSync(path.join(out, "db"), "utf8"), shape);
      assert.equal(mode(path.join(out, "db")), 0o600 & ~UMASK);
      assert.deepEqual(fs.readdirSync(out), ["db"], "only the secret file: a password has no public part");
    }
  });

  test("passwords are uniform: the characters a modulo would favour are not likelier", () => {
    // 256 = 4 * 62 + 8: `byte % 62` would give A..H 5/256 each instead of 1/62 (+21%).
    const sample = 400_000;
    const counts = new Map<number, number>();
    for (let done = 0; done < sample; done += 4000) {
      for (const b of randomCharacters(4000, PASSWORD_CHARSETS.alnum))
        counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    assert.equal(counts.size, 62);
    const favoured = [..."ABCDEFGH"].reduce((s, c) => s + (counts.get(c.charCodeAt(0)) ?? 0), 0) / sample;
    // Uniform: 8/62 = 0.129 (standard deviation 0.0005); modulo bias: 40/256 = 0.156.
    assert.ok(Math.abs(favoured - 8 / 62) < 0.005, `A..H drawn ${favoured}, want 0.129`);
    for (const [c, k] of counts) {
      assert.ok(Math.abs(k / sample - 1 / 62) < 0.002, `${String.fromCharCode(c)}: ${k}`);
    }
  });

  test("hex N: N random bytes as lowercase hex", () => {
    const r = nixseal(["gen", "hex", "16"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^[0-9a-f]{32}$/);
    const out = freshDir();
    assert.equal(nixseal(["gen", "hex", "64", "--out", out]).status, 0);
    assert.match(fs.readFileSync(path.join(out, "hex"), "utf8"), /^[0-9a-f]{128}$/);
  });

  test("hash --sha512-crypt equals openssl passwd -6 for the same salt and rounds", () => {
    const passwords = ["Hello world!", "x", "correct horse battery staple", "é€ unicode ✓", "p".repeat(200)];
    for (const [i, password] of passwords.entries()) {
      for (const rounds of [undefined, 1000, 12345]) {
        const salt = ["saltstring", "a", "abcdefghijklmnop", "./09AZaz", "Qx7"][i]!;
        const args = ["gen", "hash", "--sha512-crypt", "--salt", salt];
        if (rounds !== undefined) args.push("--rounds", String(rounds));
        // A final newline is not part of the password (as openssl passwd -stdin reads lines).
        const ours = nixseal(args, { input: `${password}\n` });
        assert.equal(ours.status, 0, ours.stderr);
        const opensslSalt = rounds === undefined ? salt : `rounds=${rounds}$${salt}`;
        const theirs = run("openssl", ["passwd", "-6", "-salt", opensslSalt, "-stdin"], { input: password });
        assert.equal(theirs.status, 0, theirs.stderr);
        assert.equal(`${ours.stdout.toString()}\n`, theirs.stdout.toString(), `${password} ${rounds}`);
        // mkpasswd takes salts of 8 to 16 characters.
        if (MKPASSWD && salt.length >= 8) {
          const args = ["-m", "sha-512", "-S", salt, "-s", ...(rounds ? ["-R", String(rounds)] : [])];
          const mk = run(MKPASSWD, args, { input: password });
          assert.equal(mk.status, 0, mk.stderr);
          assert.equal(mk.stdout.toString(), `${ours.stdout.toString()}\n`);
        }
      }
    }
  });

  test("hash with a random salt: openssl passwd reproduces it from its salt; into $out/hash", () => {
    const out = freshDir();
    const r = nixseal(["gen", "hash", "--sha512-crypt", "--out", out], { input: "s3cret\n" });
    assert.equal(r.status, 0, r.stderr);
    const hash = fs.readFileSync(path.join(out, "hash"), "utf8");
    const m = /^\$6\$([./0-9A-Za-z]{16})\$[./0-9A-Za-z]{86}$/.exec(hash);
    assert.ok(m, hash);
    const theirs = run("openssl", ["passwd", "-6", "-salt", m[1]!, "-stdin"], { input: "s3cret" });
    assert.equal(theirs.stdout.toString(), `${hash}\n`);
  });

  test("hash refuses a bad stdin, salt or rounds with a usage error, before any output", () => {
    const out = freshDir();
    const bad: [string[], string, RegExp][] = [
      [["--sha512-crypt"], "", /no password on stdin/],
      [["--sha512-crypt"], "one\ntwo\n", /more than one line/],
      [["--sha512-crypt"], "a\0b", /NUL byte/],
      [["--sha512-crypt"], "x".repeat(5000), /longer than 4096 bytes/],
      [["--sha512-crypt", "--salt", "bad$salt"], "pw", /salt is 1 to 16/],
      [["--sha512-crypt", "--salt", "x".repeat(17)], "pw", /salt is 1 to 16/],
      [["--sha512-crypt", "--rounds", "999"], "pw", /rounds must be 1000/],
      [[], "pw", /needs the scheme: --sha512-crypt/],
    ];
    for (const [args, input, why] of bad) {
      const r = nixseal(["gen", "hash", ...args, "--out", out], { input });
      assert.equal(r.status, 2, `${args} ${r.stderr}`);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /hint: /);
      assert.ok(!r.stderr.includes("two") && !r.stderr.includes("xxxx"), "the input is not repeated");
    }
    assert.deepEqual(fs.readdirSync(out), []);
  });
});

describe("files and terminals", () => {
  test("an existing file is never replaced: exit 1, nothing written, each one named", () => {
    const out = freshDir();
    fs.writeFileSync(path.join(out, "key.pub"), "keep me\n");
    const r = nixseal(["gen", "wireguard", "--out", out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /key\.pub exists; nixseal gen never replaces a file/);
    assert.deepEqual(fs.readdirSync(out), ["key.pub"], "the secret half was not written either");
    assert.equal(fs.readFileSync(path.join(out, "key.pub"), "utf8"), "keep me\n");
    // A symlink in the way counts as a file (even a dangling one), and is not followed.
    const out2 = freshDir();
    fs.symlinkSync(path.join(dir, "elsewhere"), path.join(out2, "password"));
    assert.equal(nixseal(["gen", "password", "--out", out2]).status, 1);
    assert.equal(fs.existsSync(path.join(dir, "elsewhere")), false);
  });

  test("--public-name names the public file; $out that does not exist says where it came from", () => {
    const out = freshDir();
    const r = nixseal(["gen", "wireguard", "--out", out, "--name", "private", "--public-name", "public"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ["private", "public"]);
    const derived = nixseal(["gen", "password", "--public-name", "x"]);
    assert.equal(derived.status, 2);
    assert.match(derived.stderr, /does not take --public-name/);
    const gone = nixseal(["gen", "password"], { env: { out: path.join(dir, "outputs", "out") } });
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /no such file \(from \$out\)/);
    assert.match(gone.stderr, /hint: \$out is set in this environment/);
  });

  test("--json lists the files written", () => {
    const out = freshDir();
    const r = nixseal(["gen", "age-key", "--out", out, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.toString()), {
      files: [
        { name: "key", path: path.join(out, "key"), secret: true },
        { name: "key.pub", path: path.join(out, "key.pub"), secret: false },
      ],
    });
  });

  test("without a directory: the secret on stdout, the public key on stderr", () => {
    const r = nixseal(["gen", "wireguard"], { env: { out: undefined } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.toString(), /^[A-Za-z0-9+/]{43}=\n$/);
    assert.match(r.stderr, /^Public key: [A-Za-z0-9+/]{43}=\n$/);
  });

  test("a secret is not printed to a terminal (exit 2, nothing shown); a hash is", () => {
    const script = which("script");
    assert.ok(script, "script (util-linux) is needed");
    const atTerminal = (args: string, input = "") =>
      run(script, ["-qec", `${process.execPath} ${CLI} ${args}`, "/dev/null"], {
        input,
        env: { out: undefined },
      });
    for (const kind of ["password", "hex 16", "wireguard", "age-key", "ssh-ed25519"]) {
      const r = atTerminal(`gen ${kind}`);
      assert.equal(r.status, 2, `${kind}: ${r.stdout}`);
      const shown = r.stdout.toString();
      assert.match(shown, /refusing to print a secret to a terminal/);
      assert.doesNotMatch(shown, /AGE-SECRET-KEY|PRIVATE KEY|^[A-Za-z0-9]{32}$/m);
    }
  });

  test("bad arguments are usage errors naming the problem", () => {
    const bad: [string[], RegExp][] = [
      [["gen"], /no KIND given/],
      [["gen", "rsa"], /unknown KIND "rsa"/],
      [["gen", "hex"], /needs the number of bytes/],
      [["gen", "hex", "0"], /1 to 65536/],
      [["gen", "hex", "-5"], /unknown option|whole number/],
      [["gen", "password", "--length", "4097"], /1 to 4096/],
      [["gen", "password", "--length", "1e3"], /whole number/],
      [["gen", "password", "--charset", "emoji"], /unknown --charset/],
      [["gen", "wireguard", "--length", "3"], /does not take --length/],
      [["gen", "password", "extra"], /too many arguments/],
      [["gen", "password", "--name", "../x"], /not a plain file name/],
      [["gen", "password", "--name", ".hidden"], /not a plain file name/],
      [["gen", "ssh-ed25519", "--comment", "a\nb"], /printable ASCII/],
      [["gen", "password", "--json"], /give --out DIR/],
    ];
    for (const [args, why] of bad) {
      const r = nixseal(args);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, why, args.join(" "));
    }
  });
});

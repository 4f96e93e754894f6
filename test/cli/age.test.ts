/**
 * `nixseal age` / `nixseal age-keygen` against the real age binary (Debian `age`), both ways,
 * and the behaviour users rely on when things go wrong: one error line naming the file, a hint,
 * exit 1, and no output file created or changed.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, nixseal, run, tempDir, which } from "../helpers.js";

const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const SCRIPT = which("script");
const noAge =
  AGE === null || AGE_KEYGEN === null ? "the age binary (Debian package age) is not installed" : false;

let dir: string;
let cleanup: () => void;
let key: string; // identity file made by the real age-keygen
let recipient: string;
let key2: string; // identity file made by nixseal age-keygen
let recipient2: string;

before(() => {
  ({ dir, cleanup } = tempDir());
  if (noAge) return;
  key = path.join(dir, "age-key.txt");
  spawnSync(AGE_KEYGEN!, ["-o", key]);
  recipient = spawnSync(AGE_KEYGEN!, ["-y", key]).stdout.toString().trim();
  key2 = path.join(dir, "nixseal-key.txt");
  const r = nixseal(["age-keygen", "-o", key2]);
  assert.equal(r.status, 0, r.stderr);
  recipient2 = r.stderr.replace("Public key: ", "").trim();
});
after(() => cleanup());

function write(name: string, data: Uint8Array | string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, data);
  return p;
}

/** Sizes around the 64 KiB STREAM chunk boundaries. */
const SIZES = [0, 1, 65535, 65536, 65537, 131072, 200_000];

describe("interop with the real age binary", { skip: noAge }, () => {
  for (const size of SIZES) {
    for (const armor of [false, true]) {
      test(`${size} bytes${armor ? ", armored" : ""}: nixseal encrypts, age decrypts; age encrypts, nixseal decrypts`, () => {
        const plain = randomBytes(size);
        const input = write(`p${size}`, plain);
        const ours = path.join(dir, `ours-${size}-${armor}.age`);
        let r = nixseal(["age", ...(armor ? ["-a"] : []), "-r", recipient, "-o", ours, input]);
        assert.equal(r.status, 0, r.stderr);
        if (armor) assert.match(fs.readFileSync(ours, "latin1"), /^-----BEGIN AGE ENCRYPTED FILE-----\n/);
        const a = run(AGE!, ["-d", "-i", key, ours]);
        assert.equal(a.status, 0, a.stderr);
        assert.deepEqual(a.stdout, plain);

        const theirs = path.join(dir, `theirs-${size}-${armor}.age`);
        const b = run(AGE!, [...(armor ? ["-a"] : []), "-r", recipient2, "-o", theirs, input]);
        assert.equal(b.status, 0, b.stderr);
        r = nixseal(["age", "-d", "-i", key2, theirs]);
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(r.stdout, plain);
      });
    }
  }

  test("stdin to stdout, and '-' as the input name", () => {
    const plain = randomBytes(70_000);
    const enc = nixseal(["age", "-r", recipient], { input: plain });
    assert.equal(enc.status, 0, enc.stderr);
    const dec = run(AGE!, ["-d", "-i", key], { input: enc.stdout });
    assert.deepEqual(dec.stdout, plain);
    const dec2 = nixseal(["age", "-d", "-i", key, "-"], { input: enc.stdout });
    assert.deepEqual(dec2.stdout, plain);
  });

  test("several recipients (-r, -R with comments, -e -i): each identity decrypts", () => {
    const third = path.join(dir, "third.txt");
    spawnSync(AGE_KEYGEN!, ["-o", third]);
    const recipients = write("recipients.txt", `# team\n\n${recipient2}\n  # another comment\n`);
    const input = write("multi", "shared secret\n");
    const out = path.join(dir, "multi.age");
    const r = nixseal(["age", "-e", "-r", recipient, "-R", recipients, "-i", third, "-o", out, input]);
    assert.equal(r.status, 0, r.stderr);
    for (const k of [key, key2, third]) {
      const a = run(AGE!, ["-d", "-i", k, out]);
      assert.equal(a.stdout.toString(), "shared secret\n", `identity ${path.basename(k)}`);
    }
  });

  test("age-keygen: 0600, never overwrites, -y agrees with the real age-keygen", () => {
    assert.equal(fs.statSync(key2).mode & 0o777, 0o600);
    const before = fs.readFileSync(key2);
    const r = nixseal(["age-keygen", "-o", key2]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /refusing to overwrite/);
    assert.deepEqual(fs.readFileSync(key2), before, "the existing key is untouched");
    const theirs = run(AGE_KEYGEN!, ["-y", key2]).stdout.toString();
    const ours = nixseal(["age-keygen", "-y", key2]);
    assert.equal(ours.stdout.toString(), theirs);
    assert.equal(nixseal(["age-keygen", "-y", key]).stdout.toString().trim(), recipient);
    const text = fs.readFileSync(key2, "utf8");
    assert.match(
      text,
      /^# created: \d{4}-\d\d-\d\dT[\d:]+Z\n# public key: age1[0-9a-z]{58}\nAGE-SECRET-KEY-1[0-9A-Z]{58}\n$/,
    );
  });

  test("passphrase (-p) with NIXSEAL_PASSPHRASE_FILE; the real age reads it at a terminal", {
    skip: SCRIPT ? false : "script (util-linux) is not installed",
  }, () => {
    const passFile = write("pass.txt", "correct horse battery staple\n");
    const input = write("pw-in", "passphrase protected\n");
    const out = path.join(dir, "pw.age");
    const env = { NIXSEAL_PASSPHRASE_FILE: passFile };
    let r = nixseal(["age", "-p", "-o", out, input], { env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(fs.readFileSync(out, "latin1"), /\n-> scrypt [A-Za-z0-9+/]{22} 18\n/);
    r = nixseal(["age", "-d", out], { env });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "passphrase protected\n");
    // The real age asks at /dev/tty: give it one with script(1) and type the passphrase.
    const plainOut = path.join(dir, "pw-out");
    const a = spawnSync(SCRIPT!, ["-qec", `${AGE} -d -o ${plainOut} ${out}`, "/dev/null"], {
      input: "correct horse battery staple\n",
      timeout: 20_000,
    });
    assert.equal(a.status, 0, a.stdout.toString());
    assert.equal(fs.readFileSync(plainOut, "utf8"), "passphrase protected\n");
    // A wrong passphrase: no match, a clear message.
    r = nixseal(["age", "-d", out], { env: { NIXSEAL_PASSPHRASE_FILE: write("bad.txt", "wrong\n") } });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /incorrect passphrase/);
  });
});

test("-p asks at the terminal (twice), and the real age decrypts with the typed passphrase", {
  skip: noAge || (SCRIPT ? false : "script (util-linux) is not installed"),
}, () => {
  const input = write("tty-in", "typed at a terminal\n");
  const out = path.join(dir, "tty.age");
  // script(1) gives nixseal a real pseudo-terminal; the passphrase is typed after each prompt.
  const typed = "(sleep 1; printf 'tty pass\\n'; sleep 1; printf 'tty pass\\n'; sleep 2)";
  const cmd = `${typed} | ${SCRIPT} -qec "${process.execPath} ${CLI} age -p -o ${out} ${input}" /dev/null`;
  const r = spawnSync("sh", ["-c", cmd], {
    timeout: 30_000,
    env: { ...process.env, NIXSEAL_PASSPHRASE_FILE: "" },
  });
  assert.equal(r.status, 0, r.stdout.toString());
  assert.match(r.stdout.toString(), /Enter passphrase[\s\S]*Confirm passphrase/);
  assert.doesNotMatch(
    r.stdout.toString().replace(/tty pass\r?\n/g, ""),
    /tty pass/,
    "the passphrase is not echoed",
  );
  const plain = path.join(dir, "tty-out");
  const a = spawnSync(
    "sh",
    [
      "-c",
      `(sleep 1; printf 'tty pass\\n'; sleep 2) | ${SCRIPT} -qec "${AGE} -d -o ${plain} ${out}" /dev/null`,
    ],
    {
      timeout: 30_000,
    },
  );
  assert.equal(a.status, 0, a.stdout.toString());
  assert.equal(fs.readFileSync(plain, "utf8"), "typed at a terminal\n");
});

/** Every error: exit 1, an error line naming what is wrong, a hint line, nothing else. */
function assertCleanError(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  assert.equal(r.status, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.ok(lines.length >= 2, `expected an error and a hint line, got: ${r.stderr}`);
  assert.match(lines[0]!, /^nixseal age(-keygen)?: error: /);
  assert.match(r.stderr, pattern);
  assert.ok(
    lines.some((l) => /: hint: /.test(l)),
    `no hint in: ${r.stderr}`,
  );
  assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
}

describe("bad input", { skip: noAge }, () => {
  function encryptedSample(): { file: string; plain: Buffer } {
    const plain = randomBytes(100_000);
    const file = path.join(dir, `sample-${randomBytes(4).toString("hex")}.age`);
    const r = nixseal(["age", "-r", recipient, "-o", file], { input: plain });
    assert.equal(r.status, 0, r.stderr);
    return { file, plain };
  }

  /** The -o target keeps its old content and no temp file is left beside it. */
  function assertOutputUntouched(out: string, old: string): void {
    assert.equal(fs.readFileSync(out, "utf8"), old);
    const leftovers = fs.readdirSync(path.dirname(out)).filter((f) => f.endsWith(".tmp"));
    assert.deepEqual(leftovers, []);
  }

  test("wrong key: names the file, lists what was tried, output untouched", () => {
    const { file } = encryptedSample();
    const out = write("keep-1", "OLD");
    const r = nixseal(["age", "-d", "-i", key2, "-o", out, file]);
    assertCleanError(r, new RegExp(`${path.basename(file)}.*no identity matched`));
    assert.match(r.stderr, /tried: age identity from/);
    assertOutputUntouched(out, "OLD");
  });

  test("truncated file (mid-payload and mid-header): clear error, output untouched", () => {
    const { file } = encryptedSample();
    const data = fs.readFileSync(file);
    for (const cut of [30, 150, data.length - 70_000, data.length - 1]) {
      const t = write(`trunc-${cut}.age`, data.subarray(0, cut));
      const out = write(`keep-t${cut}`, "OLD");
      const r = nixseal(["age", "-d", "-i", key, "-o", out, t]);
      assertCleanError(r, /truncated|damaged/);
      assertOutputUntouched(out, "OLD");
    }
  });

  test("not an age file", () => {
    const f = write("plain.txt", "just some text\n");
    assertCleanError(nixseal(["age", "-d", "-i", key, f]), /plain\.txt.*not an age file/);
    assertCleanError(nixseal(["age", "-d", "-i", key], { input: "" }), /empty/);
  });

  test("a flipped payload byte: authentication error, nothing written to -o", () => {
    const { file } = encryptedSample();
    const data = fs.readFileSync(file);
    data[data.length - 5000]! ^= 1;
    const t = write("flipped.age", data);
    const out = write("keep-f", "OLD");
    assertCleanError(
      nixseal(["age", "-d", "-i", key, "-o", out, t]),
      /payload authentication failed: .*modified/,
    );
    assertOutputUntouched(out, "OLD");
  });

  test("unreadable identity: missing file, a directory, not an identity, every problem reported", () => {
    const { file } = encryptedSample();
    const notKey = write("not-a-key.txt", "hello world\n");
    const r = nixseal(["age", "-d", "-i", path.join(dir, "missing.txt"), "-i", dir, "-i", notKey, file]);
    assertCleanError(r, /missing\.txt: .*no such file/);
    assert.match(r.stderr, /is a directory/);
    assert.match(r.stderr, /not-a-key\.txt:1: not an identity line/);
    assert.doesNotMatch(r.stderr, /hello world/, "the identity file's content is never echoed");
  });

  test("passphrase-protected identity file without a terminal: error with the NIXSEAL_PASSPHRASE_FILE hint", () => {
    const passFile = write("idpass.txt", "identity pass\n");
    const encId = path.join(dir, "key.txt.age");
    let r = nixseal(["age", "-p", "-a", "-o", encId, key], { env: { NIXSEAL_PASSPHRASE_FILE: passFile } });
    assert.equal(r.status, 0, r.stderr);
    const { file, plain } = encryptedSample();
    r = nixseal(["age", "-d", "-i", encId, file], { env: { NIXSEAL_PASSPHRASE_FILE: undefined } });
    assertCleanError(r, /passphrase/);
    assert.match(r.stderr, /NIXSEAL_PASSPHRASE_FILE/);
    r = nixseal(["age", "-d", "-i", encId, file], { env: { NIXSEAL_PASSPHRASE_FILE: passFile } });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout, plain);
  });

  test("-p without a terminal or NIXSEAL_PASSPHRASE_FILE fails before creating the output", () => {
    const out = path.join(dir, "never-created.age");
    const r = nixseal(["age", "-p", "-o", out], { input: "x", env: { NIXSEAL_PASSPHRASE_FILE: undefined } });
    assertCleanError(r, /terminal/);
    assert.equal(fs.existsSync(out), false);
  });

  test("usage errors say what to do instead", () => {
    assertCleanError(nixseal(["age", "-d", "-r", recipient]), /-r\/--recipient can't be used with -d/);
    assertCleanError(nixseal(["age", "-d", "-a", "-i", key]), /armored files are detected automatically/);
    assertCleanError(nixseal(["age"], { input: "x" }), /missing recipients/);
    assertCleanError(nixseal(["age", "-i", key], { input: "x" }), /-e\/--encrypt/);
    assertCleanError(nixseal(["age", "-r", "age1notakey"], { input: "x" }), /invalid X25519 recipient/);
    assertCleanError(
      nixseal(["age", "-r", "AGE-SECRET-KEY-1XYZ"], { input: "x" }),
      /identity .*not a recipient/,
    );
    assertCleanError(nixseal(["age", "--bogus"]), /unknown option/);
    assertCleanError(nixseal(["age", "-r", recipient, "a", "b"]), /too many INPUT arguments/);
  });

  test("a secret key passed with -r is never echoed back", () => {
    const secret = fs
      .readFileSync(key, "utf8")
      .split("\n")
      .find((l) => l.startsWith("AGE-SECRET-KEY-"))!;
    const r = nixseal(["age", "-r", secret], { input: "x" });
    assert.equal(r.status, 1);
    assert.ok(!r.stderr.includes(secret.slice(16)), "stderr must not contain the key");
  });
});

test("decryption streams with bounded memory (a 320 MiB file, plaintext to a pipe)", {
  skip: noAge,
}, async () => {
  // Streaming peaks at ~140 MiB here (Node itself, read buffers, the parallel STREAM workers);
  // holding the file would need more than its 320 MiB. The cap sits between, with margin both ways.
  const size = 320 * 1024 * 1024;
  const input = path.join(dir, "big");
  const fd = fs.openSync(input, "w");
  const block = randomBytes(1024 * 1024);
  for (let i = 0; i < size / block.length; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);
  const enc = path.join(dir, "big.age");
  assert.equal(run(AGE!, ["-r", recipient, "-o", enc, input]).status, 0);
  fs.rmSync(input);
  const proc = spawn(process.execPath, [CLI, "age", "-d", "-i", key, enc], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let bytes = 0;
  proc.stdout.on("data", (d: Buffer) => {
    bytes += d.length;
  });
  let peakKiB = 0;
  const timer = setInterval(() => {
    try {
      const status = fs.readFileSync(`/proc/${proc.pid}/status`, "utf8");
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
    } catch {}
  }, 5);
  const code = await new Promise<number | null>((resolve) => proc.on("close", resolve));
  clearInterval(timer);
  assert.equal(code, 0);
  assert.equal(bytes, size);
  assert.ok(peakKiB > 0, "RSS was sampled");
  assert.ok(peakKiB < 220 * 1024, `peak RSS ${peakKiB} KiB for a 320 MiB file: not streaming`);
});

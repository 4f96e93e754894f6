/**
 * The age plugin client, end to end through encrypt()/decrypt() with real plugin programs
 * (test/fixtures/plugins/age-plugin-ns*, on PATH for this process) and the real `age` binary.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { decrypt, encrypt, readHeader } from "../../src/age/age.js";
import { readStanza } from "../../src/age/format.js";
import {
  encodePluginIdentity,
  encodePluginRecipient,
  findPluginBinary,
  isPluginIdentity,
  isPluginRecipient,
  isValidPluginName,
  nonInteractivePluginUI,
  PluginIdentity,
  type PluginUI,
  parsePluginIdentity,
  parsePluginKey,
  parsePluginRecipient,
  pluginIdentities,
  pluginNameOf,
  pluginRecipients,
} from "../../src/age/plugin.js";
import { encodeCommand, sanitizePluginText } from "../../src/age/plugin-connection.js";
import { X25519Identity } from "../../src/age/x25519.js";
import { isNixsealError, type NixsealError } from "../../src/common/errors.js";

const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/plugins", import.meta.url));
const PLAINTEXT = Buffer.from("the plaintext of a plugin test\n");

let dir = "";
let savedPath: string | undefined;
const TEST_ENV = [
  "NSTEST_MSG",
  "NSTEST_LABELS",
  "NSTEST_DELAY_MS",
  "NSTEST_LOG",
  "NSBAD_MODE",
  "NSBAD_PIDFILE",
];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "nixseal-plugin-test-"));
  savedPath = process.env.PATH;
  process.env.PATH = `${FIXTURES}${delimiter}${savedPath ?? ""}`;
});

after(() => {
  if (savedPath === undefined) delete process.env.PATH;
  else process.env.PATH = savedPath;
  rmSync(dir, { recursive: true, force: true });
});

/** Runs fn with some environment variables set (the plugins read them), then removes them. */
async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  for (const [k, v] of Object.entries(vars)) process.env[k] = v;
  try {
    return await fn();
  } finally {
    for (const k of TEST_ENV) delete process.env[k];
  }
}

/** A new nstest key pair, made by the plugin itself (its own Bech32 code). */
function generate(
  plugin = "nstest",
  env: Record<string, string> = {},
): { identity: string; recipient: string } {
  const out = execFileSync(join(FIXTURES, `age-plugin-${plugin}`), ["--generate"], {
    encoding: "utf8",
    env: { ...process.env, ...env },
  });
  const recipient = /# public key: (\S+)/.exec(out)![1]!;
  const identity = out.split("\n").find((l) => l.startsWith("AGE-PLUGIN-"))!;
  return { identity, recipient };
}

interface UICall {
  kind: "msg" | "value" | "confirm" | "wait";
  plugin: string;
  prompt?: string;
  secret?: boolean;
  yes?: string;
  no?: string | undefined;
}

/** A scripted UI that records what the plugin asked. */
function scriptedUI(answers: { values?: string[]; confirm?: boolean; msgFails?: boolean } = {}) {
  const calls: UICall[] = [];
  const values = [...(answers.values ?? [])];
  const ui: PluginUI = {
    displayMessage(plugin, message) {
      calls.push({ kind: "msg", plugin, prompt: message });
      if (answers.msgFails) throw new Error("no display");
    },
    async requestValue(plugin, prompt, secret) {
      calls.push({ kind: "value", plugin, prompt, secret });
      const v = values.shift();
      if (v === undefined) throw new Error("no answer scripted");
      return v;
    },
    async confirm(plugin, prompt, yes, no) {
      calls.push({ kind: "confirm", plugin, prompt, yes, no });
      return answers.confirm ?? true;
    },
    waitTimer(plugin) {
      calls.push({ kind: "wait", plugin });
    },
  };
  return { ui, calls };
}

function logFile(): string {
  const f = join(dir, `log-${randomBytes(4).toString("hex")}`);
  writeFileSync(f, "");
  return f;
}

function logLines(f: string): string[] {
  return readFileSync(f, "utf8").split("\n").filter(Boolean);
}

/** Asserts that p rejects with an AGE_PLUGIN (or other) NixsealError and returns it. */
async function rejectsWith(
  p: Promise<unknown>,
  code = "AGE_PLUGIN",
  message?: RegExp,
): Promise<NixsealError> {
  let caught: unknown;
  await assert.rejects(p, (e) => {
    caught = e;
    return true;
  });
  assert.ok(isNixsealError(caught), `expected a NixsealError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message) assert.match(caught.message, message);
  return caught;
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

const ageAvailable = spawnSync("age", ["--version"]).status === 0;

// --- encodings ------------------------------------------------------------------------------------

/** The string with its last (checksum) character replaced by a different valid one. */
function changeLastChar(s: string): string {
  const last = s.at(-1)!;
  const upper = last === last.toUpperCase() && last !== last.toLowerCase();
  const replacement = last.toLowerCase() === "q" ? "p" : "q";
  return s.slice(0, -1) + (upper ? replacement.toUpperCase() : replacement);
}

describe("plugin recipient and identity encodings", () => {
  test("parse what the plugin generated, and encode it back identically", () => {
    const { identity, recipient } = generate();
    const r = parsePluginRecipient(recipient);
    assert.equal(r.plugin, "nstest");
    assert.equal(r.data.length, 32);
    assert.equal(encodePluginRecipient("nstest", r.data), recipient);
    const i = parsePluginIdentity(identity);
    assert.equal(i.plugin, "nstest");
    assert.equal(i.data.length, 32);
    assert.equal(encodePluginIdentity("nstest", i.data), identity);
    assert.equal(encodePluginIdentity("NSTEST", i.data), identity);
    assert.equal(pluginNameOf(recipient), "nstest");
    assert.equal(pluginNameOf(identity), "nstest");
    assert.ok(isPluginRecipient(recipient) && !isPluginIdentity(recipient));
    assert.ok(isPluginIdentity(identity) && !isPluginRecipient(identity));
  });

  test("native age keys and malformed strings are not plugin keys", () => {
    const x = X25519Identity.generate();
    assert.equal(parsePluginKey(x.recipient().toString()), null);
    assert.equal(parsePluginKey(x.encode()), null);
    const { identity, recipient } = generate();
    assert.equal(parsePluginKey(recipient.toUpperCase()), null, "recipients are lowercase");
    assert.equal(parsePluginKey(identity.toLowerCase()), null, "identities are uppercase");
    assert.equal(parsePluginKey(changeLastChar(recipient)), null, "bad checksum");
    assert.equal(parsePluginKey("ssh-ed25519 AAAA"), null);
    assert.throws(() => parsePluginRecipient(identity), { code: "AGE_RECIPIENT" });
  });

  test("an identity error never repeats the identity", () => {
    const { identity } = generate();
    const damaged = changeLastChar(identity);
    assert.throws(
      () => parsePluginIdentity(damaged),
      (e: NixsealError) => e.code === "AGE_IDENTITY" && !e.message.includes(damaged.slice(20)),
    );
    assert.throws(
      () => pluginIdentities([damaged], nonInteractivePluginUI),
      (e: NixsealError) => e.code === "AGE_IDENTITY" && !e.message.includes(damaged.slice(20)),
    );
  });

  test("plugin names: the spec's charset, no separators", () => {
    for (const ok of ["yubikey", "se", "a.b+c_d-e", "Foo9"]) assert.ok(isValidPluginName(ok), ok);
    for (const bad of ["", "a/b", "a b", "a\\b", "ü", "a:b"]) assert.ok(!isValidPluginName(bad), bad);
    assert.throws(() => encodePluginRecipient("a/b", new Uint8Array(1)), { code: "AGE_PLUGIN" });
  });
});

describe("finding plugin programs", () => {
  test("first executable on PATH; relative entries, directories and non-executables are skipped", () => {
    assert.equal(findPluginBinary("nstest"), join(FIXTURES, "age-plugin-nstest"));
    assert.equal(findPluginBinary("NSTEST"), join(FIXTURES, "age-plugin-nstest"));
    const rel = relative(process.cwd(), FIXTURES) || ".";
    assert.throws(() => findPluginBinary("nstest", `${rel}${delimiter}.${delimiter}`), {
      code: "AGE_PLUGIN",
      hint: "install age-plugin-nstest and make sure it is on PATH",
    });
    const other = join(dir, "path-test");
    mkdirSync(join(other, "age-plugin-nsdir"), { recursive: true });
    writeFileSync(join(other, "age-plugin-nsnoexec"), "#!/bin/sh\n");
    chmodSync(join(other, "age-plugin-nsnoexec"), 0o644);
    assert.throws(() => findPluginBinary("nsdir", other), { code: "AGE_PLUGIN" });
    assert.throws(() => findPluginBinary("nsnoexec", other), { code: "AGE_PLUGIN" });
    // The first match wins.
    writeFileSync(join(other, "age-plugin-nstest"), "#!/bin/sh\nexit 1\n", { mode: 0o755 });
    assert.equal(
      findPluginBinary("nstest", `${other}${delimiter}${FIXTURES}`),
      join(other, "age-plugin-nstest"),
    );
  });

  test("a missing plugin: AGE_PLUGIN with an install hint, for encryption and decryption", async () => {
    const recipient = encodePluginRecipient("nsmissing", randomBytes(32));
    const e = await rejectsWith(encrypt(PLAINTEXT, pluginRecipients([recipient], nonInteractivePluginUI)));
    assert.equal(e.hint, "install age-plugin-nsmissing and make sure it is on PATH");
    const { recipient: nstest } = generate();
    const file = await encrypt(PLAINTEXT, pluginRecipients([nstest], nonInteractivePluginUI));
    const identity = encodePluginIdentity("nsmissing", randomBytes(32));
    const d = await rejectsWith(decrypt(file, pluginIdentities([identity], nonInteractivePluginUI)));
    assert.equal(d.hint, "install age-plugin-nsmissing and make sure it is on PATH");
  });

  test("a plugin that cannot be started (missing interpreter) fails cleanly", async () => {
    const broken = join(dir, "broken-plugin");
    mkdirSync(broken, { recursive: true });
    writeFileSync(join(broken, "age-plugin-nsbroken"), "#!/nonexistent/interpreter\n", { mode: 0o755 });
    const r = encodePluginRecipient("nsbroken", randomBytes(8));
    await rejectsWith(
      encrypt(PLAINTEXT, pluginRecipients([r], nonInteractivePluginUI, { searchPath: broken })),
      "AGE_PLUGIN",
      /^cannot start .*age-plugin-nsbroken: ENOENT$/,
    );
  });

  test("an identity plugin is not started (nor looked up) for a file without stanzas", async () => {
    const [id] = pluginIdentities(
      [encodePluginIdentity("nsmissing", randomBytes(8))],
      nonInteractivePluginUI,
    );
    assert.equal(await id!.unwrapFileKey([]), null);
  });
});

// --- the wire format --------------------------------------------------------------------------------

describe("stanza framing", () => {
  test("commands are framed as header stanzas: base64 bodies as Node encodes them, read back exactly", () => {
    for (let n = 0; n < 70; n++) {
      const data = randomBytes(n);
      const enc = encodeCommand("file-key", ["0"], data);
      const lines = enc.toString("latin1").split("\n");
      assert.equal(lines[0], "-> file-key 0");
      assert.equal(lines.slice(1).join(""), data.toString("base64").replace(/=+$/, ""));
      const r = readStanza(enc, 0, 64 * 1024);
      assert.ok("stanza" in r, `${n} bytes`);
      assert.equal(r.end, enc.length);
      assert.deepEqual(Buffer.from(r.stanza.body), data);
    }
  });

  test("64-column body lines, the last one shorter; strict parsing", () => {
    const body = randomBytes(48); // exactly 64 base64 columns: an empty last line follows
    const enc = encodeCommand("recipient-stanza", ["0", "nstest", "abc"], body);
    const lines = enc.toString("latin1").split("\n");
    assert.equal(lines[0], "-> recipient-stanza 0 nstest abc");
    assert.equal(lines[1]!.length, 64);
    assert.equal(lines[2], "");
    const r = readStanza(enc, 0, 64 * 1024);
    assert.ok("stanza" in r);
    assert.equal(r.end, enc.length);
    assert.deepEqual(r.stanza.args, ["0", "nstest", "abc"]);
    assert.deepEqual(Buffer.from(r.stanza.body), body);
    assert.ok("incomplete" in readStanza(enc.subarray(0, enc.length - 1), 0, 64 * 1024));
    for (const bad of [
      "garbage\n",
      "->  x\n\n",
      "-> x\naGk=\n",
      "-> x\naGl\n",
      "-> x\na\n",
      "-> x\naG k\n",
      "-> x\n////A\n",
      `-> x\n${"A".repeat(65)}\n`,
      `-> x\n${"A".repeat(65)}`,
      "-> x y\tz\n\n",
      `-> ${"x".repeat(100)}\n\n`,
    ]) {
      assert.ok("invalid" in readStanza(Buffer.from(bad, "latin1"), 0, 64), JSON.stringify(bad));
    }
    assert.throws(() => encodeCommand("add-identity", ["has space"]), /invalid argument/);
  });

  test("text from plugins is made safe to print", () => {
    assert.equal(sanitizePluginText("a\x1b[2Jb\nc\u202ed"), "a?[2Jb c?d");
    assert.equal(sanitizePluginText("x".repeat(600)).length, 501);
  });
});

// --- encrypt / decrypt through plugins ------------------------------------------------------------------

test("the plugin process code is loaded when a plugin runs, not when its keys are read", () => {
  const { identity, recipient } = generate();
  // A separate process, so that no other test has loaded it; a resolve hook sees every import.
  const script = join(dir, "lazy-connection.mjs");
  writeFileSync(
    script,
    `import { registerHooks } from "node:module";
let loaded = false;
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    if (r.url.endsWith("/plugin-connection.js")) loaded = true;
    return r;
  },
});
const age = await import(${JSON.stringify(new URL("../../src/age/index.js", import.meta.url).href)});
const ui = age.nonInteractivePluginUI;
const ids = age.pluginIdentities([${JSON.stringify(identity)}], ui);
const rs = age.pluginRecipients([${JSON.stringify(recipient)}], ui);
const seen = [loaded];
const file = await age.encrypt(Buffer.from("x"), rs);
seen.push(loaded);
seen.push(Buffer.from(await age.decrypt(file, ids)).toString());
process.stdout.write(JSON.stringify(seen));
`,
  );
  const out = execFileSync(process.execPath, [script], { encoding: "utf8" });
  assert.deepEqual(JSON.parse(out), [false, true, "x"]);
});

describe("recipient-v1 and identity-v1 with age-plugin-nstest", () => {
  test("round trip; the plugin's grease is answered `unsupported`", async () => {
    const { identity, recipient } = generate();
    const file = await encrypt(PLAINTEXT, pluginRecipients([recipient], nonInteractivePluginUI));
    const header = readHeader(file);
    assert.deepEqual(
      header.stanzas.map((s) => s.type),
      ["nstest"],
    );
    const plain = await decrypt(file, pluginIdentities([identity], nonInteractivePluginUI));
    assert.deepEqual(Buffer.from(plain), PLAINTEXT);
    const armored = await encrypt(PLAINTEXT, pluginRecipients([recipient], nonInteractivePluginUI), {
      armor: true,
    });
    assert.deepEqual(
      Buffer.from(await decrypt(armored, pluginIdentities([identity], nonInteractivePluginUI))),
      PLAINTEXT,
    );
  });

  test("one process per plugin: recipients and identities are grouped", async () => {
    const a = generate();
    const b = generate();
    const x = X25519Identity.generate();
    const log = logFile();
    await withEnv({ NSTEST_LOG: log }, async () => {
      const recipients = pluginRecipients([a.recipient, b.recipient, a.recipient], nonInteractivePluginUI);
      assert.equal(recipients.length, 1);
      const file = await encrypt(PLAINTEXT, [x.recipient(), ...recipients]);
      assert.deepEqual(logLines(log), ["recipient-v1 recipients=2 identities=0 keys=1"]);
      assert.deepEqual(
        readHeader(file).stanzas.map((s) => s.type),
        ["X25519", "nstest", "nstest"],
      );
      for (const id of [a.identity, b.identity]) {
        assert.deepEqual(
          Buffer.from(await decrypt(file, pluginIdentities([id], nonInteractivePluginUI))),
          PLAINTEXT,
        );
      }
      assert.deepEqual(Buffer.from(await decrypt(file, [x])), PLAINTEXT);
      const ids = pluginIdentities([a.identity, b.identity], nonInteractivePluginUI);
      assert.equal(ids.length, 1);
      assert.equal(ids[0]!.description, "age-plugin-nstest (2 identities)");
      assert.deepEqual(Buffer.from(await decrypt(file, ids)), PLAINTEXT);
      assert.deepEqual(logLines(log).slice(-1), ["identity-v1 identities=2 files=1"]);
    });
  });

  test("different plugins get one Recipient each", () => {
    const rs = pluginRecipients(
      [
        generate().recipient,
        encodePluginRecipient("nserror", Buffer.from("recipient:x")),
        generate().recipient,
      ],
      nonInteractivePluginUI,
    );
    assert.deepEqual(
      rs.map((r) => [r.plugin, r.recipients.length]),
      [
        ["nstest", 2],
        ["nserror", 1],
      ],
    );
    assert.throws(
      () => pluginRecipients([X25519Identity.generate().recipient().toString()], nonInteractivePluginUI),
      {
        code: "AGE_RECIPIENT",
      },
    );
  });

  test("an identity used as a recipient is sent as add-identity", async () => {
    const { identity } = generate();
    const log = logFile();
    await withEnv({ NSTEST_LOG: log }, async () => {
      const file = await encrypt(PLAINTEXT, pluginRecipients([identity], nonInteractivePluginUI));
      assert.deepEqual(logLines(log), ["recipient-v1 recipients=0 identities=1 keys=1"]);
      assert.deepEqual(
        Buffer.from(await decrypt(file, pluginIdentities([identity], nonInteractivePluginUI))),
        PLAINTEXT,
      );
    });
  });

  test("batches: several file keys or files in one run", async () => {
    const { identity, recipient } = generate();
    const log = logFile();
    await withEnv({ NSTEST_LOG: log }, async () => {
      const [r] = pluginRecipients([recipient], nonInteractivePluginUI);
      const keys = [randomBytes(16), randomBytes(16), randomBytes(16)];
      const stanzas = await r!.wrapFileKeys(keys);
      assert.equal(stanzas.length, 3);
      const [id] = pluginIdentities([identity], nonInteractivePluginUI);
      const other = generate();
      const [foreign] = await pluginRecipients([other.recipient], nonInteractivePluginUI)[0]!.wrapFileKeys([
        randomBytes(16),
      ]);
      const results = await id!.unwrapFileKeys([stanzas[0]!, [], foreign!, stanzas[2]!]);
      assert.deepEqual(Buffer.from(results[0]!.fileKey!), keys[0]);
      assert.equal(results[1]!.fileKey, null);
      assert.equal(results[2]!.fileKey, null);
      assert.deepEqual(Buffer.from(results[3]!.fileKey!), keys[2]);
      assert.deepEqual(logLines(log), [
        "recipient-v1 recipients=1 identities=0 keys=3",
        "recipient-v1 recipients=1 identities=0 keys=1",
        "identity-v1 identities=1 files=3",
      ]);
    });
  });

  test("msg reaches the UI; ok or fail is answered", async () => {
    const { identity, recipient } = generate();
    const log = logFile();
    await withEnv({ NSTEST_MSG: "touch the \x1b[1mkey\x1b[0m", NSTEST_LOG: log }, async () => {
      const { ui, calls } = scriptedUI();
      const file = await encrypt(PLAINTEXT, pluginRecipients([recipient], ui));
      assert.deepEqual(calls, [{ kind: "msg", plugin: "nstest", prompt: "touch the ?[1mkey?[0m" }]);
      const failing = scriptedUI({ msgFails: true });
      await decrypt(file, pluginIdentities([identity], failing.ui));
      assert.equal(failing.calls.length, 1);
      // Non-interactive: messages cannot be shown, the plugin carries on.
      await decrypt(file, pluginIdentities([identity], nonInteractivePluginUI));
      assert.deepEqual(
        logLines(log).filter((l) => l.startsWith("msg")),
        ["msg answered ok", "msg answered fail", "msg answered fail"],
      );
    });
  });

  test("labels reported by the plugin become the Recipient's labels", async () => {
    const { recipient } = generate();
    await withEnv({ NSTEST_LABELS: "postquantum nixseal-test" }, async () => {
      const [r] = pluginRecipients([recipient], nonInteractivePluginUI);
      await encrypt(PLAINTEXT, [r!]);
      assert.deepEqual(r!.labels, ["postquantum", "nixseal-test"]);
    });
    const [plain] = pluginRecipients([recipient], nonInteractivePluginUI);
    await encrypt(PLAINTEXT, [plain!]);
    assert.deepEqual(plain!.labels, []);
  });

  test("a plugin's postquantum label can't be mixed with X25519", async () => {
    const { recipient } = generate();
    await withEnv({ NSTEST_LABELS: "postquantum" }, async () => {
      const rs = pluginRecipients([recipient], nonInteractivePluginUI);
      await rejectsWith(encrypt(PLAINTEXT, [X25519Identity.generate().recipient(), ...rs]), "AGE_RECIPIENT");
    });
  });

  test("waitTimer is called once when the plugin is slow", async () => {
    const { recipient } = generate();
    await withEnv({ NSTEST_DELAY_MS: "700" }, async () => {
      const { ui, calls } = scriptedUI();
      await encrypt(PLAINTEXT, pluginRecipients([recipient], ui, { waitTimerMs: 150 }));
      assert.deepEqual(calls, [{ kind: "wait", plugin: "nstest" }]);
    });
  });
});

describe("interop with the age binary", () => {
  test("age -r age1nstest1... encrypts, we decrypt; we encrypt, age -d -i decrypts", async (t) => {
    if (!ageAvailable) {
      t.skip("age binary not installed");
      return;
    }
    const { identity, recipient } = generate();
    const idFile = join(dir, "nstest-identity.txt");
    writeFileSync(idFile, `# test key\n${identity}\n`, { mode: 0o600 });
    const fromAge = execFileSync("age", ["-r", recipient], { input: PLAINTEXT });
    assert.deepEqual(
      readHeader(fromAge).stanzas.map((s) => s.type),
      ["nstest"],
    );
    assert.deepEqual(
      Buffer.from(await decrypt(fromAge, pluginIdentities([identity], nonInteractivePluginUI))),
      PLAINTEXT,
    );
    const ours = await encrypt(PLAINTEXT, pluginRecipients([recipient], nonInteractivePluginUI), {
      armor: true,
    });
    assert.deepEqual(execFileSync("age", ["-d", "-i", idFile], { input: ours }), PLAINTEXT);
    // age encrypting to a plugin identity (add-identity), read by us.
    const toIdentity = execFileSync("age", ["-e", "-i", idFile], { input: PLAINTEXT });
    assert.deepEqual(
      Buffer.from(await decrypt(toIdentity, pluginIdentities([identity], nonInteractivePluginUI))),
      PLAINTEXT,
    );
  });

  test("a file with an X25519 and an nstest stanza decrypts with either identity", async (t) => {
    if (!ageAvailable) {
      t.skip("age binary not installed");
      return;
    }
    const { identity, recipient } = generate();
    const x = X25519Identity.generate();
    const xFile = join(dir, "x25519-identity.txt");
    const pFile = join(dir, "nstest-identity-2.txt");
    writeFileSync(xFile, `${x.encode()}\n`, { mode: 0o600 });
    writeFileSync(pFile, `${identity}\n`, { mode: 0o600 });
    const fromAge = execFileSync("age", ["-r", x.recipient().toString(), "-r", recipient], {
      input: PLAINTEXT,
    });
    const ours = await encrypt(PLAINTEXT, [
      x.recipient(),
      ...pluginRecipients([recipient], nonInteractivePluginUI),
    ]);
    for (const file of [fromAge, ours]) {
      assert.deepEqual(Buffer.from(await decrypt(file, [x])), PLAINTEXT);
      assert.deepEqual(
        Buffer.from(await decrypt(file, pluginIdentities([identity], nonInteractivePluginUI))),
        PLAINTEXT,
      );
      assert.deepEqual(execFileSync("age", ["-d", "-i", xFile], { input: file }), PLAINTEXT);
      assert.deepEqual(execFileSync("age", ["-d", "-i", pFile], { input: file }), PLAINTEXT);
    }
    // Another plugin identity: the plugin ignores the X25519 stanza and matches nothing.
    const other = generate();
    await rejectsWith(
      decrypt(ours, pluginIdentities([other.identity], nonInteractivePluginUI)),
      "AGE_NO_MATCH",
    );
  });
});

// --- errors ------------------------------------------------------------------------------------------

describe("error commands from age-plugin-nserror", () => {
  const nserrorRecipient = (instruction: string) =>
    encodePluginRecipient("nserror", Buffer.from(instruction));
  const nserrorIdentity = (instruction: string) => encodePluginIdentity("nserror", Buffer.from(instruction));

  test("error recipient N names the plugin, the index and the recipient", async () => {
    const r = nserrorRecipient("recipient:no such key");
    const e = await rejectsWith(encrypt(PLAINTEXT, pluginRecipients([r], nonInteractivePluginUI)));
    assert.match(e.message, /^age-plugin-nserror: recipient 0 \(age1nserror1.*\): no such key$/);
    assert.ok(e.hint);
  });

  test("every error of a run is reported, in one NixsealError", async () => {
    const rs = pluginRecipients(
      [nserrorRecipient("recipient:first is bad"), nserrorRecipient("internal:boom")],
      nonInteractivePluginUI,
    );
    const e = await rejectsWith(encrypt(PLAINTEXT, rs));
    assert.match(e.message, /recipient 0 .*: first is bad; age-plugin-nserror: internal error: boom/);
    assert.ok(Array.isArray(e.cause) && e.cause.length === 2 && e.cause.every(isNixsealError));
  });

  test("error identity N when an identity is used as a recipient", async () => {
    const id = nserrorIdentity("identity:locked");
    const e = await rejectsWith(encrypt(PLAINTEXT, pluginRecipients([id], nonInteractivePluginUI)));
    assert.equal(e.message, "age-plugin-nserror: identity 0: locked");
    assert.ok(!e.message.includes(id));
  });

  test("identity-v1: identity, internal and stanza errors", async () => {
    const file = await encrypt(PLAINTEXT, pluginRecipients([generate().recipient], nonInteractivePluginUI));
    const id = nserrorIdentity("identity:token not present");
    const e1 = await rejectsWith(decrypt(file, pluginIdentities([id], nonInteractivePluginUI)));
    // The plugin exits right after the error (as age's plugins do): that is not a crash.
    assert.equal(e1.message, "age-plugin-nserror: identity 0: token not present");
    assert.ok(!e1.message.includes(id) && !(e1.hint ?? "").includes(id));
    await rejectsWith(
      decrypt(file, pluginIdentities([nserrorIdentity("internal:kms down")], nonInteractivePluginUI)),
      "AGE_PLUGIN",
      /^age-plugin-nserror: internal error: kms down$/,
    );
    await rejectsWith(
      decrypt(file, pluginIdentities([nserrorIdentity("stanza:bad share")], nonInteractivePluginUI)),
      "AGE_PLUGIN",
      /^age-plugin-nserror: invalid recipient stanza 0: bad share$/,
    );
  });

  test("messages are sanitised and capped", async () => {
    const r = nserrorRecipient(`recipient:bad\x1b[2J\r\nline two ${"x".repeat(5000)}`);
    const e = await rejectsWith(encrypt(PLAINTEXT, pluginRecipients([r], nonInteractivePluginUI)));
    assert.ok(!/[\u0000-\u001f\u007f]/.test(e.message), e.message.slice(0, 100));
    assert.match(e.message, /bad\?\[2J line two x+…$/);
    assert.ok(e.message.length < 700);
  });
});

describe("interaction with age-plugin-nsconfirm", () => {
  async function setup() {
    const { identity, recipient } = generate("nsconfirm", { NSCONFIRM_PIN: "4711-secret" });
    const file = await encrypt(PLAINTEXT, pluginRecipients([recipient], nonInteractivePluginUI));
    return { identity, recipient, file };
  }

  test("confirm yes, request-public, request-secret: decrypts", async () => {
    const { identity, file } = await setup();
    const { ui, calls } = scriptedUI({ confirm: true, values: ["slot-1", "4711-secret"] });
    assert.deepEqual(Buffer.from(await decrypt(file, pluginIdentities([identity], ui))), PLAINTEXT);
    assert.deepEqual(calls, [
      {
        kind: "confirm",
        plugin: "nsconfirm",
        prompt: "Allow nsconfirm to decrypt?",
        yes: "Unlock",
        no: "Skip",
      },
      { kind: "value", plugin: "nsconfirm", prompt: "Which slot?", secret: false },
      { kind: "value", plugin: "nsconfirm", prompt: "PIN for slot-1:", secret: true },
    ]);
  });

  test("one confirmation and one PIN for a batch of files", async () => {
    const { identity, recipient } = await setup();
    const [r] = pluginRecipients([recipient], nonInteractivePluginUI);
    const keys = [randomBytes(16), randomBytes(16)];
    const stanzas = await r!.wrapFileKeys(keys);
    const { ui, calls } = scriptedUI({ values: ["slot-1", "4711-secret"] });
    const [id] = pluginIdentities([identity], ui);
    const results = await id!.unwrapFileKeys(stanzas);
    assert.deepEqual(
      results.map((x) => Buffer.from(x.fileKey!)),
      keys,
    );
    assert.equal(calls.filter((c) => c.kind === "confirm").length, 1);
    assert.equal(calls.filter((c) => c.secret === true).length, 1);
  });

  test("confirm answered no: nothing unwrapped, no identity matched", async () => {
    const { identity, file } = await setup();
    const { ui, calls } = scriptedUI({ confirm: false });
    await rejectsWith(decrypt(file, pluginIdentities([identity], ui)), "AGE_NO_MATCH");
    assert.equal(calls.length, 1);
  });

  test("a wrong PIN is the plugin's error; the PIN is not repeated", async () => {
    const { identity, file } = await setup();
    const { ui } = scriptedUI({ values: ["slot-1", "0000-typed-secret"] });
    const e = await rejectsWith(decrypt(file, pluginIdentities([identity], ui)));
    assert.equal(e.message, "age-plugin-nsconfirm: identity 0: wrong PIN");
    assert.ok(!e.message.includes("0000-typed-secret") && !e.message.includes("4711-secret"));
  });

  test("without a terminal: the UI's failure is reported, with the hint to run in a terminal", async () => {
    const { identity, file } = await setup();
    const e = await rejectsWith(decrypt(file, pluginIdentities([identity], nonInteractivePluginUI)));
    assert.match(e.message, /^age-plugin-nsconfirm needs to ask for a confirmation/);
    assert.equal(e.hint, "run in a terminal");
  });

  test("a UI that cannot answer a secret: `fail` is sent and the failure reported", async () => {
    const { identity, file } = await setup();
    const { ui } = scriptedUI({ values: ["slot-1"] }); // no PIN scripted: requestValue throws
    const e = await rejectsWith(decrypt(file, pluginIdentities([identity], ui)));
    assert.match(e.message, /could not ask the user what age-plugin-nsconfirm needs: no answer scripted/);
  });

  test("a plugin without recipient-v1 fails encryption cleanly", async () => {
    const r = encodePluginRecipient("nsconfirm", randomBytes(32));
    await rejectsWith(
      encrypt(PLAINTEXT, pluginRecipients([r], nonInteractivePluginUI)),
      "AGE_PLUGIN",
      /^age-plugin-nsconfirm stopped before finishing \(exit code 4\): age-plugin-nsconfirm: unsupported state machine/,
    );
  });
});

describe("misbehaving plugins (age-plugin-nsbad)", () => {
  const recipient = () => encodePluginRecipient("nsbad", randomBytes(8));
  const identity = () => encodePluginIdentity("nsbad", randomBytes(8));
  let file: Uint8Array;
  before(async () => {
    file = await encrypt(PLAINTEXT, pluginRecipients([generate().recipient], nonInteractivePluginUI));
  });

  /** Runs an encryption and a decryption with NSBAD_MODE=mode; returns both errors. */
  async function both(mode: string, message: RegExp, options = {}) {
    return withEnv({ NSBAD_MODE: mode }, async () => {
      const e = await rejectsWith(
        encrypt(PLAINTEXT, pluginRecipients([recipient()], nonInteractivePluginUI, options)),
        "AGE_PLUGIN",
        message,
      );
      const d = await rejectsWith(
        decrypt(file, pluginIdentities([identity()], nonInteractivePluginUI, options)),
        "AGE_PLUGIN",
        message,
      );
      return [e, d];
    });
  }

  test("exits before reading anything", async () => {
    await both(
      "exit-now",
      /^age-plugin-nsbad stopped before finishing \(exit code 9\): nsbad: giving up at once$/,
    );
  });

  test("crashes mid-way: exit code and its last stderr line, sanitised", async () => {
    const [e] = await both(
      "exit",
      /stopped before finishing \(exit code 7\): nsbad: simulated crash \?\[31min red\?\[0m$/,
    );
    assert.ok(!e!.message.includes("\x1b"));
  });

  test("garbage, an endless line, bad base64: protocol errors, and the plugin is killed", async () => {
    for (const [mode, what] of [
      ["garbage", /is not a stanza/],
      ["long-line", /line is too long/],
      ["bad-base64", /not canonical base64/],
    ] as const) {
      const pidFile = join(dir, `pid-${mode}`);
      await withEnv({ NSBAD_MODE: mode, NSBAD_PIDFILE: pidFile }, async () => {
        await rejectsWith(
          encrypt(PLAINTEXT, pluginRecipients([recipient()], nonInteractivePluginUI)),
          "AGE_PLUGIN",
          what,
        );
      });
      assert.ok(processGone(Number(readFileSync(pidFile, "utf8"))), `${mode}: plugin still running`);
    }
  });

  test("wrong file index, no stanza, duplicate or short file keys", async () => {
    await withEnv({ NSBAD_MODE: "bad-index" }, () =>
      rejectsWith(
        encrypt(PLAINTEXT, pluginRecipients([recipient()], nonInteractivePluginUI)),
        "AGE_PLUGIN",
        /file index/,
      ),
    );
    await withEnv({ NSBAD_MODE: "no-stanza" }, () =>
      rejectsWith(
        encrypt(PLAINTEXT, pluginRecipients([recipient()], nonInteractivePluginUI)),
        "AGE_PLUGIN",
        /no recipient stanza/,
      ),
    );
    await withEnv({ NSBAD_MODE: "two-keys" }, () =>
      rejectsWith(
        decrypt(file, pluginIdentities([identity()], nonInteractivePluginUI)),
        "AGE_PLUGIN",
        /two file keys/,
      ),
    );
    await withEnv({ NSBAD_MODE: "short-key" }, () =>
      rejectsWith(
        decrypt(file, pluginIdentities([identity()], nonInteractivePluginUI)),
        "AGE_PLUGIN",
        /5 bytes/,
      ),
    );
  });

  test("a plugin that hangs times out and is killed, even if it ignores SIGTERM", async () => {
    for (const mode of ["hang", "hang-stubborn"]) {
      const pidFile = join(dir, `pid-${mode}`);
      const started = Date.now();
      // The timeout leaves the plugin (a Node program) time to start and write its pid file on a
      // loaded machine: 300 ms sometimes did not.
      await withEnv({ NSBAD_MODE: mode, NSBAD_PIDFILE: pidFile }, async () => {
        await rejectsWith(
          decrypt(file, pluginIdentities([identity()], nonInteractivePluginUI, { timeoutMs: 2000 })),
          "AGE_PLUGIN",
          /^age-plugin-nsbad did not answer within 2000 ms$/,
        );
      });
      assert.ok(Date.now() - started < 20_000);
      assert.ok(existsSync(pidFile));
      assert.ok(processGone(Number(readFileSync(pidFile, "utf8"))), `${mode}: plugin still running`);
    }
  });

  test("the read timeout does not run while the user is being asked", async () => {
    const { identity: id, recipient: r } = generate("nsconfirm", { NSCONFIRM_PIN: "1" });
    const f = await encrypt(PLAINTEXT, pluginRecipients([r], nonInteractivePluginUI));
    const slowUI: PluginUI = {
      ...scriptedUI().ui,
      async confirm() {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        return true;
      },
      async requestValue(_plugin, _prompt, secret) {
        return secret ? "1" : "slot-1";
      },
    };
    const plain = await decrypt(f, pluginIdentities([id], slowUI, { timeoutMs: 1000 }));
    assert.deepEqual(Buffer.from(plain), PLAINTEXT);
  });
});

test("PluginIdentity describes itself without key material", () => {
  const { identity } = generate();
  const id = new PluginIdentity("nstest", [identity], nonInteractivePluginUI);
  assert.equal(id.description, "age-plugin-nstest (1 identity)");
});

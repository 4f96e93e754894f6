/**
 * Where the user's agent gets a value (agent.json, --secrets DIR, a command, the user's own age
 * file), what it remembers (--remember), and the hook <-> agent protocol over a real socket: a
 * value only when one is asked for, within its size limit, and nothing else accepted.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { test } from "node:test";
import { encrypt } from "../../src/age/index.js";
import { type AgentRequest, askAgent, MAX_AGENT_VALUE, serveAgent } from "../../src/build-secrets/agent.js";
import {
  agentConfigPath,
  parseAgentConfig,
  parseRemember,
  RememberedAnswers,
  readAgentConfig,
  valueFromCommand,
  valueFromFile,
  valueSourceOf,
} from "../../src/build-secrets/agent-config.js";
import { parseIdentityString, parseRecipientString } from "../../src/keys/index.js";
import { generateIdentity } from "../../src/keys/key-types.js";
import { isError, tempDir } from "../helpers.js";

test("agent.json: file (absolute or ~/) or command per secret; XDG_CONFIG_HOME honoured; missing file is empty", () => {
  const c = parseAgentConfig(
    JSON.stringify({
      secrets: {
        "mods-token": { file: "~/secrets/mods.age" },
        api: { command: ["pass", "show", "api"] },
      },
    }),
    "agent.json",
    "/home/alice",
  );
  assert.deepEqual(c.secrets.get("mods-token"), { kind: "file", file: "/home/alice/secrets/mods.age" });
  assert.deepEqual(c.secrets.get("api"), { kind: "command", argv: ["pass", "show", "api"] });
  assert.equal(agentConfigPath({}, "/home/alice"), "/home/alice/.config/nixseal/agent.json");
  assert.equal(agentConfigPath({ XDG_CONFIG_HOME: "/x" }, "/home/alice"), "/x/nixseal/agent.json");
  // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
  assert.equal(agentConfigPath({ XDG_CONFIG_HOME: "x" }, "/h"), "/h/.config/nixseal/agent.json");
  const none = readAgentConfig("/nonexistent/agent.json", "/h");
  assert.equal(none.file, null);
  assert.equal(none.secrets.size, 0);
});

test("agent.json: every mistake is reported at once, with the place", () => {
  const bad = {
    secrets: {
      both: { file: "/a.age", command: ["x"] },
      neither: {},
      rel: { file: "secrets/a.age" },
      empty: { command: [] },
      notStrings: { command: ["pass", 3] },
      "../up": { file: "/a.age" },
      extra: { file: "/a.age", shell: true },
    },
    colour: "blue",
  };
  assert.throws(
    () => parseAgentConfig(JSON.stringify(bad), "/home/a/.config/nixseal/agent.json", "/home/a"),
    (e: unknown) => {
      isError("AGENT_CONFIG")(e);
      const messages = (e as { problems: { message: string }[] }).problems.map((p) => p.message);
      for (const re of [
        /json: colour: unknown field/,
        /secrets\."both": must have exactly one of "file" and "command"/,
        /secrets\."neither": must have exactly one of "file" and "command"/,
        /secrets\."rel"\.file: "secrets\/a\.age" is not absolute/,
        /secrets\."empty"\.command: must have 1 to 64 elements/,
        /secrets\."notStrings"\.command\[1\]: must be a string/,
        /secrets\."\.\.\/up": is not a valid secret name/,
        /secrets\."extra"\.shell: unknown field/,
      ]) {
        assert.ok(
          messages.some((m) => re.test(m)),
          `missing ${re}: ${messages.join("\n")}`,
        );
      }
      return true;
    },
  );
  assert.throws(() => parseAgentConfig("{", "a.json", "/h"), isError("AGENT_CONFIG", /not valid JSON/));
  assert.throws(
    () => parseAgentConfig('{"secrets": {}, "secrets": {}}', "a.json", "/h"),
    isError("AGENT_CONFIG", /duplicate key/),
  );
  assert.throws(
    () => parseAgentConfig('{"secrets": {"__proto__": {"file": "/a"}}}', "a.json", "/h"),
    isError("AGENT_CONFIG", /"__proto__": is not a valid secret name/),
  );
});

test("the value's source: agent.json first, then --secrets DIR/NAME.age if it exists, else typed", () => {
  const { dir, cleanup } = tempDir();
  try {
    fs.writeFileSync(path.join(dir, "in-dir.age"), "x");
    fs.writeFileSync(path.join(dir, "both.age"), "x");
    const config = parseAgentConfig(
      JSON.stringify({ secrets: { both: { command: ["pass", "show", "both"] } } }),
      "a.json",
      "/h",
    );
    assert.deepEqual(valueSourceOf(config, dir, "both"), { kind: "command", argv: ["pass", "show", "both"] });
    assert.deepEqual(valueSourceOf(config, dir, "in-dir"), {
      kind: "file",
      file: path.join(dir, "in-dir.age"),
    });
    assert.equal(valueSourceOf(config, dir, "absent"), null);
    assert.equal(valueSourceOf(config, null, "in-dir"), null);
    // A name from the hook never walks out of DIR.
    fs.writeFileSync(path.join(path.dirname(dir), "escape.age"), "x");
    try {
      assert.equal(valueSourceOf(config, dir, "../escape"), null);
    } finally {
      fs.rmSync(path.join(path.dirname(dir), "escape.age"));
    }
  } finally {
    cleanup();
  }
});

test("a command: argv without a shell, its stdout is the value; failures, silence and floods are errors", async () => {
  const never = new AbortController().signal;
  const stderr: string[] = [];
  const v = await valueFromCommand(["printf", "%s\\n", "tok; $(no shell)"], never, (t) => stderr.push(t));
  assert.equal(Buffer.from(v).toString(), "tok; $(no shell)\n");
  await assert.rejects(
    valueFromCommand(["sh", "-c", "echo why >&2; exit 3"], never, (t) => stderr.push(t)),
    isError("BUILD_SECRET", /the command "sh" exited with 3/),
  );
  assert.ok(stderr.includes("why\n"), "the command's stderr goes to the agent's terminal");
  await assert.rejects(
    valueFromCommand(["/nonexistent/tool"], never, () => {}),
    isError("BUILD_SECRET", /cannot run the command "\/nonexistent\/tool": ENOENT/),
  );
  await assert.rejects(
    valueFromCommand(["true"], never, () => {}),
    isError("BUILD_SECRET", /is empty or longer/),
  );
  await assert.rejects(
    valueFromCommand(["head", "-c", String(MAX_AGENT_VALUE + 1), "/dev/zero"], never, () => {}),
    isError("BUILD_SECRET", new RegExp(`printed more than ${MAX_AGENT_VALUE} bytes`)),
  );
  // The hook hung up: the command is stopped.
  const hungUp = new AbortController();
  const slow = valueFromCommand(["sleep", "600"], hungUp.signal, () => {});
  hungUp.abort();
  await assert.rejects(slow, isError("BUILD_SECRET", /was stopped: the build stopped waiting/));
});

test("the user's own age file, decrypted with the user's identities", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const id = await generateIdentity(false);
    const file = path.join(dir, "t.age");
    fs.writeFileSync(file, await encrypt(Buffer.from("tok-9\n"), [parseRecipientString(id.recipient, "t")]));
    const identities = async () => [parseIdentityString(id.identity, "t")];
    assert.equal(Buffer.from(await valueFromFile(file, identities)).toString(), "tok-9\n");
    const other = await generateIdentity(false);
    await assert.rejects(
      valueFromFile(file, async () => [parseIdentityString(other.identity, "o")]),
      isError("AGE_NO_MATCH"),
    );
    await assert.rejects(valueFromFile(path.join(dir, "none.age"), identities), isError("IO", /ENOENT/));
  } finally {
    cleanup();
  }
});

test("--remember: per kind, secret name and URL origin; a copy is given out; wiped on clear", () => {
  const r = new RememberedAnswers(60_000);
  const key = RememberedAnswers.key("value", "tok", "https://mods.example.com/api/a.zip");
  r.set(key, Buffer.from("secret-1"));
  const got = r.get(RememberedAnswers.key("value", "tok", "https://mods.example.com/other/b.zip"));
  assert.equal(Buffer.from(got!).toString(), "secret-1", "same origin, another path: remembered");
  got!.fill(0);
  assert.equal(Buffer.from(r.get(key)!).toString(), "secret-1", "wiping the copy keeps the memory");
  assert.equal(r.get(RememberedAnswers.key("value", "tok", "https://evil.example.com/api/a.zip")), undefined);
  assert.equal(
    r.get(RememberedAnswers.key("value", "tok", "https://mods.example.com:8443/api/a.zip")),
    undefined,
  );
  assert.equal(
    r.get(RememberedAnswers.key("value", "other", "https://mods.example.com/api/a.zip")),
    undefined,
  );
  assert.equal(
    r.get(RememberedAnswers.key("approval", "tok", "https://mods.example.com/api/a.zip")),
    undefined,
  );
  r.clear();
  assert.equal(r.get(key), undefined);
  const off = new RememberedAnswers(0);
  off.set(key, Buffer.from("x"));
  assert.equal(off.get(key), undefined, "without --remember nothing is kept");
  assert.equal(parseRemember("15m"), 900_000);
  assert.equal(parseRemember("90s"), 90_000);
  assert.equal(parseRemember("2h"), 7_200_000);
  assert.equal(parseRemember("30"), 30_000);
  for (const bad of ["", "15 m", "1d", "25h", "-1s", "1.5h"]) {
    assert.throws(() => parseRemember(bad), isError("USAGE", /is not a duration of at most 24h/), bad);
  }
});

const uid = process.getuid?.() ?? -1;
test("the protocol over a real socket: a value only when asked for one, within its limit", {
  skip: uid !== 0 && "needs root (the hook trusts only a root-owned agent directory)",
}, async () => {
  const { dir, cleanup } = tempDir();
  fs.chmodSync(dir, 0o1733);
  let reply: unknown = null;
  const seen: unknown[] = [];
  const served = await serveAgent(dir, uid, async (p) => {
    seen.push(p);
    return reply as never;
  });
  const ask = (want: "approval" | "value", prompt = false): Promise<unknown> =>
    askAgent({
      secret: "tok",
      drvPath: "/nix/store/x.drv",
      url: "https://a.example/",
      want,
      prompt,
      uid,
      agentDir: dir,
      timeoutMs: 10_000,
    } satisfies AgentRequest);
  try {
    reply = { approved: true, plaintext: Buffer.from("v-1") };
    const v = (await ask("value", true)) as { approved: true; plaintext: Uint8Array };
    assert.equal(Buffer.from(v.plaintext).toString(), "v-1");
    assert.deepEqual(seen[0], {
      secret: "tok",
      drv: "/nix/store/x.drv",
      url: "https://a.example/",
      want: "value",
      prompt: true,
      timeoutMs: 10_000,
    });
    // A value sent for an approval, or an approval for a value: refused.
    assert.deepEqual(await ask("approval"), {
      approved: false,
      reason: "the agent sent a value for a secret the host holds",
    });
    reply = { approved: true, plaintext: null };
    assert.deepEqual(await ask("approval"), { approved: true, plaintext: null });
    assert.deepEqual(await ask("value"), {
      approved: false,
      reason: "the agent approved but supplied no value (is it an older nixseal?)",
    });
    reply = { approved: true, plaintext: Buffer.alloc(MAX_AGENT_VALUE + 1, 0x61) };
    assert.deepEqual(await ask("value"), {
      approved: false,
      reason: `the agent's value is empty or longer than ${MAX_AGENT_VALUE} bytes`,
    });
    // The agent could not get the value: said so, not "declined".
    reply = { approved: false, failed: true, reason: 'the command "pass" exited with 1' };
    assert.deepEqual(await ask("value"), {
      approved: false,
      reason: 'the agent could not supply it (the command "pass" exited with 1)',
    });
    // The agent reads requests strictly: an unknown field is a malformed request, never asked.
    const before = seen.length;
    const raw = await new Promise<string>((resolve) => {
      let got = "";
      const c = net.connect(served.socket, () =>
        c.write(
          `${JSON.stringify({ type: "request", secret: "tok", drv: "/d", url: "https://a.example/", want: "value", shell: "x" })}\n`,
        ),
      );
      c.on("data", (d) => {
        got += d;
      });
      c.on("close", () => resolve(got));
    });
    assert.deepEqual(JSON.parse(raw), { approved: false, reason: "malformed request" });
    assert.equal(seen.length, before);
    // A second agent of the same user does not take over the socket.
    await assert.rejects(
      serveAgent(dir, uid, async () => ({ approved: false, reason: "x" })),
      isError("AGENT_RUNNING", /already answers/),
    );
  } finally {
    served.close();
    cleanup();
  }
});

test("agent.json that others could have written is refused (it names commands the agent runs)", () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = path.join(dir, "agent.json");
    fs.writeFileSync(file, JSON.stringify({ secrets: { t: { command: ["pass", "show", "t"] } } }), {
      mode: 0o600,
    });
    assert.equal(readAgentConfig(file, "/h").secrets.size, 1);
    fs.chmodSync(file, 0o666);
    assert.throws(
      () => readAgentConfig(file, "/h"),
      isError("AGENT_CONFIG", /is not owned by you or is writable by group or others/),
    );
  } finally {
    cleanup();
  }
});

/**
 * The policy: strict validation (every problem in one run), URL prefixes compared as parsed URLs,
 * the header template, and the decision for each shape of derivation. Plus the hook itself on
 * .drv files in a temp store dir: its exact output for Nix, the file modes, the post-build hook
 * and the sweeper.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { encrypt } from "../../src/age/index.js";
import type { Derivation } from "../../src/build-secrets/drv.js";
import { postBuildHook, preBuildHook } from "../../src/build-secrets/hook.js";
import { type BuildClient, decide, headerProblem, parsePolicy } from "../../src/build-secrets/policy.js";
import { sweepSecretDirs } from "../../src/build-secrets/secret-dir.js";
import { parseSecretUrl, parseUrlPrefix, urlUnderPrefix } from "../../src/build-secrets/url.js";
import { parseRecipientString } from "../../src/keys/index.js";
import { generateIdentity } from "../../src/keys/key-types.js";
import { isError, tempDir } from "../helpers.js";

const FETCHER = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.js";
const NODE = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nodejs-20/bin/node";

function policyDoc(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 1,
    identities: [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }],
    interpreters: [NODE],
    secrets: {
      token: {
        file: "/var/lib/nixseal/token.age",
        allowedUrlPrefixes: ["https://mods.example.com/api/"],
        allowedUsers: ["alice", "1001"],
        fetcherStorePaths: [FETCHER],
      },
    },
    ...extra,
  };
}

test("a valid policy parses with its defaults", () => {
  const p = parsePolicy(JSON.stringify(policyDoc()), "p.json");
  assert.equal(p.runtimeDir, "/run/nixseal/build");
  assert.equal(p.storeDir, "/nix/store");
  assert.equal(p.agentTimeoutSeconds, 120);
  const s = p.secrets.get("token")!;
  assert.equal(s.prompt, false);
  assert.deepEqual(s.allowedUsers, ["alice", "1001"]);
  assert.equal(s.allowedUrlPrefixes[0]!.href, "https://mods.example.com/api/");
});

test("every problem of a policy is reported in one run, with the file and the place", () => {
  const bad = {
    version: 2,
    colour: "blue",
    runtimeDir: "run/relative",
    identities: [{ type: "gpg", path: "/k" }],
    secrets: {
      "../evil": {},
      token: {
        file: "/a/../b.age",
        allowedUrlPrefixes: ["http://mods.example.com/", "https://u:p@x.example/", "https://x.example/a?b"],
        allowedUsers: ["Robert'); DROP"],
        prompt: "yes",
        fetcherStorePaths: ["/usr/bin/fetch"],
        extra: 1,
      },
    },
  };
  assert.throws(
    () => parsePolicy(JSON.stringify(bad), "/etc/nixseal/build-secrets.json"),
    (e: unknown) => {
      isError("BUILD_POLICY")(e);
      const messages = (e as { problems: { message: string }[] }).problems.map((p) => p.message);
      const expect = [
        /json: colour: unknown field/,
        /version: must be 1/,
        /runtimeDir: "run\/relative" is not absolute/,
        /identities\[0\]\.type: must be one of "ssh", "age", "systemd-creds", not "gpg"/,
        /secrets\."\.\.\/evil": is not a valid secret name/,
        /secrets\."token"\.extra: unknown field/,
        /secrets\."token"\.file: "\/a\/\.\.\/b\.age" contains a \. or \.\. segment/,
        /allowedUrlPrefixes\[0\]: URL prefix uses http:\/\/ to a remote host/,
        /allowedUrlPrefixes\[1\]: URL prefix has user info/,
        /allowedUrlPrefixes\[2\]: URL prefix has a query/,
        /allowedUsers\[0\]: "Robert'\); DROP" is not a valid user or group name/,
        /prompt: must be true or false/,
        /fetcherStorePaths\[0\]: is not in the Nix store/,
      ];
      for (const re of expect)
        assert.ok(
          messages.some((m) => re.test(m)),
          `missing ${re}: ${messages.join("\n")}`,
        );
      assert.ok(messages.every((m) => m.startsWith("/etc/nixseal/build-secrets.json: ")));
      return true;
    },
  );
  assert.throws(() => parsePolicy("{", "p.json"), isError("BUILD_POLICY", /not valid JSON/));
  assert.throws(() => parsePolicy("[]", "p.json"), isError("BUILD_POLICY", /must be a JSON object/));
});

test("URLs: only canonical ones, compared by parts, with the prefix ending at a segment", () => {
  const prefix = (s: string) => {
    const r = parseUrlPrefix(s);
    assert.ok(r.ok, s);
    return r.url;
  };
  const under = (u: string, p: string) => {
    const r = parseSecretUrl(u);
    assert.ok(r.ok, `${u}: ${r.ok ? "" : r.reason}`);
    return urlUnderPrefix(r.url, prefix(p));
  };
  assert.equal(under("https://mods.example.com/api/x.zip", "https://mods.example.com/api/"), true);
  assert.equal(under("https://mods.example.com/api/x.zip?v=2", "https://mods.example.com/api/"), true);
  assert.equal(under("https://mods.example.com/api", "https://mods.example.com/api"), true);
  assert.equal(under("https://mods.example.com/api/x", "https://mods.example.com/api"), true);
  assert.equal(under("https://mods.example.com/apix", "https://mods.example.com/api"), false);
  assert.equal(under("https://mods.example.com/apix", "https://mods.example.com/api/"), false);
  assert.equal(under("https://mods.example.com.evil.net/api/x", "https://mods.example.com/api/"), false);
  assert.equal(under("https://mods.example.com:8443/api/x", "https://mods.example.com/api/"), false);
  assert.equal(under("http://127.0.0.1:8080/api/x", "https://127.0.0.1:8080/api/"), false);
  assert.equal(under("http://127.0.0.1:8080/api/x", "http://127.0.0.1:8080/api/"), true);

  const refused: [string, RegExp][] = [
    [
      "https://mods.example.com/api/../admin",
      /canonical form \(write it as https:\/\/mods\.example\.com\/admin\)/,
    ],
    ["https://mods.example.com/api/%2e%2e/admin", /encoded/],
    ["https://mods.example.com/api/%2fadmin", /encoded/],
    ["https://mods.example.com\\@evil.net/", /backslash/],
    ["https://user@mods.example.com/api/", /user info/],
    ["https://mods.example.com@evil.net/api/", /user info/],
    ["https://mods.example.com/api/#frag", /fragment/],
    ["https://MODS.example.com/api/", /canonical form/],
    ["https://mods.example.com", /canonical form/],
    ["https://mods.example.com/api/ x", /whitespace/],
    ["https://mödš.example/", /non-ASCII/],
    ["http://mods.example.com/api/", /http:\/\/ to a remote host/],
    ["ftp://mods.example.com/api/", /is not https/],
    ["file:///etc/shadow", /is not https/],
    ["", /is empty/],
  ];
  for (const [u, re] of refused) {
    const r = parseSecretUrl(u);
    assert.equal(r.ok, false, u);
    assert.match((r as { reason: string }).reason, re, u);
  }
});

test("header templates: one {secret}, printable, and never a header that reroutes the request", () => {
  assert.equal(headerProblem("Authorization: Bearer {secret}"), null);
  assert.equal(headerProblem("X-Api-Key:{secret}"), null);
  assert.match(headerProblem("Host: {secret}.evil.net")!, /may not carry a secret/);
  assert.match(headerProblem("Proxy-Authorization: {secret}")!, /may not carry a secret/);
  assert.match(headerProblem("Authorization: Bearer")!, /exactly once/);
  assert.match(headerProblem("A: {secret}{secret}")!, /exactly once/);
  assert.match(headerProblem("A: {secret}\r\nHost: evil")!, /printable ASCII/);
  assert.match(headerProblem("Bad Name: {secret}")!, /printable ASCII/);
});

function fod(env: Record<string, string> = {}, over: Partial<Derivation> = {}): Derivation {
  const out = "/nix/store/cccccccccccccccccccccccccccccccc-mod.zip";
  return {
    outputs: new Map([["out", { path: out, hashAlgo: "sha256", hash: "00".repeat(32) }]]),
    inputDrvs: new Map(),
    inputSrcs: [FETCHER],
    platform: "x86_64-linux",
    builder: NODE,
    args: [FETCHER],
    env: new Map(
      Object.entries({
        builder: NODE,
        name: "mod.zip",
        out,
        system: "x86_64-linux",
        outputHash: "sha256-AAAA",
        outputHashMode: "flat",
        url: "https://mods.example.com/api/mod.zip",
        nixsealSecret: "token",
        ...env,
      }),
    ),
    ...over,
  };
}

const ALICE: BuildClient = { uid: 1000, how: "daemon client pid 42" };
const uidOf = (u: string) => (u === "alice" ? 1000 : null);

test("decide: the allowed shape, and each way out of it refused with all reasons", () => {
  const policy = parsePolicy(JSON.stringify(policyDoc()), "p.json");
  const d = decide(fod(), policy, ALICE, uidOf);
  assert.equal(d.kind, "allow");
  assert.equal((d as { url: string }).url, "https://mods.example.com/api/mod.zip");
  assert.equal(decide(fod({}, { builder: FETCHER, args: [] }), policy, ALICE, uidOf).kind, "allow");
  assert.equal(decide(fod(), policy, { uid: 1001, how: "x" }, uidOf).kind, "allow");

  const noSecret = fod();
  noSecret.env.delete("nixsealSecret");
  assert.deepEqual(decide(noSecret, policy, ALICE, uidOf), { kind: "not-asking" });

  const reasons = (drv: Derivation, client = ALICE) => {
    const r = decide(drv, policy, client, uidOf);
    assert.equal(r.kind, "refuse");
    return (r as { reasons: string[] }).reasons.join("\n");
  };
  assert.match(reasons(fod({ nixsealSecret: "other" })), /has no secret "other"/);
  assert.match(
    reasons(fod({}, { builder: "/bin/sh", args: ["-c", "cat /run/nixseal-secret"] })),
    /not the trusted fetcher/,
  );
  assert.match(reasons(fod({}, { args: [FETCHER, "--inspect"] })), /not the trusted fetcher/);
  assert.match(reasons(fod({}, { builder: FETCHER, args: [FETCHER] })), /not the trusted fetcher/);
  const notFixed = fod();
  notFixed.outputs.set("out", { path: notFixed.env.get("out")!, hashAlgo: "", hash: "" });
  assert.match(reasons(notFixed), /not fixed-output/);
  const twoOutputs = fod();
  twoOutputs.outputs.set("dev", { path: "/nix/store/x-dev", hashAlgo: "", hash: "" });
  assert.match(reasons(twoOutputs), /not fixed-output/);
  assert.match(reasons(fod({ out: "/nix/store/other" })), /"out" attribute is not its output path/);
  assert.match(
    reasons(fod({ NODE_OPTIONS: "--require x", impureEnvVars: "https_proxy", __noChroot: "1" })),
    /must not see: "NODE_OPTIONS", "impureEnvVars", "__noChroot"/,
  );
  assert.match(reasons(fod({ url: "https://evil.example/api/mod.zip" })), /not under an allowed prefix/);
  assert.match(reasons(fod({ nixsealHeader: "Host: {secret}" })), /may not carry a secret/);
  assert.match(
    reasons(fod(), { uid: 1002, how: "daemon client pid 7" }),
    /requested by uid 1002 .* not by alice, 1001/,
  );
  assert.match(reasons(fod(), { uid: null, how: "no pid" }), /cannot be determined \(no pid\)/);
  // All reasons at once.
  const all = reasons(fod({ url: "https://evil.example/", NODE_OPTIONS: "x" }, { builder: "/bin/sh" }), {
    uid: 5,
    how: "h",
  });
  assert.equal(all.split("\n").length, 4, all);
});

// --- the hook on real files ---------------------------------------------------------------------

const DRV_HASH = "dddddddddddddddddddddddddddddddd";

function aterm(drv: Derivation): string {
  const s = (x: string) => JSON.stringify(x);
  const outs = [...drv.outputs].map(([n, o]) => `(${s(n)},${s(o.path)},${s(o.hashAlgo)},${s(o.hash)})`);
  const env = [...drv.env].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `(${s(k)},${s(v)})`);
  return `Derive([${outs}],[],[${drv.inputSrcs.map(s)}],${s(drv.platform)},${s(drv.builder)},[${drv.args.map(s)}],[${env}])`;
}

test("the hook: exact output for Nix, a 0444 secret in a 0700 dir, refusal file, post hook and sweeper", {
  skip: fs.existsSync("/dev/shm") ? false : "needs /dev/shm (tmpfs)",
}, async () => {
  const { dir, cleanup } = tempDir();
  const shm = fs.mkdtempSync("/dev/shm/nixseal-hook-test-");
  try {
    const store = path.join(dir, "store");
    fs.mkdirSync(store);
    const host = await generateIdentity(false);
    fs.writeFileSync(path.join(dir, "host.txt"), `${host.identity}\n`, { mode: 0o600 });
    fs.writeFileSync(
      path.join(dir, "token.age"),
      await encrypt(Buffer.from("tok-123\n"), [parseRecipientString(host.recipient, "t")]),
    );
    const fetcher = path.join(store, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.js");
    const doc = policyDoc({
      storeDir: store,
      runtimeDir: path.join(shm, "build"),
      identities: [{ type: "age", path: path.join(dir, "host.txt") }],
    });
    const secrets = doc.secrets as Record<string, Record<string, unknown>>;
    secrets.token!.file = path.join(dir, "token.age");
    secrets.token!.fetcherStorePaths = [fetcher];
    delete secrets.token!.allowedUsers;
    const policyFile = path.join(dir, "policy.json");
    fs.writeFileSync(policyFile, JSON.stringify(doc), { mode: 0o644 });

    const good = fod({}, { args: [fetcher] });
    const drvPath = path.join(store, `${DRV_HASH}-mod.zip.drv`);
    fs.writeFileSync(drvPath, aterm(good));
    const chroot = `${drvPath}.chroot`;
    fs.mkdirSync(chroot);
    const r = await preBuildHook(drvPath, chroot, { policyFile, ppid: process.pid });
    const secretFile = path.join(shm, "build", `${DRV_HASH}-mod.zip.drv`, "secret");
    assert.equal(r.output, `extra-sandbox-paths\n/run/nixseal-secret=${secretFile}\n\n`);
    assert.equal(fs.readFileSync(secretFile, "utf8"), "tok-123\n");
    assert.equal(fs.statSync(secretFile).mode & 0o7777, 0o444);
    assert.equal(fs.statSync(path.dirname(secretFile)).mode & 0o7777, 0o700);
    assert.equal(fs.statSync(path.join(shm, "build")).mode & 0o7777, 0o700);
    assert.match(r.log.join("\n"), /gave secret "token" to .*-mod\.zip\.drv/);
    assert.ok(!r.log.join("\n").includes("tok-123"));

    // A running build's directory survives the sweeper (its sandbox directory, as the hook was
    // given it, still exists); the post-build hook removes it.
    assert.equal(fs.readFileSync(path.join(path.dirname(secretFile), "chroot"), "utf8"), chroot);
    assert.deepEqual(sweepSecretDirs(path.join(shm, "build"), store), []);
    postBuildHook(drvPath, policyFile);
    assert.equal(fs.existsSync(path.dirname(secretFile)), false);

    // Sandbox off: nothing for Nix, a log line that says so.
    const off = await preBuildHook(drvPath, undefined, { policyFile, ppid: process.pid });
    assert.equal(off.output, "");
    assert.match(off.log[0]!, /the sandbox is off/);

    // A refused derivation gets only the refusal file; its directory is swept once the build ends.
    const badPath = path.join(store, `${"e".repeat(32)}-bad.drv`);
    fs.writeFileSync(badPath, aterm(fod({}, { builder: "/bin/sh", args: ["-c", "x"] })));
    fs.mkdirSync(`${badPath}.chroot`);
    const refused = await preBuildHook(badPath, `${badPath}.chroot`, { policyFile, ppid: process.pid });
    const refusalFile = path.join(shm, "build", `${"e".repeat(32)}-bad.drv`, "refusal");
    assert.equal(refused.output, `extra-sandbox-paths\n/run/nixseal-refusal=${refusalFile}\n\n`);
    assert.match(
      fs.readFileSync(refusalFile, "utf8"),
      /refused the build secret "token".*\n {2}- its builder .* is not the trusted fetcher/,
    );
    assert.equal(fs.existsSync(path.join(path.dirname(refusalFile), "secret")), false);
    fs.rmdirSync(`${badPath}.chroot`);
    assert.deepEqual(sweepSecretDirs(path.join(shm, "build"), store), [`${"e".repeat(32)}-bad.drv`]);

    // Derivations that name no secret: nothing at all, not even the policy is read.
    const plain = path.join(store, `${"f".repeat(32)}-plain.drv`);
    const noSecret = fod();
    noSecret.env.delete("nixsealSecret");
    fs.writeFileSync(plain, aterm(noSecret));
    assert.deepEqual(await preBuildHook(plain, chroot, { policyFile: "/nonexistent", ppid: process.pid }), {
      output: "",
      log: [],
    });
  } finally {
    cleanup();
    fs.rmSync(shm, { recursive: true, force: true });
  }
});

test("source: host (the default) and host-or-agent need the host's file; agent must not have one", () => {
  const withSecret = (settings: Record<string, unknown>) =>
    JSON.stringify(
      policyDoc({
        secrets: {
          token: {
            allowedUrlPrefixes: ["https://mods.example.com/api/"],
            fetcherStorePaths: [FETCHER],
            ...settings,
          },
        },
      }),
    );
  const host = parsePolicy(withSecret({ file: "/k.age" }), "p.json").secrets.get("token")!;
  assert.equal(host.source, "host");
  assert.equal(host.file, "/k.age");
  const agent = parsePolicy(withSecret({ source: "agent", prompt: true }), "p.json").secrets.get("token")!;
  assert.equal(agent.source, "agent");
  assert.equal(agent.file, null);
  assert.equal(agent.prompt, true);
  const either = parsePolicy(withSecret({ source: "host-or-agent", file: "/k.age" }), "p.json");
  assert.equal(either.secrets.get("token")!.source, "host-or-agent");

  for (const [settings, re] of [
    [
      { source: "agent", file: "/k.age" },
      /token"\.file: is set, but source = "agent": the host holds nothing/,
    ],
    [{}, /"token": has no file \(source = "host" needs the host's age-encrypted secret\)/],
    [{ source: "host-or-agent" }, /"token": has no file \(source = "host-or-agent"/],
    [
      { source: "user", file: "/k.age" },
      /source: must be one of "host", "agent", "host-or-agent", not "user"/,
    ],
  ] as const) {
    assert.throws(() => parsePolicy(withSecret(settings), "p.json"), isError("BUILD_POLICY", re));
  }
});

test("the hook: which source gives the value, and what the user's agent is asked for", {
  skip: fs.existsSync("/dev/shm") ? false : "needs /dev/shm (tmpfs)",
}, async () => {
  const { dir, cleanup } = tempDir();
  const shm = fs.mkdtempSync("/dev/shm/nixseal-hook-source-test-");
  try {
    const store = path.join(dir, "store");
    fs.mkdirSync(store);
    const host = await generateIdentity(false);
    fs.writeFileSync(path.join(dir, "host.txt"), `${host.identity}\n`, { mode: 0o600 });
    fs.writeFileSync(
      path.join(dir, "token.age"),
      await encrypt(Buffer.from("host-tok\n"), [parseRecipientString(host.recipient, "t")]),
    );
    const fetcher = path.join(store, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.js");
    const secret = (settings: Record<string, unknown>) => ({
      allowedUrlPrefixes: ["https://mods.example.com/api/"],
      fetcherStorePaths: [fetcher],
      ...settings,
    });
    const policyFile = path.join(dir, "policy.json");
    const doc = policyDoc({
      storeDir: store,
      runtimeDir: path.join(shm, "build"),
      identities: [{ type: "age", path: path.join(dir, "host.txt") }],
      secrets: {
        either: secret({ source: "host-or-agent", file: path.join(dir, "token.age") }),
        eitherPrompt: secret({ source: "host-or-agent", file: path.join(dir, "token.age"), prompt: true }),
        eitherMissing: secret({ source: "host-or-agent", file: path.join(dir, "missing.age") }),
        agentOnly: secret({ source: "agent" }),
        hostPrompt: secret({ file: path.join(dir, "token.age"), prompt: true }),
      },
    });
    fs.writeFileSync(policyFile, JSON.stringify(doc), { mode: 0o644 });

    const asked: { want: string; prompt: boolean; secret: string }[] = [];
    let given = new Uint8Array(0);
    let reply: { approved: true; plaintext: Uint8Array | null } | { approved: false; reason: string };
    const askAgent = async (req: { want: string; prompt: boolean; secret: string }) => {
      asked.push({ want: req.want, prompt: req.prompt, secret: req.secret });
      // A fresh buffer each time: the hook wipes the one it is given.
      if (!reply.approved || reply.plaintext === null) return reply;
      given = Uint8Array.from(reply.plaintext);
      return { approved: true as const, plaintext: given };
    };
    let n = 0;
    const run = async (name: string) => {
      asked.length = 0;
      const drvPath = path.join(store, `${String(n++).padStart(32, "e")}-${name.toLowerCase()}.drv`);
      fs.writeFileSync(drvPath, aterm(fod({ nixsealSecret: name }, { args: [fetcher] })));
      fs.mkdirSync(`${drvPath}.chroot`);
      const r = await preBuildHook(drvPath, `${drvPath}.chroot`, { policyFile, ppid: process.pid, askAgent });
      const d = path.join(shm, "build", path.basename(drvPath));
      const read = (f: string) =>
        fs.existsSync(path.join(d, f)) ? fs.readFileSync(path.join(d, f), "utf8") : null;
      return { secret: read("secret"), refusal: read("refusal"), log: r.log.join("\n") };
    };

    reply = { approved: true, plaintext: Buffer.from("agent-tok") };
    let r = await run("either");
    assert.equal(r.secret, "host-tok\n", "the host's file decrypts: the host's value");
    assert.deepEqual(asked, [], "and the agent is not asked");

    r = await run("eitherMissing");
    assert.equal(r.secret, "agent-tok");
    assert.deepEqual(asked, [{ want: "value", prompt: false, secret: "eitherMissing" }]);
    assert.match(r.log, /the host's file is not usable \(.*missing\.age.*\); asking the agent/);
    assert.match(r.log, /from the requesting user's agent\)/);

    r = await run("agentOnly");
    assert.equal(r.secret, "agent-tok");
    assert.deepEqual(asked, [{ want: "value", prompt: false, secret: "agentOnly" }]);
    assert.ok(given.length === 9 && given.every((b) => b === 0), "the hook wiped the agent's value");

    // An approval is not a value.
    reply = { approved: true, plaintext: null };
    r = await run("agentOnly");
    assert.equal(r.secret, null);
    assert.match(r.refusal!, /supplied by the requesting user's nixseal agent, but it supplied no value/);

    r = await run("eitherPrompt");
    assert.equal(r.secret, "host-tok\n");
    assert.deepEqual(asked, [{ want: "approval", prompt: true, secret: "eitherPrompt" }]);

    reply = { approved: false, reason: "the user declined (declined at the terminal)" };
    r = await run("hostPrompt");
    assert.equal(r.secret, null);
    assert.deepEqual(asked, [{ want: "approval", prompt: true, secret: "hostPrompt" }]);
    assert.match(r.refusal!, /needs approval from a nixseal agent, but the user declined/);
    r = await run("agentOnly");
    assert.equal(r.secret, null);
    assert.match(r.refusal!, /supplied by the requesting user's nixseal agent, but the user declined/);
    assert.ok(!r.log.includes("tok"), "no value in the log");
  } finally {
    cleanup();
    fs.rmSync(shm, { recursive: true, force: true });
  }
});

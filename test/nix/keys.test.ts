/**
 * Deploy-time keys on the Nix side (nix/modules/nixos/keys.nix, nix/modules/nixops-keys-compat.nix,
 * nix/modules/colmena-keys-compat.nix), evaluated by the real Nix with nixpkgs's lib
 * (NIXPKGS_LIB) on the NixOS stub: the plan `nixseal push` reads (docs/push.md), the key units,
 * the `keys` group, the checks, and the NixOps/colmena options mapped onto the same plan.
 *
 * Expected plans are written here by hand from docs/push.md's schema and the options given.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { encrypt, X25519Identity } from "../../src/age/index.js";
import { REPO, tempDir, which } from "../helpers.js";
import { NIX, NIXPKGS_LIB, nixEval } from "./eval.js";

const missing = !NIXPKGS_LIB
  ? "needs NIXPKGS_LIB (a checkout of nixpkgs's lib, e.g. nix-community/nixpkgs.lib)"
  : !NIX
    ? "needs nix-instantiate (Debian nix-bin)"
    : false;

const NIXOPS = path.join(REPO, "nix", "modules", "nixops-keys-compat.nix");
const COLMENA = path.join(REPO, "nix", "modules", "colmena-keys-compat.nix");
const SYSTEMD_ANALYZE = which("systemd-analyze");
const STORE_FILE = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-/;

let dir: string;
let cleanup: () => void;
let counter = 0;
const PLAINTEXT = `plaintext-marker-${Math.random().toString(36).slice(2)}`;

before(async () => {
  ({ dir, cleanup } = tempDir("nixseal-keys-nix-"));
  const recipient = X25519Identity.generate().recipient();
  const ciphertext = await encrypt(new TextEncoder().encode(PLAINTEXT), [recipient]);
  fs.writeFileSync(path.join(dir, "db.age"), ciphertext);
  fs.writeFileSync(path.join(dir, "app.yaml"), ciphertext);
  fs.writeFileSync(path.join(dir, "plain-key"), PLAINTEXT);
});
after(() => cleanup?.());

function module(text: string): string {
  const file = path.join(dir, `module-${++counter}.nix`);
  fs.writeFileSync(file, text);
  return file;
}

function nixos(m: string, attr: string): unknown {
  const r = nixEval("eval-nixos.nix", [m], attr);
  if (!r.ok) assert.fail(`evaluating ${attr} failed:\n${r.stderr}`);
  return r.value;
}

function evalFails(m: string, attr: string): string {
  const r = nixEval("eval-nixos.nix", [m], attr);
  assert.equal(r.ok, false, `${attr} evaluated, but should have been refused`);
  return (r as { stderr: string }).stderr;
}

type Json = Record<string, unknown>;
type Plan = { version: number; hosts: Record<string, Json & { keys: Record<string, Json> }> };

const plan = (m: string) => nixos(m, "pushPlan") as Plan;
const failed = (m: string) => nixos(m, "failedAssertions") as string[];

/** A key's entry as docs/push.md gives its defaults, with `over` replacing some. */
function keyEntry(key: string, over: Json): Json {
  return {
    name: key,
    destDir: "/run/keys",
    owner: "root",
    group: "keys",
    mode: "0440",
    restartUnits: [],
    reloadUnits: [],
    keyUnit: `nixseal-key-${key}.service`,
    uploadAt: "pre-activation",
    persist: false,
    ...over,
  };
}

describe("nixseal.keys: the push plan", { skip: missing }, () => {
  test("each key's source, file name, place, owner, mode, units and upload time; the host's address", () => {
    const m = module(`{ ... }: {
      networking.hostName = "web1";
      users.users.postgres.group = "postgres";
      users.groups.postgres = { };
      nixseal.keys.db = {
        source.file = ./db.age;
        owner = "postgres";
        mode = "0400";
        restartUnits = [ "postgresql.service" ];
      };
      nixseal.keys.api = {
        source = { file = ./app.yaml; key = "api/token"; };
        name = "api.token";
        destDir = "/run/app-keys";
        reloadUnits = [ "nginx.service" ];
        uploadAt = "post-activation";
        persist = "credential";
      };
      nixseal.keys.vault.source.command = [ "vault" "read" "-field=password" "secret/db" ];
      nixseal.keys.smtp = { source.pass = "hosts/web1/smtp"; group = "0"; owner = "1000"; };
      nixseal.keys.abs.source.file = "/home/me/secrets/abs.age";
    }`);
    const p = plan(m);
    const keys = p.hosts.web1!.keys;
    // The encrypted files go to the store as they are (and nothing else of them).
    for (const [key, original] of [
      ["db", "db.age"],
      ["api", "app.yaml"],
    ] as const) {
      const file = (keys[key]!.source as Json).file as string;
      assert.match(file, STORE_FILE);
      assert.deepEqual(fs.readFileSync(file), fs.readFileSync(path.join(dir, original)));
      (keys[key]!.source as Json).file = `STORE:${original}`;
    }
    assert.deepEqual(p, {
      version: 1,
      hosts: {
        web1: {
          targetHost: "web1",
          targetUser: "root",
          nixsealCommand: "/run/current-system/sw/bin/nixseal",
          keys: {
            db: keyEntry("db", {
              source: { file: "STORE:db.age" },
              owner: "postgres",
              mode: "0400",
              restartUnits: ["postgresql.service"],
            }),
            api: keyEntry("api", {
              source: { file: "STORE:app.yaml", key: "api/token" },
              name: "api.token",
              destDir: "/run/app-keys",
              reloadUnits: ["nginx.service"],
              uploadAt: "post-activation",
              persist: "credential",
            }),
            vault: keyEntry("vault", {
              source: { command: ["vault", "read", "-field=password", "secret/db"] },
            }),
            smtp: keyEntry("smtp", { source: { pass: "hosts/web1/smtp" }, owner: "1000", group: "0" }),
            abs: keyEntry("abs", { source: { file: "/home/me/secrets/abs.age" } }),
          },
        },
      },
    });
    assert.equal(JSON.stringify(p).includes(PLAINTEXT), false);
    assert.deepEqual(failed(m), []);
    // Services find a key at its path.
    assert.equal(nixos(m, "config.nixseal.keys.api.path"), "/run/app-keys/api.token");
  });

  test("nixseal.push: address, user, port and ssh options as given; null user and port left to ssh", () => {
    const m = module(`{ ... }: {
      networking.hostName = "db1";
      nixseal.push = {
        name = "db-primary";
        targetHost = "10.1.2.3";
        targetUser = null;
        targetPort = 2222;
        sshOptions = [ "-o" "ProxyJump=bastion" ];
        nixsealCommand = "nixseal";
      };
      nixseal.keys.k.source.pass = "k";
    }`);
    const host = plan(m).hosts;
    assert.deepEqual(Object.keys(host), ["db-primary"]);
    const { keys, ...rest } = host["db-primary"]!;
    assert.deepEqual(rest, {
      targetHost: "10.1.2.3",
      targetPort: 2222,
      sshOptions: ["-o", "ProxyJump=bastion"],
      nixsealCommand: "nixseal",
    });
    assert.deepEqual(Object.keys(keys), ["k"]);
  });

  test("no keys: the plan names no host and the system is as before (no keys group, nothing on PATH, no unit)", () => {
    const m = module(`{ ... }: { nixseal.secrets.x.file = ./db.age; }`);
    assert.deepEqual(plan(m), { version: 1, hosts: {} });
    assert.equal("keys" in (nixos(m, "groups") as Json), false);
    assert.deepEqual(nixos(m, "systemPackages"), []);
    assert.deepEqual(
      Object.keys(nixos(m, "services") as Json).filter((u) => u.startsWith("nixseal-key-")),
      [],
    );
  });

  test("push.enable without keys: the host is in the plan with no key, so a push removes the last ones", () => {
    const m = module(`{ ... }: { networking.hostName = "h"; nixseal.push.enable = true; }`);
    assert.deepEqual(plan(m), {
      version: 1,
      hosts: {
        h: {
          targetHost: "h",
          targetUser: "root",
          nixsealCommand: "/run/current-system/sw/bin/nixseal",
          keys: {},
        },
      },
    });
  });
});

/**
 * A NixOS service's options as the unit file NixOS writes from them (the few settings key units
 * use), with `aliases` as [Install] Alias= (NixOS links them instead; systemd checks both alike).
 */
function unitFile(s: Json): string {
  const lines = (section: string, entries: [string, unknown][]) => [
    `[${section}]`,
    ...entries.flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${k}=${x}`)),
  ];
  return [
    ...lines("Unit", [["Description", s.description], ...Object.entries((s.unitConfig ?? {}) as Json)]),
    ...lines("Service", Object.entries((s.serviceConfig ?? {}) as Json)),
    ...lines("Install", [
      ["WantedBy", s.wantedBy ?? []],
      ["Alias", s.aliases ?? []],
    ]),
    "",
  ].join("\n");
}

/**
 * systemd's own check of unit files: "" when it accepts them and says nothing about them (what
 * it says about other units of the machine, pulled in as dependencies, is not ours), else what
 * it says.
 */
function systemdVerify(units: Record<string, Json>): string {
  const unitDir = fs.mkdtempSync(path.join(dir, "units-"));
  const files = Object.entries(units).map(([name, s]) => {
    const file = path.join(unitDir, `${name}.service`);
    fs.writeFileSync(file, unitFile(s));
    return file;
  });
  const r = spawnSync(SYSTEMD_ANALYZE!, ["verify", "--man=no", ...files], {
    encoding: "utf8",
    timeout: 60_000,
  });
  const ours = r.stderr
    .split("\n")
    .filter(
      (line) => line.includes("nixseal-key-") || line.includes("-key.service") || line.includes(unitDir),
    );
  return r.status === 0 ? ours.join("\n") : `exit ${r.status}: ${r.stderr}`;
}

describe("nixseal.keys: on the host", { skip: missing }, () => {
  test('persist = "credential": a unit restores the sealed keys at boot, before their key units; none without such a key', () => {
    const m = module(`{ ... }: {
      nixseal.keys.db = { source.file = ./db.age; persist = "credential"; };
      nixseal.keys.api = { source.pass = "api"; persist = "credential"; destDir = "/run/app-keys"; };
      nixseal.keys.ram.source.pass = "ram";
    }`);
    assert.equal(
      (plan(m).hosts as Record<string, Json & { keys: Record<string, Json> }>).nixos!.keys.db!.persist,
      "credential",
    );
    const services = nixos(m, "services") as Record<string, Json>;
    const restore = services["nixseal-restore-keys"];
    assert.ok(restore, `no restore unit among ${Object.keys(services).join(", ")}`);
    const pkg = nixos(m, "config.nixseal.package") as string;
    assert.deepEqual(restore.serviceConfig, {
      Type: "oneshot",
      RemainAfterExit: true,
      ExecStart: `${pkg}/bin/nixseal receive --restore`,
    });
    assert.deepEqual(restore.wantedBy, ["multi-user.target"]);
    // Before the units of the persisted keys only: a RAM-only key has nothing to wait for.
    assert.deepEqual((restore.before as string[]).sort(), [
      "nixseal-key-api.service",
      "nixseal-key-db.service",
    ]);
    assert.equal(restore.restartIfChanged, false);
    assert.deepEqual(failed(m), []);

    const ramOnly = module(`{ ... }: { nixseal.keys.ram.source.pass = "ram"; }`);
    assert.equal("nixseal-restore-keys" in (nixos(ramOnly, "services") as Json), false);
  });

  test("systemd accepts the key units (and NixOps's names for them); their condition is the key's presence", {
    skip: !SYSTEMD_ANALYZE && "needs systemd-analyze",
  }, () => {
    const m = module(`{ ... }: {
      imports = [ ${NIXOPS} ];
      nixseal.keys.db.source.file = ./db.age;
      nixseal.keys.odd = { source.pass = "odd"; destDir = "/run/keys/100%n"; };
      deployment.keys."acme-credentials.secret".keyCommand = [ "true" ];
    }`);
    const services = nixos(m, "services") as Record<string, Json>;
    const keyUnits = Object.fromEntries(
      Object.entries(services).filter(([n]) => n.startsWith("nixseal-key-")),
    );
    assert.deepEqual(Object.keys(keyUnits).sort(), [
      "nixseal-key-acme-credentials.secret",
      "nixseal-key-db",
      "nixseal-key-odd",
    ]);
    // A `%` in the path is not a specifier: systemd sees the path as it is.
    assert.deepEqual(keyUnits["nixseal-key-odd"]!.unitConfig, {
      ConditionPathExists: "/run/keys/100%%n/odd",
    });
    assert.equal(systemdVerify(keyUnits), "");
    // The condition holds exactly while the key file is there (here under the test's directory).
    const keyDir = path.join(dir, "keys", "100%n");
    const withKeyHere = module(
      `{ ... }: { nixseal.keys.odd = { source.pass = "odd"; destDir = "${keyDir}"; }; }`,
    );
    const condition = (
      (nixos(withKeyHere, "services") as Record<string, Json>)["nixseal-key-odd"]!.unitConfig as Json
    ).ConditionPathExists as string;
    const holds = () =>
      spawnSync(SYSTEMD_ANALYZE!, ["condition", `ConditionPathExists=${condition}`], { timeout: 60_000 })
        .status;
    assert.equal(holds(), 1, "no key yet");
    fs.mkdirSync(keyDir, { recursive: true });
    fs.writeFileSync(path.join(keyDir, "odd"), "");
    assert.equal(holds(), 0, "the key is there");
    fs.rmSync(path.join(keyDir, "odd"));
    assert.equal(holds(), 1, "the key was removed");
    // The check can fail: a unit without its command is refused.
    const { ExecStart: _, ...withoutCommand } = keyUnits["nixseal-key-db"]!.serviceConfig as Json;
    assert.match(
      systemdVerify({ "nixseal-key-db": { ...keyUnits["nixseal-key-db"]!, serviceConfig: withoutCommand } }),
      /no ExecStart=/,
    );
  });

  test("a key unit per key, active only while the key is there; the keys group; nixseal on PATH", () => {
    const m = module(`{ ... }: {
      nixseal.keys.db.source.file = ./db.age;
      nixseal.keys.api = { source.pass = "api"; name = "api.token"; destDir = "/run/app-keys"; };
    }`);
    const services = nixos(m, "services") as Record<string, Json>;
    for (const [unit, keyPath] of [
      ["nixseal-key-db", "/run/keys/db"],
      ["nixseal-key-api", "/run/app-keys/api.token"],
    ] as const) {
      const s = services[unit]!;
      assert.deepEqual(s.serviceConfig, { Type: "oneshot", RemainAfterExit: true, ExecStart: "true" }, unit);
      assert.deepEqual(s.unitConfig, { ConditionPathExists: keyPath }, unit);
      assert.deepEqual(s.wantedBy, ["multi-user.target"], unit);
      // Not restarted by a switch (which would restart the services bound to it too).
      assert.equal(s.restartIfChanged, false, unit);
      assert.equal("aliases" in s, false, unit);
    }
    assert.ok("keys" in (nixos(m, "groups") as Json));
    const stubPackage = nixos(m, "config.nixseal.package") as string;
    assert.deepEqual(nixos(m, "systemPackages"), [stubPackage]);
  });
});

describe("nixseal.keys: bad options", { skip: missing }, () => {
  test("every problem is an assertion naming the option, and no plan is emitted", () => {
    const m = module(`{ ... }: {
      nixseal.keys."a/b".source.pass = "-x";
      nixseal.keys.c = {
        source = { file = "rel.age"; command = [ "x" ]; };
        destDir = "run/keys";
        mode = "u=r";
        owner = "nobody";
        group = "wheel";
        name = "..";
        restartUnits = [ "foo" ];
      };
      nixseal.keys.d = { source.file = "/abs/d.age"; name = "x"; destDir = "/run/k"; };
      nixseal.keys.e = { source.command = [ ]; name = "x"; destDir = "/run/k"; };
      nixseal.keys.f.source.key = "x";
      nixseal.keys.g = { source.pass = "g"; destDir = "/run/../etc"; mode = "01777"; };
      nixseal.keys.h = { source = { file = ./db.age; key = "a"; }; name = "a..b"; destDir = "/run/k/inner"; };
      nixseal.keys."i..j".source.pass = "i";
    }`);
    const expected = [
      /^nixseal\.keys\."a\/b": the name must be .*no `\/`/,
      /^nixseal\.keys\."a\/b"\.source\.pass = "-x" is not an entry of a password store/,
      /^nixseal\.keys\."a\/b"\.name = "a\/b" is not a file name/,
      /^nixseal\.keys\.c\.source: set exactly one of file, command or pass \(set: file, command\)/,
      /^nixseal\.keys\.c\.source\.file = "rel\.age" is not an absolute path; write it as a Nix path/,
      /^nixseal\.keys\.c\.name = "\.\." is not a file name/,
      /^nixseal\.keys\.c\.destDir = "run\/keys" is not a normalised absolute path/,
      /^nixseal\.keys\.c\.mode = "u=r" is not an octal mode/,
      /^nixseal\.keys\.c\.owner = "nobody" is not in users\.users/,
      /^nixseal\.keys\.c\.group = "wheel" is not in users\.groups/,
      /^nixseal\.keys\.c\.restartUnits: "foo" is not a unit name/,
      /^nixseal\.keys\.e\.source\.command is empty/,
      /^nixseal\.keys\.f\.source: set exactly one of file, command or pass \(none is set\)/,
      /^nixseal\.keys\.f\.source\.key is set without source\.file/,
      /^nixseal\.keys\.g\.destDir = "\/run\/\.\.\/etc" is not a normalised absolute path/,
      /^nixseal\.keys\.g\.mode = "01777" is not an octal mode/,
      /^nixseal\.keys: d, e share the path \/run\/k\/x/,
      /^nixseal\.keys\.h\.source\.key is set, but "db\.age" is an age file/,
      /^nixseal\.keys\.h\.name = "a\.\.b" is not a file name/,
      /^nixseal\.keys\."i\.\.j": the name must be/,
      /^nixseal\.keys\."i\.\.j"\.name = "i\.\.j" is not a file name/,
      /^nixseal\.keys: destDir \/run\/k\/inner is inside destDir \/run\/k;/,
    ];
    const messages = failed(m);
    for (const re of expected) {
      assert.equal(messages.filter((msg) => re.test(msg)).length, 1, `${re}\n${messages.join("\n")}`);
    }
    assert.equal(messages.length, expected.length, messages.join("\n"));
    // `nix eval` of the plan skips assertions: the plan itself is refused, with every problem.
    const stderr = evalFails(m, "pushPlan");
    assert.match(stderr, /refusing to emit the push plan/);
    assert.match(stderr, /nixseal\.keys\.c\.mode = "u=r"/);
    assert.match(stderr, /nixseal\.keys: d, e share the path/);
  });

  test("no address: an empty host name must be replaced by nixseal.push.targetHost; an option-like address is refused", () => {
    const empty = module(`{ ... }: { networking.hostName = ""; nixseal.keys.k.source.pass = "k"; }`);
    assert.deepEqual(failed(empty), [
      "nixseal.push.name is empty (networking.hostName is not set); set the host's name in the plan.",
      "nixseal.push.targetHost is not set (networking.hostName is empty); set the address `nixseal push` connects to.",
    ]);
    const dash = module(`{ ... }: {
      nixseal.push = {
        targetHost = "-oProxyCommand=x";
        targetUser = "-l";
        name = "../x";
        nixsealCommand = "nixseal; rm -rf /";
        sshOptions = [ "-o" "A=b\\nc" ];
      };
      nixseal.keys.k.source.pass = "k";
    }`);
    const messages = failed(dash);
    assert.equal(messages.length, 5, messages.join("\n"));
    assert.match(
      messages[0]!,
      /^nixseal\.push\.targetHost = "-oProxyCommand=x" is not a host name or address/,
    );
    assert.match(messages[1]!, /^nixseal\.push\.targetUser = "-l" is not a user name/);
    assert.match(messages[2]!, /^nixseal\.push\.name = "\.\.\/x" is not a name for the plan/);
    assert.match(
      messages[3]!,
      /^nixseal\.push\.nixsealCommand = "nixseal; rm -rf \/" is not a program name or path/,
    );
    assert.match(messages[4]!, /^nixseal\.push\.sshOptions: "A=b\\nc" contains a newline/);
  });

  test("addresses ssh takes: names, IPv4, IPv6 (a zone in brackets); not host:port", () => {
    const hosts = ["web1.example.org", "10.0.0.5", "[fe80::1%eth0]", "2001:db8::1", "::1"];
    const planned = hosts.map(
      (h) =>
        plan(module(`{ ... }: { nixseal.push.targetHost = "${h}"; nixseal.keys.k.source.pass = "k"; }`)).hosts
          .nixos!.targetHost,
    );
    assert.deepEqual(planned, hosts);
    assert.match(
      failed(
        module(`{ ... }: { nixseal.push.targetHost = "web1:22"; nixseal.keys.k.source.pass = "k"; }`),
      )[0]!,
      /^nixseal\.push\.targetHost = "web1:22" is not a host name or address/,
    );
  });
});

/** One host written for NixOps/colmena and the same host written with nixseal.keys. */
const USERS = `
  users.users.acme.group = "acme";
  users.groups.acme = { };
  users.groups.nginx = { };
`;
const deployment = (keyFile: string) => `
  deployment.targetHost = "10.0.0.5";
  deployment.targetPort = 2222;
  deployment.keys."acme-credentials.secret" = {
    keyCommand = [ "vault" "read" "-field=env" "secret/dns01" ];
    user = "acme";
    group = "nginx";
    permissions = "0640";
    uploadAt = "post-activation";
  };
  deployment.keys.tls = { keyFile = "${keyFile}"; destDir = "/var/keys"; name = "tls.key"; };
`;
function nativeEquivalent(keyFile: string): string {
  return `
  nixseal.push = { targetHost = "10.0.0.5"; targetPort = 2222; };
  nixseal.keys."acme-credentials.secret" = {
    source.command = [ "vault" "read" "-field=env" "secret/dns01" ];
    owner = "acme";
    group = "nginx";
    mode = "0640";
    uploadAt = "post-activation";
  };
  nixseal.keys.tls = {
    source.command = [ "cat" "${keyFile}" ];
    destDir = "/var/keys";
    name = "tls.key";
    group = "root";
    mode = "0600";
  };
`;
}

describe("NixOps/colmena deployment.keys (nixops-keys-compat)", { skip: missing }, () => {
  test("a NixOps-style host gives the plan of the same host written with nixseal.keys", () => {
    const old = module(
      `{ ... }: { imports = [ ${NIXOPS} ]; ${USERS} ${deployment(path.join(dir, "plain-key"))} }`,
    );
    const native = module(`{ ... }: { ${USERS} ${nativeEquivalent(path.join(dir, "plain-key"))} }`);
    const p = plan(old);
    assert.deepEqual(p, plan(native));
    // NixOps's defaults, not nixseal's: root:root 0600.
    assert.equal(p.hosts.nixos!.keys.tls!.group, "root");
    assert.equal(p.hosts.nixos!.keys.tls!.mode, "0600");
    assert.deepEqual(failed(old), []);
    assert.deepEqual(nixos(old, "warnings"), []);
  });

  test("NixOps's unit names: <name>-key.service is another name of each key unit", () => {
    const m = module(`{ ... }: {
      imports = [ ${NIXOPS} ];
      deployment.keys."acme-credentials.secret".keyCommand = [ "true" ];
      deployment.keys.db.keyCommand = [ "true" ];
    }`);
    const services = nixos(m, "services") as Record<string, Json>;
    assert.deepEqual(services["nixseal-key-acme-credentials.secret"]!.aliases, [
      "acme-credentials.secret-key.service",
    ]);
    assert.deepEqual(services["nixseal-key-db"]!.aliases, ["db-key.service"]);
  });

  test("keyFile as a Nix path is read where it is, never copied to the store", () => {
    const m = module(`{ ... }: { imports = [ ${NIXOPS} ]; deployment.keys.k.keyFile = ./plain-key; }`);
    assert.deepEqual(plan(m).hosts.nixos!.keys.k!.source, {
      command: ["cat", path.join(dir, "plain-key")],
    });
    assert.deepEqual(nixos(m, "warnings"), []);
  });

  test("a keyFile in the store (a flake's own file) works, with a warning that the key is world-readable there", () => {
    const m = module(`{ ... }: {
      imports = [ ${NIXOPS} ];
      deployment.keys.k.keyFile = "\${builtins.toFile "flake-key" "not-a-real-key"}";
    }`);
    const source = plan(m).hosts.nixos!.keys.k!.source as { command: string[] };
    assert.equal(source.command[0], "cat");
    assert.match(source.command[1]!, STORE_FILE);
    const warnings = nixos(m, "warnings") as string[];
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(
      warnings[0]!,
      /^deployment\.keys\.k\.keyFile is in the Nix store \(\/nix\/store\/.*-flake-key: a flake's files are copied there\), where the plaintext key is world-readable; .*nixseal encrypt secrets\/k\.age/,
    );
  });

  test("text works, with a warning naming the command that encrypts it; the plan names a file, not the key", () => {
    const m = module(`{ ... }: { imports = [ ${NIXOPS} ]; deployment.keys.db-pass.text = "${PLAINTEXT}"; }`);
    const p = plan(m);
    const source = p.hosts.nixos!.keys["db-pass"]!.source as { command: string[] };
    assert.equal(source.command.length, 2);
    assert.equal(source.command[0], "cat");
    assert.match(source.command[1]!, STORE_FILE);
    assert.equal(fs.readFileSync(source.command[1]!, "utf8"), PLAINTEXT);
    assert.equal(JSON.stringify(p).includes(PLAINTEXT), false);
    const warnings = nixos(m, "warnings") as string[];
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]!,
      /^deployment\.keys\.db-pass\.text puts the key in plaintext in the configuration and the world-readable Nix store; .*nixseal encrypt secrets\/db-pass\.age/,
    );
    assert.equal(warnings[0]!.includes(PLAINTEXT), false);
  });

  test("a key with no source or two: an assertion, and no plan", () => {
    const m = module(`{ ... }: {
      imports = [ ${NIXOPS} ];
      deployment.keys.none.user = "root";
      deployment.keys.two = { text = "x"; keyCommand = [ "true" ]; };
      deployment.keys.rel.keyFile = "relative/key";
    }`);
    assert.deepEqual(failed(m), [
      "deployment.keys.none: set exactly one of text, keyFile or keyCommand (none is set).",
      "deployment.keys.two: set exactly one of text, keyFile or keyCommand (set: text, keyCommand).",
      'deployment.keys.rel.keyFile = "relative/key" is not an absolute path; use a Nix path (./key, without quotes) or an absolute path on the deployer.',
    ]);
    assert.match(evalFails(m, "pushPlan"), /deployment\.keys\.none: set exactly one/);
  });
});

describe("inside a colmena hive (colmena-keys-compat)", { skip: missing }, () => {
  // colmena's own declarations of deployment.* (as its manual lists them), written here by hand:
  // the module must use them, not declare them again.
  const COLMENA_OPTIONS = `{ lib, ... }: with lib; {
    options.deployment = {
      targetHost = mkOption { type = types.nullOr types.str; default = "web-node"; };
      targetPort = mkOption { type = types.nullOr types.int; default = null; };
      targetUser = mkOption { type = types.nullOr types.str; default = "root"; };
      keys = mkOption {
        default = { };
        type = types.attrsOf (types.submodule ({ name, config, ... }: {
          options = {
            name = mkOption { type = types.str; default = name; };
            text = mkOption { type = types.nullOr types.str; default = null; };
            keyFile = mkOption { type = types.nullOr (types.either types.str types.path); default = null; apply = v: if v == null then null else toString v; };
            keyCommand = mkOption { type = types.nullOr (types.listOf types.str); default = null; };
            destDir = mkOption { type = types.path; default = "/run/keys"; };
            path = mkOption { type = types.path; readOnly = true; default = "\${config.destDir}/\${config.name}"; };
            user = mkOption { type = types.str; default = "root"; };
            group = mkOption { type = types.str; default = "root"; };
            permissions = mkOption { type = types.str; default = "0600"; };
            uploadAt = mkOption { type = types.enum [ "pre-activation" "post-activation" ]; default = "pre-activation"; };
          };
        }));
      };
    };
  }`;

  test("colmena's own options map onto the same plan; colmena's key units are left to colmena", () => {
    const options = module(COLMENA_OPTIONS);
    const hive = module(
      `{ ... }: { imports = [ ${options} ${COLMENA} ]; ${USERS} ${deployment(path.join(dir, "plain-key"))} }`,
    );
    const native = module(`{ ... }: { ${USERS} ${nativeEquivalent(path.join(dir, "plain-key"))} }`);
    assert.deepEqual(plan(hive), plan(native));
    assert.deepEqual(failed(hive), []);
    const services = nixos(hive, "services") as Record<string, Json>;
    assert.equal("aliases" in services["nixseal-key-tls"]!, false);
  });

  test("colmena's default targetHost (the node's name) is the address", () => {
    const options = module(COLMENA_OPTIONS);
    const hive = module(
      `{ ... }: { imports = [ ${options} ${COLMENA} ]; deployment.keys.k.keyCommand = [ "true" ]; }`,
    );
    assert.equal(plan(hive).hosts.nixos!.targetHost, "web-node");
  });
});

describe("flake.nix: nixosModules.nixops-keys-compat", { skip: missing }, () => {
  test("imports with the other modules; a host with keys only needs no identity; it gets the flake's package on PATH for `nixseal receive`", () => {
    const m = module(`{ ... }: {
      networking.hostName = "web1";
      deployment.keys.k.keyCommand = [ "true" ];
    }`);
    const flake = (attr: string) => {
      const r = nixEval("eval-flake.nix", [m], attr);
      if (!r.ok) assert.fail(`evaluating ${attr} failed:\n${r.stderr}`);
      return r.value;
    };
    assert.deepEqual(flake("failedAssertions"), []);
    assert.deepEqual(flake("systemPackages"), [flake("fakePackage")]);
    // With nixpkgs, the key unit's command is coreutils' true.
    const unit = (flake("services") as Record<string, Json>)["nixseal-key-k"]!;
    assert.equal((unit.serviceConfig as Json).ExecStart, "/fake-coreutils/bin/true");
    assert.deepEqual(unit.aliases, ["k-key.service"]);
    const p = flake("pushPlan") as Plan;
    assert.deepEqual(Object.keys(p.hosts), ["web1"]);
    assert.deepEqual(
      p.hosts.web1!.keys.k,
      keyEntry("k", { source: { command: ["true"] }, group: "root", mode: "0600" }),
    );
  });
});

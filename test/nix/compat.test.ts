/**
 * The compat modules behave as the tools they replace (sops-nix, agenix): what a host sees after
 * importing nix/modules/sops-compat.nix or nix/modules/agenix-compat.nix in place of the old
 * module. Evaluated by the real Nix with nixpkgs's lib (NIXPKGS_LIB); the manifests they write
 * are then installed by the real `nixseal install` as root in a private mount namespace
 * (test/install/ns-driver.ts), with /run moved into a temp directory.
 *
 * The expected behaviour is the old tools' (sops-nix's modules/sops and sops-install-secrets,
 * agenix's modules/age.nix), written here by hand.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { encrypt, X25519Identity } from "../../src/age/index.js";
import { REPO, tempDir } from "../helpers.js";
import {
  addUser,
  type Host,
  installOk,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  removeUsers,
  runPlan,
  type TestUser,
} from "../install/fixture.js";
import type { StepResult } from "../install/ns-driver.js";
import { NIX, NIXPKGS_LIB, nixEval } from "./eval.js";

const missing = !NIXPKGS_LIB ? "needs NIXPKGS_LIB" : !NIX ? "needs nix-instantiate" : false;
const INSTALLER = fs.existsSync(path.join(REPO, "dist", "src", "cli", "install.js"));
const noInstall = missing || installTestsSkipReason() || (!INSTALLER && "needs dist/src/cli/install.js");

const SOPS = path.join(REPO, "nix", "modules", "sops-compat.nix");
const AGENIX = path.join(REPO, "nix", "modules", "agenix-compat.nix");
const FIXTURE = path.join(REPO, "test", "fixtures", "sops", "sops-nix");

let dir: string;
let cleanup: () => void;
let counter = 0;

const AGE_ID = X25519Identity.generate();

before(async () => {
  ({ dir, cleanup } = tempDir("nixseal-compat-"));
  fs.writeFileSync(path.join(dir, "age-identity.txt"), `${AGE_ID.encode()}\n`, { mode: 0o600 });
  for (const [name, text] of [
    ["pw.age", "$y$j9T$hash-of-alice"],
    ["api.age", "api-token-value"],
  ] as const) {
    fs.writeFileSync(
      path.join(dir, name),
      await encrypt(new TextEncoder().encode(text), [AGE_ID.recipient()]),
    );
  }
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(path.join(FIXTURE, "secrets.yaml"), path.join(dir, "secrets.yaml"));
  fs.copyFileSync(path.join(FIXTURE, "age-keys.txt"), path.join(dir, "age-keys.txt"));
  fs.chmodSync(path.join(dir, "age-keys.txt"), 0o600);
});
after(() => cleanup?.());

type Json = Record<string, unknown>;
type Manifest = Json & { secrets: Json[]; templates: Json[] };

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

function manifestOf(m: string, attr = "manifest"): Manifest {
  return JSON.parse(fs.readFileSync(nixos(m, attr) as string, "utf8")) as Manifest;
}

const byName = (entries: Json[], name: string) => entries.find((e) => e.name === name);

/** The manifest with every /run/ path moved under the host's temp dir; written beside it. */
function localManifest(host: Host, m: Manifest, label: string): string {
  const file = path.join(host.dir, `${label}.json`);
  fs.writeFileSync(
    file,
    JSON.stringify(m).replaceAll('"/run/', `"${host.dir}/run/`).replaceAll('"/etc/', `"${host.dir}/etc/`),
  );
  return file;
}

function step(results: StepResult[], i: number, op: StepResult["op"]) {
  const r = results[i]!;
  assert.equal(r.op, op);
  return r;
}

describe("sops-nix compatibility: the layout of /run/secrets", { skip: missing }, () => {
  test("/run/secrets and /run/secrets-for-users are the stable links; no per-name symlink at the default path", () => {
    const m = module(`{ config, ... }: {
      imports = [ ${SOPS} ];
      sops.defaultSopsFile = ./secrets.yaml;
      sops.age.keyFile = "/k";
      sops.secrets.test_key = { };
      sops.secrets.other = { key = "nested/test/file"; path = "/etc/other"; };
      sops.secrets.pw = { key = "test_key"; neededForUsers = true; };
      sops.templates."a.conf".content = "x=\${config.sops.placeholder.test_key}";
      sops.templates."b.conf" = { content = "y"; path = "/etc/b.conf"; };
    }`);
    const sys = manifestOf(m);
    assert.equal(sys.secretsDir, "/run/secrets");
    assert.equal(sys.generationsDir, "/run/secrets.d");
    assert.equal(byName(sys.secrets, "test_key")!.path, null);
    // A path elsewhere: a symlink to /run/secrets/<name>, as sops-nix makes.
    assert.equal(byName(sys.secrets, "other")!.path, "/etc/other");
    // Templates: /run/secrets/rendered/<name> is the file; a path elsewhere links to it.
    assert.equal(byName(sys.templates, "rendered/a.conf")!.path, null);
    assert.equal(byName(sys.templates, "rendered/b.conf")!.path, "/etc/b.conf");
    const users = manifestOf(m, "usersManifest");
    assert.equal(users.secretsDir, "/run/secrets-for-users");
    assert.equal(users.generationsDir, "/run/secrets-for-users.d");
    assert.equal(byName(users.secrets, "pw")!.path, null);
  });
});

describe("sops-nix compatibility: options", { skip: missing }, () => {
  test('keepGenerations = 0 keeps every generation, as in sops-nix ("all"); other counts pass as they are', () => {
    const keep = (n: number) =>
      manifestOf(
        module(`{ ... }: {
          imports = [ ${SOPS} ];
          sops.age.keyFile = "/k";
          sops.keepGenerations = ${n};
          sops.secrets.a.sopsFile = ./secrets.yaml;
        }`),
      ).keepGenerations;
    assert.equal(keep(0), "all");
    assert.equal(keep(3), 3);
  });

  for (const [option, unit] of [
    ["systemd.sysusers.enable", "systemd-sysusers.service"],
    ["services.userborn.enable", "userborn.service"],
  ] as const) {
    test(`${option}: the users stage is sops-install-secrets-for-users.service, and the host's preStart is part of it`, () => {
      const m = module(`{ ... }: {
        imports = [ ${SOPS} ];
        ${option} = true;
        sops.age.keyFile = "/k";
        sops.secrets.pw = { sopsFile = ./secrets.yaml; key = "test_key"; neededForUsers = true; };
        systemd.services.sops-install-secrets-for-users.preStart = "cp /boot/key /k";
      }`);
      const services = nixos(m, "services") as Record<string, Json & { serviceConfig: Json }>;
      assert.equal(services["nixseal-install-for-users"], undefined);
      const svc = services["sops-install-secrets-for-users"]!;
      assert.equal(svc.preStart, "cp /boot/key /k");
      assert.deepEqual(svc.before, [unit]);
      assert.deepEqual(svc.requiredBy, [unit]);
      assert.match(
        svc.serviceConfig.ExecStart as string,
        /\/bin\/nixseal install --manifest \/nix\/store\/\S+-nixseal-manifest-for-users\.json$/,
      );
      assert.deepEqual(nixos(m, "failedAssertions"), []);
    });
  }
});

describe("both compat modules", { skip: missing }, () => {
  test("replaceExisting in both compat modules' manifests, changeDetection files in sops-compat's; absent natively", () => {
    const sops = module(`{ ... }: {
      imports = [ ${SOPS} ];
      sops.age.keyFile = "/k";
      sops.secrets.a = { sopsFile = ./secrets.yaml; key = "test_key"; };
      sops.secrets.b = { sopsFile = ./secrets.yaml; key = "test_key"; neededForUsers = true; };
    }`);
    assert.equal(manifestOf(sops).replaceExisting, true);
    assert.equal(manifestOf(sops).changeDetection, "files");
    assert.equal(manifestOf(sops, "usersManifest").replaceExisting, true);
    const agenix = agenixHost("hashedPasswordFile");
    assert.equal(manifestOf(agenix).replaceExisting, true);
    assert.equal(manifestOf(agenix, "usersManifest").replaceExisting, true);
    const native = module(`{ ... }: { nixseal.ageKeyFile = "/k"; nixseal.secrets.a.file = ./pw.age; }`);
    assert.equal(manifestOf(native).replaceExisting, undefined);
    assert.equal(manifestOf(native).changeDetection, undefined);
    assert.equal(manifestOf(agenix).changeDetection, undefined, "agenix restarts nothing: no units to find");
  });
});

describe("sops-nix compatibility, installed by the real `nixseal install`", { skip: noInstall }, () => {
  let host: Host;
  let user: TestUser;
  before(() => {
    host = makeHost();
    user = addUser("sops");
  });
  after(() => {
    removeUsers([user]);
    host.cleanup();
  });

  test("/run/secrets/<name> is the file: stat shows its owner and mode, O_NOFOLLOW opens it; templates in both places", () => {
    const m = module(`{ config, ... }: {
      imports = [ ${SOPS} ];
      users.users.${user.user}.group = "${user.group}";
      users.groups.${user.group} = { };
      sops.defaultSopsFile = ./secrets.yaml;
      sops.age.keyFile = "${path.join(dir, "age-keys.txt")}";
      sops.secrets.test_key = { owner = "${user.user}"; mode = "0440"; };
      sops.templates."app.conf" = { content = "v=\${config.sops.placeholder.test_key}"; path = "/etc/app.conf"; };
    }`);
    const file = localManifest(host, manifestOf(m), "sops-layout");
    const run = `${host.dir}/run`;
    const results = runPlan(host, [
      { op: "install", args: ["--json", "--manifest", file] },
      { op: "stat", path: `${run}/secrets/test_key` },
      { op: "stat", path: `${run}/secrets` },
      { op: "stat", path: `${run}/secrets/rendered/app.conf` },
      { op: "stat", path: `${host.dir}/etc/app.conf` },
    ]);
    installOk(results[0]);
    assert.deepEqual(jsonOf(results[0]).problems, []);
    const secret = step(results, 1, "stat") as Extract<StepResult, { op: "stat" }>;
    assert.equal(secret.lstatType, "file");
    assert.deepEqual(secret.stat, { mode: 0o440, uid: user.uid, gid: user.gid });
    assert.equal(secret.noFollowOpen, true);
    assert.equal(secret.content, "test_value");
    const top = step(results, 2, "stat") as Extract<StepResult, { op: "stat" }>;
    assert.equal(top.lstatType, "symlink");
    const rendered = step(results, 3, "stat") as Extract<StepResult, { op: "stat" }>;
    assert.equal(rendered.lstatType, "file");
    assert.equal(rendered.content, "v=test_value");
    const linked = step(results, 4, "stat") as Extract<StepResult, { op: "stat" }>;
    assert.equal(linked.lstatType, "symlink");
    assert.equal(linked.content, "v=test_value");
  });
});

/** An agenix host: alice's password file is an agenix secret, beside an ordinary one. */
function agenixHost(passwordOption: string): string {
  return module(`{ config, ... }: {
    imports = [ ${AGENIX} ];
    age.identityPaths = [ "${path.join(dir, "age-identity.txt")}" ];
    age.secrets.pw.file = ./pw.age;
    age.secrets.api.file = ./api.age;
    users.users.alice = { group = "users"; ${passwordOption} = config.age.secrets.pw.path; };
    users.groups.users = { };
  }`);
}

describe("agenix compatibility: modes", { skip: missing }, () => {
  test("a symbolic mode fails an assertion naming age.secrets.<name>.mode and saying to use octal", () => {
    const m = module(`{ ... }: {
      imports = [ ${AGENIX} ];
      age.identityPaths = [ "${path.join(dir, "age-identity.txt")}" ];
      age.secrets.api = { file = ./api.age; mode = "u=r"; };
      age.secrets.pw = { file = ./pw.age; mode = "0440"; };
    }`);
    const failed = nixos(m, "failedAssertions") as string[];
    assert.equal(failed.length, 1, JSON.stringify(failed));
    assert.match(failed[0]!, /^age\.secrets\.api\.mode = "u=r": use an octal mode such as "0400"/);
    assert.doesNotMatch(failed[0]!, /nixseal\.secrets/);
  });
});

describe("agenix compatibility: password files arrive before users are created", { skip: missing }, () => {
  for (const option of ["hashedPasswordFile", "passwordFile"]) {
    test(`a secret that is a user's ${option} is in the users stage's manifest`, () => {
      const m = agenixHost(option);
      assert.deepEqual(nixos(m, "failedAssertions"), []);
      const users = manifestOf(m, "usersManifest");
      assert.deepEqual(
        users.secrets.map((e) => [e.name, e.path, e.owner]),
        [["pw", "/run/agenix/pw", "0"]],
      );
      assert.deepEqual(
        manifestOf(m).secrets.map((e) => e.name),
        ["api"],
      );
    });
  }
});

describe("agenix compatibility, installed by the real `nixseal install`", { skip: noInstall }, () => {
  let host: Host;
  before(() => {
    host = makeHost();
  });
  after(() => host.cleanup());

  test("the users stage installs the password file; the system stage, after users exist, the rest", () => {
    const m = agenixHost("hashedPasswordFile");
    const usersFile = localManifest(host, manifestOf(m, "usersManifest"), "agenix-users");
    const systemFile = localManifest(host, manifestOf(m), "agenix-system");
    const agenix = `${host.dir}/run/agenix`;
    const results = runPlan(host, [
      { op: "install", args: ["--json", "--manifest", usersFile] },
      { op: "stat", path: `${agenix}/pw` },
      { op: "stat", path: `${agenix}/api` },
      { op: "install", args: ["--json", "--manifest", systemFile] },
      { op: "stat", path: `${agenix}/api` },
      { op: "stat", path: `${agenix}/pw` },
    ]);
    installOk(results[0]);
    // What NixOS's users script reads, before any user exists: the hash is there.
    const pw = step(results, 1, "stat") as Extract<StepResult, { op: "stat" }>;
    assert.equal(pw.content, "$y$j9T$hash-of-alice");
    assert.deepEqual(pw.stat, { mode: 0o400, uid: 0, gid: 0 });
    assert.equal((step(results, 2, "stat") as Extract<StepResult, { op: "stat" }>).lstatType, null);
    assert.equal(jsonOf(results[3]).ok, true, JSON.stringify(jsonOf(results[3]).problems));
    assert.equal(
      (step(results, 4, "stat") as Extract<StepResult, { op: "stat" }>).content,
      "api-token-value",
    );
    assert.equal(
      (step(results, 5, "stat") as Extract<StepResult, { op: "stat" }>).content,
      "$y$j9T$hash-of-alice",
    );
  });
});

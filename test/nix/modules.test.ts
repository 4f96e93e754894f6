/**
 * The Nix side, evaluated by the real Nix (`nix-instantiate --eval --strict --json`) with
 * nixpkgs's lib (NIXPKGS_LIB; nixpkgs itself is not needed): the NixOS module, the
 * home-manager module, the agenix and sops-nix compatibility modules and flake.nix's outputs.
 *
 * nixpkgs's NixOS and home-manager option sets are not available offline, so the modules are
 * evaluated on small stubs (test/nix/*-stub.nix) declaring the few options they set or read.
 * Expected manifests are written here by hand from docs/manifest.md and the options given.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { encrypt, X25519Identity } from "../../src/age/index.js";
import { nixseal, REPO, tempDir } from "../helpers.js";
import { NIX, NIXPKGS_LIB, nixEval } from "./eval.js";

const missing = !NIXPKGS_LIB
  ? "needs NIXPKGS_LIB (a checkout of nixpkgs's lib, e.g. nix-community/nixpkgs.lib)"
  : !NIX
    ? "needs nix-instantiate (Debian nix-bin)"
    : false;

const STORE_FILE = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-/;

let dir: string;
let cleanup: () => void;
let counter = 0;
const PLAINTEXT = `plaintext-marker-${Math.random().toString(36).slice(2)}`;

before(async () => {
  ({ dir, cleanup } = tempDir("nixseal-nix-"));
  // Real encrypted files: the evaluation must only ever copy them, never decrypt.
  const recipient = X25519Identity.generate().recipient();
  const ciphertext = await encrypt(new TextEncoder().encode(PLAINTEXT), [recipient]);
  fs.writeFileSync(path.join(dir, "db.age"), ciphertext);
  fs.writeFileSync(path.join(dir, "app.yaml"), ciphertext);
  fs.writeFileSync(path.join(dir, "hosts.json"), ciphertext);
  fs.writeFileSync(path.join(dir, "app.env"), ciphertext);
  fs.writeFileSync(path.join(dir, "app.ini"), ciphertext);
  fs.writeFileSync(path.join(dir, "blob.bin"), ciphertext);
});
after(() => cleanup?.());

/** docs/manifest.md: "<nixseal:" + sha256(name) in hex + ":placeholder>", computed here independently. */
function placeholder(name: string): string {
  return `<nixseal:${createHash("sha256").update(name).digest("hex")}:placeholder>`;
}

/** Writes a NixOS/home-manager module (Nix text) into the temp dir, beside the encrypted files. */
function module(text: string): string {
  const file = path.join(dir, `module-${++counter}.nix`);
  fs.writeFileSync(file, text);
  return file;
}

function value(evaluator: string, modules: string[], attr: string): unknown {
  const r = nixEval(evaluator, modules, attr);
  if (!r.ok) assert.fail(`evaluating ${attr} failed:\n${r.stderr}`);
  return r.value;
}

const nixos = (modules: string[], attr: string) => value("eval-nixos.nix", modules, attr);
const home = (modules: string[], attr: string) => value("eval-home-manager.nix", modules, attr);

type Json = Record<string, unknown>;
type Entry = Json & { name: string; file?: string };

/** Reads a manifest from the store; each `file` must be a store copy of the encrypted file. */
function readManifest(storePath: unknown): Json & { secrets: Entry[]; templates: Entry[] } {
  assert.equal(typeof storePath, "string");
  assert.match(storePath as string, STORE_FILE);
  const m = JSON.parse(fs.readFileSync(storePath as string, "utf8"));
  for (const s of m.secrets as Entry[]) {
    assert.match(s.file!, STORE_FILE, `${s.name}: the encrypted file is in the store`);
    const original = path.join(dir, s.file!.replace(STORE_FILE, ""));
    assert.deepEqual(fs.readFileSync(s.file!), fs.readFileSync(original), `${s.name}: an exact copy`);
    s.file = `STORE:${path.basename(original)}`;
  }
  m.secrets.sort((a: Entry, b: Entry) => a.name.localeCompare(b.name));
  m.templates.sort((a: Entry, b: Entry) => a.name.localeCompare(b.name));
  return m;
}

const failed = (modules: string[]) => nixos(modules, "failedAssertions") as string[];

/** The failed assertions include one matching each pattern. */
function assertFails(messages: string[], ...patterns: RegExp[]): void {
  for (const p of patterns) {
    assert.ok(
      messages.some((m) => p.test(m)),
      `no failed assertion matches ${p}; got:\n${messages.join("\n")}`,
    );
  }
}

const SYSTEM_LISTS = {
  restartListFile: "/run/nixos/activation-restart-list",
  reloadListFile: "/run/nixos/activation-reload-list",
  dryRestartListFile: "/run/nixos/dry-activation-restart-list",
  dryReloadListFile: "/run/nixos/dry-activation-reload-list",
};
const NO_LISTS = {
  restartListFile: null,
  reloadListFile: null,
  dryRestartListFile: null,
  dryReloadListFile: null,
};

describe("NixOS module: the manifests", { skip: missing }, () => {
  let host: string;
  before(() => {
    host = module(`{ config, ... }: {
      services.openssh.enable = true;
      users.users.postgres.group = "postgres";
      users.groups.postgres = { };
      users.users.app.group = "appgroup";
      users.groups.appgroup = { };
      systemd.services.myapp.serviceConfig.LoadCredential = [ "other:/etc/other" ];
      nixseal.ageKeyFile = "/var/lib/nixseal/key.txt";
      nixseal.keepGenerations = 3;
      nixseal.secrets."db/password" = {
        file = ./db.age;
        owner = "postgres";
        restartUnits = [ "postgresql.service" ];
      };
      nixseal.secrets.api = {
        file = ./app.yaml;
        key = "api/token";
        owner = "app";
        mode = "0440";
        path = "/etc/app/token";
        reloadUnits = [ "nginx.service" ];
        services = [ "myapp" ];
      };
      nixseal.secrets.root-password = { file = ./db.age; neededForUsers = true; };
      nixseal.templates."app.conf" = {
        content = "password=\${config.nixseal.placeholder."db/password"}\\n";
        owner = "app";
        services = [ "myapp.service" ];
      };
    }`);
  });

  test("system stage: every field as the options say", () => {
    assert.deepEqual(failed([host]), []);
    const m = readManifest(nixos([host], "manifest"));
    assert.deepEqual(m, {
      version: 1,
      stage: "system",
      secretsDir: "/run/nixseal/secrets",
      generationsDir: "/run/nixseal/generations",
      keepGenerations: 3,
      mount: "ramfs",
      // The store the encrypted files are in: an unchanged one is not read again (docs/manifest.md).
      storeDir: "/nix/store",
      ...SYSTEM_LISTS,
      restartMode: "lists",
      credstoreDir: "/var/lib/nixseal/credstore",
      // The age key file first, then the host keys (ed25519 first) from services.openssh.
      identities: [
        { type: "age", path: "/var/lib/nixseal/key.txt" },
        { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
        { type: "ssh", path: "/etc/ssh/ssh_host_rsa_key" },
      ],
      secrets: [
        {
          name: "api",
          file: "STORE:app.yaml",
          format: "yaml",
          key: "api/token",
          owner: "app",
          group: "appgroup",
          mode: "0440",
          path: "/etc/app/token",
          // A service given the secret as a credential is restarted when it changes.
          restartUnits: ["myapp.service"],
          reloadUnits: ["nginx.service"],
        },
        {
          name: "db/password",
          file: "STORE:db.age",
          format: "age",
          key: null,
          owner: "postgres",
          group: "postgres",
          mode: "0400",
          path: null,
          restartUnits: ["postgresql.service"],
          reloadUnits: [],
        },
      ],
      templates: [
        {
          name: "app.conf",
          content: `password=${placeholder("db/password")}\n`,
          owner: "app",
          group: "appgroup",
          mode: "0400",
          path: null,
          restartUnits: ["myapp.service"],
          reloadUnits: [],
        },
      ],
      placeholders: { api: placeholder("api"), "db/password": placeholder("db/password") },
    });
  });

  test("users stage: the neededForUsers secrets, root-owned, in their own directories, restarting nothing", () => {
    const m = readManifest(nixos([host], "usersManifest"));
    assert.deepEqual(m, {
      version: 1,
      stage: "users",
      secretsDir: "/run/nixseal-for-users",
      generationsDir: "/run/nixseal-for-users.d",
      keepGenerations: 3,
      mount: "ramfs",
      // The store the encrypted files are in: an unchanged one is not read again (docs/manifest.md).
      storeDir: "/nix/store",
      ...NO_LISTS,
      identities: [
        { type: "age", path: "/var/lib/nixseal/key.txt" },
        { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
        { type: "ssh", path: "/etc/ssh/ssh_host_rsa_key" },
      ],
      secrets: [
        {
          name: "root-password",
          file: "STORE:db.age",
          format: "age",
          key: null,
          owner: "root",
          group: "root",
          mode: "0400",
          path: null,
          restartUnits: [],
          reloadUnits: [],
        },
      ],
      templates: [],
      placeholders: { "root-password": placeholder("root-password") },
    });
  });

  test("config.nixseal.placeholder and installedPath", () => {
    assert.deepEqual(nixos([host], "placeholder"), {
      api: placeholder("api"),
      "db/password": placeholder("db/password"),
      "root-password": placeholder("root-password"),
    });
    const secrets = nixos([host], "secrets") as Record<string, { installedPath: string }>;
    assert.equal(secrets["db/password"]!.installedPath, "/run/nixseal/secrets/db/password");
    assert.equal(secrets.api!.installedPath, "/etc/app/token");
    assert.equal(secrets["root-password"]!.installedPath, "/run/nixseal-for-users/root-password");
  });

  test("LoadCredential: appended to the service's own, `/` in a name becomes `-`", () => {
    const withSubdir = module(`{ ... }: {
      nixseal.ageKeyFile = "/k";
      nixseal.secrets."tls/key" = { file = ./db.age; services = [ "web" "myapp" ]; };
    }`);
    const services = nixos([host, withSubdir], "services") as Record<string, Json & { serviceConfig: Json }>;
    assert.deepEqual(
      new Set(services.myapp!.serviceConfig.LoadCredential as string[]),
      new Set([
        "other:/etc/other",
        "api:/run/nixseal/secrets/api",
        "app.conf:/run/nixseal/secrets/app.conf",
        "tls-key:/run/nixseal/secrets/tls/key",
      ]),
    );
    assert.deepEqual(services.web!.serviceConfig.LoadCredential, ["tls-key:/run/nixseal/secrets/tls/key"]);
  });

  test("defaults: root:root 0400, format by extension, no path, no identity without openssh", () => {
    const m = module(`{ ... }: {
      nixseal.ageKeyFile = "/var/lib/nixseal/key.txt";
      nixseal.secrets = {
        a.file = ./db.age;
        b.file = ./app.yaml;
        c.file = ./hosts.json;
        d.file = ./app.env;
        e.file = ./app.ini;
        f = { file = ./blob.bin; format = "binary"; };
        g.file = ./blob.bin;
      };
    }`);
    const manifest = readManifest(nixos([m], "manifest"));
    assert.deepEqual(manifest.identities, [{ type: "age", path: "/var/lib/nixseal/key.txt" }]);
    assert.equal(manifest.keepGenerations, 1);
    assert.equal(manifest.mount, "ramfs");
    const formats = Object.fromEntries(manifest.secrets.map((s) => [s.name, s.format]));
    assert.deepEqual(formats, {
      a: "age",
      b: "yaml",
      c: "json",
      d: "dotenv",
      e: "ini",
      f: "binary",
      g: "age",
    });
    for (const s of manifest.secrets) {
      assert.equal(s.owner, "root");
      assert.equal(s.group, "root");
      assert.equal(s.mode, "0400");
      assert.equal(s.key, null);
      assert.equal(s.path, null);
    }
    // No users stage secrets: an empty manifest, and no activation script for it.
    const scripts = nixos([m], "activationScripts") as Record<string, unknown>;
    assert.ok(scripts.nixseal);
    assert.equal(scripts.nixsealForUsers, undefined);
  });

  test("nixseal.mount, secretsDir and generationsDir reach the manifest", () => {
    const m = module(`{ ... }: {
      nixseal.ageKeyFile = "/k";
      nixseal.mount = "tmpfs-noswap";
      nixseal.secretsDir = "/run/secrets";
      nixseal.generationsDir = "/run/secrets.d";
      nixseal.secrets.a.file = ./db.age;
    }`);
    const manifest = readManifest(nixos([m], "manifest"));
    assert.equal(manifest.mount, "tmpfs-noswap");
    assert.equal(manifest.secretsDir, "/run/secrets");
    assert.equal(manifest.generationsDir, "/run/secrets.d");
  });
});

describe("NixOS module: activation", { skip: missing }, () => {
  const both = () =>
    module(`{ ... }: {
      nixseal.ageKeyFile = "/k";
      nixseal.secrets.a.file = ./db.age;
      nixseal.secrets.pw = { file = ./db.age; neededForUsers = true; };
    }`);

  test("classic: users stage before `users`, system stage after users and groups, dry-run supported", () => {
    const m = both();
    const scripts = nixos([m], "activationScripts") as Record<
      string,
      { deps: string[]; text: string; supportsDryActivation: boolean }
    >;
    const manifest = nixos([m], "manifest") as string;
    const usersManifest = nixos([m], "usersManifest") as string;
    assert.deepEqual(scripts.nixseal!.deps, ["specialfs", "users", "groups"]);
    assert.deepEqual(scripts.nixsealForUsers!.deps, ["specialfs"]);
    assert.ok(scripts.users!.deps.includes("nixsealForUsers"));
    assert.equal(scripts.nixseal!.supportsDryActivation, true);
    assert.match(scripts.nixseal!.text, new RegExp(`/bin/nixseal install --manifest ${manifest}\\n`));
    assert.match(
      scripts.nixseal!.text,
      new RegExp(`/bin/nixseal install --dry-run --manifest ${manifest}\\n`),
    );
    assert.match(
      scripts.nixsealForUsers!.text,
      new RegExp(`/bin/nixseal install --manifest ${usersManifest}\\n`),
    );
  });

  test("the activation script runs the installer in dry mode only under NIXOS_ACTION=dry-activate", () => {
    const m = both();
    const text = (nixos([m], "activationScripts") as Record<string, { text: string }>).nixseal!.text;
    const { dir: bin, cleanup: done } = tempDir("nixseal-fake-store-");
    try {
      // Run the script with the package path replaced by a recorder of its arguments.
      const recorder = path.join(bin, "nixseal");
      fs.writeFileSync(recorder, `#!/bin/sh\necho "$@" >> ${bin}/calls\n`, { mode: 0o755 });
      const script = text.replace(/\S+\/bin\/nixseal /g, `${recorder} `);
      for (const action of ["switch", "dry-activate"]) {
        const r = spawnSync("/bin/sh", ["-c", script], { env: { NIXOS_ACTION: action }, encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
      }
      const calls = fs.readFileSync(path.join(bin, "calls"), "utf8").trim().split("\n");
      assert.equal(calls.length, 2);
      assert.match(calls[0]!, /^install --manifest \/nix\/store\//);
      assert.match(calls[1]!, /^install --dry-run --manifest \/nix\/store\//);
    } finally {
      done();
    }
  });

  for (const [option, unit] of [
    ["systemd.sysusers.enable", "systemd-sysusers.service"],
    ["services.userborn.enable", "userborn.service"],
  ] as const) {
    test(`${option}: oneshot units instead of activation scripts, the users stage before ${unit}`, () => {
      const m = both();
      const on = module(`{ ... }: { ${option} = true; }`);
      const scripts = nixos([m, on], "activationScripts") as Record<string, unknown>;
      assert.equal(scripts.nixseal, undefined);
      assert.equal(scripts.nixsealForUsers, undefined);
      const services = nixos([m, on], "services") as Record<
        string,
        Json & { serviceConfig: Json; unitConfig: Json }
      >;
      const forUsers = services["nixseal-install-for-users"]!;
      assert.deepEqual(forUsers.before, [unit]);
      assert.deepEqual(forUsers.requiredBy, [unit]);
      assert.equal(forUsers.serviceConfig.Type, "oneshot");
      assert.equal(forUsers.unitConfig.DefaultDependencies, false);
      assert.match(
        forUsers.serviceConfig.ExecStart as string,
        /\/bin\/nixseal install --manifest \/nix\/store\/\S+-nixseal-manifest-for-users\.json$/,
      );
      const system = services["nixseal-install"]!;
      assert.ok((system.after as string[]).includes(unit));
      assert.deepEqual(system.requiredBy, ["sysinit-reactivation.target"]);
      assert.match(
        system.serviceConfig.ExecStart as string,
        /\/bin\/nixseal install --manifest \/nix\/store\/\S+-nixseal-manifest\.json$/,
      );
      assert.deepEqual(failed([m, on]), []);
    });
  }
});

describe("NixOS module: assertions", { skip: missing }, () => {
  test("owners and groups must exist (names), numeric ids pass", () => {
    const m = module(`{ ... }: {
      nixseal.ageKeyFile = "/k";
      users.users.known.group = "known";
      users.groups.known = { };
      nixseal.secrets.a = { file = ./db.age; owner = "ghost"; };
      nixseal.secrets.b = { file = ./db.age; owner = "known"; group = "phantom"; };
      nixseal.secrets.c = { file = ./db.age; owner = "1234"; group = "5678"; };
      nixseal.secrets.d = { file = ./db.age; owner = "known"; };
    }`);
    const messages = failed([m]);
    assertFails(
      messages,
      /^nixseal\.secrets\.a\.owner = "ghost" is not in users\.users; .*numeric id/,
      /^nixseal\.secrets\.b\.group = "phantom" is not in users\.groups/,
    );
    assert.equal(messages.length, 2, messages.join("\n"));
  });

  test("neededForUsers: root only, no restarts; templates cannot use such secrets", () => {
    const m = module(`{ config, ... }: {
      nixseal.ageKeyFile = "/k";
      users.users.alice.group = "users";
      users.groups.users = { };
      nixseal.secrets.pw = { file = ./db.age; neededForUsers = true; owner = "alice"; };
      nixseal.secrets.pw2 = { file = ./db.age; neededForUsers = true; restartUnits = [ "x.service" ]; };
      nixseal.templates.t.content = "\${config.nixseal.placeholder.pw2}";
    }`);
    assertFails(
      failed([m]),
      /^nixseal\.secrets\.pw\.neededForUsers: .*must be owned by root:root.*not alice:users/,
      /^nixseal\.secrets\.pw2\.neededForUsers: .*restarts nothing/,
      /^nixseal\.templates\.t\.content uses secret\(s\) "pw2" with neededForUsers/,
    );
  });

  test("a template placeholder that names no declared secret", () => {
    // A placeholder copied from another configuration, for a secret this one lacks.
    const stray = placeholder("elsewhere");
    const m = module(`{ config, ... }: {
      nixseal.ageKeyFile = "/k";
      nixseal.secrets.known.file = ./db.age;
      nixseal.templates.t.content = "a=\${config.nixseal.placeholder.known} b=${stray}";
    }`);
    const messages = failed([m]);
    assertFails(
      messages,
      new RegExp(`^nixseal\\.templates\\.t\\.content uses a placeholder that names no secret .*${stray}`),
    );
    assert.equal(messages.length, 1, messages.join("\n"));
  });

  test("names: invalid segments, a secret and a template with one name, a name that is another's directory", () => {
    const m = module(`{ ... }: {
      nixseal.ageKeyFile = "/k";
      nixseal.secrets."../escape".file = ./db.age;
      nixseal.secrets."a//b".file = ./db.age;
      nixseal.secrets."sp ace".file = ./db.age;
      nixseal.secrets.same.file = ./db.age;
      nixseal.templates.same.content = "";
      nixseal.secrets.dir.file = ./db.age;
      nixseal.secrets."dir/file".file = ./db.age;
    }`);
    assertFails(
      failed([m]),
      /^nixseal\.secrets\."\.\.\/escape": the name must be a relative path/,
      /^nixseal\.secrets\."a\/\/b": the name must be/,
      /^nixseal\.secrets\."sp ace": the name must be/,
      /^nixseal: same is the name of both a secret and a template/,
      /^nixseal: dir is both a file and the directory of another name/,
    );
  });

  test("a key on an age file; no identity at all; two credentials with one ID", () => {
    const m = module(`{ ... }: {
      nixseal.secrets.a = { file = ./db.age; key = "x"; services = [ "svc" ]; };
      nixseal.secrets."b/c" = { file = ./db.age; services = [ "svc" ]; };
      nixseal.secrets."b-c" = { file = ./db.age; services = [ "svc.service" ]; };
    }`);
    assertFails(
      failed([m]),
      /^nixseal\.secrets\.a\.key is set, but format is "age"/,
      /^nixseal: no identity to decrypt with; enable services\.openssh/,
      /^nixseal: two secrets or templates would be the same credential of a service .*svc: b-c/,
    );
  });

  test("option types: bad modes, owners and units are refused at evaluation", () => {
    for (const [option, expected] of [
      ['mode = "4755"', /nixseal\.secrets\.a\.mode/],
      ['mode = "u=r"', /nixseal\.secrets\.a\.mode/],
      ['owner = "bad name"', /nixseal\.secrets\.a\.owner/],
      ['restartUnits = [ "no suffix" ]', /nixseal\.secrets\.a\.restartUnits/],
      ['path = "relative/path"', /nixseal\.secrets\.a\.path/],
      ['path = "/etc/../shadow"', /nixseal\.secrets\.a\.path/],
    ] as const) {
      const m = module(
        `{ ... }: { nixseal.ageKeyFile = "/k"; nixseal.secrets.a = { file = ./db.age; ${option}; }; }`,
      );
      const r = nixEval("eval-nixos.nix", [m], "manifest");
      assert.ok(!r.ok, `${option} must be refused`);
      assert.match(r.stderr, expected, option);
      assert.match(r.stderr, /is not of type/, option);
    }
  });
});

describe("NixOS module: nothing secret reaches the store", { skip: missing }, () => {
  test("identity files are never read, and a private key given as a Nix path is refused", () => {
    // FIFOs: reading one blocks until a writer comes, so an evaluation that read an identity
    // file would hang here (and the spawn would time out) instead of finishing.
    const fifo = path.join(dir, "identity-fifo");
    const keyFifo = path.join(dir, "age-key-fifo");
    spawnSync("mkfifo", [fifo, keyFifo]);
    assert.ok(fs.statSync(fifo).isFIFO());
    const m = module(`{ ... }: {
      nixseal.identityPaths = [ "${fifo}" ];
      nixseal.ageKeyFile = "${keyFifo}";
      nixseal.secrets.a.file = ./db.age;
    }`);
    const manifest = readManifest(nixos([m], "manifest"));
    assert.deepEqual(manifest.identities, [
      { type: "age", path: keyFifo },
      { type: "ssh", path: fifo },
    ]);

    // As a Nix path, interpolating it would copy the private key into the store: refused by
    // the type, before anything is copied.
    fs.writeFileSync(path.join(dir, "private-key.txt"), "AGE-SECRET-KEY-1NOTAREALKEY");
    for (const option of [
      "nixseal.ageKeyFile = ./private-key.txt",
      "nixseal.identityPaths = [ ./private-key.txt ]",
    ]) {
      const bad = module(`{ ... }: { ${option}; nixseal.secrets.a.file = ./db.age; }`);
      const r = nixEval("eval-nixos.nix", [bad], "manifest");
      assert.ok(!r.ok, option);
      assert.match(r.stderr, /not a Nix path: that would copy the file to the store/, option);
    }
    // A key already in the store is refused too.
    const inStore = module(
      `{ ... }: { nixseal.ageKeyFile = "/nix/store/00000000000000000000000000000000-key.txt"; nixseal.secrets.a.file = ./db.age; }`,
    );
    const r = nixEval("eval-nixos.nix", [inStore], "manifest");
    assert.ok(!r.ok);
    assert.match(r.stderr, /outside the Nix store/);
  });

  test("`file` as a string outside the store: an assertion, and no manifest is written", () => {
    const outside = path.join(dir, "db.age");
    const m = module(`{ ... }: { nixseal.ageKeyFile = "/k"; nixseal.secrets.a.file = "${outside}"; }`);
    assertFails(
      failed([m]),
      /^nixseal\.secrets\.a\.file is a string outside the Nix store; write it as a Nix path \(\.\/file\.age, without quotes\)/,
    );
    for (const attr of ["manifest", "activationScripts"]) {
      const r = nixEval("eval-nixos.nix", [m], attr);
      assert.ok(!r.ok, `${attr} must not evaluate`);
      assert.match(
        r.stderr,
        /refusing to write the manifest:\n\s*- nixseal\.secrets\.a\.file = ".*db\.age" is a string outside the Nix store/,
      );
    }
    // A store path given as a string is fine (a flake input, a derivation).
    const asString = module(
      `{ ... }: { nixseal.ageKeyFile = "/k"; nixseal.secrets.a.file = "\${./db.age}"; }`,
    );
    assert.deepEqual(failed([asString]), []);
    assert.equal(readManifest(nixos([asString], "manifest")).secrets[0]!.file, "STORE:db.age");
  });

  test("plaintext is nowhere; placeholders and template texts only in the manifest", () => {
    const m = module(`{ config, ... }: {
      services.openssh.enable = true;
      systemd.services.app = { };
      nixseal.secrets.token = { file = ./db.age; services = [ "app" ]; restartUnits = [ "app2.service" ]; };
      nixseal.secrets.pw = { file = ./db.age; neededForUsers = true; };
      nixseal.templates."app.conf" = {
        content = "template-text-marker token=\${config.nixseal.placeholder.token}";
        services = [ "app" ];
      };
    }`);
    assert.deepEqual(failed([m]), []);
    const manifests = [nixos([m], "manifest"), nixos([m], "usersManifest")] as string[];
    const texts = manifests.map((p) => fs.readFileSync(p, "utf8"));
    const outside = nixos([m], "outsideManifests") as string;
    // The plaintext is in no manifest, in no option value the system is built from, in no
    // encrypted file's store copy (nothing decrypts at evaluation).
    for (const t of [...texts, outside]) assert.ok(!t.includes(PLAINTEXT));
    for (const manifest of manifests) {
      for (const s of JSON.parse(fs.readFileSync(manifest, "utf8")).secrets as Entry[]) {
        assert.ok(!fs.readFileSync(s.file!).includes(PLAINTEXT));
      }
    }
    // The template's text and the placeholder are in the system manifest and nowhere else.
    assert.ok(texts[0]!.includes("template-text-marker"));
    assert.ok(texts[0]!.includes(placeholder("token")));
    assert.ok(!outside.includes("template-text-marker"));
    assert.ok(!outside.includes("placeholder>"));
    assert.ok(!texts[1]!.includes("template-text-marker"));
  });
});

describe("agenix compatibility", { skip: missing }, () => {
  test("age.secrets map onto nixseal, found at agenix's paths", () => {
    const compat = path.join(REPO, "nix", "modules", "agenix-compat.nix");
    const m = module(`{ ... }: {
      imports = [ ${compat} ];
      services.openssh.enable = true;
      users.users.nginx.group = "www";
      users.groups.www = { };
      age.secrets.token = { file = ./db.age; owner = "nginx"; mode = "0440"; };
      age.secrets.plain.file = ./db.age;
      age.secrets.renamed = { file = ./db.age; name = "other-name"; path = "/etc/app/key"; symlink = false; };
    }`);
    assert.deepEqual(failed([m]), []);
    const manifest = readManifest(nixos([m], "manifest"));
    assert.deepEqual(manifest.secrets, [
      {
        name: "other-name",
        file: "STORE:db.age",
        format: "age",
        key: null,
        owner: "0",
        group: "0",
        mode: "0400",
        path: "/etc/app/key",
        restartUnits: [],
        reloadUnits: [],
      },
      {
        name: "plain",
        file: "STORE:db.age",
        format: "age",
        key: null,
        owner: "0",
        group: "0",
        mode: "0400",
        path: "/run/agenix/plain",
        restartUnits: [],
        reloadUnits: [],
      },
      {
        name: "token",
        file: "STORE:db.age",
        format: "age",
        key: null,
        owner: "nginx",
        group: "www",
        mode: "0440",
        path: "/run/agenix/token",
        restartUnits: [],
        reloadUnits: [],
      },
    ]);
    // agenix's identityPaths default: the rsa and ed25519 host keys.
    const byPath = (a: Json, b: Json) => String(a.path).localeCompare(String(b.path));
    assert.deepEqual((manifest.identities as Json[]).sort(byPath), [
      { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
      { type: "ssh", path: "/etc/ssh/ssh_host_rsa_key" },
    ]);
    const warnings = nixos([m], "config.warnings") as string[];
    assert.ok(
      warnings.some((w) => /^age\.secrets\.renamed\.symlink = false: nixseal .* symlink/.test(w)),
      warnings.join("\n"),
    );
  });

  test("age.identityPaths: ssh keys and age identity files; age.secretsDir moves the default paths", () => {
    const compat = path.join(REPO, "nix", "modules", "agenix-compat.nix");
    const m = module(`{ ... }: {
      imports = [ ${compat} ];
      age.secretsDir = "/run/keys";
      age.identityPaths = [ "/persist/etc/ssh/ssh_host_ed25519_key" "/home/me/.ssh/id_ed25519" "/var/lib/agenix/key.txt" ];
      age.secrets.a.file = ./db.age;
    }`);
    const manifest = readManifest(nixos([m], "manifest"));
    assert.deepEqual(manifest.identities, [
      { type: "ssh", path: "/persist/etc/ssh/ssh_host_ed25519_key" },
      { type: "ssh", path: "/home/me/.ssh/id_ed25519" },
      { type: "age", path: "/var/lib/agenix/key.txt" },
    ]);
    assert.equal(manifest.secrets[0]!.path, "/run/keys/a");
  });
});

describe("sops-nix compatibility", { skip: missing }, () => {
  const compat = path.join(REPO, "nix", "modules", "sops-compat.nix");

  test("sops.secrets and sops.templates map onto nixseal, found at sops-nix's paths", () => {
    const m = module(`{ config, ... }: {
      imports = [ ${compat} ];
      services.openssh.enable = true;
      users.users.nginx.group = "nginx";
      users.groups.nginx = { };
      sops.defaultSopsFile = ./app.yaml;
      sops.age.keyFile = "/var/lib/sops-nix/key.txt";
      sops.keepGenerations = 2;
      sops.secrets."db/password" = { owner = "nginx"; restartUnits = [ "nginx.service" ]; };
      sops.secrets.api = { sopsFile = ./hosts.json; format = "json"; key = "api/token"; uid = 1000; gid = 100; mode = "0440"; };
      sops.secrets.whole = { key = ""; reloadUnits = [ "x.service" ]; };
      sops.secrets.blob = { sopsFile = ./blob.bin; format = "binary"; };
      sops.secrets.custom = { name = "custom-name"; path = "/etc/custom"; };
      sops.secrets.root-pw.neededForUsers = true;
      sops.templates."app.env" = {
        content = "DB=\${config.sops.placeholder."db/password"}";
        owner = "nginx";
        restartUnits = [ "app.service" ];
      };
    }`);
    assert.deepEqual(failed([m]), []);
    const manifest = readManifest(nixos([m], "manifest"));
    const entry = (name: string, fields: Json) => ({
      name,
      format: "yaml",
      mode: "0400",
      owner: "0",
      group: "0",
      restartUnits: [],
      reloadUnits: [],
      ...fields,
    });
    assert.deepEqual(manifest.secrets, [
      entry("api", {
        file: "STORE:hosts.json",
        format: "json",
        key: "api/token",
        owner: "1000",
        group: "100",
        mode: "0440",
        path: null,
      }),
      entry("blob", { file: "STORE:blob.bin", format: "binary", key: null, path: null }),
      entry("custom-name", { file: "STORE:app.yaml", key: "custom", path: "/etc/custom" }),
      entry("db/password", {
        file: "STORE:app.yaml",
        key: "db/password",
        owner: "nginx",
        group: "nginx",
        path: null,
        restartUnits: ["nginx.service"],
      }),
      entry("whole", {
        file: "STORE:app.yaml",
        key: null,
        path: null,
        reloadUnits: ["x.service"],
      }),
    ]);
    assert.deepEqual(manifest.templates, [
      {
        name: "rendered/app.env",
        content: `DB=${placeholder("db/password")}`,
        owner: "nginx",
        group: "nginx",
        mode: "0400",
        path: null,
        restartUnits: ["app.service"],
        reloadUnits: [],
      },
    ]);
    assert.equal(manifest.keepGenerations, 2);
    // sops-nix's defaults: the ed25519 host keys as age keys, the RSA host keys as PGP keys.
    assert.deepEqual(manifest.identities, [
      { type: "age", path: "/var/lib/sops-nix/key.txt" },
      { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
      { type: "gpg-ssh", path: "/etc/ssh/ssh_host_rsa_key" },
    ]);
    const users = readManifest(nixos([m], "usersManifest"));
    assert.deepEqual(users.secrets, [
      entry("root-pw", { file: "STORE:app.yaml", key: "root-pw", path: null }),
    ]);
    // config.sops.placeholder is nixseal's placeholder of the secret's (file) name.
    const ph = nixos([m], "config.sops.placeholder") as Record<string, string>;
    assert.equal(ph.custom, placeholder("custom-name"));
    assert.equal(ph["db/password"], placeholder("db/password"));
  });

  test("a template read from a file; useTmpfs; sops.gnupg.home is a gpg identity", () => {
    fs.writeFileSync(path.join(dir, "template.conf"), "from-file\n");
    const m = module(`{ ... }: {
      imports = [ ${compat} ];
      sops.age.sshKeyPaths = [ "/etc/ssh/ssh_host_ed25519_key" ];
      sops.useTmpfs = true;
      sops.gnupg.home = "/root/.gnupg";
      sops.secrets.a.sopsFile = ./app.yaml;
      sops.templates.t.file = ./template.conf;
    }`);
    assert.deepEqual(nixos([m], "failedAssertions"), []);
    const manifest = readManifest(nixos([m], "manifest"));
    assert.equal(manifest.templates[0]!.content, "from-file\n");
    assert.equal(manifest.mount, "tmpfs-noswap");
    assert.deepEqual(manifest.identities, [
      { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
      { type: "gpg", path: "/root/.gnupg" },
    ]);
  });

  test("sops.gnupg.sshKeyPaths: gpg-ssh identities; with sops.gnupg.home too, refused as sops-nix does", () => {
    const keys = module(`{ ... }: {
      imports = [ ${compat} ];
      sops.gnupg.sshKeyPaths = [ "/etc/ssh/ssh_host_rsa_key" ];
      sops.secrets.a.sopsFile = ./app.yaml;
    }`);
    assert.deepEqual(nixos([keys], "failedAssertions"), []);
    assert.deepEqual(readManifest(nixos([keys], "manifest")).identities, [
      { type: "gpg-ssh", path: "/etc/ssh/ssh_host_rsa_key" },
    ]);
    // gpg is on the installer's PATH (the activation script's; a unit's `path` under sysusers).
    const gnupg = module(`{ ... }: { nixseal.gnupgPackage = builtins.toFile "gnupg-stub" ""; }`);
    const scripts = nixos([keys, gnupg], "activationScripts") as Record<string, { text: string }>;
    assert.match(
      scripts.nixseal!.text,
      /\n\s*PATH=\/nix\/store\/\S+-gnupg-stub\/bin:\$PATH \/nix\/store\/\S+\/bin\/nixseal install --manifest /,
    );
    const sysusers = module(`{ ... }: { systemd.sysusers.enable = true; }`);
    const unit = (nixos([keys, gnupg, sysusers], "services") as Record<string, { path?: string[] }>)[
      "nixseal-install"
    ]!;
    assert.match(String(unit.path), /-gnupg-stub$/);
    const both = module(`{ ... }: {
      imports = [ ${compat} ];
      sops.gnupg.home = "/var/lib/sops";
      sops.gnupg.sshKeyPaths = [ "/etc/ssh/ssh_host_rsa_key" ];
      sops.secrets.a.sopsFile = ./app.yaml;
    }`);
    assertFails(
      failed([both]),
      /^sops\.gnupg: set only one of sops\.gnupg\.home and sops\.gnupg\.sshKeyPaths/,
    );
    // A private key or GnuPG home in the store (world-readable) stays refused.
    for (const option of [
      `sops.gnupg.sshKeyPaths = [ "/nix/store/00000000000000000000000000000000-ssh_host_rsa_key" ]`,
      `sops.gnupg.home = "/nix/store/00000000000000000000000000000000-gnupg"`,
    ]) {
      const inStore = module(`{ ... }: {
        imports = [ ${compat} ];
        ${option};
        sops.secrets.a.sopsFile = ./app.yaml;
      }`);
      const r = nixEval("eval-nixos.nix", [inStore], "manifest");
      assert.ok(!r.ok, option);
      assert.match(r.stderr, /outside the Nix store/, option);
    }
  });
});

describe("home-manager module", { skip: missing }, () => {
  let m: string;
  before(() => {
    m = module(`{ config, ... }: {
      nixseal.secrets.github-token.file = ./db.age;
      nixseal.secrets.app = { file = ./app.yaml; key = "a/b"; mode = "0440"; };
      nixseal.templates.gitconfig = {
        path = "\${config.home.homeDirectory}/.config/git/github.inc";
        content = "[url \\"https://oauth2:\${config.nixseal.placeholder.github-token}@github.com/\\"]\\n";
      };
    }`);
  });

  test("the manifest: the user's own files, an existing runtime directory, no lists", () => {
    assert.deepEqual(home([m], "failedAssertions"), []);
    const script = home([m], "scriptText") as string;
    const manifestPath = /\/nix\/store\/\S+-nixseal-home-manifest\.json/.exec(script)![0];
    const manifest = readManifest(manifestPath);
    assert.deepEqual(manifest, {
      version: 1,
      stage: "system",
      secretsDir: "/@XDG_RUNTIME_DIR@/nixseal/secrets",
      generationsDir: "/@XDG_RUNTIME_DIR@/nixseal/generations",
      keepGenerations: 1,
      mount: "existing",
      storeDir: "/nix/store",
      ...NO_LISTS,
      identities: [
        { type: "age", path: "/home/alice/.config/nixseal/identity.txt" },
        { type: "ssh", path: "/home/alice/.ssh/id_ed25519" },
        { type: "ssh", path: "/home/alice/.ssh/id_rsa" },
      ],
      secrets: [
        {
          name: "app",
          file: "STORE:app.yaml",
          format: "yaml",
          key: "a/b",
          owner: null,
          group: null,
          mode: "0440",
          path: null,
          restartUnits: [],
          reloadUnits: [],
        },
        {
          name: "github-token",
          file: "STORE:db.age",
          format: "age",
          key: null,
          owner: null,
          group: null,
          mode: "0400",
          path: null,
          restartUnits: [],
          reloadUnits: [],
        },
      ],
      templates: [
        {
          name: "gitconfig",
          content: `[url "https://oauth2:${placeholder("github-token")}@github.com/"]\n`,
          owner: null,
          group: null,
          mode: "0400",
          path: "/home/alice/.config/git/github.inc",
          restartUnits: [],
          reloadUnits: [],
        },
      ],
      placeholders: { app: placeholder("app"), "github-token": placeholder("github-token") },
    });
    const service = home([m], "service") as Json & { Service: Json; Install: Json };
    assert.equal(service.Service.Type, "oneshot");
    assert.deepEqual(service.Install, { WantedBy: ["default.target"] });
    const activation = home([m], "activation") as Record<string, { after: string[]; data: string }>;
    assert.match(activation.nixseal!.data, /systemctl --user restart nixseal\.service/);
  });

  test("the user service fills in $XDG_RUNTIME_DIR, then runs nixseal install on that copy", () => {
    // A stand-in package whose bin/nixseal records its arguments and the manifest it is given.
    const { dir: pkg, cleanup: done } = tempDir("nixseal-fake-pkg-");
    try {
      fs.mkdirSync(path.join(pkg, "bin"));
      fs.writeFileSync(
        path.join(pkg, "bin", "nixseal"),
        `#!/bin/sh\necho "$@" > "$XDG_RUNTIME_DIR/args"\ncp "$3" "$XDG_RUNTIME_DIR/seen.json"\n`,
        { mode: 0o755 },
      );
      const withPkg = module(
        `{ ... }: { nixseal.package = builtins.path { path = ${pkg}; name = "nixseal-recorder"; }; }`,
      );
      const script = home([m, withPkg], "script") as string;
      const runtime = path.join(dir, `runtime-${counter}`);
      fs.mkdirSync(runtime, { mode: 0o700 });
      const r = spawnSync("/bin/sh", [script], {
        env: { XDG_RUNTIME_DIR: runtime, PATH: process.env.PATH },
        encoding: "utf8",
      });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(
        fs.readFileSync(path.join(runtime, "args"), "utf8"),
        `install --manifest ${runtime}/nixseal/manifest.json\n`,
      );
      const seen = JSON.parse(fs.readFileSync(path.join(runtime, "seen.json"), "utf8"));
      assert.equal(seen.secretsDir, `${runtime}/nixseal/secrets`);
      assert.equal(seen.generationsDir, `${runtime}/nixseal/generations`);
      assert.equal(
        seen.templates[0].content,
        `[url "https://oauth2:${placeholder("github-token")}@github.com/"]\n`,
      );

      // Without XDG_RUNTIME_DIR the service fails with a message, and installs nothing.
      const unset = spawnSync("/bin/sh", [script], { env: { PATH: process.env.PATH }, encoding: "utf8" });
      assert.notEqual(unset.status, 0);
      assert.match(unset.stderr, /XDG_RUNTIME_DIR is not set; set nixseal\.runtimeDir/);
    } finally {
      done();
    }
  });

  test("nixseal.runtimeDir: paths known at evaluation, the store manifest used as it is", () => {
    const pinned = module(`{ ... }: { nixseal.runtimeDir = "/run/user/1000"; }`);
    const text = home([m, pinned], "scriptText") as string;
    const manifestPath = /\/nix\/store\/\S+-nixseal-home-manifest\.json/.exec(text)![0];
    assert.match(text, new RegExp(`^exec \\S+/bin/nixseal install --manifest ${manifestPath}\\n$`));
    const manifest = readManifest(manifestPath);
    assert.equal(manifest.secretsDir, "/run/user/1000/nixseal/secrets");
    assert.equal(home([m, pinned], "secretsDir"), "/run/user/1000/nixseal/secrets");
  });
});

describe("flake.nix", { skip: missing }, () => {
  test("outputs; the exported modules import together, with the flake's package as default", () => {
    const m = module(`{ ... }: {
      services.openssh.enable = true;
      nixseal.secrets.x.file = ./db.age;
      age.secrets.y.file = ./db.age;
      sops.secrets.z.sopsFile = ./app.yaml;
    }`);
    assert.deepEqual(value("eval-flake.nix", [m], "outputs"), {
      nixosModules: [
        "agenix-compat",
        "colmena-keys-compat",
        "default",
        "nixops-keys-compat",
        "nixseal",
        "sops-compat",
      ],
      homeManagerModules: ["default", "nixseal"],
      overlays: ["default"],
      lib: ["credentials", "fetchgit", "fetchurl", "generated"],
      packages: ["default", "nixseal"],
      apps: ["default"],
    });
    assert.deepEqual(value("eval-flake.nix", [m], "failedAssertions"), []);
    const pkg = value("eval-flake.nix", [m], "fakePackage") as string;
    assert.match(
      value("eval-flake.nix", [m], "packageInScripts") as string,
      new RegExp(`${pkg}/bin/nixseal install --manifest`),
    );
    assert.match(
      value("eval-flake.nix", [m], "homeScript") as string,
      new RegExp(`exec ${pkg}/bin/nixseal install`),
    );
    assert.equal(value("eval-flake.nix", [m], "app"), `${pkg}/bin/nixseal`);
  });
});

/**
 * The other side of the contract: manifests the modules write, read by the real `nixseal
 * install`. Needs the built installer.
 */
const INSTALLER = fs.existsSync(path.join(REPO, "dist", "src", "cli", "install.js"));
const noInstaller =
  missing || (!INSTALLER && "needs the `nixseal install` command (dist/src/cli/install.js)");

describe("manifests read by `nixseal install`", { skip: noInstaller }, () => {
  const fixture = (p: string) => path.join(REPO, "test", "fixtures", "sops", p);

  test("--check accepts the system, users and home-manager manifests (real age and sops files)", async () => {
    const sub = path.join(dir, `check-${++counter}`);
    fs.mkdirSync(sub);
    fs.copyFileSync(path.join(dir, "db.age"), path.join(sub, "db.age"));
    fs.copyFileSync(fixture("sops-nix/secrets.yaml"), path.join(sub, "secrets.yaml"));
    const m = path.join(sub, "host.nix");
    fs.writeFileSync(
      m,
      `{ config, ... }: {
        nixseal.ageKeyFile = "/var/lib/nixseal/key.txt";
        nixseal.secrets."db/password".file = ./db.age;
        nixseal.secrets.yaml-value = { file = ./secrets.yaml; key = "nested/test/file"; };
        nixseal.secrets.pw = { file = ./secrets.yaml; key = "test_key"; neededForUsers = true; };
        nixseal.templates."app.conf".content = "a=\${config.nixseal.placeholder."db/password"}";
      }`,
    );
    for (const attr of ["manifest", "usersManifest"]) {
      const r = nixseal(["install", "--check", "--manifest", nixos([m], attr) as string]);
      assert.equal(r.status, 0, `${attr}: ${r.stderr}`);
    }
    const hm = path.join(sub, "home.nix");
    fs.writeFileSync(
      hm,
      `{ config, ... }: { nixseal.secrets.t.file = ./db.age; nixseal.templates.g.content = "\${config.nixseal.placeholder.t}"; }`,
    );
    const text = home([hm], "scriptText") as string;
    const hmManifest = /\/nix\/store\/\S+-nixseal-home-manifest\.json/.exec(text)![0];
    const r = nixseal(["install", "--check", "--manifest", hmManifest]);
    assert.equal(r.status, 0, r.stderr);

    // A sops key the file lacks is caught by the build-time check, naming the secret.
    fs.writeFileSync(
      m,
      `{ ... }: { nixseal.ageKeyFile = "/k"; nixseal.secrets.gone = { file = ./secrets.yaml; key = "no/such"; }; }`,
    );
    const bad = nixseal(["install", "--check", "--manifest", nixos([m], "manifest") as string]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /gone/);
  });

  test("home-manager, end to end: module -> manifest -> what the user service does -> files and symlinks", async (t) => {
    if (!fs.existsSync("/dev/shm")) return t.skip("needs /dev/shm (tmpfs)");
    // Stands for $XDG_RUNTIME_DIR: on tmpfs, as `"mount": "existing"` requires.
    const runtime = fs.mkdtempSync(path.join("/dev/shm", "nixseal-hm-"));
    try {
      const id = X25519Identity.generate();
      const keyFile = path.join(runtime, "identity.txt");
      fs.writeFileSync(keyFile, `${id.encode()}\n`, { mode: 0o600 });
      const sub = path.join(dir, `e2e-${++counter}`);
      fs.mkdirSync(sub);
      fs.writeFileSync(
        path.join(sub, "token.age"),
        await encrypt(new TextEncoder().encode("token-value-42"), [id.recipient()]),
      );
      const link = path.join(runtime, "gitconfig.inc");
      const hm = path.join(sub, "home.nix");
      fs.writeFileSync(
        hm,
        `{ config, ... }: {
          nixseal.ageKeyFile = "${keyFile}";
          nixseal.identityPaths = [ ];
          nixseal.secrets.github-token.file = ./token.age;
          nixseal.templates.gitconfig = {
            path = "${link}";
            content = "[credential]\\n  token = \${config.nixseal.placeholder.github-token}\\n";
          };
        }`,
      );
      const text = home([hm], "scriptText") as string;
      const manifestPath = /\/nix\/store\/\S+-nixseal-home-manifest\.json/.exec(text)![0];
      // What the user service does: the runtime directory filled in, then install.
      const local = path.join(runtime, "manifest.json");
      fs.writeFileSync(
        local,
        fs.readFileSync(manifestPath, "utf8").replaceAll("/@XDG_RUNTIME_DIR@", runtime),
      );
      const r = nixseal(["install", "--manifest", local]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(!r.stdout.toString().includes("token-value-42"));
      assert.ok(!r.stderr.includes("token-value-42"));
      assert.equal(
        fs.readFileSync(path.join(runtime, "nixseal/secrets/github-token"), "utf8"),
        "token-value-42",
      );
      assert.ok(fs.lstatSync(link).isSymbolicLink());
      assert.equal(fs.readFileSync(link, "utf8"), "[credential]\n  token = token-value-42\n");
      assert.equal(fs.statSync(link).mode & 0o777, 0o400);
    } finally {
      fs.rmSync(runtime, { recursive: true, force: true });
    }
  });
});

/**
 * The NixOS module's systemd credential wiring, evaluated by the real Nix with nixpkgs's lib
 * (NIXPKGS_LIB) on the stub of test/nix/nixos-stub.nix: `credential` options -> the manifest's
 * credential fields and LoadCredentialEncrypted= on the units (LoadCredential= kept for plain
 * `services`), sealed identities, restartMode under sysusers/userborn, the assertions; the
 * generated unit settings checked by systemd-analyze verify; and, as root, the module's manifest
 * installed by the real `nixseal install` with the real systemd-creds.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { encrypt, X25519Identity } from "../../src/age/index.js";
import { hostKeyPath, systemdCredsMissing } from "../creds/creds-env.js";
import { nixseal, tempDir, which } from "../helpers.js";
import { ageFile, installTestsSkipReason, jsonOf, makeHost, runPlan } from "../install/fixture.js";
import { NIX, NIXPKGS_LIB, nixEval } from "./eval.js";

const missing = !NIXPKGS_LIB
  ? "needs NIXPKGS_LIB (a checkout of nixpkgs's lib, e.g. nix-community/nixpkgs.lib)"
  : !NIX
    ? "needs nix-instantiate (Debian nix-bin)"
    : false;

let dir = "";
let cleanup = () => {};
let counter = 0;

before(async () => {
  ({ dir, cleanup } = tempDir("nixseal-nix-creds-"));
  // A real age file (for --check); the module only copies it to the store.
  const id = X25519Identity.generate();
  fs.writeFileSync(path.join(dir, "db.age"), await encrypt(new TextEncoder().encode("x"), [id.recipient()]));
});
after(() => cleanup());

function module(text: string, where = dir): string {
  const file = path.join(where, `module-${++counter}.nix`);
  fs.writeFileSync(file, text);
  return file;
}

function nixos(modules: string[], attr: string): unknown {
  const r = nixEval("eval-nixos.nix", modules, attr);
  if (!r.ok) assert.fail(`evaluating ${attr} failed:\n${r.stderr}`);
  return r.value;
}

type Json = Record<string, unknown>;
type Service = Json & { serviceConfig: Json; unitConfig: Json };

function manifestOf(modules: string[], attr = "manifest"): Json & { secrets: Json[]; templates: Json[] } {
  return JSON.parse(fs.readFileSync(nixos(modules, attr) as string, "utf8"));
}

function byName(entries: Json[]): Record<string, Json> {
  return Object.fromEntries(entries.map((e) => [e.name as string, e]));
}

describe("NixOS module: secrets as systemd credentials", { skip: missing }, () => {
  let host: string;
  before(() => {
    host = module(`{ config, ... }: {
      nixseal.ageKeyFile = "/var/lib/nixseal/key.txt";
      nixseal.sealedIdentityPaths = [ "/var/lib/nixseal/host-key.cred" ];
      nixseal.extraIdentities = [ { type = "systemd-creds"; path = "/var/lib/nixseal/ssh.cred"; name = "ssh-host-key"; } ];
      systemd.services.grafana.serviceConfig.LoadCredentialEncrypted = [ "own:/etc/credstore.encrypted/own" ];
      nixseal.secrets."db/password" = {
        file = ./db.age;
        restartUnits = [ "extra.service" ];
        credential = { encrypt = "tpm2"; tpm2Pcrs = "7"; services = [ "grafana" "postgresql.service" ]; };
      };
      nixseal.secrets.token = {
        file = ./db.age;
        credential = { encrypt = "host"; name = "api-token"; services = [ "myapp" ]; };
      };
      nixseal.secrets.plain = { file = ./db.age; services = [ "myapp" ]; };
      nixseal.templates."app.env" = {
        content = "TOKEN=\${config.nixseal.placeholder.token}";
        credential.services = [ "myapp" ];
      };
    }`);
  });

  test("installedPath of a credential: where its one service finds it; with several services, an error saying where", () => {
    assert.equal(nixos([host], "secrets.token.installedPath"), "/run/credentials/myapp.service/api-token");
    assert.equal(
      nixos([host], 'templates."app.env".installedPath'),
      "/run/credentials/myapp.service/app.env",
    );
    assert.equal(nixos([host], "secrets.plain.installedPath"), "/run/nixseal/secrets/plain");
    const r = nixEval("eval-nixos.nix", [host], 'secrets."db/password".installedPath');
    assert.equal(r.ok, false);
    if (!r.ok)
      assert.match(
        r.stderr,
        /loaded by 2 services, so it has no one file; each service reads it as \$CREDENTIALS_DIRECTORY\/db-password/,
      );
  });

  test("the manifest: each credential's name, key, PCRs and units; the credstore; sealed identities first", () => {
    const m = manifestOf([host]);
    assert.equal(m.credstoreDir, "/var/lib/nixseal/credstore");
    assert.equal(m.restartMode, "lists");
    assert.deepEqual(m.identities, [
      { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred" },
      { type: "age", path: "/var/lib/nixseal/key.txt" },
      { type: "systemd-creds", path: "/var/lib/nixseal/ssh.cred", name: "ssh-host-key" },
    ]);
    const secrets = byName(m.secrets);
    assert.deepEqual(secrets["db/password"]!.credential, {
      name: "db-password",
      withKey: "tpm2",
      tpm2Pcrs: "7",
      services: ["grafana.service", "postgresql.service"],
    });
    // The credential's services are restarted by the installer when it changes, not through
    // restartUnits (that would restart them when an unchanged credential is installed again).
    assert.deepEqual(secrets["db/password"]!.restartUnits, ["extra.service"]);
    assert.deepEqual(secrets.token!.credential, {
      name: "api-token",
      withKey: "host",
      tpm2Pcrs: null,
      services: ["myapp.service"],
    });
    assert.equal("credential" in secrets.plain!, false, "a file secret has no credential field");
    assert.deepEqual(secrets.plain!.restartUnits, ["myapp.service"]);
    assert.deepEqual(byName(m.templates)["app.env"]!.credential, {
      name: "app.env",
      withKey: "auto",
      tpm2Pcrs: null,
      services: ["myapp.service"],
    });
    // The users stage never names the credential store (it would remove the system's credentials).
    const users = manifestOf([host], "usersManifest");
    assert.equal("credstoreDir" in users, false);
    assert.equal("restartMode" in users, false);
  });

  test("units: LoadCredentialEncrypted= from the credstore, appended to their own; LoadCredential= for plain services", () => {
    const services = nixos([host], "services") as Record<string, Service>;
    assert.deepEqual(
      new Set(services.grafana!.serviceConfig.LoadCredentialEncrypted as string[]),
      new Set(["own:/etc/credstore.encrypted/own", "db-password:/var/lib/nixseal/credstore/db-password"]),
    );
    assert.deepEqual(services.postgresql!.serviceConfig.LoadCredentialEncrypted, [
      "db-password:/var/lib/nixseal/credstore/db-password",
    ]);
    assert.deepEqual(
      new Set(services.myapp!.serviceConfig.LoadCredentialEncrypted as string[]),
      new Set([
        "api-token:/var/lib/nixseal/credstore/api-token",
        "app.env:/var/lib/nixseal/credstore/app.env",
      ]),
    );
    assert.deepEqual(services.myapp!.serviceConfig.LoadCredential, ["plain:/run/nixseal/secrets/plain"]);
    assert.equal(services.grafana!.serviceConfig.LoadCredential, undefined);
  });

  test("nixseal.credstoreDir moves the store in the manifest and in the units", () => {
    const moved = module(`{ ... }: { nixseal.credstoreDir = "/persist/nixseal/credstore"; }`);
    assert.equal(manifestOf([host, moved]).credstoreDir, "/persist/nixseal/credstore");
    const services = nixos([host, moved], "services") as Record<string, Service>;
    assert.deepEqual(services.postgresql!.serviceConfig.LoadCredentialEncrypted, [
      "db-password:/persist/nixseal/credstore/db-password",
    ]);
  });

  test("activation: systemd-creds on the script's PATH; under sysusers/userborn restarts go through systemctl", () => {
    const systemd = module(`{ ... }: { systemd.package = builtins.toFile "systemd-stub" ""; }`);
    const scripts = nixos([host, systemd], "activationScripts") as Record<string, { text: string }>;
    assert.match(
      scripts.nixseal!.text,
      /\n\s*PATH=\/nix\/store\/\S+-systemd-stub\/bin:\$PATH \/nix\/store\/\S+\/bin\/nixseal install --manifest /,
    );
    for (const option of ["systemd.sysusers.enable", "services.userborn.enable"]) {
      const on = module(`{ ... }: { ${option} = true; }`);
      const m = manifestOf([host, on]);
      assert.equal(m.restartMode, "systemctl", option);
      for (const f of ["restartListFile", "reloadListFile", "dryRestartListFile", "dryReloadListFile"]) {
        assert.equal(m[f], null, `${option}: ${f}`);
      }
      const unit = (nixos([host, on], "services") as Record<string, Service>)["nixseal-install"]!;
      assert.ok(
        (unit.unitConfig.RequiresMountsFor as string[]).includes("/var/lib/nixseal/credstore"),
        "the install unit waits for the credstore's file system",
      );
      assert.ok((unit.unitConfig.RequiresMountsFor as string[]).includes("/var/lib/nixseal/host-key.cred"));
    }
  });

  test("assertions: name, services, path, neededForUsers, PCRs without a TPM2, duplicate names, clashes", () => {
    const bad = module(`{ ... }: {
      nixseal.ageKeyFile = "/k";
      nixseal.secrets.a = { file = ./db.age; credential = { name = "a:b"; }; };
      nixseal.secrets.b = { file = ./db.age; services = [ "x" ]; credential.services = [ "y" ]; };
      nixseal.secrets.c = { file = ./db.age; path = "/etc/c"; credential = { }; };
      nixseal.secrets.d = { file = ./db.age; neededForUsers = true; credential = { }; };
      nixseal.secrets.e = { file = ./db.age; credential = { encrypt = "host"; tpm2Pcrs = "7"; }; };
      nixseal.secrets.f = { file = ./db.age; credential.name = "same"; };
      nixseal.secrets.g = { file = ./db.age; credential.name = "same"; };
      nixseal.secrets."h/i" = { file = ./db.age; services = [ "z" ]; };
      nixseal.secrets.j = { file = ./db.age; credential = { name = "h-i"; services = [ "z" ]; }; };
    }`);
    const messages = nixos([bad], "failedAssertions") as string[];
    for (const pattern of [
      /^nixseal\.secrets\.a\.credential\.name = "a:b" is not a valid credential name/,
      /^nixseal\.secrets\.b\.services: with `credential` set the secret is not in the secrets directory/,
      /^nixseal\.secrets\.c\.path: a credential is not written to the secrets directory/,
      /^nixseal\.secrets\.d\.credential: a secret needed for users is installed before any service runs/,
      /^nixseal\.secrets\.e\.credential\.tpm2Pcrs is set, but credential\.encrypt is "host"/,
      /^nixseal: the credential name\(s\) same are used by more than one secret or template/,
      /^nixseal: two secrets or templates would be the same credential of a service .*z: h-i/,
    ]) {
      assert.ok(
        messages.some((m) => pattern.test(m)),
        `no failed assertion matches ${pattern}; got:\n${messages.join("\n")}`,
      );
    }
    assert.equal(messages.length, 7, messages.join("\n"));
    // A bad type is refused by the option itself.
    const typo = module(
      `{ ... }: { nixseal.ageKeyFile = "/k"; nixseal.secrets.a = { file = ./db.age; credential.encrypt = "tpm"; }; }`,
    );
    const r = nixEval("eval-nixos.nix", [typo], "manifest");
    assert.ok(!r.ok);
    assert.match(r.stderr, /nixseal\.secrets\.a\.credential\.encrypt/);
  });

  test("the manifest passes nixseal install --check", () => {
    const r = nixseal(["install", "--check", "--manifest", nixos([host], "manifest") as string]);
    assert.equal(r.status, 0, r.stderr);
  });

  test("the unit settings the module generates pass systemd-analyze verify", (t) => {
    if (which("systemd-analyze") === null) return t.skip("needs systemd-analyze (Debian: systemd)");
    const services = nixos([host], "services") as Record<string, Service>;
    const cfg = services.myapp!.serviceConfig;
    const lines = [
      "[Unit]",
      "Description=nixseal module credentials",
      "",
      "[Service]",
      "Type=oneshot",
      "DynamicUser=yes",
      ...(cfg.LoadCredentialEncrypted as string[]).map((l) => `LoadCredentialEncrypted=${l}`),
      ...(cfg.LoadCredential as string[]).map((l) => `LoadCredential=${l}`),
      "ExecStart=/bin/cat %d/api-token %d/app.env %d/plain",
      "",
    ];
    const file = path.join(dir, "nxs-myapp.service");
    fs.writeFileSync(file, lines.join("\n"));
    const r = spawnSync("systemd-analyze", ["verify", "--man=no", file], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /nxs-myapp\.service:\d+/, r.stderr);
  });
});

describe("NixOS module -> nixseal install, with the real systemd-creds", { skip: missing }, () => {
  test("the module's credential is sealed into its store and opens under its name; nothing in the ramfs", async (t) => {
    const why = installTestsSkipReason() ?? systemdCredsMissing();
    if (why !== null) return t.skip(why);
    const host = makeHost();
    try {
      const env = { SYSTEMD_CREDENTIAL_SECRET: hostKeyPath(host.dir, "module"), NO_COLOR: "1" };
      const value = `module-credential-${process.pid}-${Date.now()}`;
      const encrypted = await ageFile(host, "db", value);
      const credstore = path.join(host.dir, "var", "lib", "nixseal", "credstore");
      const m = module(
        `{ ... }: {
          nixseal.identityPaths = [ ${JSON.stringify(host.hostKey)} ];
          nixseal.secretsDir = ${JSON.stringify(host.secretsDir)};
          nixseal.generationsDir = ${JSON.stringify(host.generationsDir)};
          nixseal.credstoreDir = ${JSON.stringify(credstore)};
          nixseal.secrets."db/password" = { file = ./store/db.age; credential.services = [ "grafana" ]; };
        }`,
        host.dir,
      );
      assert.ok(encrypted.endsWith("/store/db.age"));
      // The module's manifest writes NixOS's restart lists: point them into the host's tree.
      const manifest = JSON.parse(fs.readFileSync(nixos([m], "manifest") as string, "utf8"));
      Object.assign(manifest, {
        restartListFile: host.restartList,
        reloadListFile: host.reloadList,
        dryRestartListFile: host.dryRestartList,
        dryReloadListFile: host.dryReloadList,
      });
      const file = path.join(host.dir, "module-manifest.json");
      fs.writeFileSync(file, JSON.stringify(manifest));
      const [run, gens] = runPlan(host, [
        { op: "install", args: ["--manifest", file, "--json"], env },
        { op: "snapshot", dir: host.generationsDir },
      ]);
      const j = jsonOf(run);
      assert.equal(j.ok, true, JSON.stringify(j.problems));
      assert.deepEqual((j.credentials as { created: string[] }).created, ["db-password"]);
      const dec = spawnSync(
        "systemd-creds",
        ["decrypt", "--name=db-password", path.join(credstore, "db-password"), "-"],
        { env: { ...process.env, ...env }, encoding: "utf8" },
      );
      assert.equal(dec.status, 0, dec.stderr);
      assert.equal(dec.stdout, value);
      const files = (gens as { files: Record<string, { content?: string }> }).files;
      assert.ok(Object.values(files).every((f) => !(f.content ?? "").includes(value)));
      assert.equal(fs.readFileSync(host.restartList, "utf8"), "grafana.service\n");
    } finally {
      host.cleanup();
    }
  });
});

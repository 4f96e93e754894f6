/**
 * The NixOS module's nixseal.generators (nix/modules/nixos/generators.nix) and
 * nix/lib/generated.nix, evaluated by the real Nix with nixpkgs's lib (NIXPKGS_LIB): the JSON
 * `nixseal generate --flake` reads, written here by hand from docs/generators.md; public outputs
 * read back (made by the real `nixseal gen`); secret outputs installed from their encrypted
 * files, never read at evaluation.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { parseGenerators } from "../../src/generate/spec.js";
import { nixseal, REPO, run, tempDir } from "../helpers.js";
import { NIX, NIXPKGS_LIB, nixEval } from "./eval.js";

const missing = !NIXPKGS_LIB
  ? "needs NIXPKGS_LIB (a checkout of nixpkgs's lib, e.g. nix-community/nixpkgs.lib)"
  : !NIX
    ? "needs nix-instantiate (Debian nix-bin)"
    : false;

const STORE_FILE = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-/;
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmu1eJ5pu3+jQ0Z5a9HzlCUmSBPyUuXENgZsnySyEnE root@web1";
const ADMIN = "age15lfya8gzpdygdw2lz40qckmsa0ftwdgm26hje3ss0l8uaqmd3pxs27pgev";

let dir: string;
let cleanup: () => void;
let counter = 0;
let wgPublic: string;
/** A plaintext marker in a file beside an output: evaluation must never read it. */
const PLAINTEXT = `plaintext-marker-${Math.random().toString(36).slice(2)}`;

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-gen-nix-"));
  const generated = path.join(dir, "generated");
  // What `nixseal generate` leaves for host web1: the wireguard pair made by the real
  // `nixseal gen`, its secret encrypted (.age) by the real age, a shared CA's public cert, and a
  // password for users (encrypted).
  const wg = path.join(generated, "wg", "web1");
  fs.mkdirSync(wg, { recursive: true });
  const r = nixseal(["gen", "wireguard", "--out", wg]);
  assert.equal(r.status, 0, r.stderr);
  const enc = run("age", ["-e", "-r", ADMIN, "-o", path.join(wg, "key.age"), path.join(wg, "key")]);
  assert.equal(enc.status, 0, enc.stderr);
  fs.writeFileSync(path.join(wg, "key"), PLAINTEXT);
  wgPublic = fs.readFileSync(path.join(wg, "key.pub"), "utf8");
  fs.mkdirSync(path.join(generated, "ca"), { recursive: true });
  fs.writeFileSync(path.join(generated, "ca", "cert"), "-----BEGIN CERTIFICATE-----\nMIIB\n");
  fs.writeFileSync(path.join(generated, "ca", "key.age"), "age-encryption.org/v1 stand-in\n");
  fs.mkdirSync(path.join(generated, "root-password", "web1"), { recursive: true });
  fs.writeFileSync(path.join(generated, "root-password", "web1", "hash.age"), "stand-in\n");
});
after(() => cleanup?.());

function module(text: string): string {
  const file = path.join(dir, `module-${++counter}.nix`);
  fs.writeFileSync(file, text);
  return file;
}

function nixos(modules: string[], attr: string): unknown {
  const r = nixEval("eval-nixos.nix", modules, attr);
  if (!r.ok) assert.fail(`evaluating ${attr} failed:\n${r.stderr}`);
  return r.value;
}

function evalError(modules: string[], attr: string): string {
  const r = nixEval("eval-nixos.nix", modules, attr);
  assert.equal(r.ok, false, `${attr} evaluated, but should fail`);
  return (r as { stderr: string }).stderr;
}

const FILE_DEFAULTS = { secret: true, owner: "root", group: "root", mode: "0400", neededForUsers: false };
const GENERATOR_DEFAULTS = {
  builtin: null,
  dependencies: [],
  import: null,
  prompts: {},
  recipients: null,
  rotate: null,
  runtimeInputs: [],
  script: null,
  share: false,
  timeout: 60,
  validation: null,
};

describe("NixOS module: nixseal.generators", { skip: missing }, () => {
  let host: string;
  const fakeWg = "/nix/store/0000000000000000000000000000000a-wireguard-tools";
  before(() => {
    host = module(`{ config, ... }: {
      services.openssh.enable = true;
      nixseal.hostName = "web1";
      nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.admins = [ "${ADMIN}" ];
      nixseal.generatedDir = ./generated;
      users.users.systemd-network.group = "systemd-network";
      users.groups.systemd-network = { };
      nixseal.generators.wg = {
        files.key = { owner = "systemd-network"; group = "systemd-network"; mode = "0440"; };
        files."key.pub".secret = false;
        script = "nixseal gen wireguard";
        runtimeInputs = [
          { type = "derivation"; name = "wireguard-tools"; outPath = "${fakeWg}"; }
          "/run/current-system/sw/bin"
          "${fakeWg}/sbin"
        ];
      };
      nixseal.generators.ca = {
        share = true;
        files.cert.secret = false;
        files.key = { };
        script = "make-ca";
        rotate.every = "90d";
        validation = { bits = 4096; names = [ "a" "b" ]; };
      };
      nixseal.generators.root-password = {
        files.hash.neededForUsers = true;
        dependencies = [ "ca" ];
        script = "nixseal gen hash --sha512-crypt < $prompts/password";
        prompts.password = { type = "hidden"; description = "root's password"; persist = true; };
        recipients = [ "web1" "${ADMIN}" ];
        timeout = 5;
      };
      nixseal.generators.db = {
        files.token = { };
        import.command = [ "pass" "show" "db/token" ];
        share = true;
      };
      nixseal.secrets."generated/wg/key".restartUnits = [ "systemd-networkd.service" ];
    }`);
  });

  test("system.build.nixsealGenerators is generators.nix's JSON for this host", () => {
    assert.deepEqual(nixos([host], "config.system.build.nixsealGenerators"), {
      admins: [ADMIN],
      hosts: { web1: HOST_KEY },
      generators: {
        wg: {
          ...GENERATOR_DEFAULTS,
          files: {
            key: { ...FILE_DEFAULTS, owner: "systemd-network", group: "systemd-network", mode: "0440" },
            "key.pub": { ...FILE_DEFAULTS, secret: false },
          },
          script: "nixseal gen wireguard",
          // Not shared: this host's own instance.
          hosts: ["web1"],
          // A package is its bin directory; a string is used as it is.
          runtimeInputs: [`${fakeWg}/bin`, "/run/current-system/sw/bin", `${fakeWg}/sbin`],
        },
        ca: {
          ...GENERATOR_DEFAULTS,
          files: { cert: { ...FILE_DEFAULTS, secret: false }, key: FILE_DEFAULTS },
          script: "make-ca",
          share: true,
          hosts: [],
          rotate: { every: "90d" },
          validation: { bits: 4096, names: ["a", "b"] },
        },
        "root-password": {
          ...GENERATOR_DEFAULTS,
          files: { hash: { ...FILE_DEFAULTS, neededForUsers: true } },
          dependencies: ["ca"],
          script: "nixseal gen hash --sha512-crypt < $prompts/password",
          prompts: { password: { type: "hidden", description: "root's password", persist: true } },
          hosts: ["web1"],
          recipients: ["web1", ADMIN],
          timeout: 5,
        },
        db: {
          ...GENERATOR_DEFAULTS,
          files: { token: FILE_DEFAULTS },
          import: { command: ["pass", "show", "db/token"] },
          share: true,
          hosts: [],
        },
      },
    });
  });

  test("public files read back as value (null for secret files); secret files have their installed path", () => {
    const gens = nixos([host], "config.nixseal.generators") as Record<
      string,
      { files: Record<string, { value: string | null; path: string | null }> }
    >;
    const files = Object.fromEntries(
      Object.entries(gens).flatMap(([g, v]) =>
        Object.entries(v.files).map(([f, x]) => [`${g}/${f}`, { value: x.value, path: x.path }]),
      ),
    );
    assert.deepEqual(files, {
      "wg/key": { value: null, path: "/run/nixseal/secrets/generated/wg/key" },
      "wg/key.pub": { value: wgPublic, path: null },
      "ca/cert": { value: "-----BEGIN CERTIFICATE-----\nMIIB\n", path: null },
      "ca/key": { value: null, path: "/run/nixseal/secrets/generated/ca/key" },
      "root-password/hash": { value: null, path: "/run/nixseal-for-users/generated/root-password/hash" },
      // Not generated yet: no file, so no value and an assertion (below).
      "db/token": { value: null, path: "/run/nixseal/secrets/generated/db/token" },
    });
    assert.match(wgPublic, /^[A-Za-z0-9+/]{43}=\n$/);
  });

  test("secret files become nixseal.secrets from their .age files; missing ones fail an assertion", () => {
    const secrets = nixos([host], "secrets") as Record<string, Record<string, unknown>>;
    assert.deepEqual(Object.keys(secrets).sort(), [
      "generated/ca/key",
      "generated/root-password/hash",
      "generated/wg/key",
    ]);
    const wg = secrets["generated/wg/key"]!;
    assert.match(wg.file as string, STORE_FILE);
    // The store holds the encrypted file, byte for byte; never the plaintext beside it.
    assert.deepEqual(
      fs.readFileSync(wg.file as string),
      fs.readFileSync(path.join(dir, "generated", "wg", "web1", "key.age")),
    );
    assert.deepEqual(
      {
        owner: wg.owner,
        group: wg.group,
        mode: wg.mode,
        format: wg.format,
        neededForUsers: wg.neededForUsers,
        restartUnits: wg.restartUnits,
      },
      {
        owner: "systemd-network",
        group: "systemd-network",
        mode: "0440",
        format: "age",
        neededForUsers: false,
        restartUnits: ["systemd-networkd.service"],
      },
    );
    assert.equal(secrets["generated/root-password/hash"]!.neededForUsers, true);
    const usersManifest = JSON.parse(fs.readFileSync(nixos([host], "usersManifest") as string, "utf8"));
    assert.deepEqual(
      usersManifest.secrets.map((s: { name: string }) => s.name),
      ["generated/root-password/hash"],
    );
    const failed = nixos([host], "failedAssertions") as string[];
    assert.deepEqual(failed, [
      "nixseal.generators.db.files.token: generated/db/token.age does not exist yet; run `nixseal generate --flake .#web1` in the secrets repository and commit what it stages.",
    ]);
    const outside = nixos([host], "outsideManifests") as string;
    assert.ok(!outside.includes(PLAINTEXT));
    const manifest = fs.readFileSync(nixos([host], "manifest") as string, "utf8");
    assert.ok(!manifest.includes(PLAINTEXT));
  });

  test("no host recipient, no host name or no generatedDir: a message naming the option to set", () => {
    const noKey = module(`{ ... }: {
      services.openssh.enable = true;
      nixseal.hostName = "web1";
      nixseal.generators.p = { files.p = { }; script = "nixseal gen password"; };
    }`);
    assert.match(
      evalError([noKey], "config.system.build.nixsealGenerators"),
      /nixseal\.hostPublicKey is not set/,
    );
    const failed = nixos([noKey], "failedAssertions") as string[];
    assert.ok(
      failed.some((m) => /nixseal\.hostPublicKey is not set/.test(m)),
      failed.join("\n"),
    );
    assert.ok(
      failed.some((m) => /nixseal\.generatedDir is not set/.test(m)),
      failed.join("\n"),
    );
    // networking.hostName empty (a name from DHCP): nixseal.hostName has no default.
    const noName = module(`{ ... }: {
      networking.hostName = "";
      nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.generators.p = { files.p.secret = false; script = "x"; };
    }`);
    assert.match(
      evalError([noName], "config.system.build.nixsealGenerators"),
      /nixseal\.hostName is not set/,
    );
    // Without generators the module asks for nothing.
    const none = module(`{ ... }: { services.openssh.enable = true; }`);
    assert.deepEqual(nixos([none], "failedAssertions"), []);
  });

  test("script and import.command: exactly one; an import has one file and no prompts", () => {
    const both = module(`{ ... }: {
      services.openssh.enable = true;
      nixseal.hostName = "h";
      nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.generators.a = { files.x.secret = false; };
      nixseal.generators.b = { files.x.secret = false; script = "s"; import.command = [ "c" ]; };
      nixseal.generators.c = { files.x.secret = false; files.y.secret = false; import.command = [ "c" ]; };
      nixseal.generators.d = { files.x.secret = false; import.command = [ "c" ]; prompts.p = { }; };
    }`);
    const failed = nixos([both], "failedAssertions") as string[];
    assert.deepEqual(failed.sort(), [
      "nixseal.generators.a: set exactly one of script, import.command and builtin.",
      "nixseal.generators.b: set exactly one of script, import.command and builtin.",
      "nixseal.generators.c: an import.command generator has exactly one file (the command's output) and no prompts.",
      "nixseal.generators.d: an import.command generator has exactly one file (the command's output) and no prompts.",
    ]);
  });

  test("builtin: a kind name or one kind with options, emitted as generate reads it", () => {
    const m = module(`{ ... }: {
      services.openssh.enable = true;
      nixseal.hostName = "h";
      nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.generatedDir = ./generated;
      nixseal.generators.pw = { files.password = { }; builtin = "password"; };
      nixseal.generators.pin.files.password = { };
      nixseal.generators.pin.builtin.password = { length = 8; charset = "hex"; };
      nixseal.generators.ssh = { files.key = { }; files."key.pub".secret = false; builtin.ssh-ed25519.comment = "root@h"; };
      nixseal.generators.wg = { files.key = { }; files."key.pub".secret = false; builtin = "wireguard"; };
      nixseal.generators.hash = {
        dependencies = [ "pw" ];
        files.hash.neededForUsers = true;
        builtin.hash = { sha512Crypt = "$in/pw/password"; rounds = 10000; };
      };
    }`);
    const spec = nixos([m], "config.system.build.nixsealGenerators") as {
      generators: Record<string, { builtin: unknown; script: unknown }>;
    };
    const builtins = Object.fromEntries(Object.entries(spec.generators).map(([k, v]) => [k, v.builtin]));
    assert.deepEqual(builtins, {
      pw: { password: { length: 32, charset: "alnum" } },
      pin: { password: { length: 8, charset: "hex" } },
      ssh: { "ssh-ed25519": { comment: "root@h" } },
      wg: { wireguard: {} },
      hash: { hash: { sha512Crypt: "$in/pw/password", rounds: 10000 } },
    });
    // What `nixseal generate --flake` reads: its parser takes exactly this JSON.
    const parsed = parseGenerators("flake", spec);
    assert.deepEqual(parsed.generators.get("hash")!.builtin, {
      kind: "hash",
      input: { dependency: "pw", file: "password" },
      rounds: 10000,
    });
    assert.deepEqual(parsed.generators.get("wg")!.builtin, { kind: "wireguard" });
    // Two kinds at once, or a kind with a bad option: refused.
    const bad = module(`{ ... }: {
      services.openssh.enable = true;
      nixseal.hostName = "h";
      nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.generatedDir = ./generated;
      nixseal.generators.two = { files.password.secret = false; builtin = { password = { }; hex = { }; }; };
    }`);
    assert.deepEqual(nixos([bad], "failedAssertions"), [
      "nixseal.generators.two.builtin: set exactly one kind (password, hex, age-key, ssh-ed25519, wireguard or hash).",
    ]);
    const badOption = module(`{ ... }: {
      services.openssh.enable = true;
      nixseal.hostName = "h";
      nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.generators.p = { files.password = { }; builtin.password.length = 0; };
    }`);
    assert.match(evalError([badOption], "config.system.build.nixsealGenerators"), /length/);
  });

  test("bad values are refused at evaluation: names that leave the directory, periods, prompt types", () => {
    const base = `services.openssh.enable = true; nixseal.hostName = "h"; nixseal.hostPublicKey = "${HOST_KEY}";
      nixseal.generatedDir = ./generated;`;
    const traversal = module(
      `{ ... }: { ${base} nixseal.generators."../wg".files.x.secret = false; nixseal.generators."../wg".script = "s"; }`,
    );
    assert.match(
      evalError([traversal], "config.nixseal.generators"),
      /generator "\.\.\/wg" is not a plain name/,
    );
    const fileTraversal = module(
      `{ ... }: { ${base} nixseal.generators.wg.files."../../x" = { }; nixseal.generators.wg.script = "s"; }`,
    );
    assert.match(evalError([fileTraversal], "secrets"), /file "\.\.\/\.\.\/x" is not a plain name/);
    const period = module(
      `{ ... }: { ${base} nixseal.generators.a = { files.x = { }; script = "s"; rotate.every = "90 days"; }; }`,
    );
    assert.match(evalError([period], "config.system.build.nixsealGenerators"), /rotate\.every/);
    const prompt = module(
      `{ ... }: { ${base} nixseal.generators.a = { files.x = { }; script = "s"; prompts.p.type = "secret"; }; }`,
    );
    assert.match(evalError([prompt], "config.system.build.nixsealGenerators"), /prompts\.p\.type/);
    const key = module(`{ ... }: { ${base} nixseal.hostPublicKey = "AGE-SECRET-KEY-1QQQ"; }`);
    assert.match(evalError([key], "config.nixseal.hostPublicKey"), /hostPublicKey/);
  });
});

describe("nix/lib/generated.nix", { skip: missing }, () => {
  function evalExpr(expr: string): { ok: boolean; out: string } {
    const r = spawnSync(NIX!, ["--eval", "--strict", "--json", "--expr", expr], { encoding: "utf8" });
    return { ok: r.status === 0, out: r.status === 0 ? r.stdout : r.stderr };
  }
  const lib = `(import ${path.join(REPO, "nix", "lib")} { }).generated`;

  test("publicValue reads a public output where `nixseal generate` puts it, null before it is there", () => {
    const r = evalExpr(`[
      (${lib}.publicValue { dir = ${dir}/generated; generator = "wg"; host = "web1"; file = "key.pub"; })
      (${lib}.publicValue { dir = ${dir}/generated; generator = "ca"; file = "cert"; })
      (${lib}.publicValue { dir = ${dir}/generated; generator = "wg"; host = "web2"; file = "key.pub"; })
      (${lib}.relativePath { generator = "wg"; host = "web1"; file = "key"; secret = true; })
    ]`);
    assert.ok(r.ok, r.out);
    assert.deepEqual(JSON.parse(r.out), [
      wgPublic,
      "-----BEGIN CERTIFICATE-----\nMIIB\n",
      null,
      "wg/web1/key.age",
    ]);
  });

  test("names that would leave the directory are refused", () => {
    for (const args of [
      `generator = ".."; file = "x";`,
      `generator = "wg"; host = "../web1"; file = "x";`,
      `generator = "wg"; file = ".hidden";`,
      `generator = "wg"; file = "a/b";`,
      `generator = "wg"; file = "a..b";`,
    ]) {
      const r = evalExpr(`${lib}.publicValue { dir = ${dir}/generated; ${args} }`);
      assert.equal(r.ok, false, args);
      assert.match(r.out, /is not a plain name/);
    }
  });
});

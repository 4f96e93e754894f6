/**
 * nix/lib/credentials.nix evaluated by the real Nix (no nixpkgs needed), and the unit settings it
 * produces checked by the real systemd-analyze verify.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { REPO, tempDir, which } from "../helpers.js";

const LIB = path.join(REPO, "nix", "lib", "credentials.nix");

function evalNix(expr: string): { status: number | null; json: unknown; stderr: string } {
  const r = spawnSync(
    "nix-instantiate",
    ["--eval", "--strict", "--json", "--option", "restrict-eval", "true", "-I", `lib=${LIB}`, "-E", expr],
    { encoding: "utf8", env: { ...process.env, NIX_PATH: "" } },
  );
  return { status: r.status, json: r.status === 0 ? JSON.parse(r.stdout) : null, stderr: r.stderr };
}

const noNix = which("nix-instantiate") === null ? "needs nix-instantiate (Debian: nix-bin)" : false;

test("mkCredential: LoadCredentialEncrypted= from the credstore, and the paths a service reads", {
  skip: noNix,
}, () => {
  const r = evalNix(`let c = import <lib>; in {
    enc = c.mkCredential { name = "grafana-db-password"; service = "grafana"; };
    plain = c.mkCredential { name = "token"; service = "app.service"; encrypted = false; source = "/run/nixseal/secrets/token"; };
    other = c.mkCredential { name = "x"; service = "app"; source = "/etc/credstore.encrypted/x"; };
    name = c.credentialName "db/password";
    valid = map c.isValidName [ "ok-name" "a/b" "a:b" ".x" "" ];
  }`);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.json, {
    enc: {
      service: {
        serviceConfig: {
          LoadCredentialEncrypted: ["grafana-db-password:/var/lib/nixseal/credstore/grafana-db-password"],
        },
      },
      path: "%d/grafana-db-password",
      absolutePath: "/run/credentials/grafana.service/grafana-db-password",
      envPath: "$CREDENTIALS_DIRECTORY/grafana-db-password",
    },
    plain: {
      service: { serviceConfig: { LoadCredential: ["token:/run/nixseal/secrets/token"] } },
      path: "%d/token",
      absolutePath: "/run/credentials/app.service/token",
      envPath: "$CREDENTIALS_DIRECTORY/token",
    },
    other: {
      service: { serviceConfig: { LoadCredentialEncrypted: ["x:/etc/credstore.encrypted/x"] } },
      path: "%d/x",
      absolutePath: "/run/credentials/app.service/x",
      envPath: "$CREDENTIALS_DIRECTORY/x",
    },
    name: "db-password",
    valid: [true, false, false, false, false],
  });
});

test("mkCredential refuses a bad name and a plain credential without a source, with a clear message", {
  skip: noNix,
}, () => {
  let r = evalNix(`(import <lib>).mkCredential { name = "db:password"; service = "x"; }`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /"db:password" is not a valid credential name/);
  r = evalNix(`(import <lib>).mkCredential { name = "p"; service = "x"; encrypted = false; }`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /needs `source`/);
});

test("the generated unit settings pass systemd-analyze verify", { skip: noNix }, (t) => {
  if (which("systemd-analyze") === null) return t.skip("needs systemd-analyze (Debian: systemd)");
  const r = evalNix(`let c = import <lib>;
    db = c.mkCredential { name = "db-password"; service = "nxs-demo"; };
    tok = c.mkCredential { name = "token"; service = "nxs-demo"; encrypted = false; source = "/run/nixseal/secrets/token"; };
  in {
    lines = db.service.serviceConfig.LoadCredentialEncrypted ++ tok.service.serviceConfig.LoadCredential;
    exec = "/bin/cat \${db.path} \${tok.path}";
  }`);
  assert.equal(r.status, 0, r.stderr);
  const { lines, exec } = r.json as { lines: string[]; exec: string };
  const { dir, cleanup } = tempDir();
  try {
    const unit = (key: string) =>
      [
        "[Unit]",
        "Description=nixseal credential demo",
        "",
        "[Service]",
        "Type=oneshot",
        "DynamicUser=yes",
        `${key}=${lines[0]}`,
        `LoadCredential=${lines[1]}`,
        `ExecStart=${exec}`,
        "",
      ].join("\n");
    const verify = (content: string) => {
      const file = path.join(dir, "nxs-demo.service");
      fs.writeFileSync(file, content);
      return spawnSync("systemd-analyze", ["verify", "--man=no", file], { encoding: "utf8" });
    };
    const good = verify(unit("LoadCredentialEncrypted"));
    assert.equal(good.status, 0, good.stderr);
    assert.doesNotMatch(good.stderr, /nxs-demo\.service:\d+/, good.stderr);
    // The check can fail: a misspelt setting is reported.
    const typo = verify(unit("LoadCredentialEncryptd"));
    assert.match(typo.stderr, /nxs-demo\.service:\d+: Unknown key/);
  } finally {
    cleanup();
  }
});

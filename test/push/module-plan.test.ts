/**
 * The plan the NixOS module writes (nix/modules/nixos/keys.nix, and nixops-keys-compat for
 * NixOps's deployment.keys), evaluated with the real nix-instantiate and nixpkgs's lib
 * (NIXPKGS_LIB, as test/nix/keys.test.ts does), is the plan `nixseal push` reads: readPlanFile
 * accepts it, `push --dry-run` plans it against a real host (test/push/harness.ts), and a push
 * of the NixOps-style plan lands in a NixOS-style /run/keys mount point.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { Problems } from "../../src/common/index.js";
import { readPlanFile } from "../../src/push/index.js";
import { nixseal, REPO } from "../helpers.js";
import { NIX, NIXPKGS_LIB, nixEval } from "../nix/eval.js";
import { ensurePrincipals, type Fleet, pushTestsSkipReason, startFleet, type TestHost } from "./harness.js";

const skip = !NIXPKGS_LIB
  ? "needs NIXPKGS_LIB (a checkout of nixpkgs's lib, e.g. nix-community/nixpkgs.lib)"
  : !NIX
    ? "needs nix-instantiate (Debian nix-bin)"
    : pushTestsSkipReason();

const NIXOPS = path.join(REPO, "nix", "modules", "nixops-keys-compat.nix");

let fleet: Fleet;
let work: string;
let removePrincipals: () => void;

/** The module's plan for `text`, written to a file as `nixseal push --plan` takes it. */
function modulePlan(name: string, text: string): string {
  const m = path.join(work, `${name}.nix`);
  fs.writeFileSync(m, text);
  const r = nixEval("eval-nixos.nix", [m], "pushPlan");
  if (!r.ok) assert.fail(`evaluating the plan failed:\n${r.stderr}`);
  const f = path.join(work, `${name}.json`);
  fs.writeFileSync(f, JSON.stringify(r.value));
  return f;
}

function pushTo(h: TestHost): string {
  return `nixseal.push = {
    targetHost = "127.0.0.1";
    targetPort = ${h.port};
    targetUser = "root";
    nixsealCommand = "${h.plan.nixsealCommand}";
  };`;
}

function push(args: string[]) {
  return nixseal(["push", ...args, "--json"], {
    env: { NIX_SSHOPTS: `-F ${fleet.sshConfig}` },
    cwd: work,
  });
}

describe("the NixOS module's plan is the plan nixseal push reads", { skip: skip ?? false }, () => {
  before(async () => {
    removePrincipals = ensurePrincipals([], ["keys"]);
    fleet = await startFleet(1, [{ keysMount: true }]);
    work = path.join(fleet.dir, "deployer");
    fs.mkdirSync(work);
  });
  after(async () => {
    await fleet?.stop();
    removePrincipals?.();
  });

  test("nixseal.keys: readPlanFile accepts it; --dry-run plans it under nixseal.push.name, not the host name", () => {
    const h = fleet.hosts[0]!;
    const plan = modulePlan(
      "native",
      `{ ... }: {
        networking.hostName = "attr-name";
        ${pushTo(h)}
        nixseal.push.name = "${h.name}";
        nixseal.keys.db = {
          source.command = [ "printf" "%s" "db-value" ];
          restartUnits = [ "db.service" ];
        };
        nixseal.keys.api = {
          source.pass = "hosts/web1/api";
          name = "api.token";
          destDir = "/run/app-keys";
          uploadAt = "post-activation";
        };
      }`,
    );
    const p = new Problems("PUSH_PLAN", plan);
    const parsed = readPlanFile(plan, p);
    assert.deepEqual(
      p.list.map((e) => e.message),
      [],
    );
    assert.deepEqual([...parsed.hosts.keys()], [h.name]);
    const keys = parsed.hosts.get(h.name)!.keys;
    assert.deepEqual(keys.map((k) => `${k.destDir}/${k.name}`).sort(), [
      "/run/app-keys/api.token",
      "/run/keys/db",
    ]);
    // The dry run resolves sources, so only the pre-activation key (a command) is planned here.
    const r = push(["--plan", plan, "--dry-run", "--upload-at", "pre-activation"]);
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout.toString()) as {
      hosts: Record<string, { result: string; added: string[] }>;
    };
    assert.deepEqual(Object.keys(report.hosts), [h.name]);
    assert.deepEqual([report.hosts[h.name]!.result, report.hosts[h.name]!.added], ["planned", ["db"]]);
  });

  test("NixOps deployment.keys through nixops-keys-compat: accepted and pushed into the /run/keys mount point with NixOps's defaults", () => {
    const h = fleet.hosts[0]!;
    const plan = modulePlan(
      "nixops",
      `{ ... }: {
        imports = [ ${NIXOPS} ];
        networking.hostName = "${h.name}";
        deployment.targetHost = "127.0.0.1";
        deployment.targetPort = ${h.port};
        nixseal.push.nixsealCommand = "${h.plan.nixsealCommand}";
        deployment.keys.legacy.keyCommand = [ "printf" "from-nixops" ];
      }`,
    );
    const p = new Problems("PUSH_PLAN", plan);
    readPlanFile(plan, p);
    assert.deepEqual(
      p.list.map((e) => e.message),
      [],
    );
    const r = push(["--plan", plan]);
    assert.equal(r.status, 0, r.stderr);
    const k = h.inspect("/run/keys/legacy")!;
    // NixOps's defaults: root:root 0600.
    assert.deepEqual([k.content, k.target!.uid, k.target!.gid, k.target!.mode], ["from-nixops", 0, 0, 0o600]);
    assert.equal(h.inspect("/run/keys")!.mountPoint, true);
  });
});

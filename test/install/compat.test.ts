/**
 * What the installer does for the compat modules (nix/modules/sops-compat.nix,
 * nix/modules/agenix-compat.nix) so that a host behaves as it did with sops-nix or agenix: the
 * manifest fields they set, run by the real `nixseal install` as root in a private mount
 * namespace (ns-driver.ts). Native mode is tested in install.test.ts.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  ageFile,
  type Host,
  installTestsSkipReason,
  jsonOf,
  makeHost,
  runPlan,
  secret,
  snap,
  writeManifest,
} from "./fixture.js";

const skip = installTestsSkipReason() ?? false;

let host: Host;
before(() => {
  if (!skip) host = makeHost();
});
after(() => host?.cleanup());

const generationsIn = (files: Record<string, unknown>) =>
  Object.keys(files)
    .filter((k) => /^[0-9]+$/.test(k))
    .sort();

test('keepGenerations "all": nothing is pruned (sops-nix\'s keepGenerations = 0)', { skip }, async () => {
  const manifests = [];
  for (const v of ["one", "two", "three"]) {
    const file = await ageFile(host, `keep-${v}`, v);
    manifests.push(writeManifest(host, [secret("s", file)], [], { keepGenerations: "all" }));
  }
  const r = runPlan(host, [
    ...manifests.map((m) => ({ op: "install" as const, args: ["--json", "--manifest", m] })),
    { op: "snapshot", dir: host.generationsDir },
  ]);
  for (let i = 0; i < 3; i++) {
    const j = jsonOf(r[i]);
    assert.deepEqual(j.problems, []);
    assert.deepEqual(j.pruned, [], `install ${i + 1} prunes nothing`);
  }
  const g = snap(r[3]).files;
  assert.deepEqual(generationsIn(g), ["1", "2", "3"]);
  assert.equal((g["1/s"] as { content: string }).content, "one");
});

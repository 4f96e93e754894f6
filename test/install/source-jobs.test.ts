/** How the installer forms its jobs: one per encrypted file and format (src/install/source-jobs.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ManifestSecret } from "../../src/install/manifest.js";
import { groupBySource } from "../../src/install/source-jobs.js";

function secret(name: string, file: string, format: ManifestSecret["format"] = "age"): ManifestSecret {
  return {
    kind: "secret",
    name,
    owner: null,
    group: null,
    mode: 0o400,
    path: null,
    restartUnits: [],
    reloadUnits: [],
    credential: null,
    file,
    format,
    key: format === "age" || format === "binary" ? null : `k/${name}`,
  };
}

/** The groups as lists of secret names, in the order the jobs run. */
function groups(secrets: ManifestSecret[]): string[][] {
  const { order, start } = groupBySource(secrets);
  const out: string[][] = [];
  for (let g = 0; g + 1 < start.length; g++) {
    out.push(Array.from(order.subarray(start[g]!, start[g + 1]!), (i) => secrets[i]!.name));
  }
  assert.equal(start[start.length - 1], secrets.length, "every secret in one group");
  return out;
}

test("jobs: one per file and format, in the order files first appear, each secret in manifest order", () => {
  const secrets = [
    secret("a", "/s/1.age"),
    secret("b", "/s/db.yaml", "yaml"),
    secret("c", "/s/1.age"),
    secret("d", "/s/2.age"),
    // The same file read as another format: a job of its own.
    secret("e", "/s/db.yaml", "json"),
    secret("f", "/s/db.yaml", "yaml"),
    secret("g", "/s/db.yaml", "json"),
    secret("h", "/s/1.age"),
  ];
  assert.deepEqual(groups(secrets), [["a", "c", "h"], ["b", "f"], ["d"], ["e", "g"]]);
  assert.deepEqual(groups([]), []);
  // A name that is a file's path elsewhere changes nothing: the key is the file (and format).
  assert.deepEqual(groups([secret("/s/x", "/s/y"), secret("y", "/s/x")]), [["/s/x"], ["y"]]);
});

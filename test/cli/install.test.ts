/** `nixseal install`'s output: what happens around the report, not the install (test/install/). */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { CLI, tempDir } from "../helpers.js";

test("install: a reader that went away before the report (EPIPE) does not turn a good run into a failure", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const manifest = path.join(dir, "manifest.json");
    fs.writeFileSync(
      manifest,
      JSON.stringify({
        version: 1,
        secretsDir: path.join(dir, "run", "secrets"),
        generationsDir: path.join(dir, "run", "generations"),
        keepGenerations: 1,
        identities: [],
        secrets: [],
        templates: [],
        placeholders: {},
      }),
    );
    for (const args of [["--check", "--json"], ["--help"]]) {
      const child = spawn(process.execPath, [CLI, "install", "--manifest", manifest, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      // Closed before the child has even started Node: its first write to stdout gets EPIPE.
      child.stdout.destroy();
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
      });
      const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
      assert.equal(stderr, "", `${args.join(" ")}: nothing on stderr`);
      assert.equal(code, 0, `${args.join(" ")}: exit code`);
    }
  } finally {
    cleanup();
  }
});

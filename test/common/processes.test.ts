/**
 * captureOutput: the one runner of programs that handle a secret (gpg, systemd-creds, a user's
 * `pass show`). What its callers rely on: the secret goes in on stdin, never argv; stdout is
 * bounded; a stopped program never leaves the run hanging, even when a process it started still
 * holds the pipes; a program that cannot start is an error with its errno code.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { captureOutput } from "../../src/common/processes.js";

test("input goes in on stdin and comes back on stdout; the exit status and stderr are kept", async () => {
  const secret = Buffer.from("s3cret value\n");
  const r = await captureOutput("/bin/sh", ["-c", "cat; echo 'a message' >&2; exit 3"], {
    input: secret,
    maxStdout: 1024,
  });
  assert.equal(r.code, 3);
  assert.equal(r.stopped, null);
  assert.deepEqual(r.stdout, secret);
  assert.equal(r.stderr, "a message\n");
});

test("more stdout than allowed stops the program and returns nothing of it", async () => {
  const r = await captureOutput("/bin/sh", ["-c", "head -c 100000 /dev/zero; sleep 30"], { maxStdout: 1000 });
  assert.equal(r.stopped, "too-large");
  assert.equal(r.stdout.length, 0);
});

test("a timeout ends the run even when a process the program started still holds the pipes", async () => {
  const started = Date.now();
  // The grandchild (sleep in the background) keeps stdout and stderr open after sh is killed.
  const r = await captureOutput("/bin/sh", ["-c", "sleep 60 & wait"], { maxStdout: 1024, timeoutMs: 200 });
  assert.equal(r.stopped, "timeout");
  assert.ok(Date.now() - started < 20_000, "the run did not wait for the grandchild");
});

test("an abort signal stops the program", async () => {
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 100);
  const r = await captureOutput("/bin/sh", ["-c", "sleep 60"], {
    maxStdout: 1024,
    signal: abort.signal,
    stopWith: "SIGTERM",
  });
  assert.equal(r.stopped, "aborted");
  assert.equal(r.signal, "SIGTERM");
});

test("the end of stderr is kept when asked (the last line says why a command failed)", async () => {
  const r = await captureOutput(
    "/bin/sh",
    ["-c", "i=0; while [ $i -lt 500 ]; do echo line$i >&2; i=$((i+1)); done"],
    {
      maxStdout: 1024,
      maxStderr: 100,
      stderrTail: true,
    },
  );
  assert.equal(r.stderr.length, 100);
  assert.ok(r.stderr.endsWith("line499\n"));
});

test("a program that does not exist rejects with ENOENT", async () => {
  await assert.rejects(
    captureOutput("/nonexistent/program", [], { maxStdout: 1024 }),
    (e: NodeJS.ErrnoException) => e.code === "ENOENT",
  );
});

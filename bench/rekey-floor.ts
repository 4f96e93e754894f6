/**
 * A floor for `nixseal rekey` on this machine: a bare script that does only what a rekey of the
 * benchmark's fixture cannot skip, on two threads, and nothing else. No lock, no sweep of old
 * temp files, no check of the files against the rules, no recipient sets, no progress, no
 * failure reports: every file is known to be for the same recipients and to decrypt.
 *
 * - Started together: the Nix evaluation of secrets.nix (nixseal's own, its cache cold) and the
 *   modules, and a worker thread loading the same modules.
 * - Then both threads take files one at a time from a shared counter. For each file: open,
 *   read, close; unwrap the file key and verify the header MAC and the payload; make the new
 *   header (the 10 stanzas kept, one wrapped for the new recipient, the record, the MAC), all
 *   with nixseal's own functions (src/age, src/vault/rekey-worker.ts); create the temp file
 *   O_EXCL beside it, write it, fsync it on the thread pool (16 at a time per thread), close.
 * - Then the main thread renames every temp file over its file (after an lstat, as rekey
 *   checks that the file did not change) and fsyncs the directory once.
 *
 * With --no-fsync the temp files are closed without fsync (not durable: for reference only, to
 * show what the fsyncs cost here).
 *
 * Run by bench/rekey.ts in a fresh copy of its fixture: `node dist/bench/rekey-floor.js
 * IDENTITY_FILE [--no-fsync]`, in the repository's directory. Prints one line of JSON: the
 * files each thread did and the time of each phase (ms since the script started).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { isMainThread, parentPort, Worker } from "node:worker_threads";

const started = performance.now();

async function modules() {
  const [age, worker, keys] = await Promise.all([
    import("../src/age/index.js"),
    import("../src/vault/rekey-worker.js"),
    import("../src/keys/index.js"),
  ]);
  return { age, worker, keys };
}

interface Work {
  files: string[];
  set: import("../src/vault/rekey-worker.js").WrapSet;
  identity: import("../src/age/index.js").X25519Transfer;
  counter: Int32Array;
  fsync: boolean;
}

/** Files taken from the shared counter until none is left; returns [temp, file] pairs. */
async function work(w: Work, m: Awaited<ReturnType<typeof modules>>): Promise<[string, string][]> {
  const recipients = w.set.strings.map((s) => m.keys.parseRecipientString(s, "rules"));
  const identities = [m.age.X25519Identity.fromTransfer(w.identity)];
  const temps: [string, string][] = [];
  const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
  let inFlight = 0;
  const waiters: (() => void)[] = [];
  for (;;) {
    const i = Atomics.add(w.counter, 0, 1);
    if (i >= w.files.length) break;
    const file = w.files[i]!;
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const size = fs.fstatSync(fd).size;
    const data = Buffer.allocUnsafe(size);
    fs.readSync(fd, data, 0, size, 0);
    fs.closeSync(fd);
    const { header, payload } = m.age.extractHeader(data);
    const key = await m.worker.unwrapVerified(header, payload, identities);
    const newHeader = await m.worker.headerFor(key, recipients, w.set, header.stanzas);
    key.fill(0);
    const temp = path.join(path.dirname(file), `.${path.basename(file)}.floor.tmp`);
    const out = fs.openSync(temp, flags, 0o644);
    fs.writevSync(out, [newHeader, payload]);
    temps.push([temp, file]);
    if (!w.fsync) {
      fs.closeSync(out);
      continue;
    }
    if (inFlight >= 16) await new Promise<void>((resolve) => waiters.push(resolve));
    inFlight++;
    fs.fsync(out, (e) => {
      if (e) throw e;
      fs.closeSync(out);
      inFlight--;
      waiters.shift()?.();
    });
  }
  while (inFlight > 0) await new Promise<void>((resolve) => waiters.push(resolve));
  return temps;
}

if (isMainThread) {
  const identityFile = process.argv[2];
  if (!identityFile) throw new Error("usage: rekey-floor.js IDENTITY_FILE [--no-fsync]");
  const worker = new Worker(new URL(import.meta.url));
  const rules = import("../src/vault/rules.js").then((r) => r.loadRulesAsync({ cwd: process.cwd() }));
  const [m, check, r] = await Promise.all([modules(), import("../src/vault/check.js"), rules]);
  const ready = performance.now();
  const secrets = [...r.secrets.values()];
  const expect = check.expectationsOf(r).get(secrets[0]!.name)!;
  const set = {
    strings: secrets[0]!.publicKeys.map((k) => k.trim()),
    digest: expect.digest,
    normalised: expect.recipients.map((x) => x.normalised),
    types: expect.recipients.map(() => "X25519"),
  };
  const line = fs
    .readFileSync(identityFile, "utf8")
    .split("\n")
    .find((l) => l.startsWith("AGE-SECRET-KEY-1"));
  const identity = m.age.X25519Identity.parse(line!.trim());
  const w: Work = {
    files: secrets.map((s) => s.file),
    set,
    identity: identity.transfer(),
    counter: new Int32Array(new SharedArrayBuffer(4)),
    fsync: !process.argv.includes("--no-fsync"),
  };
  const theirs = new Promise<[string, string][]>((resolve) => worker.once("message", resolve));
  worker.postMessage(w);
  const mine = await work(w, m);
  const mineDone = performance.now();
  const other = await theirs;
  const filesDone = performance.now();
  for (const [temp, file] of [...mine, ...other]) {
    fs.lstatSync(file);
    fs.renameSync(temp, file);
  }
  const dir = fs.openSync(path.dirname(w.files[0]!), "r");
  fs.fsyncSync(dir);
  fs.closeSync(dir);
  const renamed = performance.now();
  await worker.terminate();
  const at = (t: number) => Math.round(t - started);
  process.stdout.write(
    `${JSON.stringify({
      mainFiles: mine.length,
      workerFiles: other.length,
      ready: at(ready),
      mainDone: at(mineDone),
      filesDone: at(filesDone),
      renamed: at(renamed),
    })}\n`,
  );
} else {
  const loaded = modules();
  parentPort!.once("message", async (w: Work) => {
    parentPort!.postMessage(await work(w, await loaded));
  });
}

/**
 * A floor for a cold `nixseal install` on this machine: a bare script that does only what a
 * cold activation of the benchmark's fixture cannot skip, and nothing else. No manifest
 * validation, no generations, no metadata, no HMACs, no restart lists, no lock, no report.
 *
 * - The manifest is read for its list of files (JSON.parse, nothing checked), the ssh-ed25519
 *   host key parsed with nixseal's own parser, the modules loaded.
 * - Then, with `threads` threads (the main thread and a worker when the manifest names at least
 *   2048 age files, the installer's guess and threshold; the worker made before the manifest is
 *   parsed and V8 in efficiency mode from its start, as the installer does on a first install),
 *   files are taken one at a time from a shared counter. For each file: open, read, close;
 *   decrypt with nixseal's own `decrypt()` (src/age); create the plaintext O_EXCL 0400 in the
 *   output directory (a tmpfs), fchown it to the owner, write it, close it; wipe the plaintext.
 *
 * Run by bench/install.ts: `node dist/bench/install-floor.js MANIFEST OUT_DIR UID GID
 * [--threads N]` (OUT_DIR must exist and be empty). Prints one line of JSON: the files each
 * thread did and when each phase ended (ms since the script started).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import { enterEfficiencyMode } from "../src/common/efficiency-mode.js";
import { ageFormatsNamed, PARALLEL_MIN_DECRYPTS } from "../src/install/early-worker.js";

const started = performance.now();

async function modules() {
  const [age, ssh] = await Promise.all([import("../src/age/index.js"), import("../src/ssh/index.js")]);
  return { age, ssh };
}

interface Work {
  files: string[];
  names: string[];
  out: string;
  uid: number;
  gid: number;
  identity: import("../src/ssh/index.js").SshEd25519Transfer;
  counter: Int32Array;
}

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

async function work(w: Work, m: Awaited<ReturnType<typeof modules>>): Promise<number> {
  const identities = [m.ssh.SshEd25519Identity.fromTransfer(w.identity)];
  let done = 0;
  for (;;) {
    const i = Atomics.add(w.counter, 0, 1);
    if (i >= w.files.length) return done;
    const fd = fs.openSync(w.files[i]!, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const size = fs.fstatSync(fd).size;
    const data = Buffer.allocUnsafe(size);
    fs.readSync(fd, data, 0, size, 0);
    fs.closeSync(fd);
    const plain = await m.age.decrypt(data, identities);
    const out = fs.openSync(path.join(w.out, w.names[i]!), CREATE, 0o400);
    fs.fchownSync(out, w.uid, w.gid);
    fs.writeSync(out, plain);
    fs.closeSync(out);
    plain.fill(0);
    done++;
  }
}

if (isMainThread) {
  const [manifestFile, out, uid, gid] = process.argv.slice(2);
  if (!manifestFile || !out || uid === undefined || gid === undefined)
    throw new Error("usage: install-floor.js MANIFEST OUT_DIR UID GID [--threads N]");
  const text = fs.readFileSync(manifestFile, "utf8");
  const t = process.argv.indexOf("--threads");
  const threads =
    t > 0
      ? Number(process.argv[t + 1])
      : ageFormatsNamed(text, PARALLEL_MIN_DECRYPTS) >= PARALLEL_MIN_DECRYPTS
        ? 2
        : 1;
  // As the installer does on a first install (src/install/early-worker.ts): the worker started
  // before the manifest is parsed, V8 in efficiency mode with it.
  if (threads > 1) enterEfficiencyMode();
  const worker = threads > 1 ? new Worker(new URL(import.meta.url)) : null;
  const manifest = JSON.parse(text) as {
    identities: { path: string }[];
    secrets: { name: string; file: string }[];
  };
  const m = await modules();
  const keyFile = manifest.identities[0]!.path;
  const key = await m.ssh.parseSshPrivateKey(fs.readFileSync(keyFile), { file: keyFile }).unlock();
  if (!(key instanceof m.ssh.SshEd25519Identity)) throw new Error("the floor takes an ssh-ed25519 host key");
  const ready = performance.now();
  const w: Work = {
    files: manifest.secrets.map((s) => s.file),
    names: manifest.secrets.map((s) => s.name),
    out,
    uid: Number(uid),
    gid: Number(gid),
    identity: key.transfer(),
    counter: new Int32Array(new SharedArrayBuffer(4)),
  };
  const theirs =
    worker === null ? Promise.resolve(0) : new Promise<number>((resolve) => worker.once("message", resolve));
  worker?.postMessage(w);
  const mine = await work(w, m);
  const mainDone = performance.now();
  const other = await theirs;
  const filesDone = performance.now();
  await worker?.terminate();
  const at = (x: number) => Math.round(x - started);
  process.stdout.write(
    `${JSON.stringify({ threads, mainFiles: mine, workerFiles: other, ready: at(ready), mainDone: at(mainDone), filesDone: at(filesDone) })}\n`,
  );
} else {
  const loaded = modules();
  parentPort!.once("message", async (w: Work) => {
    parentPort!.postMessage(await work(w, await loaded));
  });
}

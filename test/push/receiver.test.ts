/**
 * The host's side in process (src/push/receiver.ts), on a tmpfs: a push stream cut at every
 * point (each 1/200th of it, and around every frame boundary) changes nothing; an altered byte is
 * caught by the checksum; a complete stream switches to the new set. Plan validation as well.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { Problems } from "../../src/common/index.js";
import { parsePlanText } from "../../src/push/plan.js";
import { FRAME, FrameWriter, MAGIC, PROTOCOL_VERSION } from "../../src/push/protocol.js";
import { receive } from "../../src/push/receiver.js";

const onTmpfs = fs.existsSync("/dev/shm") && process.getuid?.() === 0;

/** The deployer's whole stream for these keys (all sent), as push writes it. */
async function streamOf(
  destDir: string,
  keys: Record<string, string>,
): Promise<{ bytes: Buffer; boundaries: number[] }> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on("data", (b: Buffer) => chunks.push(b));
  const w = new FrameWriter(out);
  const boundaries: number[] = [];
  await w.magic();
  boundaries.push(w.bytes);
  await w.json(FRAME.hello, {
    version: PROTOCOL_VERSION,
    nonce: "ab".repeat(32),
    destDirs: [destDir],
    dryRun: false,
  });
  boundaries.push(w.bytes);
  const meta = (key: string) => ({
    key,
    destDir,
    name: key,
    owner: "root",
    group: "root",
    mode: "0400",
    restartUnits: [],
    reloadUnits: [],
    keyUnit: null,
    uploadAt: "pre-activation",
    send: true,
  });
  await w.json(FRAME.apply, { keys: Object.keys(keys).map(meta) });
  boundaries.push(w.bytes);
  for (const v of Object.values(keys)) {
    await w.frame(FRAME.data, Buffer.from(v));
    boundaries.push(w.bytes);
  }
  await w.end();
  out.end();
  return { bytes: Buffer.concat(chunks), boundaries };
}

async function run(root: string, input: Buffer) {
  const output = new PassThrough();
  output.resume();
  // A copy: the reader wipes what it has consumed (a key's bytes are not left in its buffers).
  return receive(Readable.from([Buffer.from(input)]), output, { root });
}

function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {}
  for (const n of names) if (n !== ".nixseal") out[n] = fs.readFileSync(path.join(dir, n), "utf8");
  return out;
}

describe("receive: a cut or altered stream changes nothing", {
  skip: onTmpfs ? false : "needs root and /dev/shm",
}, () => {
  let dir: string;
  let cleanup: () => void;
  before(() => {
    const t = fs.mkdtempSync("/dev/shm/nixseal-receive-");
    dir = t;
    cleanup = () => fs.rmSync(t, { recursive: true, force: true });
  });
  after(() => cleanup());

  test("every cut point leaves the old set; the whole stream gives the new one", async () => {
    const root = path.join(dir, "root");
    const destDir = path.join(dir, "keys");
    const oldSet = { a: "old-a", b: "old-b".repeat(1000), c: "old-c" };
    const newSet = { a: "new-a", b: "new-b".repeat(1000), c: "new-c" };
    const first = await run(root, (await streamOf(destDir, oldSet)).bytes);
    assert.equal(first.ok, true, first.problems.map((p) => p.message).join("\n"));
    assert.deepEqual(contents(destDir), oldSet);
    const { bytes, boundaries } = await streamOf(destDir, newSet);
    const points = new Set<number>();
    for (let i = 0; i < 200; i++) points.add(Math.floor((bytes.length * i) / 200));
    for (const b of boundaries)
      for (const d of [-1, 0, 1, 5]) if (b + d >= 0 && b + d < bytes.length) points.add(b + d);
    points.add(bytes.length - 1);
    for (const n of [...points].sort((x, y) => x - y)) {
      await assert.rejects(run(root, bytes.subarray(0, n)), /ended before/, `cut at ${n}`);
      assert.deepEqual(contents(destDir), oldSet, `cut at ${n} of ${bytes.length}`);
    }
    // One altered byte of a key's content: the checksum catches it.
    const altered = Buffer.from(bytes);
    const at = bytes.indexOf("new-b");
    altered[at] = "N".charCodeAt(0);
    await assert.rejects(run(root, altered), /checksum does not match/);
    assert.deepEqual(contents(destDir), oldSet);
    const done = await run(root, bytes);
    assert.equal(done.ok, true);
    assert.deepEqual(contents(destDir), newSet);
    assert.deepEqual(done.changed.sort(), ["a", "b", "c"]);
    // Only the current generation is left.
    const hdir = path.dirname(fs.readlinkSync(destDir));
    assert.deepEqual(fs.readdirSync(hdir).sort(), ["2", "2.json"]);
  });

  test("a destDir that is already a directory (NixOS's /run/keys): every cut point leaves the old set inside it", async () => {
    const root = path.join(dir, "root-inside");
    const destDir = path.join(dir, "inside-keys");
    fs.mkdirSync(destDir, { mode: 0o750 });
    const oldSet = { a: "old-a", b: "old-b".repeat(1000) };
    const newSet = { a: "new-a", c: "new-c" };
    const first = await run(root, (await streamOf(destDir, oldSet)).bytes);
    assert.equal(first.ok, true, first.problems.map((p) => p.message).join("\n"));
    assert.equal(fs.lstatSync(destDir).isDirectory(), true, "destDir stays a directory");
    assert.equal(fs.readlinkSync(path.join(destDir, "a")), ".nixseal/current/a");
    assert.deepEqual(contents(destDir), oldSet);
    const { bytes, boundaries } = await streamOf(destDir, newSet);
    const points = new Set<number>();
    for (let i = 0; i < 100; i++) points.add(Math.floor((bytes.length * i) / 100));
    for (const b of boundaries)
      for (const d of [-1, 0, 1]) if (b + d >= 0 && b + d < bytes.length) points.add(b + d);
    for (const n of [...points].sort((x, y) => x - y)) {
      await assert.rejects(run(root, bytes.subarray(0, n)), /ended before/, `cut at ${n}`);
      assert.deepEqual(contents(destDir), oldSet, `cut at ${n} of ${bytes.length}`);
    }
    const done = await run(root, bytes);
    assert.equal(done.ok, true);
    assert.deepEqual(contents(destDir), newSet, "b's link removed, c's made");
    assert.deepEqual(done.removed, ["b"]);
    assert.deepEqual(fs.readdirSync(path.join(destDir, ".nixseal")).sort(), ["2", "current"]);
  });

  test("a stream that is not nixseal's: refused, nothing written", async () => {
    const root = path.join(dir, "root2");
    await assert.rejects(
      run(root, Buffer.from("SSH-2.0-OpenSSH\r\n")),
      /does not speak nixseal's push protocol/,
    );
    assert.equal(fs.existsSync(root), false);
    assert.ok(MAGIC.length > 0);
  });
});

describe("the push plan", () => {
  const parse = (json: unknown, base: string | null = "/plans") => {
    const p = new Problems("PUSH_PLAN", "plan.json");
    const plan = parsePlanText(JSON.stringify(json), "plan.json", base, p);
    return { plan, problems: p.list.map((e) => e.message) };
  };

  test("defaults, and relative files relative to the plan", () => {
    const { plan, problems } = parse({
      version: 1,
      hosts: {
        web: { targetHost: "10.0.0.2", keys: { db: { source: { file: "s/db.yaml", key: "db/pw" } } } },
      },
    });
    assert.deepEqual(problems, []);
    const h = plan.hosts.get("web")!;
    assert.equal(h.nixsealCommand, "nixseal");
    assert.deepEqual(h.keys[0], {
      key: "db",
      source: { kind: "file", file: "/plans/s/db.yaml", format: "yaml", key: "db/pw" },
      destDir: "/run/keys",
      name: "db",
      owner: "root",
      group: "keys",
      mode: 0o440,
      restartUnits: [],
      reloadUnits: [],
      keyUnit: null,
      uploadAt: "pre-activation",
      persist: false,
    });
  });

  test("every problem at once, each with its place", () => {
    const { problems } = parse(
      {
        version: 2,
        extra: 1,
        hosts: {
          "-oProxyCommand=x": { targetHost: "a", keys: {} },
          h: {
            targetHost: "-oProxyCommand=evil",
            nixsealCommand: "nixseal; rm -rf /",
            keys: {
              a: { source: { file: "/x.age", key: "k" } },
              b: { source: { pass: "x", command: ["y"] } },
              c: { source: { file: "rel.age" } },
              h: { source: { command: ["x"] }, destDir: "/run/keys/sub" },
              d: { source: { command: ["x"] }, persist: true },
              d2: { source: { command: ["x"] }, persist: "credential" },
              [`p${"x".repeat(244)}`]: { source: { command: ["x"] }, persist: "credential" },
              e: { source: { command: ["x"] }, destDir: "/run/nixseal-keys/x" },
              f: { source: { command: ["x"] }, name: "i" },
              i: { source: { command: ["y"] } },
              g: { source: { command: ["x"] }, mode: "4755" },
            },
          },
        },
      },
      null,
    );
    const want = [
      /: extra: unknown field/,
      /: version: must be 1/,
      /host name "-oProxyCommand=x"/,
      /hosts\.h\.targetHost: "-oProxyCommand=evil" is not a host name/,
      /hosts\.h\.nixsealCommand: .* no shell syntax/,
      /keys\.a\.source\.key: \/x\.age is an age file/,
      /keys\.b\.source: names command and pass/,
      /keys\.c\.source\.file: "rel\.age" is relative/,
      /keys\.d\.persist: must be false or "credential", not true/,
      /keys\.px+\.*persist: the credential name nixseal-key-<key> would be longer than 255 characters/,
      /keys\.g\.mode: "4755" sets the setuid/,
      /destDir \/run\/nixseal-keys\/x overlaps \/run\/nixseal-keys/,
      /destDir \/run\/keys\/sub is inside destDir \/run\/keys/,
      /keys\.(f|i): writes \/run\/keys\/i, as key "(i|f)" does/,
    ];
    for (const w of want)
      assert.ok(
        problems.some((p) => w.test(p)),
        `${w} not in:\n${problems.join("\n")}`,
      );
    // persist = "credential" is a valid setting.
    assert.equal(
      problems.some((p) => p.includes("keys.d2")),
      false,
      problems.join("\n"),
    );
  });
});

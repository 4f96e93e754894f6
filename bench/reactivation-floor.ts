/**
 * A floor for a re-activation with nothing changed (`nixseal install` of the manifest whose
 * generation is active): a bare script that does only what such an install cannot skip, and
 * nothing else. No validation, no lock, no owners looked up, no report, none of nixseal's modules.
 *
 * - The manifest is read for secretsDir and generationsDir (JSON.parse, nothing checked); the
 *   active generation found through the secretsDir link; its metadata read (JSON.parse) and the
 *   key of the keyed hashes read.
 * - Per secret of that generation: its file opened (O_NOFOLLOW), fstat-ed (regular file, owner,
 *   group and mode as recorded), read, and its HMAC-SHA-256 compared with the recorded one.
 * - The encrypted files are not read: in the benchmark they are store files, whose hash the
 *   metadata recorded (nixseal does not read them again either).
 *
 * Run by bench/install.ts: `node dist/bench/reactivation-floor.js MANIFEST`. Prints one line of
 * JSON: how many files were verified. Exits 1 if any did not match.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

const manifestFile = process.argv[2];
if (!manifestFile) throw new Error("usage: reactivation-floor.js MANIFEST");
const m = JSON.parse(fs.readFileSync(manifestFile, "utf8")) as { secretsDir: string; generationsDir: string };
const active = path.resolve(path.dirname(m.secretsDir), fs.readlinkSync(m.secretsDir));
const metaDir = path.join(m.generationsDir, ".nixseal");
const meta = JSON.parse(fs.readFileSync(path.join(metaDir, `${path.basename(active)}.json`), "utf8")) as {
  entries: { name: string; uid: number; gid: number; mode: number; hmac: string }[];
};
const key = fs.readFileSync(path.join(metaDir, "hmac-key"));
let verified = 0;
for (const e of meta.entries) {
  const fd = fs.openSync(`${active}/${e.name}`, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  const st = fs.fstatSync(fd);
  if (!st.isFile() || st.uid !== e.uid || st.gid !== e.gid || (st.mode & 0o7777) !== e.mode) break;
  const value = Buffer.allocUnsafe(st.size);
  fs.readSync(fd, value, 0, st.size, 0);
  fs.closeSync(fd);
  const ok = timingSafeEqual(createHmac("sha256", key).update(value).digest(), Buffer.from(e.hmac, "hex"));
  value.fill(0);
  if (!ok) break;
  verified++;
}
process.stdout.write(`${JSON.stringify({ verified, of: meta.entries.length })}\n`);
if (verified !== meta.entries.length) process.exitCode = 1;

/**
 * Before the diff, for the manifest's `"changeDetection": "files"` (sops-compat): what the active
 * generation holds as it is now, not as its metadata recorded it, because sops-nix compares the
 * new files with the old ones on disk. A file changed by hand gets a different keyed hash, a file
 * removed by hand is missing (so its entry counts as added), and a generation without nixseal's
 * metadata (sops-nix's own, on the first switch) is compared file by file too. The contents read
 * are hashed with the same per-host key as the new ones and wiped; nothing is kept.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { wipe } from "../../common/index.js";
import type { GenerationMeta, MetaEntry } from "../generations.js";
import { contentHash } from "../sink.js";

/** A file larger than this is not read (taken as changed): generations hold secrets, not data. */
const MAX_COMPARED_SIZE = 64 * 1024 * 1024;

/** Mode, owner and keyed hash of a regular file (not followed if a symlink), or null. */
function asFound(file: string, key: Uint8Array): Pick<MetaEntry, "uid" | "gid" | "mode" | "hmac"> | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return null;
    const found = { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
    if (st.size > MAX_COMPARED_SIZE) return { ...found, hmac: "too large to compare" };
    const content = fs.readFileSync(fd);
    try {
      return { ...found, hmac: contentHash(key, content) };
    } finally {
      wipe(content);
    }
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The active generation `dir` as found: each entry of `now` and of the recorded metadata that is
 * a file there, with what it is now (units from the record); credentials and entries removed
 * from the manifest as recorded.
 */
export function previousAsFound(
  dir: string,
  generation: number,
  recorded: GenerationMeta | null,
  now: readonly MetaEntry[],
  key: Uint8Array,
  /**
   * Entries whose file there was read already and found as recorded (the values taken from the
   * active generation, decrypt-sources.ts): their record stands for them, without a second read.
   */
  foundAsRecorded: ReadonlySet<string> = new Set(),
): GenerationMeta {
  const before = new Map((recorded?.entries ?? []).map((e) => [e.name, e]));
  const entries: MetaEntry[] = [];
  const seen = new Set<string>();
  for (const e of [...now, ...before.values()]) {
    if (seen.has(e.name)) continue;
    seen.add(e.name);
    const old = before.get(e.name);
    if (e.credential || (old !== undefined && foundAsRecorded.has(e.name))) {
      if (old) entries.push(old);
      continue;
    }
    const found = asFound(path.join(dir, e.name), key);
    if (found === null) continue; // missing (removed by hand, or new): counts as added
    entries.push({
      name: e.name,
      kind: old?.kind ?? e.kind,
      path: old?.path ?? e.path,
      restartUnits: old?.restartUnits ?? e.restartUnits,
      reloadUnits: old?.reloadUnits ?? e.reloadUnits,
      credential: null,
      ...found,
    });
  }
  return { version: 1, generation, entries };
}

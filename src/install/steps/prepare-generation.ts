/**
 * Step 4: where values go. A new generation on a ramfs (mounted if need be; on a full tmpfs,
 * after making room: Generations.makeRoom), and the hash key of its metadata; nothing when this
 * is a dry run or the install failed already (the key is then read only, or a throwaway one).
 */
import { rethrowUnlessNixseal } from "../../common/index.js";
import type { Generations } from "../generations.js";
import type { Manifest } from "../manifest.js";
import { ensureRamDir } from "../mount.js";
import { GenerationWriter, ownerOfNewFiles } from "../sink.js";
import type { InstallProblems } from "./problems.js";

export interface PreparedGeneration {
  /** The new generation's number, or null (dry run, or nothing may be written). */
  generation: number | null;
  /** Its files (null when generation is). */
  writer: GenerationWriter | null;
  /** The key of the content hashes in the metadata (wiped by the caller). */
  key: Buffer;
  /** The key was made now (or is a throwaway one): no recorded hash can be checked with it. */
  keyFresh: boolean;
  /** True if this install mounted the ramfs/tmpfs on generationsDir. */
  mounted: boolean;
  /** Old generations removed to make room before writing (see Generations.makeRoom). */
  pruned: number[];
}

export function prepareGeneration(
  m: Manifest,
  gens: Generations,
  /** The active generation (null: none). */
  active: number | null,
  dry: boolean,
  problems: InstallProblems,
): PreparedGeneration {
  const out: PreparedGeneration = {
    generation: null,
    writer: null,
    key: Buffer.alloc(0),
    keyFresh: true,
    mounted: false,
    pruned: [],
  };
  const readOnlyKey = () => {
    const k = gens.hmacKey(false);
    out.key = k.key;
    out.keyFresh = k.fresh;
  };
  if (dry || problems.any) {
    readOnlyKey();
    return out;
  }
  try {
    out.mounted = ensureRamDir(m.generationsDir, m.mount).mounted;
    const k = gens.hmacKey(true);
    out.key = k.key;
    out.keyFresh = k.fresh;
    out.pruned = gens.makeRoom(active, m.keepGenerations, m.secretsDir);
    const n = gens.create();
    const dir = gens.pathOf(n);
    try {
      out.writer = new GenerationWriter({ dir, created: ownerOfNewFiles(dir) }, () => gens.remove(n));
    } catch (e) {
      gens.remove(n);
      throw e;
    }
    out.generation = n;
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
    readOnlyKey();
  }
  return out;
}

/**
 * Step 4: where values go. A new generation on a ramfs (mounted if need be; on a full tmpfs,
 * after making room: Generations.makeRoom), and the hash key of its metadata; nothing when this is a dry run or the install failed already (the key is then
 * read only, or a throwaway one).
 */
import { rethrowUnlessNixseal } from "../../common/index.js";
import type { Generations } from "../generations.js";
import type { Manifest } from "../manifest.js";
import { ensureRamDir } from "../mount.js";
import { GenerationDirSink, type SecretSink } from "../sink.js";
import type { InstallProblems } from "./problems.js";

export interface PreparedGeneration {
  /** The new generation's number, or null (dry run, or nothing may be written). */
  generation: number | null;
  /** Where each file's content goes: the generation, then the extra sinks. */
  sinks: SecretSink[];
  /** The key of the content hashes in the metadata (wiped by the caller). */
  key: Buffer;
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
  extraSinks: readonly SecretSink[],
  problems: InstallProblems,
): PreparedGeneration {
  const out: PreparedGeneration = {
    generation: null,
    sinks: [],
    key: Buffer.alloc(0),
    mounted: false,
    pruned: [],
  };
  if (dry || problems.any) {
    out.key = gens.hmacKey(false);
    return out;
  }
  try {
    out.mounted = ensureRamDir(m.generationsDir, m.mount).mounted;
    out.key = gens.hmacKey(true);
    out.pruned = gens.makeRoom(active, m.keepGenerations, m.secretsDir);
    const n = gens.create();
    out.generation = n;
    out.sinks.push(new GenerationDirSink(gens.pathOf(n), () => gens.remove(n), `generation ${n}`));
    out.sinks.push(...extraSinks);
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
    out.key = gens.hmacKey(false);
  }
  return out;
}

/**
 * The sops binary store (`BinaryStore` in sops stores/json): the whole file is one value, key
 * `data` (type str, additional data `data:`), stored as JSON `{"data": ENC[...], "sops": {...}}`.
 * The plaintext is bytes, not text: it stays a Uint8Array end to end.
 */
import { SopsBranch } from "../tree.js";
import { emitJsonObject, parseJsonObject } from "./json.js";
import { checkSize, decodeUtf8, extractMetadata, formatError, type SopsStore } from "./store.js";

export const BINARY_DATA_KEY = "data";

export class BinaryStore implements SopsStore {
  readonly name = "binary" as const;

  parsePlain(input: Uint8Array): SopsBranch[] {
    checkSize("binary", input);
    return [new SopsBranch([{ key: BINARY_DATA_KEY, value: Uint8Array.from(input) }])];
  }

  parseEncrypted(input: Uint8Array): { branches: SopsBranch[]; metadata: SopsBranch | null } {
    checkSize("binary", input);
    const r = extractMetadata([parseJsonObject(decodeUtf8("binary", input), "binary")]);
    const b = r.branches[0]!;
    if (b.items.length !== 1 || typeof b.get(BINARY_DATA_KEY) !== "string") {
      throw formatError("binary", 'an encrypted binary file holds exactly one key, "data"');
    }
    return r;
  }

  emitPlain(branches: SopsBranch[]): Uint8Array {
    const v = branches[0]?.get(BINARY_DATA_KEY);
    if (v instanceof Uint8Array) return v;
    if (typeof v === "string") return Buffer.from(v, "utf8");
    throw formatError("binary", 'a binary document holds exactly one value, "data"');
  }

  emitEncrypted(branches: SopsBranch[], metadata: SopsBranch): Uint8Array {
    return emitJsonObject(new SopsBranch([...(branches[0]?.items ?? []), { key: "sops", value: metadata }]));
  }
}

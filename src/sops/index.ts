/** The sops file format: the public face of src/sops/. */
import { NixsealError } from "../common/index.js";
import { BinaryStore } from "./stores/binary.js";
import { DotenvStore } from "./stores/dotenv.js";
import { IniStore } from "./stores/ini.js";
import { JsonStore } from "./stores/json.js";
import type { SopsStore, StoreName } from "./stores/store.js";
import { YamlStore } from "./stores/yaml.js";

export {
  type CreationRule,
  findSopsConfig,
  loadSopsConfig,
  noMatchingRuleError,
  ruleFor,
  type SopsConfig,
} from "./creation-rules.js";
export {
  checkEncryptable,
  closeDocument,
  decryptDocument,
  encryptNewDocument,
  MAX_SPLICED_VALUES,
  reencryptDocument,
  reencryptOneValue,
  reencryptValues,
  type SopsDocument,
  unwrapDataKey,
  wrapDataKey,
} from "./document.js";
export { GpgHomeIdentity, GpgSshIdentity } from "./gpg.js";
export {
  type AgeKeyEntry,
  type KeyGroup,
  parseMetadata,
  type SopsMetadata,
  serializeMetadata,
} from "./metadata.js";
export { BinaryStore } from "./stores/binary.js";
export { DotenvStore } from "./stores/dotenv.js";
export { IniStore } from "./stores/ini.js";
export { JsonStore } from "./stores/json.js";
export type { SopsStore, StoreName } from "./stores/store.js";
export { YamlStore } from "./stores/yaml.js";
export { changedLeaves, isBranch, SopsBranch, SopsComment, SopsTime, type SopsValue } from "./tree.js";
export { formatTreePath, parseTreePath, setValueAt, valueAt } from "./tree-path.js";
export { type EncryptionRules, formatGoFloat, isEncryptedValue } from "./value-cipher.js";

/** A store by name. */
export function storeByName(name: StoreName): SopsStore {
  switch (name) {
    case "yaml":
      return new YamlStore();
    case "json":
      return new JsonStore();
    case "dotenv":
      return new DotenvStore();
    case "ini":
      return new IniStore();
    case "binary":
      return new BinaryStore();
    default:
      throw new NixsealError("SOPS_UNSUPPORTED", `the sops ${name} format is not supported yet`, {
        hint: "use YAML, JSON, dotenv or binary",
      });
  }
}

/**
 * The sops store a file's name gives it, as sops chooses (cmd/sops/formats): .yaml/.yml, .json,
 * .env, .ini; null for any other name (sops reads such a file as binary).
 */
export function storeNameByExtension(file: string): Exclude<StoreName, "binary"> | null {
  const p = file.toLowerCase();
  if (p.endsWith(".yaml") || p.endsWith(".yml")) return "yaml";
  if (p.endsWith(".json")) return "json";
  if (p.endsWith(".env")) return "dotenv";
  if (p.endsWith(".ini")) return "ini";
  return null;
}
export { MAX_DOCUMENT_SIZE } from "./tree.js";

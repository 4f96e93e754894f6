/**
 * The yaml library, loaded at first use: the files sops and nixseal write are read and written
 * without it (stores/yaml-canonical.ts), and loading it costs more CPU time than decrypting
 * thousands of values, so commands that never need it (`rekey` of age secrets, `decrypt` of a
 * file in sops's own form) never load it.
 */
import { createRequire } from "node:module";

type YamlLib = typeof import("yaml");

let lib: YamlLib | null = null;

export function yamlLib(): YamlLib {
  lib ??= createRequire(import.meta.url)("yaml") as YamlLib;
  return lib;
}

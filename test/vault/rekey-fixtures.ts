/**
 * What the rekey tests share: the plugin fixtures, writing every secret of some rules, the
 * options rekeyRepository takes (counting how often identities are asked for), and a file's
 * payload.
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { readHeader } from "../../src/age/age.js";
import type { Identity } from "../../src/age/types.js";
import type { KeyContext } from "../../src/keys/index.js";
import type { RekeyOptions } from "../../src/vault/rekey.js";
import type { Rules } from "../../src/vault/rules.js";
import { recipientsFor, writeSecret } from "../../src/vault/secrets.js";

/** test/fixtures/plugins in the source tree (the tests run from dist/). */
export const PLUGIN_FIXTURES = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "test",
  "fixtures",
  "plugins",
);

/** Writes every secret of `rules` with the value "value of NAME", as nixseal writes them. */
export async function writeAll(rules: Rules, ctx: KeyContext = {}): Promise<void> {
  for (const rule of rules.secrets.values()) {
    await writeSecret(rule, Buffer.from(`value of ${rule.name}`), recipientsFor(rule, rules.file, ctx));
  }
}

/** rekeyRepository's options; `calls` counts how often the identities were asked for. */
export function rekeyOptions(
  identities: Identity[],
  extra: Partial<RekeyOptions> = {},
): RekeyOptions & { calls: number } {
  const o = {
    calls: 0,
    ctx: {},
    identities: async () => {
      o.calls++;
      return identities;
    },
    ...extra,
  };
  return o;
}

/** The bytes after the header (nonce and payload), armor removed. */
export function payloadOf(file: Uint8Array): Buffer {
  const text = Buffer.from(file).toString("latin1");
  let bin: Buffer = Buffer.from(file);
  if (text.startsWith("-----BEGIN")) {
    bin = Buffer.from(
      text
        .split("\n")
        .filter((l) => l !== "" && !l.startsWith("-----"))
        .join(""),
      "base64",
    );
  }
  return bin.subarray(readHeader(bin).length);
}

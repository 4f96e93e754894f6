/** Command-line parsing on node:util parseArgs, with errors in nixseal's style. */
import { createRequire } from "node:module";
import type { ParseArgsConfig } from "node:util";
import { NixsealError } from "../common/index.js";
import { quoteArg } from "./report.js";

// require(), not import: the ES module wrapper of node:util reads every export, lazy ones too,
// and so loads ~15 internal modules more at every start (see compile-cache.ts).
const { parseArgs } = createRequire(import.meta.url)("node:util") as typeof import("node:util");

export type Options = NonNullable<ParseArgsConfig["options"]>;

export function parse<T extends Options>(argv: string[], options: T, helpHint: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    const message = (e as Error).message;
    const unknown = /^Unknown option '([^']*)'/.exec(message);
    if (unknown) {
      // What was typed is quoted shortened, and not at all if it looks like a secret key.
      throw new NixsealError("USAGE", `unknown option ${quoteArg(unknown[1]!)}`, {
        hint: `${helpHint}; a NAME starting with "-" goes after "--"`,
      });
    }
    // Node's other messages quote option names ('-o'); an argument that looks like a secret is
    // not repeated.
    const first = (message.split("\n")[0] ?? "invalid arguments").replace(
      /'([^']*)'/g,
      (quoted, inner: string) =>
        inner.length > 40 || quoteArg(inner).startsWith("(") ? quoteArg(inner) : quoted,
    );
    throw new NixsealError("USAGE", first, { hint: helpHint });
  }
}

/** Command-line parsing on node:util parseArgs, with errors in nixseal's style. */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { NixsealError } from "../common/index.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;

export function parse<T extends Options>(argv: string[], options: T, helpHint: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0] ?? "invalid arguments";
    throw new NixsealError("USAGE", msg.replace(/^Unknown option/, "unknown option"), { hint: helpHint });
  }
}

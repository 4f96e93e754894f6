import { createRequire } from "node:module";

// require(), not import: see compile-cache.ts.
const fs = createRequire(import.meta.url)("node:fs") as typeof import("node:fs");

/** nixseal's version, from package.json. */
export function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
  return String(pkg.version);
}

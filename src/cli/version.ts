import * as fs from "node:fs";

/** nixseal's version, from package.json. */
export function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
  return String(pkg.version);
}

/**
 * node:fs, loaded with require() rather than `import`: for `import`, Node builds an ES module
 * wrapper that reads every export of node:fs, the lazy ones too, and so loads fs/promises, the
 * streams and readline (~30 of Node's internal modules, ~5-10 ms of CPU at every start). The
 * files a command such as `decrypt` loads take node:fs from here (src/cli/compile-cache.ts does
 * the same for itself); one `import ... from "node:fs"` on that path would bring the cost back.
 */
import { createRequire } from "node:module";

export const nodeFs = createRequire(import.meta.url)("node:fs") as typeof import("node:fs");

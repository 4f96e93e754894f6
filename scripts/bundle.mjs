/**
 * Bundles the compiled CLI (dist/src/cli/main.js, from tsc) into dist/bundle/: main.js plus one
 * chunk per command and per lazily loaded part (esbuild's code splitting at each import()), so a
 * command reads and compiles a few files instead of ~60 modules. Start-up is most of what a small
 * command costs (bench/RESULTS.md, "start-up").
 *
 * Worker threads are entry points of the bundle too (WORKERS), so a thread starts on a few chunks
 * as the command does: `new URL("./x-worker.js", import.meta.url)` becomes the entry beside every
 * chunk in dist/bundle/. Other files nixseal opens next to its own modules (the generator runner
 * and the build fetcher, run as their own processes; package.json) stay where tsc put them: such
 * a URL in a module of dist/src is rewritten to the same file seen from dist/bundle/. Packages
 * loaded through
 * createRequire() (yaml, re2js, bcrypt-pbkdf) stay in node_modules and load when first used.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const src = path.join(root, "dist", "src");
const out = path.join(root, "dist", "bundle");

/** The worker threads' modules (under dist/src): each becomes dist/bundle/<its file name>. */
const WORKERS = [
  "age/stream-worker.js",
  "install/decrypt-worker.js",
  "vault/rekey-worker.js",
  "audit/scan-worker.js",
].map((w) => path.join(src, w));

const RELATIVE_URL = /new URL\("(\.{1,2}\/[^"]+)", import\.meta\.url\)/g;

/** Rewrites a module's URLs of files beside it: a worker's to its entry, others' to dist/src. */
const keepFilesInPlace = {
  name: "keep-files-in-place",
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(src + path.sep)) return undefined;
      const code = await fs.promises.readFile(args.path, "utf8");
      const rewritten = code.replace(RELATIVE_URL, (_whole, rel) => {
        const target = path.resolve(path.dirname(args.path), rel);
        if (!fs.existsSync(target)) throw new Error(`${args.path}: ${rel} does not exist (${target})`);
        if (WORKERS.includes(target))
          return `new URL(${JSON.stringify(`./${path.basename(target)}`)}, import.meta.url)`;
        return `new URL(${JSON.stringify(`./${path.relative(out, target)}`)}, import.meta.url)`;
      });
      return { contents: rewritten, loader: "js" };
    });
  },
};

fs.rmSync(out, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: [path.join(src, "cli", "main.js"), ...WORKERS],
  outdir: out,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node22",
  entryNames: "[name]",
  chunkNames: "chunk-[hash]",
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "eof",
  // CommonJS packages bundled into ES modules (read's mute-stream) call require() for Node's own
  // modules; each chunk gets a real one.
  banner: {
    js: 'import { createRequire as __nixsealRequire } from "node:module"; const require = __nixsealRequire(import.meta.url);',
  },
  logLevel: "warning",
  plugins: [keepFilesInPlace],
});
if (result.errors.length > 0 || result.warnings.length > 0) process.exit(1);

/**
 * The nixseal side of the small-decrypt benchmark, run as its own process so that Node's
 * start-up counts: loads one identity file through the keys layer, then decrypts every `*.age`
 * file of IN_DIR with the engine's in-memory `decrypt()` and writes each plaintext to OUT_DIR
 * (0600), as an activation would. Prints the number of files.
 *
 * Usage: node dist/bench/small-decrypt-child.js IDENTITY_FILE IN_DIR OUT_DIR
 */
import * as path from "node:path";
import { decrypt } from "../src/age/age.js";
// node:fs as nixseal loads it (src/common/node-fs.ts): the child stands for nixseal's start-up.
import { nodeFs as fs } from "../src/common/index.js";
import { loadIdentities } from "../src/keys/index.js";

const [identityFile, inDir, outDir] = process.argv.slice(2);
if (!identityFile || !inDir || !outDir) {
  process.stderr.write("usage: small-decrypt-child.js IDENTITY_FILE IN_DIR OUT_DIR\n");
  process.exit(2);
}
const identities = await loadIdentities([identityFile], {});
let n = 0;
for (const name of fs.readdirSync(inDir)) {
  if (!name.endsWith(".age")) continue;
  const plain = await decrypt(fs.readFileSync(path.join(inDir, name)), identities);
  fs.writeFileSync(path.join(outDir, name.slice(0, -4)), plain, { mode: 0o600 });
  plain.fill(0);
  n++;
}
process.stdout.write(`${n}\n`);

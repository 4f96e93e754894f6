/**
 * The nixseal side of the sops-decrypt benchmark, run as its own process so that Node's start-up
 * counts: loads one identity file through the keys layer, decrypts one sops YAML file through
 * src/sops (data key, every value, MAC) and writes the plaintext document to OUT_FILE (0600).
 *
 * Usage: node dist/bench/sops-decrypt-child.js IDENTITY_FILE SOPS_FILE OUT_FILE
 */

// node:fs as nixseal loads it (src/common/node-fs.ts): the child stands for nixseal's start-up.
import { nodeFs as fs } from "../src/common/index.js";
import { loadIdentities } from "../src/keys/index.js";
import { closeDocument, decryptDocument, YamlStore } from "../src/sops/index.js";

const [identityFile, sopsFile, outFile] = process.argv.slice(2);
if (!identityFile || !sopsFile || !outFile) {
  process.stderr.write("usage: sops-decrypt-child.js IDENTITY_FILE SOPS_FILE OUT_FILE\n");
  process.exit(2);
}
const identities = await loadIdentities([identityFile], {});
const store = new YamlStore();
const doc = await decryptDocument(fs.readFileSync(sopsFile), store, {
  identities,
  file: sopsFile,
  readOnly: true,
});
if (!doc.macVerified) throw new Error("MAC not verified");
fs.writeFileSync(outFile, store.emitPlain(doc.branches), { mode: 0o600 });
closeDocument(doc);

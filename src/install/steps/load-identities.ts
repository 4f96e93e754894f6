/** Step 3: the host's identities, loaded only when there is something to decrypt. */
import type { Identity } from "../../age/index.js";
import { NixsealError } from "../../common/index.js";
import { loadManifestIdentities } from "../identities.js";
import type { Manifest } from "../manifest.js";
import type { InstallProblems } from "./problems.js";

export interface LoadedKeys {
  identities: Identity[];
  /**
   * Identities that failed to load while others did: a problem only if a secret then finds no
   * identity (decryptSources tells), a warning otherwise.
   */
  deferred: NixsealError[];
}

export async function loadIdentities(m: Manifest, problems: InstallProblems): Promise<LoadedKeys> {
  if (m.secrets.length === 0) return { identities: [], deferred: [] };
  const loaded = await loadManifestIdentities(m.identities);
  if (loaded.identities.length > 0) return { identities: loaded.identities, deferred: loaded.problems };
  problems.add(...loaded.problems);
  problems.add(
    new NixsealError(
      "AGE_NO_MATCH",
      `no identity could be loaded, so none of the ${m.secrets.length} secrets can be decrypted`,
      {
        hint:
          m.identities.length === 0
            ? "list the host's keys in identities (nixseal.identityPaths / nixseal.ageKeyFile)"
            : "check the identity files named above",
      },
    ),
  );
  return { identities: [], deferred: [] };
}

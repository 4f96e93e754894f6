/**
 * Step 3: the host's identities, loaded when the first value must be decrypted: a re-activation
 * that takes every value from the active generation never reads a key.
 */
import type { Identity } from "../../age/index.js";
import { NixsealError } from "../../common/index.js";
import type { Manifest } from "../manifest.js";

export class LazyIdentities {
  private loading: Promise<readonly Identity[] | null> | null = null;
  /**
   * Identities that failed to load while others did: a problem only if a secret then finds no
   * identity (decryptSources tells), a warning otherwise.
   */
  deferred: NixsealError[] = [];
  /** Why none could be loaded (when none could). */
  failures: NixsealError[] = [];

  constructor(private readonly m: Manifest) {}

  /** Set once loaded: get() then answers without a promise. */
  private loaded: { identities: readonly Identity[] | null } | null = null;

  /** The identities (loaded once), or null if none could be loaded; a promise until loaded. */
  get(): readonly Identity[] | null | Promise<readonly Identity[] | null> {
    if (this.loaded !== null) return this.loaded.identities;
    this.loading ??= this.load().then((identities) => {
      this.loaded = { identities };
      return identities;
    });
    return this.loading;
  }

  private async load(): Promise<readonly Identity[] | null> {
    // Loaded here, not at start-up: the key formats (src/keys, src/ssh, src/age) cost time.
    const { loadManifestIdentities } = await import("../identities.js");
    const loaded = await loadManifestIdentities(this.m.identities);
    if (loaded.identities.length > 0) {
      this.deferred = loaded.problems;
      return loaded.identities;
    }
    this.failures = loaded.problems;
    return null;
  }
}

/** How many names a message lists before "and N more". */
const NAMES_SHOWN = 10;

/**
 * The problems when secrets needed decrypting and no identity could be loaded: why each identity
 * failed, and which secrets are left without a value (all of them on a first install; only the
 * changed ones when the others came from the active generation).
 */
export function noIdentityProblems(
  m: Manifest,
  keys: LazyIdentities,
  names: readonly string[],
): NixsealError[] {
  let which: string;
  if (names.length === m.secrets.length) which = `none of the ${names.length} secrets can be decrypted`;
  else {
    const shown = names.slice(0, NAMES_SHOWN).map((n) => `"${n}"`);
    const more = names.length - shown.length;
    which = `${names.length === 1 ? "secret" : "secrets"} ${shown.join(", ")}${more > 0 ? ` and ${more} more` : ""} cannot be decrypted`;
  }
  return [
    ...keys.failures,
    new NixsealError("AGE_NO_MATCH", `no identity could be loaded, so ${which}`, {
      hint:
        m.identities.length === 0
          ? "list the host's keys in identities (nixseal.identityPaths / nixseal.ageKeyFile)"
          : "check the identity files named above",
    }),
  ];
}

/** Step 2: owners and groups to ids: the files first, then one getent per database for the rest. */
import type { Manifest, ManifestEntry } from "../manifest.js";
import { OwnerResolver, type OwnerResolverOptions } from "../owners.js";
import type { InstallEntry } from "../sink.js";
import type { InstallProblems } from "./problems.js";

/**
 * Entry name -> the entry with ids and its slot (its index in `entries`); an entry whose owner or
 * group is unknown is left out (reported).
 */
export function resolveOwners(
  m: Manifest,
  entries: readonly ManifestEntry[],
  options: OwnerResolverOptions | undefined,
  problems: InstallProblems,
): Map<string, InstallEntry> {
  const resolver = new OwnerResolver({ useNss: m.stage !== "users", ...options });
  for (const e of entries) {
    resolver.want("passwd", e.owner);
    resolver.want("group", e.group);
  }
  resolver.resolve();
  const items = new Map<string, InstallEntry>();
  for (let slot = 0; slot < entries.length; slot++) {
    const e = entries[slot]!;
    const uid = resolver.id("passwd", e.owner);
    const gid = resolver.id("group", e.group);
    if (uid === undefined) {
      problems.install(
        e,
        `unknown user "${e.owner}"`,
        "create the user (users.users.<name>) or fix the owner",
      );
    }
    if (gid === undefined) {
      problems.install(
        e,
        `unknown group "${e.group}"`,
        "create the group (users.groups.<name>) or fix the group",
      );
    }
    if (uid !== undefined && gid !== undefined) items.set(e.name, { entry: e, uid, gid, mode: e.mode, slot });
  }
  return items;
}

/**
 * After the switch (or in a dry run): the units of what changed, appended to the restart/reload
 * lists that switch-to-configuration reads, or restarted with one systemctl call per verb.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, rethrowUnlessNixseal, writeAllSync } from "../../common/index.js";
import type { Manifest } from "../manifest.js";
import { makeDirs } from "../mount.js";
import type { Changes } from "./diff.js";
import type { InstallProblems } from "./problems.js";

export function appendUnits(file: string | null, units: readonly string[]): void {
  if (file === null || units.length === 0) return;
  makeDirs(path.dirname(file), 0o755);
  let fd: number;
  try {
    fd = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW,
      0o644,
    );
  } catch (e) {
    throw ioError("append to", file, e);
  }
  try {
    writeAllSync(fd, Buffer.from(units.map((u) => `${u}\n`).join("")));
  } catch (e) {
    throw ioError("append to", file, e);
  } finally {
    fs.closeSync(fd);
  }
}

/** A dry run: only the dry-activation lists (their errors end the install, as before). */
export function appendDryUnits(m: Manifest, changes: Changes): void {
  appendUnits(m.dryRestartListFile, changes.restartUnits);
  appendUnits(m.dryReloadListFile, changes.reloadUnits);
}

export async function notifyUnits(m: Manifest, changes: Changes, problems: InstallProblems): Promise<void> {
  if (m.restartMode === "systemctl") {
    // Loaded only in this mode: most installs append to the lists.
    const { restartWithSystemctl } = await import("../systemctl.js");
    problems.add(...restartWithSystemctl(changes.restartUnits, changes.reloadUnits));
    return;
  }
  try {
    appendUnits(m.restartListFile, changes.restartUnits);
    appendUnits(m.reloadListFile, changes.reloadUnits);
  } catch (e) {
    rethrowUnlessNixseal(e);
    problems.add(e);
  }
}

/**
 * Where a decrypted value goes. Today: a file in the new generation (GenerationDirSink). Later
 * sinks (systemd credentials for `services`) implement the same interface and are
 * handed to install(); each sees every entry with its content once, and is told to undo its
 * work when the install fails.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, NixsealError, writeAllSync } from "../common/index.js";
import type { ManifestEntry } from "./manifest.js";
import { GENERATIONS_DIR_MODE } from "./mount.js";

/** A secret or template ready to be written: the manifest entry with its owner resolved. */
export interface InstallEntry {
  entry: ManifestEntry;
  uid: number;
  gid: number;
  mode: number;
}

export interface SecretSink {
  /** For messages, e.g. "generation 3". */
  readonly description: string;
  /** Puts one entry's content in place. Throws a NixsealError; the content stays the caller's. */
  write(item: InstallEntry, content: Uint8Array): void;
  /** The install failed: remove everything this sink wrote. */
  abort(): void;
}

/**
 * Files in a fresh generation directory: each created with its final mode (O_EXCL|O_NOFOLLOW,
 * never chmod-ed after), given its owner and group before a byte is written; subdirectories of
 * names like db/password are made 0751, owned by root.
 */
export class GenerationDirSink implements SecretSink {
  readonly description: string;
  private readonly made = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly onAbort: () => void,
    description: string,
  ) {
    this.description = description;
  }

  private ensureParent(name: string): void {
    const parts = name.split("/");
    let rel = "";
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel === "" ? parts[i]! : `${rel}/${parts[i]}`;
      if (this.made.has(rel)) continue;
      const dir = path.join(this.dir, rel);
      try {
        fs.mkdirSync(dir, { mode: GENERATIONS_DIR_MODE });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the directory", dir, e);
      }
      this.made.add(rel);
    }
  }

  write(item: InstallEntry, content: Uint8Array): void {
    this.ensureParent(item.entry.name);
    const file = path.join(this.dir, item.entry.name);
    let fd: number;
    try {
      fd = fs.openSync(
        file,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
        item.mode,
      );
    } catch (e) {
      throw ioError("create", file, e);
    }
    try {
      fs.fchownSync(fd, item.uid, item.gid);
      writeAllSync(fd, content);
    } catch (e) {
      throw e instanceof NixsealError ? e : ioError("write", file, e);
    } finally {
      fs.closeSync(fd);
    }
  }

  abort(): void {
    this.onAbort();
  }
}

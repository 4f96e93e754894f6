/**
 * User and group names to ids, as the host resolves them: /etc/passwd and /etc/group first (read
 * once), then NSS through `getent` for the names the files do not list (one `getent` run per
 * database for all of them, e.g. users from LDAP or systemd-homed). Names only ever reach argv;
 * nothing secret does.
 */
import * as fs from "node:fs";
import { childProcess, findExecutable } from "../common/index.js";

export type Database = "passwd" | "group";

/** Files larger than this are not an /etc/passwd: read what fits, NSS does the rest. */
const MAX_DB_FILE = 16 * 1024 * 1024;
const DECIMAL_ID = /^(0|[1-9][0-9]{0,9})$/;

function parseDb(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const f = line.split(":");
    if (f.length < 3) continue;
    const name = f[0]!;
    const id = f[2]!;
    if (name === "" || name.startsWith("+") || name.startsWith("-") || !DECIMAL_ID.test(id)) continue;
    if (!out.has(name)) out.set(name, Number(id));
  }
  return out;
}

function readDb(file: string): Map<string, number> {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > MAX_DB_FILE) return new Map();
    return parseDb(fs.readFileSync(file, "utf8"));
  } catch {
    return new Map();
  }
}

export interface OwnerResolverOptions {
  /** Defaults: /etc/passwd and /etc/group. */
  passwdFile?: string;
  groupFile?: string;
  /** Ask NSS (getent) for names the files lack (default true; false in the users stage). */
  useNss?: boolean;
}

/**
 * Resolves every name of one install in at most two `getent` runs: call `want()` for each name,
 * then `resolve()` once, then `id()`.
 */
export class OwnerResolver {
  private readonly files: Record<Database, Map<string, number>>;
  private readonly wanted: Record<Database, Set<string>> = { passwd: new Set(), group: new Set() };
  private readonly nss: Record<Database, Map<string, number>> = { passwd: new Map(), group: new Map() };
  private readonly useNss: boolean;
  /** How many getent processes ran (for tests: never one per secret). */
  getentRuns = 0;

  constructor(options: OwnerResolverOptions = {}) {
    this.files = {
      passwd: readDb(options.passwdFile ?? "/etc/passwd"),
      group: readDb(options.groupFile ?? "/etc/group"),
    };
    this.useNss = options.useNss ?? true;
  }

  want(db: Database, name: string | null): void {
    if (name === null || DECIMAL_ID.test(name) || this.files[db].has(name)) return;
    this.wanted[db].add(name);
  }

  /** Asks NSS for every wanted name the files lack. */
  resolve(): void {
    if (!this.useNss) return;
    for (const db of ["passwd", "group"] as const) {
      const names = [...this.wanted[db]];
      if (names.length === 0) continue;
      const getent = findExecutable("getent");
      if (getent === null) return;
      this.getentRuns++;
      // getent prints the entries it finds (exit 2 when some are missing); stdin closed.
      const r = childProcess().spawnSync(getent, [db, "--", ...names], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        timeout: 30_000,
        maxBuffer: MAX_DB_FILE,
      });
      if (typeof r.stdout !== "string") continue;
      const found = parseDb(r.stdout);
      for (const n of names) {
        const id = found.get(n);
        if (id !== undefined) this.nss[db].set(n, id);
      }
    }
  }

  /**
   * The id of a name; null means "the user running install" (its euid/egid). undefined if the
   * name is unknown. "root" is 0 even on a host whose /etc/passwd is not there yet.
   */
  id(db: Database, name: string | null): number | undefined {
    if (name === null) return db === "passwd" ? process.geteuid!() : process.getegid!();
    if (DECIMAL_ID.test(name)) return Number(name);
    const id = this.files[db].get(name) ?? this.nss[db].get(name);
    if (id === undefined && name === "root") return 0;
    return id;
  }
}

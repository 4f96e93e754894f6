/**
 * What to scan in the Nix store: the closure of a store path (`nix-store -qR`, one call) and,
 * with derivations, the .drv files and sources that produced it (`nix-store -qd` for the
 * derivers, `nix-store -qR` of those .drv files). Nothing here reads a secret.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { NixsealError } from "../common/index.js";

/** Paths per nix-store call: keeps argv far below the kernel's limit for system closures. */
const BATCH = 2000;
const MAX_OUTPUT = 512 * 1024 * 1024;

function nixStore(args: string[], what: string): string[] {
  const r = spawnSync("nix-store", args, { encoding: "utf8", maxBuffer: MAX_OUTPUT });
  if (r.error) {
    const missing = (r.error as NodeJS.ErrnoException).code === "ENOENT";
    throw new NixsealError(
      "AUDIT_STORE",
      `cannot run nix-store to ${what}: ${missing ? "not found" : r.error.message}`,
      {
        hint: missing ? "install Nix (nix-store must be on PATH)" : "check the Nix installation",
      },
    );
  }
  if (r.status !== 0) {
    const err = (r.stderr ?? "").trim().split("\n").filter(Boolean).pop() ?? `exit status ${r.status}`;
    throw new NixsealError("AUDIT_STORE", `nix-store could not ${what}: ${err.replace(/^error: /, "")}`, {
      hint: "give a path in the Nix store (a build result, e.g. ./result, or /run/current-system)",
    });
  }
  return r.stdout.split("\n").filter((l) => l.length > 0);
}

function batches<T>(xs: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += BATCH) out.push(xs.slice(i, i + BATCH));
  return out;
}

/** Every store path in the closure of `storePath` (a symlink to a store path is resolved by Nix). */
export function closureOf(storePath: string): string[] {
  return nixStore(["--query", "--requisites", storePath], `list the closure of ${storePath}`);
}

export interface Derivations {
  /** .drv files and the sources they name (files copied to the store by `${./file}` or `builtins.path`). */
  paths: string[];
  /** Store paths whose deriver is unknown or no longer in the store (substituted, or collected). */
  missingDerivers: string[];
}

/**
 * The derivations that produced `paths` and, recursively, their input derivations and sources
 * (the closure of each .drv file: build-time outputs are not included, only what the .drv files
 * reference directly: other .drv files and sources).
 */
export function derivationsOf(paths: readonly string[]): Derivations {
  const derivers = new Set<string>();
  const missingDerivers: string[] = [];
  for (const batch of batches(paths)) {
    const out = nixStore(["--query", "--deriver", ...batch], "find the derivations of the closure");
    batch.forEach((p, i) => {
      const d = out[i];
      if (d === undefined || d === "unknown-deriver" || !fs.existsSync(d)) missingDerivers.push(p);
      else derivers.add(d);
    });
  }
  const all = new Set<string>();
  for (const batch of batches([...derivers])) {
    for (const p of nixStore(["--query", "--requisites", ...batch], "list the input derivations")) all.add(p);
  }
  return { paths: [...all], missingDerivers };
}

/** The top-level store path a file below /nix/store belongs to, or null. */
export function storePathOf(file: string, storeDir = "/nix/store"): string | null {
  const prefix = `${storeDir}/`;
  if (!file.startsWith(prefix)) return null;
  const name = file.slice(prefix.length).split("/")[0]!;
  return name.length > 0 && !name.startsWith(".") ? prefix + name : null;
}

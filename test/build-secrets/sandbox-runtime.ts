/**
 * A self-contained runtime for the sandboxed builds of the tests and the bench, in the Nix store:
 * the host's Node (the fetcher's interpreter), git with its http helper, a /bin/sh (dash), and
 * every shared library `ldd` lists for them, the ELF loader included, laid out as the loader
 * looks for them (its own path, e.g. lib64/ld-linux-x86-64.so.2, and its default search path,
 * e.g. lib/x86_64-linux-gnu/). Added with `nix-store --add`, so its path depends only on its
 * content, and cached in a record under the temp dir: made once per machine.
 *
 * The sandbox then gets `/lib64=<rt>/lib64 /lib=<rt>/lib /bin/sh=<rt>/bin/sh`: only store paths
 * as sources. Never a host system directory (/bin, /usr, /lib, /etc): Nix 2.8 writes files such
 * as /etc/passwd, and file targets of sandbox-paths, into the chroot, and through a bind mount of
 * a host directory that writes into the host (docs/build-secrets.md, "What Nix 2.8 can and cannot
 * do"). assertStoreOnlySandboxPaths checks every nix.conf the tests write.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { which } from "../helpers.js";

export interface SandboxRuntime {
  /** The runtime's store path. */
  storePath: string;
  /** Node.js in the store: the fetcher's interpreter. */
  node: string;
  /** git in the store, with libexec/git-core/{git,git-remote-http,git-remote-https} beside bin/. */
  git: string;
  /** dash in the store, mounted at /bin/sh. */
  sh: string;
  /** The `sandbox-paths` value: store paths as sources only. */
  sandboxPaths: string;
}

/** The host programs copied into the runtime: runtime path -> host program. */
function programs(): Map<string, string> | string {
  const node = fs.existsSync("/usr/bin/node") ? "/usr/bin/node" : which("node");
  const dash = which("dash");
  const gitCore = ["/usr/lib/git-core", "/usr/libexec/git-core"].find((d) =>
    fs.existsSync(path.join(d, "git-remote-http")),
  );
  const missing = [
    node === null ? "node" : "",
    dash === null ? "dash" : "",
    gitCore === undefined ? "git's http helper (git-core/git-remote-http)" : "",
    which("ldd") === null ? "ldd" : "",
  ].filter((m) => m !== "");
  if (missing.length > 0) return `needs ${missing.join(", ")} on the host (copied into the store)`;
  const m = new Map<string, string>();
  m.set("bin/node", fs.realpathSync(node!));
  m.set("bin/sh", fs.realpathSync(dash!));
  m.set("bin/git", fs.realpathSync(path.join(gitCore!, "git")));
  for (const f of ["git", "git-remote-http", "git-remote-https"]) {
    const p = path.join(gitCore!, f);
    if (fs.existsSync(p)) m.set(`libexec/git-core/${f}`, fs.realpathSync(p));
  }
  return m;
}

interface Library {
  /** Where it goes in the runtime (relative). */
  at: string;
  /** The host file. */
  from: string;
}

/**
 * The shared libraries of `program` as `ldd` resolves them. A library found in `<dir>/<triplet>`
 * (the multiarch directory, e.g. /usr/lib/x86_64-linux-gnu) goes to lib/<triplet>/<name>, others
 * to lib/<name>: both on the loader's default search path once /lib is the runtime's lib. The
 * loader goes where the program's PT_INTERP names it (e.g. lib64/ld-linux-x86-64.so.2).
 */
function libraries(program: string): Library[] {
  const r = spawnSync("ldd", [program], { encoding: "utf8" });
  assert.equal(r.status, 0, `ldd ${program}: ${r.stderr}`);
  const out: Library[] = [];
  for (const line of r.stdout.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("linux-vdso") || t.startsWith("linux-gate")) continue;
    const needed = /^(\S+) => (\/\S+) \(0x[0-9a-f]+\)$/.exec(t);
    if (needed) {
      const dir = path.basename(path.dirname(needed[2]!));
      const sub = /^[a-z0-9_]+-linux-[a-z0-9_]+$/.test(dir) ? `lib/${dir}` : "lib";
      out.push({ at: `${sub}/${needed[1]!}`, from: fs.realpathSync(needed[2]!) });
      continue;
    }
    const loader = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(t);
    assert.ok(loader, `ldd ${program}: unexpected line ${JSON.stringify(t)}`);
    assert.match(loader[1]!, /^\/lib(64)?\/[^/]+$/, `the loader is not in /lib or /lib64: ${loader[1]}`);
    out.push({ at: loader[1]!.slice(1), from: fs.realpathSync(loader[1]!) });
  }
  return out;
}

function hashFile(hash: ReturnType<typeof createHash>, file: string): void {
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

let cached: SandboxRuntime | null = null;

/** Why the runtime cannot be made on this host (a skip reason), or false. */
export const SANDBOX_RUNTIME_SKIP: string | false = (() => {
  const p = programs();
  return typeof p === "string" ? p : which("nix-store") === null ? "needs nix-store" : false;
})();

/** The runtime in the store: made (or found by its content) once per machine. */
export function sandboxRuntime(): SandboxRuntime {
  if (cached) return cached;
  const progs = programs();
  assert.ok(typeof progs !== "string", String(progs));
  const files = new Map<string, string>(progs);
  const libTops = new Set<string>();
  for (const from of progs.values()) {
    for (const lib of libraries(from)) {
      libTops.add(lib.at.split("/")[0]!);
      const had = files.get(lib.at);
      assert.ok(had === undefined || had === lib.from, `${lib.at}: both ${had} and ${lib.from}`);
      files.set(lib.at, lib.from);
    }
  }
  const entries = [...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  const hash = createHash("sha256");
  for (const [at, from] of entries) {
    hash.update(`${at}\0${fs.statSync(from).mode & 0o111 ? "x" : "-"}\0`);
    hashFile(hash, from);
  }
  const key = hash.digest("hex").slice(0, 32);
  const name = `nixseal-test-sandbox-runtime-${key}`;
  const record = path.join(os.tmpdir(), `${name}.store-path`);
  let storePath = fs.existsSync(record) ? fs.readFileSync(record, "utf8").trim() : "";
  const valid =
    storePath.endsWith(`-${name}`) &&
    spawnSync("nix-store", ["--check-validity", storePath], { stdio: "ignore" }).status === 0;
  if (!valid) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nixseal-runtime-"));
    try {
      const dir = path.join(tmp, name);
      for (const [at, from] of entries) {
        fs.mkdirSync(path.join(dir, path.dirname(at)), { recursive: true });
        fs.copyFileSync(from, path.join(dir, at));
      }
      const r = spawnSync("nix-store", ["--add", dir], { encoding: "utf8" });
      assert.equal(r.status, 0, `nix-store --add: ${r.stderr}`);
      storePath = r.stdout.trim();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    // Atomically: test files run in parallel and may make it at the same time (same result).
    const part = `${record}.${randomBytes(4).toString("hex")}`;
    fs.writeFileSync(part, `${storePath}\n`);
    fs.renameSync(part, record);
  }
  cached = {
    storePath,
    node: `${storePath}/bin/node`,
    git: `${storePath}/bin/git`,
    sh: `${storePath}/bin/sh`,
    sandboxPaths: [
      ...[...libTops].sort().map((t) => `/${t}=${storePath}/${t}`),
      `/bin/sh=${storePath}/bin/sh`,
    ].join(" "),
  };
  return cached;
}

const HOST_DIRS = ["/bin", "/usr", "/lib", "/lib64", "/etc", "/sbin"];

/**
 * Every `sandbox-paths` / `extra-sandbox-paths` entry of a nix.conf text has a source outside
 * the host's system directories (`target=source`, or `path` for both; a trailing `?` makes it
 * optional). Fails with the offending entries.
 */
export function assertStoreOnlySandboxPaths(confText: string, where: string): void {
  const bad: string[] = [];
  for (const line of confText.split("\n")) {
    const m = /^\s*(?:extra-)?sandbox-paths\s*=(.*)$/.exec(line);
    if (!m) continue;
    for (const entry of m[1]!
      .trim()
      .split(/\s+/)
      .filter((e) => e !== "")) {
      const eq = entry.indexOf("=");
      const source = path.posix.normalize((eq < 0 ? entry : entry.slice(eq + 1)).replace(/\?$/, ""));
      if (
        HOST_DIRS.some((d) => source === d || source.startsWith(`${d}/`)) ||
        !source.startsWith("/nix/store/")
      ) {
        bad.push(entry);
      }
    }
  }
  assert.deepEqual(bad, [], `${where} binds host paths into the sandbox: ${bad.join(" ")}`);
}

/** Writes a nix.conf of `lines`, after checking that it binds no host path into the sandbox. */
export function writeNixConf(file: string, lines: string[]): void {
  const text = `${lines.join("\n")}\n`;
  assertStoreOnlySandboxPaths(text, file);
  fs.writeFileSync(file, text);
}

/**
 * nixseal's trusted fetcher: the builder of the fixed-output derivations that nix/lib/fetchurl.nix
 * and nix/lib/fetchgit.nix make. It runs inside the Nix sandbox and reads the secret the pre-build hook mounted at
 * /run/nixseal-secret, puts it into one request header, and downloads the derivation's `url` to
 * `$out`. The secret goes to that URL's origin only: redirects to another scheme, host or port
 * are refused, TLS is verified (Node's built-in CA list, so no certificate file is needed in the
 * sandbox), and http:// is accepted only to 127.0.0.1/localhost (for tests and local mirrors).
 * It never prints the secret, nor a response body (a server may echo the token back in an error).
 *
 * With a `rev` attribute it fetches that commit of the git repository at `url` instead, with the
 * git program the policy pins (`nixsealGit`), and writes its tree to `$out` without `.git`: what
 * an unauthenticated clone of that commit checks out. Git gets the token from a credential helper
 * this fetcher writes (a script that reads /run/nixseal-secret when git asks, for the URL's origin
 * only): never in argv, the environment or the URL. Git runs without system or global config
 * (its own config file, an empty HOME), never prompts, follows no redirect, speaks only http(s),
 * and verifies TLS with Node's built-in CA list.
 *
 * This file imports nothing but Node's own modules: it is added to the store as one file and
 * pinned by that store path in the policy. The hook has already checked the URL and the header
 * against the policy; the checks here are a second line, not the authority.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as path from "node:path";
import * as tls from "node:tls";

const SECRET_PATH = "/run/nixseal-secret";
const REFUSAL_PATH = "/run/nixseal-refusal";
const DEFAULT_HEADER = "Authorization: Bearer {secret}";
const MAX_SECRET_BYTES = 64 * 1024;
const MAX_REDIRECTS = 5;
const IDLE_TIMEOUT_MS = 120_000;

class FetchError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

function clean(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, "?").slice(0, 500);
}

function isLoopback(hostname: string): boolean {
  return (
    hostname === "localhost" || hostname === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
  );
}

function checkUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FetchError(
      `the URL does not parse: ${clean(raw)}`,
      "the url attribute of the derivation is wrong",
    );
  }
  if (url.href !== raw || url.username !== "" || url.password !== "" || url.hash !== "") {
    throw new FetchError(`the URL is not canonical: ${clean(raw)}`, `write it as ${clean(url.href)}`);
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopback(url.hostname))) {
    throw new FetchError(
      `refusing to send a secret to ${clean(url.origin)}`,
      "secrets go over https:// only",
    );
  }
  return url;
}

/** Reads the secret: one line; a single trailing newline (as editors write) is dropped. */
function readSecret(name: string): Buffer {
  let data: Buffer;
  try {
    const fd = fs.openSync(SECRET_PATH, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(MAX_SECRET_BYTES + 1);
      let off = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, off, buf.length - off, null);
        if (n === 0) break;
        off += n;
        if (off > MAX_SECRET_BYTES) {
          buf.fill(0);
          throw new FetchError(
            `the secret "${name}" is larger than ${MAX_SECRET_BYTES} bytes`,
            "a header token is short",
          );
        }
      }
      data = buf.subarray(0, off);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if (e instanceof FetchError) throw e;
    let refusal = "";
    try {
      refusal = fs.readFileSync(REFUSAL_PATH, "utf8");
    } catch {}
    if (refusal !== "") {
      // The hook ends the reasons with "hint: ..." naming the policy it read.
      const lines = refusal.trim().split("\n").slice(0, 21).map(clean);
      const hint = lines.length > 1 && lines.at(-1)!.startsWith("hint: ") ? lines.pop()!.slice(6) : null;
      throw new FetchError(lines.join("\n"), hint ?? "see the nix-daemon log and docs/build-secrets.md");
    }
    throw new FetchError(
      `the build secret "${name}" was not provided to this build (${SECRET_PATH} is missing)`,
      "is the sandbox on (sandbox = true) and nixseal's pre-build-hook configured? The nix-daemon log says more",
    );
  }
  let end = data.length;
  if (end > 0 && data[end - 1] === 0x0a) end--;
  if (end > 0 && data[end - 1] === 0x0d) end--;
  const secret = data.subarray(0, end);
  if (secret.length === 0 || secret.some((b) => b < 0x20 || b === 0x7f)) {
    data.fill(0);
    throw new FetchError(
      `the secret "${name}" is empty or has control characters (it goes into an HTTP header)`,
      "store the token as one line; only a trailing newline is allowed",
    );
  }
  return secret;
}

function headerOf(template: string): { name: string; before: string; after: string } {
  const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ ]?([\x20-\x7e]*)$/.exec(template);
  const parts = m ? m[2]!.split("{secret}") : [];
  const lower = m ? m[1]!.toLowerCase() : "";
  if (!m || parts.length !== 2 || lower === "host" || lower.startsWith("proxy-")) {
    throw new FetchError(`invalid header template: ${clean(template)}`, 'use "Name: text with {secret}"');
  }
  return { name: m[1]!, before: parts[0]!, after: parts[1]! };
}

function get(url: URL, headers: Record<string, string>): Promise<http.IncomingMessage> {
  const lib = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method: "GET", headers, agent: false }, resolve);
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error("no data for 120 s")));
    req.on("error", reject);
    req.end();
  });
}

async function download(out: string, startUrl: URL, headers: Record<string, string>): Promise<void> {
  let url = startUrl;
  for (let hop = 0; ; hop++) {
    let res: http.IncomingMessage;
    try {
      res = await get(url, headers);
    } catch (e) {
      throw new FetchError(
        `cannot reach ${clean(url.origin)}: ${clean((e as Error).message)}`,
        "check the URL and the network",
      );
    }
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location !== undefined) {
      res.resume();
      let next: URL;
      try {
        next = new URL(res.headers.location, url);
      } catch {
        throw new FetchError(
          `a redirect from ${clean(url.href)} has a bad Location`,
          "the server misbehaves",
        );
      }
      if (next.origin !== startUrl.origin) {
        throw new FetchError(
          `refusing a redirect from ${clean(startUrl.origin)} to ${clean(next.origin)}: the secret goes to its own origin only`,
          "use the final URL in the derivation, and allow its prefix in the policy",
        );
      }
      if (hop >= MAX_REDIRECTS)
        throw new FetchError(`more than ${MAX_REDIRECTS} redirects`, "the server loops");
      url = next;
      continue;
    }
    if (status !== 200) {
      res.resume();
      throw new FetchError(
        `HTTP ${status} from ${clean(url.href)}`,
        status === 401 || status === 403
          ? "the server refused the secret: is it still valid?"
          : "check the URL",
      );
    }
    const file = fs.createWriteStream(out, { flags: "wx", mode: 0o644 });
    await new Promise<void>((resolve, reject) => {
      res.on("error", reject);
      file.on("error", reject);
      file.on("finish", resolve);
      res.pipe(file);
    }).catch((e: Error) => {
      throw new FetchError(`download of ${clean(url.href)} failed: ${clean(e.message)}`, "try again");
    });
    return;
  }
}

// --- fetchgit -----------------------------------------------------------------------------------

const REV_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const USER_RE = /^[A-Za-z0-9._-]{1,64}$/;
const DEFAULT_GIT_USER = "x-access-token";
const MAX_GIT_OUTPUT = 1024 * 1024;

/**
 * The credential helper git runs (`credential.helper` is this script's path: git executes a
 * helper without a shell when its name has no special characters). It answers `get` for the one
 * origin the derivation fetches from, with the secret read from the file the hook mounted; any
 * other request gets no answer, and git, which may not prompt, fails.
 */
function credentialHelper(node: string, url: URL, user: string): string {
  const expect = JSON.stringify({ protocol: url.protocol.slice(0, -1), host: url.host, user });
  return `#!${node}
// nixseal-fetch's git credential helper (written for one build; holds no secret).
const fs = require("node:fs");
const want = ${expect};
if (process.argv[2] !== "get") process.exit(0);
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => { input += d; if (input.length > 65536) process.exit(1); });
process.stdin.on("end", () => {
  const got = {};
  for (const line of input.split("\\n")) {
    const i = line.indexOf("=");
    if (i > 0) got[line.slice(0, i)] = line.slice(i + 1);
  }
  if (got.protocol !== want.protocol || got.host !== want.host) {
    process.stderr.write("nixseal-fetch: git asked for credentials for another origin: refused\\n");
    process.exit(0);
  }
  let secret = fs.readFileSync(${JSON.stringify(SECRET_PATH)}, "latin1");
  if (secret.endsWith("\\n")) secret = secret.slice(0, -1);
  if (secret.endsWith("\\r")) secret = secret.slice(0, -1);
  if (secret === "" || /[\\x00-\\x1f\\x7f]/.test(secret)) process.exit(1);
  process.stdout.write("username=" + want.user + "\\npassword=" + secret + "\\n");
});
`;
}

/** Runs git with a clean, fixed environment; its output is shown only on failure, cleaned. */
function runGit(git: string, env: Record<string, string>, args: string[], what: string): void {
  const r = spawnSync(git, args, {
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: MAX_GIT_OUTPUT,
  });
  if (r.error !== undefined || r.status !== 0) {
    const text = `${r.stderr ?? ""}${r.error === undefined ? "" : String(r.error.message)}`;
    const lines = text.trim().split("\n").slice(-8).map(clean).join("\n  ");
    throw new FetchError(
      `git ${what} failed (exit ${r.status ?? r.signal}):\n  ${lines}`,
      /cannot run .*credential-helper/.test(text)
        ? "git starts its credential helper through the shell it was built with: use a git from nixpkgs (gitMinimal), whose closure has that shell; a distribution's git needs the host's /bin/sh, which the sandbox does not have (docs/build-secrets.md)"
        : /Authentication failed|could not read Username|401|403/.test(text)
          ? "the server refused the secret: is it still valid, and allowed to read this repository?"
          : "check the URL and the rev (a full commit id that the repository has)",
    );
  }
}

/** Fetches commit `rev` of the repository at `url` and checks its tree out into `out`. */
function fetchGit(out: string, url: URL, rev: string, git: string, user: string): void {
  if (!REV_RE.test(rev)) {
    throw new FetchError(
      `rev is not a full commit id: ${clean(rev)}`,
      "give the 40 (or 64) hex digits of the commit",
    );
  }
  if (!USER_RE.test(user)) {
    throw new FetchError(`invalid user name for git: ${clean(user)}`, "letters, digits, '.', '_' and '-'");
  }
  if (!path.isAbsolute(git)) {
    throw new FetchError(`nixsealGit is not an absolute path: ${clean(git)}`, "use nixseal's lib.fetchgit");
  }
  const top = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "nixseal-git-"));
  const home = path.join(top, "home");
  const gitDir = path.join(top, "repo.git");
  const templates = path.join(top, "templates");
  fs.mkdirSync(home, { mode: 0o700 });
  fs.mkdirSync(templates, { mode: 0o700 });
  const helper = path.join(top, "credential-helper");
  fs.writeFileSync(helper, credentialHelper(process.execPath, url, user), { mode: 0o500 });
  const caFile = path.join(top, "ca.pem");
  fs.writeFileSync(caFile, `${tls.rootCertificates.join("\n")}\n`, { mode: 0o400 });
  // The global config, also where a git without GIT_CONFIG_GLOBAL (before 2.32) looks for it.
  const config = path.join(home, ".gitconfig");
  const scheme = url.protocol.slice(0, -1);
  fs.writeFileSync(
    config,
    [
      "[credential]",
      `\thelper = ${helper}`,
      "[http]",
      "\tfollowRedirects = false",
      `\tsslCAInfo = ${caFile}`,
      "\tsslVerify = true",
      "[protocol]",
      "\tallow = never",
      `[protocol "${scheme}"]`,
      "\tallow = always",
      "[core]",
      "\taskPass =",
      "[transfer]",
      "\tfsckObjects = true",
      "[advice]",
      "\tdetachedHead = false",
      "",
    ].join("\n"),
    { mode: 0o400 },
  );
  const prefix = path.dirname(path.dirname(git));
  const execPath = path.join(prefix, "libexec", "git-core");
  const env: Record<string, string> = {
    HOME: home,
    PATH: path.dirname(git),
    TMPDIR: top,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: config,
    GIT_TERMINAL_PROMPT: "0",
    GIT_TEMPLATE_DIR: templates,
    GIT_DIR: gitDir,
    LC_ALL: "C",
    ...(fs.existsSync(execPath) ? { GIT_EXEC_PATH: execPath } : {}),
  };
  try {
    runGit(git, env, ["init", "--quiet", "--bare", gitDir], "init");
    process.stderr.write(`nixseal-fetch: fetching ${rev} from ${url.href}\n`);
    // By commit id (protocol v2 servers and GitHub allow it); else every branch and tag.
    const byRev = spawnSync(git, ["fetch", "--quiet", "--no-tags", "--depth=1", url.href, rev], {
      env,
      stdio: "ignore",
    });
    if (byRev.status !== 0) {
      runGit(
        git,
        env,
        ["fetch", "--quiet", "--no-tags", url.href, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        "fetch",
      );
    }
    runGit(git, env, ["cat-file", "-e", `${rev}^{commit}`], `lookup of commit ${rev}`);
    fs.mkdirSync(out, { mode: 0o755 });
    runGit(
      git,
      { ...env, GIT_WORK_TREE: out },
      ["checkout", "--quiet", "--force", rev, "--", "."],
      "checkout",
    );
    // The index lives in GIT_DIR: $out holds the tree only.
  } finally {
    fs.rmSync(top, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const env = process.env;
  const name = env.nixsealSecret ?? "";
  const out = env.out ?? "";
  try {
    if (name === "" || out === "" || env.url === undefined) {
      throw new FetchError(
        "nixsealSecret, url or out is not set",
        "run this only as the builder of nixseal's fetchurl",
      );
    }
    // The secret (or the hook's refusal) first: a refusal explains more than any check here.
    const secret = readSecret(name);
    if (env.rev !== undefined) {
      // fetchgit: git's credential helper reads the secret itself, when git asks.
      secret.fill(0);
      const url = checkUrl(env.url);
      fetchGit(out, url, env.rev, env.nixsealGit ?? "", env.nixsealUser ?? DEFAULT_GIT_USER);
      return 0;
    }
    let url: URL;
    let header: { name: string; before: string; after: string };
    try {
      url = checkUrl(env.url);
      header = headerOf(env.nixsealHeader ?? DEFAULT_HEADER);
    } catch (e) {
      secret.fill(0);
      throw e;
    }
    const headers: Record<string, string> = {
      "user-agent": "nixseal-fetcher",
      "accept-encoding": "identity",
      // The one place the secret is turned into a string: Node's HTTP API takes header strings.
      [header.name]: `${header.before}${secret.toString("latin1")}${header.after}`,
    };
    secret.fill(0);
    process.stderr.write(`nixseal-fetch: downloading ${url.href} with the secret "${name}"\n`);
    await download(out, url, headers);
    headers[header.name] = "";
    return 0;
  } catch (e) {
    const err =
      e instanceof FetchError ? e : new FetchError(`internal error: ${clean(String(e))}`, "report this bug");
    process.stderr.write(`nixseal-fetch: error: ${err.message}\nnixseal-fetch: hint: ${err.hint}\n`);
    try {
      fs.rmSync(out, { recursive: true, force: true });
    } catch {}
    return 1;
  }
}

process.exitCode = await main();

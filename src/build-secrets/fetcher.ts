/**
 * nixseal's trusted fetcher: the builder of the fixed-output derivations that nix/lib/fetchurl.nix
 * makes. It runs inside the Nix sandbox and reads the secret the pre-build hook mounted at
 * /run/nixseal-secret, puts it into one request header, and downloads the derivation's `url` to
 * `$out`. The secret goes to that URL's origin only: redirects to another scheme, host or port
 * are refused, TLS is verified (Node's built-in CA list, so no certificate file is needed in the
 * sandbox), and http:// is accepted only to 127.0.0.1/localhost (for tests and local mirrors).
 * It never prints the secret, nor a response body (a server may echo the token back in an error).
 *
 * This file imports nothing but Node's own modules: it is added to the store as one file and
 * pinned by that store path in the policy. The hook has already checked the URL and the header
 * against the policy; the checks here are a second line, not the authority.
 */
import * as fs from "node:fs";
import * as http from "node:http";
import * as https from "node:https";

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
      fs.rmSync(out, { force: true });
    } catch {}
    return 1;
  }
}

process.exitCode = await main();

/**
 * URLs a build secret may be sent to. Both the policy's prefixes and the derivation's URL must be
 * in the canonical form the WHATWG URL parser prints (what Node's fetcher will actually request),
 * so "matches the prefix" is a comparison of parsed parts, never of strings that a parser might
 * read differently: scheme, host, port, and a path prefix that ends at a segment boundary.
 * Anything a parser could normalise into another place is refused outright: userinfo,
 * backslashes, encoded dots/slashes, dot segments, non-ASCII, whitespace, fragments.
 */

export const MAX_URL_LENGTH = 4096;

/** http:// is allowed only to this machine (tests, a local mirror); everything else is https. */
export function isLoopbackHost(hostname: string): boolean {
  return (
    hostname === "localhost" || hostname === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
  );
}

export type UrlCheck = { ok: true; url: URL } | { ok: false; reason: string };

/** Parses a URL a secret may go to, or says why it is refused. */
export function parseSecretUrl(raw: string, what = "URL"): UrlCheck {
  const no = (reason: string): UrlCheck => ({ ok: false, reason: `${what} ${reason}` });
  if (raw.length === 0) return no("is empty");
  if (raw.length > MAX_URL_LENGTH) return no(`is longer than ${MAX_URL_LENGTH} characters`);
  if (!/^[\x21-\x7e]+$/.test(raw)) return no("has whitespace, control or non-ASCII characters");
  if (raw.includes("\\")) return no("has a backslash");
  if (/%(2e|2f|5c|00)/i.test(raw)) return no("has an encoded '.', '/', '\\' or NUL");
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return no("does not parse");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    return no("is not https:// (or http:// to localhost)");
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    return no(
      "uses http:// to a remote host; secrets go over https:// only (http:// only to 127.0.0.1/localhost)",
    );
  }
  if (url.username !== "" || url.password !== "") return no("has user info (user@host)");
  if (url.hash !== "" || raw.includes("#")) return no("has a fragment ('#')");
  if (url.href !== raw) return no(`is not in canonical form (write it as ${url.href})`);
  if (url.pathname.split("/").some((s) => s === "." || s === "..")) return no("has a '.' or '..' segment");
  return { ok: true, url };
}

/** Validates a policy prefix: a secret URL with no query. */
export function parseUrlPrefix(raw: string): UrlCheck {
  const r = parseSecretUrl(raw, "URL prefix");
  if (!r.ok) return r;
  if (r.url.search !== "" || raw.includes("?")) return { ok: false, reason: "URL prefix has a query ('?')" };
  return r;
}

/**
 * True when `url` lies under `prefix`: same scheme, host and port, and the prefix's path is the
 * URL's path or one of its parent segments ("/a/b" covers "/a/b" and "/a/b/c", not "/a/bc"; "/a/"
 * covers "/a/x"). The query of the URL is free.
 */
export function urlUnderPrefix(url: URL, prefix: URL): boolean {
  if (url.protocol !== prefix.protocol || url.hostname !== prefix.hostname || url.port !== prefix.port) {
    return false;
  }
  const p = prefix.pathname;
  if (p.endsWith("/")) return url.pathname.startsWith(p);
  return url.pathname === p || url.pathname.startsWith(`${p}/`);
}

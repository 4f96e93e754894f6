/**
 * URLs a build secret may be sent to. Both the policy's prefixes and the derivation's URL must be
 * in the canonical form the WHATWG URL parser prints (what Node's fetcher will actually request),
 * so "matches the prefix" is a comparison of parsed parts, never of strings that a parser might
 * read differently: scheme, host, port, and a path prefix that ends at a segment boundary.
 * Anything a parser could normalise into another place is refused outright: userinfo,
 * backslashes, encoded dots/slashes, dot segments, non-ASCII, whitespace, fragments.
 *
 * The server is a parser too, and many read a path more loosely than WHATWG does: Tomcat drops
 * path parameters (`/api/..;/admin` is `/admin` to it), some stacks decode twice (`%252e` is
 * '.'), lenient UTF-8 decoders take the overlong `%c0%ae` for '.', IIS knows `%u002e`, and most
 * merge `//`. So the path must also be one that no such reading moves out of a prefix: no
 * path parameters, no empty segments, every '%' followed by two hex digits, every encoded run
 * valid UTF-8 that encodes none of `. / \ ; %` or a control character (not even in a
 * compatibility form such as the fullwidth full stop), and no segment of only dots and spaces.
 * These rules are for the path only: a prefix never constrains the query.
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
  const problem = pathProblem(url.pathname);
  if (problem !== null) return no(problem);
  return { ok: true, url };
}

/**
 * Why a server could read this (WHATWG-canonical) path as another one, or null. The rules are the
 * module comment's; each reason names the reading it guards against.
 */
function pathProblem(path: string): string | null {
  if (path.includes(";")) {
    return "has a path parameter (';' in the path, as in '/..;/' or ';jsessionid='): servers such as Tomcat drop it, so '/api/..;/x' is read as '/x'";
  }
  if (path.includes("//")) return "has an empty path segment ('//'), which servers merge or skip";
  if (/%(?![0-9A-Fa-f]{2})/.test(path)) {
    return "has a '%' not followed by two hex digits (IIS reads '%u002e' as '.')";
  }
  for (const run of path.match(/(?:%[0-9A-Fa-f]{2})+/g) ?? []) {
    let text: string;
    try {
      text = decodeURIComponent(run);
    } catch {
      return "has percent-encoded bytes that are not valid UTF-8 (lenient decoders read the overlong '%c0%ae' as '.')";
    }
    if (text.includes("%"))
      return "has an encoded '%' ('%25'): a server that decodes twice reads '%252e' as '.'";
    if (/[./\\;\x00-\x1f\x7f]/.test(text.normalize("NFKC"))) {
      return "has an encoded '.', '/', '\\', ';' or control character (also in a compatibility form such as the fullwidth '%ef%bc%8e')";
    }
  }
  for (const segment of path.split("/")) {
    if (segment !== "" && /^[.\s]+$/.test(decodeURIComponent(segment).normalize("NFKC"))) {
      return "has a segment of only dots and spaces (such as '...' or '..%20'), which servers may read as '..'";
    }
  }
  return null;
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

/**
 * The PEM envelope of a key file (RFC 7468), with the RFC 1421 headers of PKCS#1's legacy
 * encryption (Proc-Type, DEK-Info): finds the first BEGIN/END block and checks its base64.
 */
import { formatError } from "./key-file-errors.js";

export interface PemBlock {
  label: string;
  headers: Map<string, string>;
  /** The base64 body with whitespace removed. */
  body: string;
  /** The block as text, from BEGIN to END, for node:crypto. */
  text: string;
}

export function parsePem(text: string, file: string): PemBlock {
  const begin = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n/.exec(text);
  if (begin === null) {
    throw formatError(
      file,
      "not an ssh private key (no -----BEGIN ... PRIVATE KEY----- line)",
      "check the path",
    );
  }
  const label = begin[1]!;
  const endMarker = `-----END ${label}-----`;
  const end = text.indexOf(endMarker, begin.index);
  if (end < 0) throw formatError(file, `missing the ${endMarker} line (truncated?)`);
  const inner = text.slice(begin.index + begin[0].length, end);
  const headers = new Map<string, string>();
  let bodyText = inner;
  // RFC 1421 style headers (PKCS#1 legacy encryption): "Name: value" lines, then a blank line.
  if (/^[A-Za-z-]+:/.test(inner)) {
    const blank = /\r?\n\r?\n/.exec(inner);
    if (blank === null) throw formatError(file, "PEM headers without the blank line after them");
    for (const line of inner.slice(0, blank.index).split(/\r?\n/)) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    bodyText = inner.slice(blank.index + blank[0].length);
  }
  const body = bodyText.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) {
    throw formatError(file, "the base64 body is invalid");
  }
  return { label, headers, body, text: text.slice(begin.index, end + endMarker.length) };
}

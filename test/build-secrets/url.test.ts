/**
 * URLs a build secret may go to, against paths that servers read more loosely than the WHATWG
 * parser: each one below stays under the prefix https://mods.example.com/api/ for the parser, but
 * a server that strips path parameters (Tomcat), decodes twice, decodes overlong UTF-8 or IIS's
 * %u, or merges empty segments reads it as a path outside. Each must be refused, with a reason
 * that says which reading, by the URL check and by the policy's decision; ordinary paths must
 * still pass.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Derivation } from "../../src/build-secrets/drv.js";
import { decide, parsePolicy } from "../../src/build-secrets/policy.js";
import { parseSecretUrl, parseUrlPrefix, urlUnderPrefix } from "../../src/build-secrets/url.js";

const PREFIX = "https://mods.example.com/api/";
const FETCHER = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixseal-fetcher.js";
const NODE = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nodejs-20/bin/node";

/** [path under https://mods.example.com, what the reason must say] */
const ATTACKS: [string, RegExp][] = [
  // Tomcat path parameters: '..;' is '..' once ';...' is dropped, in any segment.
  ["/api/..;/admin", /path parameter/],
  ["/api/..;x=1/admin", /path parameter/],
  ["/api/.;/admin", /path parameter/],
  ["/api;jsessionid=1/x", /path parameter/],
  ["/api/x;jsessionid=ABC123", /path parameter/],
  ["/api/dl/..;jsessionid=1/../admin", /canonical form|path parameter/],
  ["/api/%3b/x", /encoded '\.', '\/', '\\', ';'/],
  ["/api/..%3B/admin", /encoded '\.', '\/', '\\', ';'/],
  // Double encoding: %25 is '%', so a second decoding makes %2e of %252e.
  ["/api/%252e%252e/admin", /encoded '%' \('%25'\)/],
  ["/api/%252E%252e/admin", /encoded '%' \('%25'\)/],
  ["/api/%252f../admin", /encoded '%' \('%25'\)/],
  ["/api/%25252e%25252e/admin", /encoded '%' \('%25'\)/],
  // Overlong UTF-8 for '.' and '/' (2, 3 and 4 bytes), and other invalid UTF-8.
  ["/api/%c0%ae%c0%ae/admin", /not valid UTF-8/],
  ["/api/%C0%AE%c0%AE/admin", /not valid UTF-8/],
  ["/api/%e0%80%ae%e0%80%ae/admin", /not valid UTF-8/],
  ["/api/%f0%80%80%ae./admin", /not valid UTF-8/],
  ["/api/..%c0%af../admin", /not valid UTF-8/],
  ["/api/%ed%a0%80/x", /not valid UTF-8/],
  ["/api/%ff/x", /not valid UTF-8/],
  // IIS %u encoding, and any '%' without two hex digits.
  ["/api/%u002e%u002e/admin", /'%' not followed by two hex digits/],
  ["/api/%U002E%u002E/admin", /'%' not followed by two hex digits/],
  ["/api/..%u2215admin", /'%' not followed by two hex digits/],
  ["/api/%/x", /'%' not followed by two hex digits/],
  ["/api/%2/x", /'%' not followed by two hex digits/],
  // Empty segments.
  ["/api//x", /empty path segment/],
  ["/api//", /empty path segment/],
  ["/api///admin", /empty path segment/],
  // Encoded dots, slashes and backslashes, in either case and mixed.
  ["/api/%2e%2e/admin", /encoded/],
  ["/api/%2E%2E/admin", /encoded/],
  ["/api/%2e%2E/admin", /encoded/],
  ["/api/.%2e/admin", /encoded/],
  ["/api/..%2fadmin", /encoded/],
  ["/api/..%2Fadmin", /encoded/],
  ["/api/..%5cadmin", /encoded/],
  ["/api/..%5Cadmin", /encoded/],
  ["/api/x%00", /encoded/],
  // Backslashes (the WHATWG parser makes them '/', Windows servers too).
  ["/api/..\\admin", /backslash/],
  ["/api\\..\\admin", /backslash/],
  // Dots and slashes in a compatibility form (NFKC: fullwidth, small and leader dots).
  ["/api/%ef%bc%8e%ef%bc%8e/admin", /encoded '\.', '\/'.*compatibility form/],
  ["/api/%E2%80%A5/admin", /encoded '\.', '\/'.*compatibility form/],
  ["/api/..%ef%bc%8fadmin", /encoded '\.', '\/'.*compatibility form/],
  ["/api/..%ef%bc%bcadmin", /encoded '\.', '\/'.*compatibility form/],
  // Control characters, which some servers drop.
  ["/api/.%09./admin", /control character/],
  // Segments of dots and spaces, which Windows servers trim to '..'.
  ["/api/.../admin", /only dots and spaces/],
  ["/api/..%20/admin", /only dots and spaces/],
  ["/api/%20../admin", /only dots and spaces/],
  ["/api/..%e3%80%80/admin", /only dots and spaces/],
];

/** Paths that must stay allowed (and under the prefix). */
const ORDINARY = [
  "/api/mod.zip",
  "/api/v1.2/mod-1.2.0.tar.gz",
  "/api/.well-known/x",
  "/api/x..y/z",
  "/api/dl/",
  "/api/a%20b.zip",
  "/api/caf%C3%A9.zip",
  "/api/%F0%9F%98%80",
  "/api/q%3Fx",
  "/api/mod.zip?v=1;x=%252e&y=%u0041",
];

test("URL paths a server would move out of the prefix are refused, each with its reason", () => {
  const prefix = parseUrlPrefix(PREFIX);
  assert.ok(prefix.ok);
  const problems: string[] = [];
  for (const [p, reason] of ATTACKS) {
    const url = `https://mods.example.com${p}`;
    const r = parseSecretUrl(url);
    if (r.ok) {
      problems.push(`${url}: accepted (under the prefix: ${urlUnderPrefix(r.url, prefix.url)})`);
    } else if (!reason.test(r.reason)) {
      problems.push(`${url}: refused with "${r.reason}", expected ${reason}`);
    } else if (!r.reason.startsWith("URL ")) {
      problems.push(`${url}: "${r.reason}" does not say what it is about`);
    }
  }
  assert.deepEqual(problems, []);
});

test("ordinary URL paths stay allowed and under the prefix", () => {
  const prefix = parseUrlPrefix(PREFIX);
  assert.ok(prefix.ok);
  for (const p of ORDINARY) {
    const url = `https://mods.example.com${p}`;
    const r = parseSecretUrl(url);
    assert.ok(r.ok, `${url}: ${r.ok ? "" : r.reason}`);
    assert.equal(r.url.href, url);
    assert.equal(urlUnderPrefix(r.url, prefix.url), true, url);
  }
});

test("a prefix with a path parameter, an empty segment or a double-encoded part is refused", () => {
  for (const [p, reason] of [
    ["https://mods.example.com/api;v=1/", /path parameter/],
    ["https://mods.example.com/api//", /empty path segment/],
    ["https://mods.example.com//api/", /empty path segment/],
    ["https://mods.example.com/%252e/", /encoded '%'/],
    ["https://mods.example.com/%c0%ae/", /not valid UTF-8/],
  ] as const) {
    const r = parseUrlPrefix(p);
    assert.equal(r.ok, false, p);
    assert.match((r as { reason: string }).reason, /^URL prefix /, p);
    assert.match((r as { reason: string }).reason, reason, p);
  }
});

function fod(url: string): Derivation {
  const out = "/nix/store/cccccccccccccccccccccccccccccccc-mod.zip";
  return {
    outputs: new Map([["out", { path: out, hashAlgo: "sha256", hash: "00".repeat(32) }]]),
    inputDrvs: new Map(),
    inputSrcs: [FETCHER],
    platform: "x86_64-linux",
    builder: NODE,
    args: [FETCHER],
    env: new Map(
      Object.entries({
        builder: NODE,
        name: "mod.zip",
        out,
        system: "x86_64-linux",
        outputHash: "sha256-AAAA",
        outputHashMode: "flat",
        url,
        nixsealSecret: "token",
      }),
    ),
  };
}

test("the policy refuses the secret to a derivation whose URL a server reads outside the prefix", () => {
  const policy = parsePolicy(
    JSON.stringify({
      version: 1,
      identities: [{ type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" }],
      interpreters: [NODE],
      secrets: {
        token: {
          file: "/var/lib/nixseal/token.age",
          allowedUrlPrefixes: [PREFIX],
          fetcherStorePaths: [FETCHER],
        },
      },
    }),
    "p.json",
  );
  const client = { uid: 1000, how: "test" };
  const uidOf = () => null;
  assert.equal(decide(fod("https://mods.example.com/api/mod.zip"), policy, client, uidOf).kind, "allow");
  for (const [p, reason] of ATTACKS) {
    const d = decide(fod(`https://mods.example.com${p}`), policy, client, uidOf);
    assert.equal(d.kind, "refuse", p);
    const reasons = (d as { reasons: string[] }).reasons;
    assert.equal(reasons.length, 1, `${p}: ${reasons.join("; ")}`);
    assert.match(reasons[0]!, /^its URL /, p);
    assert.match(reasons[0]!, reason, p);
  }
});

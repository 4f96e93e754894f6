/**
 * The build-secrets policy (`/etc/nixseal/build-secrets.json`, written by the NixOS module or by
 * hand; schema in docs/build-secrets.md) and the one decision the pre-build hook makes with it:
 * may this derivation get this secret?
 *
 * A derivation asks by naming a secret in its `nixsealSecret` attribute. It gets it only if it
 * is fixed-output (its output is pinned by hash, so the secret cannot shape it), its builder is
 * the trusted fetcher at a store path the policy pins (so no user code runs next to the secret),
 * its environment holds nothing that could steer that fetcher (NODE_OPTIONS, proxies,
 * impureEnvVars...), its URL lies under one of the secret's allowed prefixes, and, when the
 * policy names users, the build was asked for by one of them.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { NixsealError } from "../common/index.js";
import { type Derivation, isFixedOutput } from "./drv.js";
import { parseSecretUrl, parseUrlPrefix, urlUnderPrefix } from "./url.js";

export const DEFAULT_POLICY_FILE = "/etc/nixseal/build-secrets.json";
export const DEFAULT_RUNTIME_DIR = "/run/nixseal/build";
/** Where users' agents listen, one socket per uid (`<agentDir>/<uid>`); root-owned, mode 1733. */
export const DEFAULT_AGENT_DIR = "/run/nixseal/agents";
/** How long the hook waits for a user to answer a prompt. */
export const DEFAULT_AGENT_TIMEOUT_SECONDS = 120;
export const MAX_POLICY_BYTES = 1024 * 1024;

/** The attribute a derivation names its secret in (the hook's cheap check looks for it). */
export const SECRET_ATTR = "nixsealSecret";
/** Optional attribute: the header template, "Name: text with {secret}". */
export const HEADER_ATTR = "nixsealHeader";
export const DEFAULT_HEADER = "Authorization: Bearer {secret}";
/** Where the secret appears inside the sandbox (one file, bind-mounted read-only by Nix). */
export const SANDBOX_SECRET_PATH = "/run/nixseal-secret";

/**
 * The only attributes a secret-asking derivation may have. Everything else becomes an
 * environment variable of the trusted fetcher and could change what it does (NODE_OPTIONS loads
 * code, https_proxy reroutes, impureEnvVars imports the daemon's environment, __noChroot leaves
 * the sandbox, __structuredAttrs hides attributes in a JSON file).
 */
export const ALLOWED_ATTRS: ReadonlySet<string> = new Set([
  "builder",
  "name",
  "out",
  "system",
  "outputHash",
  "outputHashAlgo",
  "outputHashMode",
  "url",
  SECRET_ATTR,
  HEADER_ATTR,
  "preferLocalBuild",
  "allowSubstitutes",
  "requiredSystemFeatures",
]);

export interface IdentitySpec {
  type: "ssh" | "age";
  path: string;
}

export interface SecretPolicy {
  name: string;
  /** The age-encrypted secret (outside or inside the store: ciphertext may be anywhere). */
  file: string;
  allowedUrlPrefixes: URL[];
  /** User names or decimal uids; empty: any user who may build. */
  allowedUsers: string[];
  /** Ask the user's agent to approve (and maybe provide) the secret for each build. */
  prompt: boolean;
  /** Store paths of the trusted fetcher program this secret may be given to. */
  fetcherStorePaths: string[];
}

export interface BuildSecretsPolicy {
  file: string;
  version: 1;
  storeDir: string;
  runtimeDir: string;
  agentDir: string;
  agentTimeoutSeconds: number;
  identities: IdentitySpec[];
  /** Interpreters (e.g. a nodejs store path's bin/node) that may run a fetcher given as args[0]. */
  interpreters: string[];
  secrets: Map<string, SecretPolicy>;
}

// --- validation -------------------------------------------------------------------------------

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const USER_RE = /^([a-z_][a-z0-9_.-]{0,31}\$?|\d{1,10})$/;

function isNormalAbsolute(p: string): boolean {
  return (
    p.startsWith("/") &&
    p.length < 4096 &&
    !/[\0\n\r]/.test(p) &&
    (p === "/" || (!p.endsWith("/") && path.posix.normalize(p) === p))
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

class Problems {
  readonly list: NixsealError[] = [];
  constructor(readonly file: string) {}
  add(where: string, message: string, hint: string): void {
    this.list.push(
      new NixsealError("BUILD_POLICY", `${this.file}: ${where}: ${message}`, { file: this.file, hint }),
    );
  }
  unknownFields(where: string, obj: Record<string, unknown>, known: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!known.includes(k)) {
        this.add(where, `unknown field "${k.slice(0, 60)}"`, `the fields here are: ${known.join(", ")}`);
      }
    }
  }
  absolutePath(where: string, v: unknown): string | null {
    if (typeof v !== "string" || !isNormalAbsolute(v)) {
      this.add(
        where,
        "must be an absolute, normalised path",
        "e.g. /var/lib/nixseal/token.age (no '..', no trailing '/')",
      );
      return null;
    }
    return v;
  }
  stringList(where: string, v: unknown, each: (s: string, w: string) => string | null): string[] {
    if (!Array.isArray(v)) {
      this.add(where, "must be a list", "write a JSON array");
      return [];
    }
    const out: string[] = [];
    v.forEach((item, i) => {
      const s = each(item as string, `${where}[${i}]`);
      if (s !== null) out.push(s);
    });
    return out;
  }
}

/** Parses and validates the policy text; every problem is reported at once. */
export function parsePolicy(text: string, file: string): BuildSecretsPolicy {
  const problems = new Problems(file);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new NixsealError("BUILD_POLICY", `${file}: not valid JSON: ${(e as Error).message}`, {
      file,
      hint: "the policy is a JSON object; see docs/build-secrets.md",
    });
  }
  if (!isObject(doc)) {
    throw new NixsealError("BUILD_POLICY", `${file}: must be a JSON object`, {
      file,
      hint: "see docs/build-secrets.md for the schema",
    });
  }
  problems.unknownFields("top level", doc, [
    "version",
    "storeDir",
    "runtimeDir",
    "agentDir",
    "agentTimeoutSeconds",
    "identities",
    "interpreters",
    "secrets",
  ]);
  if (doc.version !== 1) {
    problems.add(
      "version",
      `must be 1 (got ${JSON.stringify(doc.version) ?? "nothing"})`,
      "upgrade nixseal if the policy is newer",
    );
  }
  const storeDir =
    doc.storeDir === undefined ? "/nix/store" : problems.absolutePath("storeDir", doc.storeDir);
  const runtimeDir =
    doc.runtimeDir === undefined ? DEFAULT_RUNTIME_DIR : problems.absolutePath("runtimeDir", doc.runtimeDir);
  const agentDir =
    doc.agentDir === undefined ? DEFAULT_AGENT_DIR : problems.absolutePath("agentDir", doc.agentDir);
  let agentTimeoutSeconds = DEFAULT_AGENT_TIMEOUT_SECONDS;
  if (doc.agentTimeoutSeconds !== undefined) {
    const t = doc.agentTimeoutSeconds;
    if (typeof t !== "number" || !Number.isInteger(t) || t < 1 || t > 3600) {
      problems.add(
        "agentTimeoutSeconds",
        "must be a whole number of seconds from 1 to 3600",
        "the default is 120",
      );
    } else agentTimeoutSeconds = t;
  }

  const identities: IdentitySpec[] = [];
  if (!Array.isArray(doc.identities)) {
    problems.add(
      "identities",
      "must be a list of {type, path}",
      'e.g. [{"type":"ssh","path":"/etc/ssh/ssh_host_ed25519_key"}]',
    );
  } else {
    doc.identities.forEach((id: unknown, i) => {
      const where = `identities[${i}]`;
      if (!isObject(id)) {
        problems.add(where, "must be an object {type, path}", 'type is "ssh" or "age"');
        return;
      }
      problems.unknownFields(where, id, ["type", "path"]);
      if (id.type !== "ssh" && id.type !== "age")
        problems.add(`${where}.type`, 'must be "ssh" or "age"', "as in the activation manifest");
      const p = problems.absolutePath(`${where}.path`, id.path);
      if (p !== null && (id.type === "ssh" || id.type === "age")) identities.push({ type: id.type, path: p });
    });
  }

  const interpreters =
    doc.interpreters === undefined
      ? []
      : problems.stringList("interpreters", doc.interpreters, (s, w) => problems.absolutePath(w, s));

  const secrets = new Map<string, SecretPolicy>();
  if (!isObject(doc.secrets)) {
    problems.add(
      "secrets",
      "must be an object: secret name -> settings",
      'e.g. {"mods-token": {"file": ..., ...}}',
    );
  } else {
    for (const name of Object.keys(doc.secrets)) {
      const s = doc.secrets[name];
      const where = `secrets.${JSON.stringify(name.slice(0, 80))}`;
      if (!NAME_RE.test(name)) {
        problems.add(
          where,
          "is not a valid secret name",
          "names are 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)",
        );
        continue;
      }
      if (!isObject(s)) {
        problems.add(
          where,
          "must be an object",
          "fields: file, allowedUrlPrefixes, fetcherStorePaths, allowedUsers, prompt",
        );
        continue;
      }
      problems.unknownFields(where, s, [
        "file",
        "allowedUrlPrefixes",
        "allowedUsers",
        "prompt",
        "fetcherStorePaths",
      ]);
      const file = problems.absolutePath(`${where}.file`, s.file);
      const prefixes: URL[] = [];
      problems.stringList(`${where}.allowedUrlPrefixes`, s.allowedUrlPrefixes, (p, w) => {
        const r =
          typeof p === "string" ? parseUrlPrefix(p) : ({ ok: false, reason: "must be a string" } as const);
        if (!r.ok) {
          problems.add(
            w,
            r.reason,
            "a prefix is a canonical https:// URL such as https://example.com/api/ (http:// only to localhost)",
          );
          return null;
        }
        prefixes.push(r.url);
        return p;
      });
      if (Array.isArray(s.allowedUrlPrefixes) && s.allowedUrlPrefixes.length === 0) {
        problems.add(
          `${where}.allowedUrlPrefixes`,
          "is empty",
          "name at least one URL prefix the secret may be sent to",
        );
      }
      const users =
        s.allowedUsers === undefined
          ? []
          : problems.stringList(`${where}.allowedUsers`, s.allowedUsers, (u, w) => {
              if (typeof u !== "string" || !USER_RE.test(u)) {
                problems.add(w, "is not a user name or decimal uid", 'e.g. "alice" or "1000"');
                return null;
              }
              return u;
            });
      if (s.prompt !== undefined && typeof s.prompt !== "boolean") {
        problems.add(
          `${where}.prompt`,
          "must be true or false",
          "prompt = true asks the user's nixseal agent for each build",
        );
      }
      const fetchers = problems.stringList(`${where}.fetcherStorePaths`, s.fetcherStorePaths, (p, w) => {
        const abs = problems.absolutePath(w, p);
        if (abs !== null && storeDir !== null && !abs.startsWith(`${storeDir}/`)) {
          problems.add(
            w,
            `is not in the Nix store (${storeDir})`,
            "the trusted fetcher is pinned by its store path",
          );
          return null;
        }
        return abs;
      });
      if (Array.isArray(s.fetcherStorePaths) && s.fetcherStorePaths.length === 0) {
        problems.add(`${where}.fetcherStorePaths`, "is empty", "name the store path of nixseal's fetcher");
      }
      if (file !== null) {
        secrets.set(name, {
          name,
          file,
          allowedUrlPrefixes: prefixes,
          allowedUsers: users,
          prompt: s.prompt === true,
          fetcherStorePaths: fetchers,
        });
      }
    }
  }
  if (problems.list.length > 0) throw NixsealError.many(problems.list);
  return {
    file,
    version: 1,
    storeDir: storeDir!,
    runtimeDir: runtimeDir!,
    agentDir: agentDir!,
    agentTimeoutSeconds,
    identities,
    interpreters,
    secrets,
  };
}

/**
 * Reads the policy. The hook runs as root and hands out secrets by it, so the file must be a
 * regular file owned by root and writable by nobody else.
 */
export function readPolicy(file: string): BuildSecretsPolicy {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === "ENOENT";
    throw new NixsealError(
      "BUILD_POLICY",
      `cannot read the build-secrets policy ${file}: ${missing ? "no such file" : String((e as NodeJS.ErrnoException).code)}`,
      {
        file,
        hint: missing
          ? "set nixseal.buildSecrets in the NixOS configuration, or write the file (docs/build-secrets.md)"
          : "the policy must be a regular file, not a symlink",
        cause: e,
      },
    );
  }
  try {
    const st = fs.fstatSync(fd);
    const problems: string[] = [];
    if (!st.isFile()) problems.push("is not a regular file");
    if (st.uid !== 0) problems.push("is not owned by root");
    if ((st.mode & 0o022) !== 0) problems.push("is writable by group or others");
    if (st.size > MAX_POLICY_BYTES) problems.push(`is larger than ${MAX_POLICY_BYTES} bytes`);
    if (problems.length > 0) {
      throw new NixsealError("BUILD_POLICY", `the build-secrets policy ${file} ${problems.join(", ")}`, {
        file,
        hint: `make it root-owned and not group/other-writable: chown root ${file}; chmod 644 ${file}`,
      });
    }
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = fs.readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return parsePolicy(buf.subarray(0, off).toString("utf8"), file);
  } finally {
    fs.closeSync(fd);
  }
}

// --- the header template ------------------------------------------------------------------------

const FORBIDDEN_HEADERS = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "expect",
  "keep-alive",
  "cookie2",
]);

/** Checks a header template "Name: value with {secret}"; returns a reason or null. */
export function headerProblem(template: string): string | null {
  if (template.length > 1024) return "the header template is longer than 1024 characters";
  const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ ]?([\x20-\x7e]*)$/.exec(template);
  if (!m) return 'the header template is not "Name: value" in printable ASCII';
  const name = m[1]!.toLowerCase();
  if (FORBIDDEN_HEADERS.has(name) || name.startsWith("proxy-")) {
    return `the header "${m[1]}" may not carry a secret (it changes where or how the request goes)`;
  }
  if (m[2]!.split("{secret}").length !== 2) return "the header template must contain {secret} exactly once";
  return null;
}

// --- the decision -------------------------------------------------------------------------------

/** Who asked for the build, as far as the hook can tell (see client.ts). */
export interface BuildClient {
  /** The requesting user's uid, or null when it cannot be known. */
  uid: number | null;
  /** How it was found, or why not (for the log). */
  how: string;
}

export type Decision =
  | { kind: "not-asking" }
  | { kind: "allow"; name: string; secret: SecretPolicy; url: string }
  | { kind: "refuse"; name: string; reasons: string[] };

/**
 * Decides whether `drv` gets the secret it names. All reasons for a refusal are listed.
 * `uidOf` resolves a user name of `allowedUsers` to a uid (null: no such user).
 */
export function decide(
  drv: Derivation,
  policy: BuildSecretsPolicy,
  client: BuildClient,
  uidOf: (user: string) => number | null,
): Decision {
  const name = drv.env.get(SECRET_ATTR);
  if (name === undefined) return { kind: "not-asking" };
  const shownName = name.slice(0, 128);
  const secret = policy.secrets.get(name);
  if (secret === undefined) {
    return {
      kind: "refuse",
      name: shownName,
      reasons: [`the policy ${policy.file} has no secret "${shownName}"`],
    };
  }
  const reasons: string[] = [];

  if (!isFixedOutput(drv))
    reasons.push('the derivation is not fixed-output (one output "out" with outputHash)');
  const out = drv.outputs.get("out");
  if (out !== undefined && drv.env.get("out") !== out.path)
    reasons.push('its "out" attribute is not its output path');

  const direct = secret.fetcherStorePaths.includes(drv.builder) && drv.args.length === 0;
  const interpreted =
    policy.interpreters.includes(drv.builder) &&
    drv.args.length === 1 &&
    secret.fetcherStorePaths.includes(drv.args[0]!);
  if (!direct && !interpreted) {
    reasons.push(
      `its builder (${[drv.builder, ...drv.args].map((a) => JSON.stringify(a.slice(0, 200))).join(" ")}) is not the trusted fetcher (${secret.fetcherStorePaths.join(", ")})`,
    );
  }

  const extra = [...drv.env.keys()].filter((k) => !ALLOWED_ATTRS.has(k));
  if (extra.length > 0) {
    reasons.push(
      `it sets attributes the fetcher must not see: ${extra
        .slice(0, 10)
        .map((k) => JSON.stringify(k.slice(0, 60)))
        .join(", ")}${extra.length > 10 ? ", ..." : ""}`,
    );
  }

  const rawUrl = drv.env.get("url");
  let url = "";
  if (rawUrl === undefined) {
    reasons.push('it has no "url" attribute');
  } else {
    const r = parseSecretUrl(rawUrl, "its URL");
    if (!r.ok) reasons.push(r.reason);
    else if (!secret.allowedUrlPrefixes.some((p) => urlUnderPrefix(r.url, p))) {
      reasons.push(
        `its URL ${r.url.href} is not under an allowed prefix (${secret.allowedUrlPrefixes.map((p) => p.href).join(", ")})`,
      );
    } else url = r.url.href;
  }

  const header = drv.env.get(HEADER_ATTR) ?? DEFAULT_HEADER;
  const hp = headerProblem(header);
  if (hp !== null) reasons.push(hp);

  if (secret.allowedUsers.length > 0) {
    if (client.uid === null) {
      reasons.push(
        `the requesting user cannot be determined (${client.how}) and the secret is limited to ${secret.allowedUsers.join(", ")}`,
      );
    } else {
      const allowed = secret.allowedUsers.some(
        (u) => (/^\d+$/.test(u) ? Number(u) : uidOf(u)) === client.uid,
      );
      if (!allowed) {
        reasons.push(
          `the build was requested by uid ${client.uid} (${client.how}), not by ${secret.allowedUsers.join(", ")}`,
        );
      }
    }
  }

  if (reasons.length > 0) return { kind: "refuse", name, reasons };
  return { kind: "allow", name, secret, url };
}

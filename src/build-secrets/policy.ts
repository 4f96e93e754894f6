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
import {
  booleanField,
  DUPLICATE_KEY_HINT,
  duplicateKey,
  enumField,
  type FieldTable,
  integerField,
  isObject,
  type Json,
  NixsealError,
  Problems,
  pathProblem,
  readAllSync,
  readList,
  readObject,
  readPath,
  readPrincipal,
  shown,
  typeName,
} from "../common/index.js";
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
/** fetchgit: the commit to fetch (its presence makes the derivation a git fetch). */
export const REV_ATTR = "rev";
/** fetchgit: the git program, one of the policy's gitPaths. */
export const GIT_ATTR = "nixsealGit";
/** fetchgit: the user name sent with the token (Basic auth); the fetcher's default otherwise. */
export const USER_ATTR = "nixsealUser";
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
  REV_ATTR,
  GIT_ATTR,
  USER_ATTR,
  "preferLocalBuild",
  "allowSubstitutes",
  "requiredSystemFeatures",
]);

/** A host identity, with the types and fields of the activation manifest's (docs/manifest.md). */
export interface IdentitySpec {
  type: "ssh" | "age" | "systemd-creds";
  path: string;
  /** systemd-creds only: the name the key was sealed under (default: the file's name). */
  name?: string;
}

/**
 * Who supplies a secret's value: the host (its age `file`, decrypted with the host identities),
 * the requesting user's `nixseal agent` (the host holds nothing), or the host when its file is
 * there and decrypts, else the agent.
 */
export type SecretSource = "host" | "agent" | "host-or-agent";
export const SECRET_SOURCES: readonly SecretSource[] = ["host", "agent", "host-or-agent"];

export interface SecretPolicy {
  name: string;
  source: SecretSource;
  /** The age-encrypted secret (outside or inside the store: ciphertext may be anywhere); null for source "agent". */
  file: string | null;
  allowedUrlPrefixes: URL[];
  /** User names or decimal uids; empty: any user who may build. */
  allowedUsers: string[];
  /** The user confirms each build at the agent's terminal, even for a value the host or a file gives. */
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
  /** Git programs (store paths) the fetcher may run for fetchgit. */
  gitPaths: string[];
  secrets: Map<string, SecretPolicy>;
}

// --- validation ---------------------------------------------------------------------------------

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SCHEMA_HINT = "see docs/build-secrets.md for the schema";

/** A list of strings each read by `each` (null: reported). */
function stringList(each: (s: string, at: string, p: Problems) => string | null, hint: string) {
  return (v: Json, at: string, p: Problems): string[] | undefined =>
    readList(
      v,
      at,
      p,
      (x, where) => {
        if (typeof x !== "string") {
          p.add(where, `must be a string, not ${typeName(x)}`, hint);
          return null;
        }
        return each(x, where, p);
      },
      hint,
    );
}

const pathItem = (s: string, at: string, p: Problems): string | null => readPath(s, at, p) ?? null;

const IDENTITY_FIELDS: FieldTable = {
  type: {
    required: true,
    read: enumField(["ssh", "age", "systemd-creds"], "as in the activation manifest (docs/manifest.md)"),
  },
  path: { required: true, read: readPath },
  name: {
    required: false,
    default: null,
    read: (v, at, p) => {
      if (typeof v === "string" && /^[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]{0,254}$/.test(v)) return v;
      p.add(at, "is not a credential name", "letters, digits and ._@+=-, not starting with '.'");
      return undefined;
    },
  },
};

const SECRET_FIELDS: FieldTable = {
  source: {
    required: false,
    default: "host",
    read: enumField(SECRET_SOURCES, '"host" (the default), "agent" or "host-or-agent"'),
  },
  // Required unless source = "agent" (checked with the source below).
  file: { required: false, default: null, read: readPath },
  allowedUrlPrefixes: {
    required: true,
    read: (v, at, p) => {
      const prefixes: URL[] = [];
      const hint =
        "a prefix is a canonical https:// URL such as https://example.com/api/ (http:// only to localhost)";
      const ok = stringList((s, w) => {
        const r = parseUrlPrefix(s);
        if (!r.ok) {
          p.add(w, r.reason, hint);
          return null;
        }
        prefixes.push(r.url);
        return s;
      }, hint)(v, at, p);
      if (ok === undefined) return undefined;
      if (ok.length === 0) {
        p.add(at, "is empty", "name at least one URL prefix the secret may be sent to");
        return undefined;
      }
      return prefixes;
    },
  },
  allowedUsers: {
    required: false,
    default: [],
    read: stringList((s, w, p) => readPrincipal(s, w, p) ?? null, 'a list of users, e.g. ["alice", "1000"]'),
  },
  prompt: {
    required: false,
    default: false,
    read: booleanField("prompt = true asks the user to confirm each build at their nixseal agent"),
  },
  fetcherStorePaths: {
    required: true,
    read: (v, at, p) => {
      const paths = stringList(pathItem, "the store paths of nixseal's fetcher")(v, at, p);
      if (paths !== undefined && paths.length === 0) {
        p.add(at, "is empty", "name the store path of nixseal's fetcher");
        return undefined;
      }
      return paths;
    },
  },
};

const TOP_FIELDS: FieldTable = {
  version: {
    required: true,
    read: (v, at, p) => {
      if (v === 1) return v;
      p.add(at, `must be 1 (got ${JSON.stringify(v)})`, "upgrade nixseal if the policy is newer");
      return undefined;
    },
  },
  storeDir: { required: false, default: "/nix/store", read: readPath },
  runtimeDir: { required: false, default: DEFAULT_RUNTIME_DIR, read: readPath },
  agentDir: { required: false, default: DEFAULT_AGENT_DIR, read: readPath },
  agentTimeoutSeconds: {
    required: false,
    default: DEFAULT_AGENT_TIMEOUT_SECONDS,
    read: integerField(1, 3600, `the default is ${DEFAULT_AGENT_TIMEOUT_SECONDS}`),
  },
  identities: {
    required: true,
    read: (v, at, p) =>
      readList(
        v,
        at,
        p,
        (x, where): IdentitySpec | null => {
          const m = readObject(
            x,
            where,
            IDENTITY_FIELDS,
            p,
            'an identity is {"type": "ssh", "age" or "systemd-creds", "path"}',
          );
          if (m === null) return null;
          const type = m.get("type") as IdentitySpec["type"];
          const name = m.get("name") as string | null;
          if (name !== null && type !== "systemd-creds") {
            p.add(
              `${where}.name`,
              `is set, but a ${type} identity has no name`,
              "remove it (only systemd-creds identities are sealed under a name)",
            );
            return null;
          }
          return { type, path: m.get("path") as string, ...(name === null ? {} : { name }) };
        },
        'e.g. [{"type":"ssh","path":"/etc/ssh/ssh_host_ed25519_key"}]',
      ),
  },
  interpreters: {
    required: false,
    default: [],
    read: stringList(pathItem, "store paths of interpreters, e.g. a nodejs package's bin/node"),
  },
  gitPaths: {
    required: false,
    default: [],
    read: stringList(pathItem, "store paths of git programs, e.g. a git package's bin/git"),
  },
  secrets: {
    required: true,
    read: (v, at, p) => {
      if (!isObject(v)) {
        p.add(
          at,
          `must be an object: secret name -> settings, not ${typeName(v)}`,
          'e.g. {"mods-token": {"file": ..., ...}}',
        );
        return undefined;
      }
      const out = new Map<string, SecretPolicy>();
      let ok = true;
      for (const [name, settings] of Object.entries(v)) {
        const where = `${at}.${JSON.stringify(name.slice(0, 80))}`;
        if (!NAME_RE.test(name)) {
          p.add(
            where,
            "is not a valid secret name",
            "names are 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)",
          );
          ok = false;
          continue;
        }
        const m = readObject(settings, where, SECRET_FIELDS, p, SCHEMA_HINT);
        if (m === null) {
          ok = false;
          continue;
        }
        const source = m.get("source") as SecretSource;
        const file = m.get("file") as string | null;
        if (source === "agent" && file !== null) {
          p.add(
            `${where}.file`,
            'is set, but source = "agent": the host holds nothing for this secret',
            'remove file, or use source = "host-or-agent" to prefer the host\'s file',
          );
          ok = false;
          continue;
        }
        if (source !== "agent" && file === null) {
          p.add(
            where,
            `has no file (source = "${source}" needs the host's age-encrypted secret)`,
            'add file, or set source = "agent" so the requesting user\'s nixseal agent supplies the value',
          );
          ok = false;
          continue;
        }
        out.set(name, {
          name,
          source,
          file,
          allowedUrlPrefixes: m.get("allowedUrlPrefixes") as URL[],
          allowedUsers: m.get("allowedUsers") as string[],
          prompt: m.get("prompt") as boolean,
          fetcherStorePaths: m.get("fetcherStorePaths") as string[],
        });
      }
      return ok ? out : undefined;
    },
  },
};

/** Parses and validates the policy text; every problem is reported at once. */
export function parsePolicy(text: string, file: string): BuildSecretsPolicy {
  const problems = new Problems("BUILD_POLICY", file);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new NixsealError("BUILD_POLICY", `${file}: not valid JSON: ${(e as Error).message}`, {
      file,
      hint: "the policy is a JSON object; see docs/build-secrets.md",
    });
  }
  const dup = duplicateKey(text);
  if (dup !== null) {
    throw new NixsealError("BUILD_POLICY", `${file}: ${dup.at}: duplicate key "${shown(dup.key)}"`, {
      file,
      hint: DUPLICATE_KEY_HINT,
    });
  }
  if (!isObject(doc)) {
    throw new NixsealError("BUILD_POLICY", `${file}: must be a JSON object`, {
      file,
      hint: SCHEMA_HINT,
    });
  }
  const m = readObject(doc, "", TOP_FIELDS, problems, SCHEMA_HINT);
  const storeDir =
    doc.storeDir === undefined
      ? "/nix/store"
      : typeof doc.storeDir === "string" && pathProblem(doc.storeDir) === null
        ? doc.storeDir
        : null;
  // The fetchers are pinned by store path: each must lie in the store this policy names.
  if (typeof storeDir === "string" && isObject(doc.secrets)) {
    for (const [name, settings] of Object.entries(doc.secrets)) {
      if (!NAME_RE.test(name) || !isObject(settings) || !Array.isArray(settings.fetcherStorePaths)) continue;
      settings.fetcherStorePaths.forEach((f, i) => {
        if (typeof f === "string" && pathProblem(f) === null && !f.startsWith(`${storeDir}/`)) {
          problems.add(
            `secrets.${JSON.stringify(name.slice(0, 80))}.fetcherStorePaths[${i}]`,
            `is not in the Nix store (${storeDir})`,
            "the trusted fetcher is pinned by its store path",
          );
        }
      });
    }
  }
  // git runs next to the secret too: it must be pinned like the fetcher, by a store path.
  if (typeof storeDir === "string" && Array.isArray(doc.gitPaths)) {
    doc.gitPaths.forEach((g, i) => {
      if (typeof g === "string" && pathProblem(g) === null && !g.startsWith(`${storeDir}/`)) {
        problems.add(
          `gitPaths[${i}]`,
          `is not in the Nix store (${storeDir})`,
          "pin a git from the store: e.g. nix-build '<nixpkgs>' -A gitMinimal, then its bin/git",
        );
      }
    });
  }
  problems.throwIfAny();
  return {
    file,
    version: 1,
    storeDir: m!.get("storeDir") as string,
    runtimeDir: m!.get("runtimeDir") as string,
    agentDir: m!.get("agentDir") as string,
    agentTimeoutSeconds: m!.get("agentTimeoutSeconds") as number,
    identities: m!.get("identities") as IdentitySpec[],
    interpreters: m!.get("interpreters") as string[],
    gitPaths: m!.get("gitPaths") as string[],
    secrets: m!.get("secrets") as Map<string, SecretPolicy>,
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
    return parsePolicy(readAllSync(fd, st.size).toString("utf8"), file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The directories a policy names, read as far as its text allows: for when the policy is invalid
 * and the hooks must still put a refusal somewhere or clean up. The file's ownership is checked
 * as for the policy itself (an untrusted file must not choose where root writes or removes);
 * null when it cannot be trusted or names no usable directories.
 */
export function policyDirsOf(file: string): { runtimeDir: string; storeDir: string } | null {
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile() || st.uid !== 0 || (st.mode & 0o022) !== 0 || st.size > MAX_POLICY_BYTES) return null;
    const doc = JSON.parse(fs.readFileSync(file, "utf8")) as unknown;
    if (!isObject(doc)) return null;
    const pick = (v: unknown, dflt: string) =>
      v === undefined ? dflt : typeof v === "string" && pathProblem(v) === null ? v : null;
    const runtimeDir = pick(doc.runtimeDir, DEFAULT_RUNTIME_DIR);
    const storeDir = pick(doc.storeDir, "/nix/store");
    return runtimeDir === null || storeDir === null ? null : { runtimeDir, storeDir };
  } catch {
    return null;
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

  const rev = drv.env.get(REV_ATTR);
  if (rev === undefined) {
    const header = drv.env.get(HEADER_ATTR) ?? DEFAULT_HEADER;
    const hp = headerProblem(header);
    if (hp !== null) reasons.push(hp);
    for (const attr of [GIT_ATTR, USER_ATTR]) {
      if (drv.env.has(attr)) reasons.push(`it sets ${attr}, which only a git fetch (with rev) has`);
    }
  } else {
    // fetchgit: the token goes to git through the fetcher's credential helper, never a header.
    if (!/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/.test(rev)) reasons.push("its rev is not a full commit id");
    if (drv.env.has(HEADER_ATTR)) reasons.push(`a git fetch has no ${HEADER_ATTR}`);
    const git = drv.env.get(GIT_ATTR);
    if (git === undefined || !policy.gitPaths.includes(git)) {
      reasons.push(
        `its git (${JSON.stringify((git ?? "none").slice(0, 200))}) is not one of the policy's gitPaths (${policy.gitPaths.join(", ") || "none"})`,
      );
    }
    const user = drv.env.get(USER_ATTR);
    if (user !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(user)) {
      reasons.push(`its ${USER_ATTR} is not a plain user name`);
    }
  }

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

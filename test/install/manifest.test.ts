/** The activation manifest v1: strict validation, every problem reported in one run. */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { NixsealError } from "../../src/common/errors.js";
import { type Json, Problems } from "../../src/common/validation.js";
import {
  parseManifest,
  quickSecret,
  readManifest,
  readSecret,
  validateManifest,
} from "../../src/install/manifest.js";
import { MODES, PATHS, PRINCIPALS, UNITS } from "../common/shared-rules.js";
import { isError, tempDir } from "../helpers.js";

const PH = `<nixseal:${"ab".repeat(32)}:placeholder>`;

/** A valid manifest (as the NixOS module writes it); tests break one thing at a time. */
// biome-ignore lint/suspicious/noExplicitAny: a JSON fixture that each test bends out of shape
function valid(): Record<string, any> {
  return {
    version: 1,
    secretsDir: "/run/nixseal/secrets",
    generationsDir: "/run/nixseal/generations",
    keepGenerations: 1,
    identities: [
      { type: "ssh", path: "/etc/ssh/ssh_host_ed25519_key" },
      { type: "age", path: "/var/lib/nixseal/key.txt" },
    ],
    secrets: [
      {
        name: "db/password",
        file: "/nix/store/aaaa-db.age",
        format: "age",
        key: null,
        owner: "postgres",
        group: "postgres",
        mode: "0400",
        path: null,
        restartUnits: ["postgresql.service"],
        reloadUnits: [],
      },
      {
        name: "api-token",
        file: "/nix/store/bbbb-hosts.yaml",
        format: "yaml",
        key: "api/token",
        owner: "0",
        group: null,
        mode: "440",
        path: "/etc/app/token",
        restartUnits: [],
        reloadUnits: ["app@main.service"],
      },
    ],
    templates: [
      {
        name: "app.conf",
        content: `password=${PH}\n`,
        owner: "root",
        group: "root",
        mode: "0400",
        path: null,
        restartUnits: [],
        reloadUnits: [],
      },
    ],
    placeholders: { "db/password": PH },
  };
}

/** The problems a manifest has (empty: valid). */
function problemsOf(json: unknown): NixsealError[] {
  try {
    validateManifest(json, "/m.json");
    return [];
  } catch (e) {
    assert.ok(e instanceof NixsealError);
    const list = e.problems.length > 0 ? e.problems : [e];
    for (const p of list) {
      assert.equal(p.code, "MANIFEST");
      assert.ok(p.hint && p.hint.length > 0, `a hint for: ${p.message}`);
      assert.equal(p.file, "/m.json");
    }
    return list;
  }
}

function assertOneProblem(json: unknown, pattern: RegExp): void {
  const list = problemsOf(json);
  assert.equal(list.length, 1, list.map((p) => p.message).join("\n"));
  assert.match(list[0]!.message, pattern);
}

test("a valid manifest: values read, optional fields take their defaults", () => {
  const m = validateManifest(valid(), "/m.json");
  assert.equal(m.stage, "system");
  assert.equal(m.mount, "ramfs");
  assert.equal(m.restartListFile, null);
  assert.equal(m.secrets[0]!.mode, 0o400);
  assert.equal(m.secrets[1]!.mode, 0o440);
  assert.equal(m.secrets[1]!.owner, "0");
  assert.equal(m.secrets[1]!.group, null);
  assert.equal(m.secrets[1]!.key, "api/token");
  assert.equal(m.templates[0]!.kind, "template");
  assert.equal(m.placeholders.get("db/password"), PH);
  const full = {
    ...valid(),
    stage: "system",
    mount: "tmpfs-noswap",
    restartListFile: "/run/nixos/activation-restart-list",
    reloadListFile: "/run/nixos/activation-reload-list",
    dryRestartListFile: "/run/nixos/dry-activation-restart-list",
    dryReloadListFile: null,
  };
  const m2 = validateManifest(full, "/m.json");
  assert.equal(m2.mount, "tmpfs-noswap");
  assert.equal(m2.restartListFile, "/run/nixos/activation-restart-list");
});

test('keepGenerations: a count up to 1000, or "all" (never prune); anything else is refused', () => {
  assert.equal(validateManifest({ ...valid(), keepGenerations: 0 }, "/m.json").keepGenerations, 0);
  assert.equal(
    validateManifest({ ...valid(), keepGenerations: "all" }, "/m.json").keepGenerations,
    Number.POSITIVE_INFINITY,
  );
  for (const bad of ["All", "1", 1.5, 1001, null]) {
    assertOneProblem(
      { ...valid(), keepGenerations: bad },
      /keepGenerations: must be a whole number from 0 to 1000/,
    );
  }
  assert.match(problemsOf({ ...valid(), keepGenerations: "none" })[0]!.hint!, /"all" keeps every one/);
});

test("replaceExisting: false when absent, a boolean only", () => {
  assert.equal(validateManifest(valid(), "/m.json").replaceExisting, false);
  assert.equal(validateManifest({ ...valid(), replaceExisting: true }, "/m.json").replaceExisting, true);
  assertOneProblem({ ...valid(), replaceExisting: "yes" }, /replaceExisting: must be true or false/);
});

test('changeDetection: "records" when absent, or "files"; anything else is refused', () => {
  assert.equal(validateManifest(valid(), "/m.json").changeDetection, "records");
  assert.equal(
    validateManifest({ ...valid(), changeDetection: "files" }, "/m.json").changeDetection,
    "files",
  );
  assertOneProblem(
    { ...valid(), changeDetection: "mtime" },
    /changeDetection: must be one of "records", "files"/,
  );
});

test("unknown fields are errors, at the top and in entries (a typo never gives a file to root)", () => {
  const m = valid();
  m.secrets[0].onwer = "postgres";
  assertOneProblem(m, /secrets\[0\]\.onwer: unknown field/);
  const top = { ...valid(), secretDir: "/run/x" };
  assertOneProblem(top, /secretDir: unknown field/);
  // JSON's __proto__ is a plain key: reported, and nothing is polluted.
  const polluted = parseManifestProblems(
    `{"__proto__": {"polluted": 1}, ${JSON.stringify(valid()).slice(1)}`,
  );
  assert.equal(polluted.length, 1);
  assert.match(polluted[0]!.message, /__proto__: unknown field/);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

function parseManifestProblems(text: string): NixsealError[] {
  try {
    parseManifest(text, "/m.json");
    return [];
  } catch (e) {
    assert.ok(e instanceof NixsealError);
    return e.problems.length > 0 ? e.problems : [e];
  }
}

test("version: only 1, with a hint to upgrade nixseal", () => {
  const list = problemsOf({ ...valid(), version: 2 });
  assert.equal(list.length, 1);
  assert.match(list[0]!.message, /manifest version 2 is not supported/);
  assert.match(list[0]!.hint!, /upgrade nixseal/);
  assertOneProblem({ ...valid(), version: "1" }, /version/);
});

test("missing required fields are each reported", () => {
  const m = valid();
  delete m.secrets[0].mode;
  delete m.keepGenerations;
  const list = problemsOf(m);
  assert.deepEqual(list.map((p) => p.message).sort(), [
    "/m.json: keepGenerations: is missing",
    "/m.json: secrets[0].mode: is missing",
  ]);
});

test("paths: absolute and normalised, no NUL or newline", () => {
  for (const bad of [
    "run/secrets",
    "/run/../secrets",
    "/run//secrets",
    "/run/secrets/",
    "/run/./x",
    "/run/a\nb",
    "",
  ]) {
    const list = problemsOf({ ...valid(), secretsDir: bad });
    assert.equal(list.length, 1, `secretsDir ${JSON.stringify(bad)}`);
    assert.match(list[0]!.message, /^\/m\.json: secretsDir: /);
  }
  const m = valid();
  m.secrets[0].file = "relative.age";
  m.identities[0].path = "/etc/ssh/../key";
  m.secrets[1].path = "/etc/app/";
  assert.equal(problemsOf(m).length, 3);
});

test("names: relative paths of safe segments", () => {
  const bad = [
    "/abs",
    "../up",
    "a/../b",
    "a//b",
    "a/",
    ".",
    "sp ace",
    "new\nline",
    "x".repeat(256),
    "ümlaut",
  ];
  for (const name of bad) {
    const m = valid();
    m.secrets[0].name = name;
    m.placeholders = {};
    m.templates[0].content = "no placeholder";
    const list = problemsOf(m);
    assert.equal(list.length, 1, `name ${JSON.stringify(name)}: ${list.map((p) => p.message)}`);
    assert.match(list[0]!.message, /secrets\[0\]\.name/);
  }
  for (const good of ["a", "db/password", "x.y_z@host+1=2-3", "a/b/c/d"]) {
    const m = valid();
    m.secrets[0].name = good;
    m.placeholders = {};
    m.templates[0].content = "";
    assert.deepEqual(problemsOf(m), [], good);
  }
});

test("names are unique across secrets and templates, and no name is a directory of another", () => {
  const dup = valid();
  dup.templates[0].name = "api-token";
  assertOneProblem(dup, /templates\[0\]\.name: "api-token" is also the name of secrets\[1\]/);
  const nested = valid();
  nested.templates[0].name = "db/password/extra";
  assertOneProblem(
    nested,
    /"db\/password\/extra" would need "db\/password" \(secrets\[0\]\) to be a directory/,
  );
  const sibling = valid();
  sibling.templates[0].name = "db/password2"; // a prefix, not a directory: fine
  assert.deepEqual(problemsOf(sibling), []);
});

test("modes: octal strings up to 0777, no setuid/setgid/sticky", () => {
  for (const [mode, ok] of [
    ["0400", true],
    ["440", true],
    ["0777", true],
    ["0000", true],
    ["4755", false],
    ["1777", false],
    ["0800", false],
    ["04000", false],
    ["40", false],
    [400, false],
    ["rw-------", false],
  ] as const) {
    const m = valid();
    m.secrets[0].mode = mode;
    assert.equal(problemsOf(m).length, ok ? 0 : 1, `mode ${JSON.stringify(mode)}`);
  }
});

test("owners and groups: a name, a decimal id, or null", () => {
  for (const [owner, ok] of [
    ["postgres", true],
    ["_apt", true],
    ["machine$", true],
    ["0", true],
    ["65534", true],
    [null, true],
    ["bad name", false],
    ["-dash", false],
    ["a".repeat(33), false],
    ["99999999999", false],
    ["01", false],
    [0, false],
  ] as const) {
    const m = valid();
    m.secrets[0].owner = owner;
    assert.equal(problemsOf(m).length, ok ? 0 : 1, `owner ${JSON.stringify(owner)}`);
  }
});

test("units: systemd unit names only", () => {
  for (const [unit, ok] of [
    ["foo.service", true],
    ["bar@x.socket", true],
    ["nightly.timer", true],
    ["foo", false],
    ["../foo.service", false],
    ["foo bar.service", false],
    ["foo.service\n", false],
    ["", false],
  ] as const) {
    const m = valid();
    m.secrets[0].restartUnits = [unit];
    assert.equal(problemsOf(m).length, ok ? 0 : 1, `unit ${JSON.stringify(unit)}`);
  }
  const notList = valid();
  notList.secrets[0].reloadUnits = "foo.service";
  assertOneProblem(notList, /reloadUnits: must be a list/);
});

test("formats and keys: sops keys only for sops files, INI section/key, flat dotenv", () => {
  const age = valid();
  age.secrets[0].key = "a";
  assertOneProblem(age, /secrets\[0\]\.key: a age file has no keys/);
  const ini = valid();
  ini.secrets[1].format = "ini";
  ini.secrets[1].key = "token";
  assertOneProblem(ini, /is not section\/key/);
  const env = valid();
  env.secrets[1].format = "dotenv";
  env.secrets[1].key = "a/b";
  assertOneProblem(env, /a dotenv file is flat/);
  const fmt = valid();
  fmt.secrets[0].format = "toml";
  assertOneProblem(fmt, /format: must be one of "age", "yaml"/);
  const empty = valid();
  empty.secrets[1].key = "api//token";
  assertOneProblem(empty, /has an empty segment/);
});

test("directories and paths must not overlap", () => {
  assertOneProblem(
    { ...valid(), secretsDir: "/run/nixseal/generations/x" },
    /secretsDir: must not be generationsDir or inside it/,
  );
  const p = valid();
  p.secrets[1].path = "/run/nixseal/secrets/token";
  assertOneProblem(p, /overlaps \/run\/nixseal\/secrets/);
  const twice = valid();
  twice.templates[0].path = "/etc/app/token";
  assertOneProblem(twice, /templates\[0\]\.path: "\/etc\/app\/token" is also the path of secrets\[1\]/);
});

test("stage users: owners root only, no units", () => {
  const m = { ...valid(), stage: "users" };
  const list = problemsOf(m);
  const messages = list.map((p) => p.message).join("\n");
  assert.match(
    messages,
    /secrets\[0\]\.owner: is "postgres", but the users stage runs before users and groups exist/,
  );
  assert.match(messages, /secrets\[0\]\.group: is "postgres"/);
  assert.match(messages, /secrets\[0\]: has restart\/reload units in the users stage/);
  assert.match(messages, /secrets\[1\]: has restart\/reload units/);
  const ok = valid();
  ok.stage = "users";
  for (const s of [...ok.secrets, ...ok.templates]) {
    s.owner = "root";
    s.group = "0";
    s.restartUnits = [];
    s.reloadUnits = [];
  }
  assert.deepEqual(problemsOf(ok), []);
});

test("placeholders: each names a secret, unique, and templates use only known ones", () => {
  const unknown = valid();
  unknown.placeholders["no/such"] = `<nixseal:${"cd".repeat(32)}:placeholder>`;
  assertOneProblem(unknown, /placeholders\["no\/such"\]: names no secret of this manifest/);
  const same = valid();
  same.placeholders["api-token"] = PH;
  assertOneProblem(same, /is the same string as the placeholder of "db\/password"/);
  const stray = valid();
  stray.templates[0].content += `other=<nixseal:${"ef".repeat(32)}:placeholder>`;
  assertOneProblem(
    stray,
    /templates\[0\]\.content: holds the placeholder <nixseal:efef.*which stands for no secret/,
  );
});

test("a bad manifest reports all its problems in one run", () => {
  const m = valid();
  m.version = 1;
  m.keepGenerations = -1;
  m.secrets[0].mode = "4755";
  m.secrets[0].owner = "no body";
  m.secrets[1].name = "../escape";
  m.templates[0].restartUnits = ["not a unit"];
  m.identities.push({ type: "kms", path: "/x" });
  m.extra = true;
  const list = problemsOf(m);
  const messages = list.map((p) => p.message);
  assert.equal(list.length, 7, messages.join("\n"));
  for (const pattern of [
    /keepGenerations/,
    /secrets\[0\]\.mode/,
    /secrets\[0\]\.owner/,
    /secrets\[1\]\.name/,
    /templates\[0\]\.restartUnits\[0\]/,
    /identities\[2\]\.type/,
    /extra: unknown field/,
  ]) {
    assert.ok(
      messages.some((msg) => pattern.test(msg)),
      `${pattern} in ${messages.join("\n")}`,
    );
  }
});

test("readManifest: not JSON, a missing file, a file too large", () => {
  const { dir, cleanup } = tempDir();
  try {
    const f = path.join(dir, "m.json");
    fs.writeFileSync(f, "{ version: 1 ");
    assert.throws(() => readManifest(f), isError("MANIFEST", /not valid JSON/));
    assert.throws(() => readManifest(path.join(dir, "none.json")), isError("IO", /no such file/));
    fs.writeFileSync(f, JSON.stringify(valid()));
    assert.equal(readManifest(f).secrets.length, 2);
    fs.truncateSync(f, 64 * 1024 * 1024 + 1);
    assert.throws(() => readManifest(f), isError("MANIFEST", /larger than 64 MiB/));
    assert.throws(() => parseManifest("[]", "/m.json"), isError("MANIFEST", /must be an object/));
  } finally {
    cleanup();
  }
});

test("credentials: read with their defaults; absent or null means a file", () => {
  const j = valid();
  j.secrets[0].credential = { name: "db-password", withKey: "auto", services: ["postgresql.service"] };
  j.secrets[1].credential = null;
  j.templates[0].credential = {
    name: "app.conf",
    withKey: "host+tpm2",
    tpm2Pcrs: "0+7",
    services: ["app.service", "app.service"],
  };
  j.credstoreDir = "/var/lib/nixseal/credstore";
  j.restartMode = "systemctl";
  const m = validateManifest(j, "/m.json");
  assert.deepEqual(m.secrets[0]!.credential, {
    name: "db-password",
    withKey: "auto",
    tpm2Pcrs: null,
    services: ["postgresql.service"],
  });
  assert.equal(m.secrets[1]!.credential, null);
  assert.deepEqual(m.templates[0]!.credential, {
    name: "app.conf",
    withKey: "host+tpm2",
    tpm2Pcrs: "0+7",
    services: ["app.service"],
  });
  assert.equal(m.credstoreDir, "/var/lib/nixseal/credstore");
  assert.equal(m.restartMode, "systemctl");
  const d = validateManifest(valid(), "/m.json");
  assert.equal(d.credstoreDir, null, "absent: the default store, used only when a credential needs it");
  assert.equal(d.restartMode, "lists");
  assert.equal(d.secrets[0]!.credential, null);
});

test("credentials: bad names, keys, PCRs, units and unknown fields are each reported", () => {
  const j = valid();
  j.secrets[0].credential = { name: "db/password", withKey: "tpm3", services: ["not a unit"] };
  j.secrets[1].credential = { name: "ok", withKey: "tpm2", tpm2Pcrs: "7,8", services: [], extra: 1 };
  j.templates[0].credential = "app.conf";
  const list = problemsOf(j).map((p) => p.message);
  for (const pattern of [
    /secrets\[0\]\.credential\.name: "db\/password" is not a valid credential name/,
    /secrets\[0\]\.credential\.withKey: must be one of "auto", "host", "tpm2", "host\+tpm2", not "tpm3"/,
    /secrets\[0\]\.credential\.services\[0\]: "not a unit" is not a systemd unit name/,
    /secrets\[1\]\.credential\.extra: unknown field/,
    /secrets\[1\]\.credential\.tpm2Pcrs: "7,8" is not a PCR list/,
    /templates\[0\]\.credential: must be an object, not a string/,
  ]) {
    assert.ok(
      list.some((m) => pattern.test(m)),
      `${pattern} in:\n${list.join("\n")}`,
    );
  }
  assert.equal(list.length, 6, list.join("\n"));
});

test("credentials: unique IDs, no path, no users stage, PCRs only with a TPM2, a credstore apart", () => {
  const j = valid();
  j.secrets[0].credential = { name: "same", withKey: "host", tpm2Pcrs: "7", services: [] };
  j.secrets[1].credential = { name: "same", withKey: "auto", services: [] };
  j.credstoreDir = "/run/nixseal/generations/creds";
  const list = problemsOf(j).map((p) => p.message);
  for (const pattern of [
    /secrets\[1\]\.credential\.name: "same" is also the credential of secrets\[0\]/,
    /secrets\[1\]\.path: is set, but a credential is not written to the secrets directory/,
    /secrets\[0\]\.credential\.tpm2Pcrs: is set, but withKey is "host"/,
    /credstoreDir: "\/run\/nixseal\/generations\/creds" overlaps generationsDir/,
  ]) {
    assert.ok(
      list.some((m) => pattern.test(m)),
      `${pattern} in:\n${list.join("\n")}`,
    );
  }
  assert.equal(list.length, 4, list.join("\n"));

  const u = valid();
  u.stage = "users";
  u.secrets = [
    {
      ...u.secrets[0],
      owner: "root",
      group: "root",
      restartUnits: [],
      credential: { name: "pw", withKey: "auto", services: [] },
    },
  ];
  u.templates = [];
  u.credstoreDir = "/var/lib/nixseal/credstore";
  const ul = problemsOf(u).map((p) => p.message);
  assert.ok(
    ul.some((m) => /secrets\[0\]\.credential: is set in the users stage/.test(m)),
    ul.join("\n"),
  );
  assert.ok(
    ul.some((m) => /credstoreDir: is set in the users stage/.test(m)),
    ul.join("\n"),
  );
  assert.equal(ul.length, 2, ul.join("\n"));
});

test("identities of type systemd-creds, with an optional name; restartMode systemctl takes no list files", () => {
  const j = valid();
  j.identities = [
    { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred" },
    { type: "systemd-creds", path: "/var/lib/nixseal/ssh.cred", name: "ssh-host-key" },
  ];
  const m = validateManifest(j, "/m.json");
  assert.deepEqual(m.identities, [
    { type: "systemd-creds", path: "/var/lib/nixseal/host-key.cred", name: null },
    { type: "systemd-creds", path: "/var/lib/nixseal/ssh.cred", name: "ssh-host-key" },
  ]);
  const bad = valid();
  bad.identities = [
    { type: "ssh", path: "/etc/ssh/k", name: "x" },
    { type: "systemd-creds", path: "/k.cred", name: "a:b" },
    { type: "tpm", path: "/k" },
  ];
  const list = problemsOf(bad).map((p) => p.message);
  for (const pattern of [
    /identities\[0\]\.name: is set, but a ssh identity has no name/,
    /identities\[1\]\.name: "a:b" is not a valid credential name/,
    /identities\[2\]\.type: must be one of "ssh", "age", "systemd-creds", "gpg", "gpg-ssh", not "tpm"/,
  ]) {
    assert.ok(
      list.some((m) => pattern.test(m)),
      `${pattern} in:\n${list.join("\n")}`,
    );
  }
  assert.equal(list.length, 3, list.join("\n"));
  assertOneProblem(
    { ...valid(), restartMode: "systemctl", restartListFile: "/run/nixos/activation-restart-list" },
    /restartListFile: is set, but restartMode is "systemctl"/,
  );
  assertOneProblem({ ...valid(), restartMode: "dbus" }, /restartMode: must be one of "lists", "systemctl"/);
});

test("the quick reading of a secret accepts only what the field table accepts, and reads it the same", () => {
  const base: Record<string, Json> = {
    name: "db/password",
    file: "/nix/store/aaaa-db.age",
    format: "age",
    key: null,
    owner: "postgres",
    group: "postgres",
    mode: "0400",
    path: null,
    restartUnits: ["postgresql.service"],
    reloadUnits: [],
  };
  const values: Record<string, Json[]> = {
    name: [
      "a",
      "a/b/c",
      "",
      "/a",
      "a//b",
      "a/",
      "./a",
      "a/..",
      "..",
      ".hidden",
      "a b",
      "x".repeat(255),
      "x".repeat(256),
      7,
      null,
    ],
    file: [...PATHS.map(([p]) => p), 1, null],
    format: ["age", "yaml", "json", "dotenv", "ini", "binary", "AGE", "", null],
    key: [null, "a", "a/b", "", "a//b", "/a", "a/", 3],
    owner: [...PRINCIPALS.map(([x]) => x), null, 0],
    group: [...PRINCIPALS.map(([x]) => x), null, false],
    mode: [...MODES.map(([x]) => x), 400, null],
    path: [null, ...PATHS.map(([x]) => x), 5],
    restartUnits: [
      [],
      ...UNITS.map(([u]) => [u]),
      ["a.service", "a.service", "b.socket"],
      "a.service",
      [1],
      null,
    ],
    reloadUnits: [[], ["x.service"], ["x.service", "x.service"], {}, null],
    credential: [null, { name: "c", withKey: "host", services: [] }, 1],
  };
  const entries: Json[] = [base, { ...base, credential: null }, { ...base, extra: 1 }, [], null, "s"];
  for (const field of Object.keys(base)) {
    const { [field]: _, ...without } = base;
    entries.push(without);
  }
  for (const [field, list] of Object.entries(values))
    for (const v of list) entries.push({ ...base, [field]: v });
  let quick = 0;
  for (const e of entries) {
    const fast = quickSecret(e);
    const p = new Problems("MANIFEST", "/m.json");
    const slow = readSecret(e, "secrets[0]", p);
    if (fast === null) continue;
    quick++;
    assert.deepEqual(p.list, [], `accepted quickly but the table finds problems: ${JSON.stringify(e)}`);
    assert.deepEqual(fast, slow, JSON.stringify(e));
  }
  assert.ok(quick > 50, `the quick reading takes the valid entries (${quick} of ${entries.length})`);
});

test("identities of type gpg (a GnuPG home) and gpg-ssh (an RSA ssh key): absolute paths, no name", () => {
  const j = valid();
  j.identities = [
    { type: "gpg", path: "/var/lib/sops" },
    { type: "gpg-ssh", path: "/etc/ssh/ssh_host_rsa_key" },
  ];
  assert.deepEqual(validateManifest(j, "/m.json").identities, [
    { type: "gpg", path: "/var/lib/sops", name: null },
    { type: "gpg-ssh", path: "/etc/ssh/ssh_host_rsa_key", name: null },
  ]);
  const bad = valid();
  bad.identities = [
    { type: "gpg", path: "var/lib/sops" },
    { type: "gpg-ssh", path: "/etc/ssh/ssh_host_rsa_key", name: "x" },
  ];
  const messages = problemsOf(bad)
    .map((p) => p.message)
    .join("\n");
  assert.match(messages, /identities\[0\]\.path: /);
  assert.match(messages, /identities\[1\]\.name: is set, but a gpg-ssh identity has no name/);
});

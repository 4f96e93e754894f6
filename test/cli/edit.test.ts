/**
 * `nixseal edit` end to end: real Nix evaluates secrets.nix, the real age binary makes and reads
 * the secrets, and the editor is a small shell script written by the test. The plaintext of the
 * existing secrets carries a random marker that never exists in a file the test writes (it goes
 * to `age` on stdin), so after each run the test can search /tmp, /dev/shm and $XDG_RUNTIME_DIR
 * for it: the edit directory must never survive, whatever ends the edit.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { chooseEditBase, isRamBacked } from "../../src/vault/edit-session.js";
import { CLI, nixseal, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const AGE = which("age");
const AGE_KEYGEN = which("age-keygen");
const SSH_KEYGEN = which("ssh-keygen");
const RAM = (() => {
  try {
    return chooseEditBase().dir;
  } catch {
    return null;
  }
})();
const missing = !NIX
  ? "nix-instantiate (Debian nix-bin) is not installed"
  : !AGE || !AGE_KEYGEN
    ? "the age binary (Debian package age) is not installed"
    : RAM === null
      ? "no RAM-backed directory (tmpfs /dev/shm or $XDG_RUNTIME_DIR)"
      : false;

/** Random per run: appears only in secrets' plaintext, never in a file the test writes. */
const MARKER = `nixseal-marker-${randomBytes(12).toString("hex")}`;

let dir: string;
let cleanup: () => void;
let home: string;
let repo: string;
let runtime: string; // $XDG_RUNTIME_DIR for nixseal: a private dir on tmpfs
let records: string; // where editor scripts write what they saw
let bin: string; // editor scripts
let identity: string;
let recipient: string;
let env: Record<string, string | undefined>;

function ageKeygen(file: string): string {
  assert.equal(spawnSync(AGE_KEYGEN!, ["-o", file]).status, 0);
  return spawnSync(AGE_KEYGEN!, ["-y", file]).stdout.toString().trim();
}

/** Encrypts with the real age, plaintext on stdin (never in a file). */
function ageEncrypt(file: string, plaintext: string, to = recipient): void {
  const r = spawnSync(AGE!, ["-r", to, "-o", file], { input: plaintext });
  assert.equal(r.status, 0, r.stderr?.toString());
}

function ageDecrypt(file: string, key = identity): string {
  const r = run(AGE!, ["-d", "-i", key, file]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString();
}

function editor(name: string, body: string): string {
  const p = path.join(bin, name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return p;
}

function edit(args: string[], extraEnv: Record<string, string | undefined> = {}) {
  return nixseal(["edit", ...args], { cwd: repo, env: { ...env, ...extraEnv } });
}

function record(name: string): string {
  return fs.readFileSync(path.join(records, name), "utf8");
}

/** Every regular file under `roots` whose content includes `needle`. */
function filesContaining(needle: string, roots: readonly string[]): string[] {
  const found: string[] = [];
  const want = Buffer.from(needle);
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        try {
          if (fs.statSync(p).size > 64 * 1024 * 1024) continue;
          if (fs.readFileSync(p).includes(want)) found.push(p);
        } catch {}
      }
    }
  };
  for (const r of roots) walk(r);
  return found;
}

function assertNoPlaintextLeft(editDir?: string): void {
  if (editDir !== undefined) assert.equal(fs.existsSync(editDir), false, `${editDir} survived`);
  assert.deepEqual(fs.readdirSync(runtime), [], "something was left in $XDG_RUNTIME_DIR");
  const roots = [...new Set([os.tmpdir(), "/tmp", "/dev/shm", RAM!, runtime])];
  assert.deepEqual(filesContaining(MARKER, roots), [], "plaintext found on disk after the edit");
}

before(() => {
  ({ dir, cleanup } = tempDir());
  if (missing) return;
  home = path.join(dir, "home");
  repo = path.join(dir, "repo");
  records = path.join(dir, "records");
  bin = path.join(dir, "bin");
  for (const d of [home, repo, records, bin, path.join(dir, "tmp")]) fs.mkdirSync(d);
  runtime = fs.mkdtempSync(path.join(RAM!, "nixseal-edit-test-"));
  fs.chmodSync(runtime, 0o700);
  identity = path.join(home, ".config", "nixseal", "identity.txt");
  fs.mkdirSync(path.dirname(identity), { recursive: true });
  recipient = ageKeygen(identity);
  fs.writeFileSync(
    path.join(repo, "secrets.nix"),
    `let me = "${recipient}"; in {
  "db.age".publicKeys = [ me ];
  "new.age".publicKeys = [ me ];
  "empty-new.age".publicKeys = [ me ];
  "hosts/config.yaml.age" = { publicKeys = [ me ]; armor = true; };
  "other.age".publicKeys = [ me ];
  "sig.age".publicKeys = [ me ];
}
`,
  );
  env = {
    HOME: home,
    XDG_CONFIG_HOME: undefined,
    XDG_CACHE_HOME: path.join(dir, "cache"),
    XDG_RUNTIME_DIR: runtime,
    TMPDIR: path.join(dir, "tmp"),
    VISUAL: undefined,
    EDITOR: undefined,
    NIXSEAL_IDENTITY: undefined,
    SOPS_AGE_KEY_FILE: undefined,
    SOPS_AGE_KEY: undefined,
    RULES: undefined,
    NIXSEAL_PASSPHRASE_FILE: undefined,
    NO_COLOR: "1",
  };
});
after(() => {
  cleanup();
  if (runtime) fs.rmSync(runtime, { recursive: true, force: true });
});

describe("nixseal edit", { skip: missing }, () => {
  test("a new secret starts empty in a 0600 file in a 0700 dir on tmpfs, named like the secret; age decrypts it", () => {
    const ed = editor(
      "new-editor",
      `[ -s "$1" ] && exit 9
echo "$1" > ${records}/new-path
stat -c '%a' "$1" > ${records}/new-mode
stat -c '%a' "$(dirname "$1")" >> ${records}/new-mode
stat -f -c '%T' "$(dirname "$1")" > ${records}/new-fs
printf 'user: admin\\npassword: hunter2\\n' > "$1"`,
    );
    const r = edit(["hosts/config.yaml.age", "--json"], { EDITOR: ed });
    assert.equal(r.status, 0, r.stderr);
    const file = path.join(repo, "hosts", "config.yaml.age");
    assert.deepEqual(JSON.parse(r.stdout.toString()), {
      secret: "hosts/config.yaml.age",
      file,
      changed: true,
    });
    const editPath = record("new-path").trim();
    assert.equal(path.basename(editPath), "config.yaml");
    assert.equal(path.dirname(path.dirname(editPath)), runtime);
    assert.equal(record("new-mode"), "600\n700\n");
    assert.match(record("new-fs").trim(), /^(tmpfs|ramfs)$/);
    assert.equal(fs.existsSync(path.dirname(editPath)), false);
    // armor = true in the rules: an armored file the real age reads.
    assert.match(fs.readFileSync(file, "latin1"), /^-----BEGIN AGE ENCRYPTED FILE-----\n/);
    assert.equal(ageDecrypt(file), "user: admin\npassword: hunter2\n");
  });

  test("a new secret left empty writes nothing", () => {
    const r = edit(["empty-new.age"], { EDITOR: editor("noop", "exit 0") });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /left empty, nothing written/);
    assert.equal(fs.existsSync(path.join(repo, "empty-new.age")), false);
    assert.deepEqual(fs.readdirSync(runtime), []);
  });

  test("editing an existing secret: the editor gets the plaintext file, the user's environment, no secret in argv or env", () => {
    const file = path.join(repo, "db.age");
    ageEncrypt(file, `${MARKER}\n`);
    const ed = editor(
      "append",
      `echo "$1" > ${records}/append-path
printf '%s\\n' "$0" "$@" > ${records}/append-argv
env > ${records}/append-env
grep -c nixseal-marker- "$1" > ${records}/append-saw
echo "second line" >> "$1"`,
    );
    const r = edit(["db"], { EDITOR: ed, NIXSEAL_TEST_PASSTHROUGH: "kept" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /db\.age: written \(encrypted to 1 recipient\)/);
    assert.equal(record("append-saw").trim(), "1", "the editor saw the decrypted secret");
    assert.equal(ageDecrypt(file), `${MARKER}\nsecond line\n`);
    assert.match(record("append-env"), /^NIXSEAL_TEST_PASSTHROUGH=kept$/m);
    assert.equal(record("append-env").includes(MARKER), false);
    assert.equal(record("append-argv").includes(MARKER), false);
    assert.equal(record("append-argv").trim().split("\n").at(-1), record("append-path").trim());
    assertNoPlaintextLeft(path.dirname(record("append-path").trim()));
  });

  test("unchanged content (even if the editor rewrote the file) keeps the secret byte-identical", () => {
    const file = path.join(repo, "db.age");
    const before = fs.readFileSync(file);
    const mtime = fs.statSync(file).mtimeMs;
    const ed = editor("rewrite-same", 'cp "$1" "$1.new" && mv "$1.new" "$1"');
    const r = edit(["db.age", "--json"], { EDITOR: ed });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.toString()), { secret: "db.age", file, changed: false });
    assert.deepEqual(fs.readFileSync(file), before);
    assert.equal(fs.statSync(file).mtimeMs, mtime);
    const human = edit(["db.age"], { EDITOR: ed });
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stderr, /unchanged, not rewritten/);
    assertNoPlaintextLeft();
  });

  test("$VISUAL comes before $EDITOR; EDITOR with arguments runs through the shell", () => {
    const file = path.join(repo, "db.age");
    const before = fs.readFileSync(file);
    const ed = editor("with-args", `printf '%s\\n' "$@" > ${records}/args`);
    let r = edit(["db.age"], { EDITOR: `${ed} --wait`, VISUAL: undefined });
    assert.equal(r.status, 0, r.stderr);
    const lines = record("args").trim().split("\n");
    assert.equal(lines[0], "--wait");
    assert.equal(lines.length, 2);
    r = edit(["db.age"], { VISUAL: `${ed} --visual`, EDITOR: path.join(bin, "does-not-exist") });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(record("args").split("\n")[0], "--visual");
    assert.deepEqual(fs.readFileSync(file), before);
  });

  test("an editor that fails writes nothing, says so with a hint, and leaves no plaintext", () => {
    const file = path.join(repo, "db.age");
    const before = fs.readFileSync(file);
    const ed = editor("fail", `echo "$1" > ${records}/fail-path\necho changed >> "$1"\nexit 3`);
    const r = edit(["db.age"], { EDITOR: ed });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /nixseal edit: error: the editor ".*fail" exited with status 3/);
    assert.match(r.stderr, /hint: nothing was written/);
    assert.deepEqual(fs.readFileSync(file), before);
    assertNoPlaintextLeft(path.dirname(record("fail-path").trim()));
    // An editor that is not installed: exit 127 from the shell, a hint to set EDITOR.
    const gone = edit(["db.age"], { EDITOR: path.join(bin, "no-such-editor") });
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /hint: the editor was not found/);
    assert.deepEqual(fs.readFileSync(file), before);
  });

  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const) {
    test(`${signal} to nixseal while the editor runs: editor stopped, nothing written, dir removed, exit ${code}`, async () => {
      const file = path.join(repo, "sig.age");
      ageEncrypt(file, `${MARKER} for ${signal}\n`);
      const before = fs.readFileSync(file);
      const started = path.join(records, `sig-${signal}`);
      const ed = editor(
        `sleepy-${signal}`,
        `echo changed >> "$1"\necho "$1" > ${started}.tmp\nmv ${started}.tmp ${started}\nexec sleep 60`,
      );
      const child = spawn(process.execPath, [CLI, "edit", "sig.age"], {
        cwd: repo,
        env: Object.fromEntries(
          Object.entries({ ...process.env, ...env, EDITOR: ed }).filter(([, v]) => v !== undefined),
        ) as NodeJS.ProcessEnv,
        detached: true, // its own session: no controlling terminal, as in CI
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
      const deadline = Date.now() + 30_000;
      while (!fs.existsSync(started)) {
        assert.ok(Date.now() < deadline, "the editor never started");
        await new Promise((r) => setTimeout(r, 20));
      }
      const editPath = fs.readFileSync(started, "utf8").trim();
      // The plaintext really is there while the editor runs (so the search below can fail).
      assert.ok(fs.readFileSync(editPath, "utf8").startsWith(MARKER));
      process.kill(child.pid!, signal);
      assert.equal(await exited, code, stderr);
      assert.match(stderr, new RegExp(`interrupted by ${signal}; nothing written`));
      assert.deepEqual(fs.readFileSync(file), before);
      assertNoPlaintextLeft(path.dirname(editPath));
    });
  }

  test("an editor that ignores SIGTERM is killed after a grace period; the dir still goes", async () => {
    const started = path.join(records, "stubborn");
    const ed = editor(
      "stubborn",
      `trap '' TERM INT HUP\necho "$1" > ${started}.tmp\nmv ${started}.tmp ${started}\nwhile :; do sleep 0.1; done`,
    );
    const child = spawn(process.execPath, [CLI, "edit", "sig.age"], {
      cwd: repo,
      env: Object.fromEntries(
        Object.entries({ ...process.env, ...env, EDITOR: ed }).filter(([, v]) => v !== undefined),
      ) as NodeJS.ProcessEnv,
      detached: true,
      stdio: "ignore",
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    while (!fs.existsSync(started)) await new Promise((r) => setTimeout(r, 20));
    process.kill(child.pid!, "SIGTERM");
    assert.equal(await exited, 143);
    assertNoPlaintextLeft(path.dirname(fs.readFileSync(started, "utf8").trim()));
  });

  test("vim on PATH is started with swap, backup, undo and viminfo disabled", () => {
    const vimBin = path.join(dir, "vim-bin");
    fs.mkdirSync(vimBin);
    fs.writeFileSync(path.join(vimBin, "vim"), `#!/bin/sh\nprintf '%s\\n' "$@" > ${records}/vim-argv\n`, {
      mode: 0o755,
    });
    const r = edit(["db.age"], { EDITOR: "vim", PATH: `${vimBin}:${process.env.PATH}` });
    assert.equal(r.status, 0, r.stderr);
    const argv = record("vim-argv").trim().split("\n");
    const at = (flag: string) => argv[argv.indexOf(flag) + 1];
    assert.ok(argv.includes("-n"), "no swap file");
    assert.equal(at("-i"), "NONE", "no viminfo/shada");
    assert.match(at("--cmd")!, /nobackup/);
    assert.match(at("--cmd")!, /nowritebackup/);
    assert.match(at("--cmd")!, /noundofile/);
    assert.match(at("-c")!, /noundofile/);
    assert.equal(path.basename(argv.at(-1)!), "db");
    // Any other editor gets the file only.
    const nano = editor("nano", `printf '%s\\n' "$@" > ${records}/nano-argv`);
    assert.equal(edit(["db.age"], { EDITOR: nano }).status, 0);
    assert.equal(record("nano-argv").trim().split("\n").length, 1);
  });

  test("an $XDG_RUNTIME_DIR on disk is not used: the plaintext goes to the next RAM-backed dir", (t) => {
    const disk = path.join(dir, "disk-runtime");
    fs.mkdirSync(disk, { mode: 0o700 });
    if (isRamBacked(disk)) return t.skip(`${disk} is on tmpfs: no disk directory to test with`);
    const ed = editor("where", `echo "$1" > ${records}/where`);
    const r = edit(["db.age"], { EDITOR: ed, XDG_RUNTIME_DIR: disk });
    assert.equal(r.status, 0, r.stderr);
    const used = path.dirname(path.dirname(record("where").trim()));
    assert.notEqual(used, disk);
    assert.equal(isRamBacked(used), true);
    assert.deepEqual(fs.readdirSync(disk), []);
  });

  test("NAME not in the rules: exit 2 with a hint, no editor started", () => {
    const ed = editor("never", `touch ${records}/never-ran`);
    const r = edit(["nope.age"], { EDITOR: ed });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /nixseal edit: error: "nope\.age" is not in .*secrets\.nix/);
    assert.match(r.stderr, /nixseal edit: hint: /);
    assert.equal(fs.existsSync(path.join(records, "never-ran")), false);
    const usage = edit([], { EDITOR: ed });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /missing NAME/);
  });

  test("no terminal and neither VISUAL nor EDITOR: an error at once, vi never started, nothing decrypted", () => {
    // A vi that records that it ran (the real one would draw screens into the pipe and wait).
    const viBin = path.join(dir, "vi-bin");
    fs.mkdirSync(viBin);
    fs.writeFileSync(path.join(viBin, "vi"), `#!/bin/sh\ntouch ${records}/vi-ran\n`, { mode: 0o755 });
    const file = path.join(repo, "db.age");
    if (!fs.existsSync(file)) ageEncrypt(file, `${MARKER} db\n`); // (when run alone)
    const before = fs.readFileSync(file);
    for (const blank of [{}, { EDITOR: "  ", VISUAL: "" }]) {
      const r = edit(["db.age", "--json"], { ...blank, PATH: `${viBin}:${process.env.PATH}` });
      assert.equal(r.status, 1, r.stderr);
      assert.match(
        r.stderr,
        /error: no editor to run: VISUAL and EDITOR are not set, and vi needs a terminal/,
      );
      assert.match(r.stderr, /hint: run nixseal edit in a terminal, or set EDITOR/);
      assert.equal(JSON.parse(r.stdout.toString()).error.code, "NO_TERMINAL");
      assert.equal(fs.existsSync(path.join(records, "vi-ran")), false, "vi was started");
    }
    assert.deepEqual(fs.readFileSync(file), before);
    assert.deepEqual(fs.readdirSync(runtime), [], "no edit directory was made");
  });

  test("no identity can decrypt: exit 1, the identities tried are listed, no editor, nothing left", () => {
    const otherKey = path.join(dir, "other-key.txt");
    const otherRecipient = ageKeygen(otherKey);
    const file = path.join(repo, "other.age");
    ageEncrypt(file, `${MARKER} other\n`, otherRecipient);
    const before = fs.readFileSync(file);
    const ed = editor("never2", `touch ${records}/never2-ran`);
    const r = edit(["other.age"], { EDITOR: ed });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no identity matched any of the recipients/);
    assert.ok(r.stderr.includes(identity), `the identity file tried is named: ${r.stderr}`);
    assert.match(r.stderr, /hint: tried: /);
    assert.equal(fs.existsSync(path.join(records, "never2-ran")), false);
    assert.deepEqual(fs.readFileSync(file), before);
    // With the right -i it works, and the file is re-encrypted to the rules' recipient.
    const ok = edit(["other.age", "-i", otherKey], { EDITOR: editor("add", 'echo more >> "$1"') });
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ageDecrypt(file), `${MARKER} other\nmore\n`);
    assertNoPlaintextLeft();
  });

  test("ssh-ed25519 recipients and identities (agenix's usual keys) work; age -i ~/.ssh/id_ed25519 decrypts", (t) => {
    if (!SSH_KEYGEN) return t.skip("ssh-keygen is not installed");
    const sshHome = path.join(dir, "ssh-home");
    fs.mkdirSync(path.join(sshHome, ".ssh"), { recursive: true });
    const key = path.join(sshHome, ".ssh", "id_ed25519");
    assert.equal(
      spawnSync(SSH_KEYGEN, ["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", key]).status,
      0,
    );
    const pub = fs.readFileSync(`${key}.pub`, "utf8").trim();
    const sshRepo = path.join(dir, "ssh-repo");
    fs.mkdirSync(sshRepo);
    fs.writeFileSync(path.join(sshRepo, "secrets.nix"), `{ "-dash.age".publicKeys = [ "${pub}" ]; }\n`);
    const file = path.join(sshRepo, "-dash.age");
    const r1 = nixseal(["edit", "--", "-dash.age"], {
      cwd: sshRepo,
      env: { ...env, HOME: sshHome, EDITOR: editor("ssh-new", `printf 'first\\n' > "$1"`) },
    });
    assert.equal(r1.status, 0, r1.stderr);
    const r2 = nixseal(["edit", "--", "-dash.age"], {
      cwd: sshRepo,
      env: { ...env, HOME: sshHome, EDITOR: editor("ssh-append", `echo second >> "$1"`) },
    });
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(ageDecrypt(file, key), "first\nsecond\n");
  });
});

/**
 * The edit session's parts on their own: where the plaintext may go (RAM-backed only, by
 * statfs), the private directory and its removal (files zeroed, symlinks never followed, stale
 * directories of killed runs swept), which editor runs with which flags, and runEditor's
 * outcomes, including a signal to nixseal while the editor runs.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { NixsealError } from "../../src/common/errors.js";
import {
  chooseEditBase,
  EditSession,
  editFileName,
  editorInvocation,
  editorString,
  isRamBacked,
  ramDirCandidates,
  runEditor,
  sweepStaleEditDirs,
  vimFlavour,
  wipeTree,
} from "../../src/vault/edit-session.js";
import { tempDir } from "../helpers.js";

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
});
after(() => cleanup());

/** A RAM-backed directory to work in, or null (then the tests that need one skip). */
const RAM = (() => {
  try {
    return chooseEditBase().dir;
  } catch {
    return null;
  }
})();
const noRam = RAM === null ? "no RAM-backed directory (tmpfs /dev/shm or $XDG_RUNTIME_DIR)" : false;

function script(name: string, body: string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return p;
}

describe("where the plaintext may go", () => {
  test("candidates: $XDG_RUNTIME_DIR (absolute only), then /dev/shm, then /run/user/UID", () => {
    assert.deepEqual(ramDirCandidates({ XDG_RUNTIME_DIR: "/run/user/1000" }, 1000), [
      "/run/user/1000",
      "/dev/shm",
    ]);
    assert.deepEqual(ramDirCandidates({ XDG_RUNTIME_DIR: "relative/dir" }, 42), ["/dev/shm", "/run/user/42"]);
    assert.deepEqual(ramDirCandidates({}, 7), ["/dev/shm", "/run/user/7"]);
  });

  test("a directory on disk is refused with a hint naming --allow-disk-tempdir", (t) => {
    if (isRamBacked(dir)) return t.skip(`${dir} is itself on tmpfs: no disk directory to test with`);
    assert.throws(
      () => chooseEditBase({ candidates: [dir, path.join(dir, "missing")] }),
      (e: unknown) =>
        e instanceof NixsealError &&
        e.code === "IO" &&
        /RAM-backed/.test(e.message) &&
        /--allow-disk-tempdir/.test(e.hint!),
    );
    const fallback = chooseEditBase({ candidates: [dir], allowDisk: true, env: { TMPDIR: dir } });
    assert.deepEqual(fallback, { dir, ramBacked: false });
  });

  test("the first RAM-backed candidate wins; disk and missing ones are skipped", { skip: noRam }, (t) => {
    if (isRamBacked(dir)) return t.skip(`${dir} is itself on tmpfs`);
    assert.equal(isRamBacked(RAM!), true);
    assert.equal(isRamBacked(dir), false);
    const base = chooseEditBase({ candidates: [path.join(dir, "missing"), dir, RAM!] });
    assert.deepEqual(base, { dir: RAM, ramBacked: true });
    // $XDG_RUNTIME_DIR on disk: not used.
    assert.notEqual(chooseEditBase({ env: { XDG_RUNTIME_DIR: dir } }).dir, dir);
  });

  test("the file is named after the secret, without .age, with only harmless characters", () => {
    assert.equal(editFileName("hosts/web/config.yaml.age"), "config.yaml");
    assert.equal(editFileName("db-password.age"), "db-password");
    assert.equal(editFileName("-leading-dash.age"), "-leading-dash");
    assert.equal(editFileName("wifi psk\n$(x).json"), "wifi_psk___x_.json");
    assert.equal(editFileName("dir/.age"), "secret");
    assert.equal(editFileName(".."), "secret");
    assert.equal(editFileName("noext"), "noext");
  });
});

describe("the private directory", { skip: noRam }, () => {
  test("0700 directory on RAM, 0600 file holding the content, named like the secret", () => {
    const s = EditSession.create("hosts/config.yaml.age", Buffer.from("a: 1\n"), {
      dir: RAM!,
      ramBacked: true,
    });
    try {
      assert.equal(path.dirname(s.dir), RAM);
      assert.match(path.basename(s.dir), new RegExp(`^nixseal-edit\\.${process.pid}\\.`));
      assert.equal(fs.statSync(s.dir).mode & 0o777, 0o700);
      assert.equal(path.basename(s.file), "config.yaml");
      assert.equal(fs.statSync(s.file).mode & 0o777, 0o600);
      assert.equal(fs.readFileSync(s.file, "utf8"), "a: 1\n");
      assert.equal(isRamBacked(s.dir), true);
    } finally {
      s.dispose();
    }
    assert.equal(fs.existsSync(s.dir), false);
  });

  test("dispose zeroes files before unlinking them, removes editors' extra files, never follows symlinks", () => {
    const outside = path.join(dir, "outside.txt");
    fs.writeFileSync(outside, "must survive");
    const listeners = process.listenerCount("exit");
    const s = EditSession.create("db.age", Buffer.from("PLAINTEXT-1234"), { dir: RAM!, ramBacked: true });
    assert.equal(process.listenerCount("exit"), listeners + 1);
    fs.writeFileSync(`${s.file}~`, "backup copy");
    fs.mkdirSync(path.join(s.dir, "nested"));
    fs.writeFileSync(path.join(s.dir, "nested", ".db.swp"), "swap");
    fs.symlinkSync(outside, path.join(s.dir, "link"));
    fs.symlinkSync(dir, path.join(s.dir, "dirlink"));
    // An editor still holding the file open sees zeros after dispose, not the plaintext.
    const fd = fs.openSync(s.file, "r");
    try {
      assert.equal(s.dispose(), true);
      const buf = Buffer.alloc(14);
      assert.equal(fs.readSync(fd, buf, 0, 14, 0), 14);
      assert.deepEqual(buf, Buffer.alloc(14));
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(fs.existsSync(s.dir), false);
    assert.equal(fs.readFileSync(outside, "utf8"), "must survive");
    assert.ok(fs.existsSync(dir));
    assert.equal(process.listenerCount("exit"), listeners);
    assert.equal(s.dispose(), true); // idempotent
  });

  test("read() takes a file the editor replaced by rename, refuses a symlink, explains a removed file", () => {
    const s = EditSession.create("x.age", Buffer.from("old"), { dir: RAM!, ramBacked: true });
    try {
      fs.writeFileSync(`${s.file}.new`, "new content");
      fs.renameSync(`${s.file}.new`, s.file);
      assert.equal(s.read().toString(), "new content");
      fs.unlinkSync(s.file);
      fs.symlinkSync("/etc/hostname", s.file);
      assert.throws(
        () => s.read(),
        (e: unknown) => e instanceof NixsealError && e.code === "IO",
      );
      fs.unlinkSync(s.file);
      assert.throws(() => s.read(), /the editor removed the file/);
    } finally {
      s.dispose();
    }
  });

  test("stale directories of a killed nixseal are swept; live ones and others' names are kept", () => {
    const base = fs.mkdtempSync(path.join(RAM!, "sweep-test-"));
    try {
      // A pid with no running process.
      let dead = 999_999;
      while (fs.existsSync(`/proc/${dead}`)) dead++;
      const stale = path.join(base, `nixseal-edit.${dead}.AbCdEf`);
      fs.mkdirSync(stale, { mode: 0o700 });
      fs.writeFileSync(path.join(stale, "db"), "left behind");
      const live = path.join(base, `nixseal-edit.${process.ppid}.AbCdEf`);
      fs.mkdirSync(live);
      const other = path.join(base, "nixseal-edit-not-ours");
      fs.mkdirSync(other);
      assert.deepEqual(sweepStaleEditDirs(base), [stale]);
      assert.equal(fs.existsSync(stale), false);
      assert.ok(fs.existsSync(live));
      assert.ok(fs.existsSync(other));
    } finally {
      wipeTree(base);
    }
  });
});

describe("the editor", () => {
  test("$VISUAL, else $EDITOR, else vi", () => {
    assert.equal(editorString({ VISUAL: "code --wait", EDITOR: "nano" }), "code --wait");
    assert.equal(editorString({ VISUAL: "  ", EDITOR: "nano" }), "nano");
    assert.equal(editorString({}), "vi");
  });

  test("vim and neovim get flags that disable swap, backup, undo and viminfo/shada", () => {
    for (const editor of ["vim", "/usr/bin/nvim", "vim -p", "vim.basic", "nvim.appimage"]) {
      const inv = editorInvocation("/r/db", { EDITOR: editor, PATH: "" });
      assert.ok(vimFlavour(editor, { PATH: "" }), editor);
      assert.deepEqual(inv.flags.slice(0, 3), ["-n", "-i", "NONE"], editor);
      const cmd = inv.flags[inv.flags.indexOf("--cmd") + 1]!;
      for (const opt of ["nobackup", "nowritebackup", "noundofile", "noswapfile"])
        assert.ok(cmd.includes(opt));
      // Again after the vimrc, which could turn undo files or backups back on.
      assert.match(inv.flags[inv.flags.indexOf("-c") + 1]!, /noundofile.*nobackup nowritebackup/);
      assert.equal(inv.args.at(-1), "/r/db");
    }
    assert.equal(editorInvocation("/r/db", { EDITOR: "gvim" }).flags[0], "-f");
  });

  test("other editors get no flags; vi only when it is vim under another name", () => {
    for (const editor of ["nano", "code --wait", "emacsclient -t", "'vim'", "vimdiff-not", "ed"]) {
      assert.deepEqual(editorInvocation("/r/db", { EDITOR: editor, PATH: "" }).flags, [], editor);
    }
    const bin = path.join(dir, "bin-vi");
    fs.mkdirSync(bin);
    const real = path.join(dir, "real");
    fs.mkdirSync(real);
    script("real/vim.basic", "exit 0");
    script("real/nvi", "exit 0");
    fs.symlinkSync(path.join(real, "vim.basic"), path.join(bin, "vi"));
    assert.equal(vimFlavour("vi", { PATH: bin }), "vim.basic");
    fs.unlinkSync(path.join(bin, "vi"));
    fs.symlinkSync(path.join(real, "nvi"), path.join(bin, "vi"));
    assert.equal(vimFlavour("vi", { PATH: bin }), null);
    assert.deepEqual(editorInvocation("/r/db", { PATH: bin }).flags, []);
  });

  test("run through sh as git does; plain commands are exec-ed, the file is the last argument", () => {
    const plain = editorInvocation("/r/-db", { EDITOR: "code --wait" });
    assert.deepEqual(plain, {
      editor: "code --wait",
      flags: [],
      program: "/bin/sh",
      args: ["-c", 'exec code --wait "$@"', "code --wait", "/r/-db"],
    });
    const shelly = editorInvocation("/r/db", { EDITOR: "FOO=1 myeditor; true" });
    assert.equal(shelly.args[1], 'FOO=1 myeditor; true "$@"');
  });
});

describe("runEditor", { skip: noRam }, () => {
  function session(): EditSession {
    return EditSession.create("db.age", Buffer.from("x"), { dir: RAM!, ramBacked: true });
  }

  test("reports the editor's exit status, a signal that killed it, and a missing editor", async () => {
    const s = session();
    try {
      const env = { ...process.env, VISUAL: undefined };
      assert.deepEqual(await runEditor(s, { env: { ...env, EDITOR: script("ok", 'echo more >> "$1"') } }), {
        kind: "exit",
        code: 0,
      });
      assert.equal(s.read().toString(), "xmore\n");
      assert.deepEqual(await runEditor(s, { env: { ...env, EDITOR: script("four", "exit 4") } }), {
        kind: "exit",
        code: 4,
      });
      assert.deepEqual(await runEditor(s, { env: { ...env, EDITOR: script("killed", "kill -KILL $$") } }), {
        kind: "editor-signal",
        signal: "SIGKILL",
      });
      assert.deepEqual(await runEditor(s, { env: { ...env, EDITOR: path.join(dir, "no-such-editor") } }), {
        kind: "exit",
        code: 127,
      });
    } finally {
      s.dispose();
    }
  });

  test("a signal to nixseal stops the editor (SIGKILL after the grace period) and handlers are restored", async () => {
    const s = session();
    const mine = () => {};
    process.on("SIGTERM", mine);
    const before = process.listeners("SIGTERM");
    try {
      const started = path.join(dir, "started");
      const editor = script(
        "stubborn",
        `trap '' TERM INT HUP\ntouch ${started}\nwhile :; do sleep 0.05; done`,
      );
      const t0 = Date.now();
      const outcome = runEditor(s, {
        env: { ...process.env, VISUAL: undefined, EDITOR: editor },
        graceMs: 300,
      });
      while (!fs.existsSync(started)) await new Promise((r) => setTimeout(r, 20));
      process.kill(process.pid, "SIGTERM");
      assert.deepEqual(await outcome, { kind: "interrupted", signal: "SIGTERM" });
      assert.ok(
        Date.now() - t0 >= 300,
        "the editor ignored SIGTERM, so it was killed after the grace period",
      );
      assert.deepEqual(process.listeners("SIGTERM"), before);
    } finally {
      process.removeListener("SIGTERM", mine);
      s.dispose();
    }
  });
});

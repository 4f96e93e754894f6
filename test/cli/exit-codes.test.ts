/**
 * Exit codes, table-driven: for every command, the codes its --help documents are those of
 * README.md's exit-code table, and failing runs exit with the documented code (at least one
 * failing case per command; more where a command has several kinds of failure).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, isolatedUserEnv, nixseal, REPO, run, tempDir, which } from "../helpers.js";

const NIX = which("nix-instantiate");
const SCRIPT = which("script");
const HIDDEN_COMMANDS = ["git-textconv"];
const SIGNAL_CODES = [129, 130, 143];

let dir: string;
let cleanup: () => void;
let env: Record<string, string | undefined>;

before(() => {
  ({ dir, cleanup } = tempDir("nixseal-exit-"));
  fs.mkdirSync(path.join(dir, "home"));
  env = {
    ...isolatedUserEnv(path.join(dir, "home"), path.join(dir, "cache")),
    NO_COLOR: "1",
    SOPS_CONFIG: undefined,
    EDITOR: undefined,
    VISUAL: undefined,
  };
});
after(() => cleanup());

/** README.md's table: command name -> the codes it documents (a non-empty cell, not "—"). */
function readmeTable(): Map<string, Set<number>> {
  const lines = fs.readFileSync(path.join(REPO, "README.md"), "utf8").split("\n");
  const start = lines.indexOf("| command | 0 | 1 | 2 |");
  assert.ok(start >= 0, "README.md has the exit-code table");
  const table = new Map<string, Set<number>>();
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith("|")) break;
    const cells = line
      .split("|")
      .slice(1, -1)
      .map((c) => c.trim());
    assert.equal(cells.length, 4, line);
    const codes = new Set([0, 1, 2].filter((i) => cells[i + 1] !== "" && cells[i + 1] !== "—"));
    for (const m of cells[0]!.matchAll(/`([^`]+)`/g)) table.set(m[1]!, codes);
  }
  return table;
}

/** The codes of a --help's "Exit codes:" paragraph: the numbers that start its items. */
function helpCodes(help: string): Set<number> {
  const m = /Exit codes: ([\s\S]*?)(?:\n\n|\n?$)/.exec(help);
  assert.ok(m, `no "Exit codes:" paragraph in:\n${help}`);
  const codes = new Set<number>();
  for (const item of m[1]!.matchAll(/(?:^|[,;]\s+)(\d+(?:\/\d+)*)(?=[\s.,])/g)) {
    for (const n of item[1]!.split("/")) codes.add(Number(n));
  }
  return codes;
}

/** The commands `nixseal --help` lists, and the hidden ones. */
function allCommands(): string[] {
  const r = nixseal(["--help"]);
  assert.equal(r.status, 0);
  const text = r.stdout.toString();
  const block = text.slice(text.indexOf("Commands:\n") + 10, text.indexOf("\n\n", text.indexOf("Commands:")));
  const names = block.split("\n").map((l) => l.trim().split(/\s+/)[0]!);
  assert.ok(names.length >= 20, block);
  return [...names, ...HIDDEN_COMMANDS];
}

describe("--help and README.md agree", () => {
  test("every command's documented exit codes are the README table's", () => {
    const table = readmeTable();
    const readme = fs.readFileSync(path.join(REPO, "README.md"), "utf8");
    for (const name of allCommands()) {
      const documented = table.get(name);
      assert.ok(documented, `README.md's exit-code table has no row for ${name}`);
      const r = nixseal([name, "--help"]);
      assert.equal(r.status, 0, `${name} --help: ${r.stderr}`);
      const codes = helpCodes(r.stdout.toString());
      for (const c of codes) {
        if (c >= 128) assert.ok(SIGNAL_CODES.includes(c), `${name}: ${c}`);
      }
      const plain = new Set([...codes].filter((c) => c < 128));
      assert.deepEqual(
        plain,
        documented,
        `${name}: --help documents ${[...plain]}, README.md ${[...documented]}`,
      );
    }
    assert.match(readme, /exits 129, 130 or\s+143/, "README.md names the signal exit codes");
    assert.deepEqual(table.get("nixseal"), new Set([2]));
    assert.deepEqual(table.get("nixseal UNKNOWN"), new Set([2]));
  });
});

interface Case {
  args: string[];
  code: number;
  /** A pattern stderr must match (what failed). */
  why: RegExp;
  input?: string;
  cwd?: string;
  env?: Record<string, string | undefined>;
  needsNix?: boolean;
}

function sopsWork(name: string, rule: string): string {
  const w = path.join(dir, name);
  fs.mkdirSync(w, { recursive: true });
  fs.writeFileSync(path.join(w, ".sops.yaml"), `creation_rules:\n  - age: ${rule}\n`);
  return w;
}

function recipientOf(file: string): string {
  const r = nixseal(["age-keygen", "-o", file]);
  assert.equal(r.status, 0, r.stderr);
  return /Public key: (age1\S+)/.exec(r.stderr)![1]!;
}

describe("failing runs exit with the documented code", () => {
  test("one or more failing cases per command", () => {
    const a = recipientOf(path.join(dir, "a.txt"));
    const b = recipientOf(path.join(dir, "b.txt"));
    // A sops repository whose file drifted from its rule (check: 1, no Nix needed).
    const drifted = sopsWork("drifted", a);
    assert.equal(nixseal(["encrypt", "app.yaml"], { cwd: drifted, env, input: "k: v\n" }).status, 0);
    fs.writeFileSync(path.join(drifted, ".sops.yaml"), `creation_rules:\n  - age: ${b}\n`);
    const sops = sopsWork("sops", a);
    // A repository for the commands that need secrets.nix.
    const repo = path.join(dir, "repo");
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, "secrets.nix"), `{ "x.age".publicKeys = [ "${a}" ]; }\n`);
    // A repository whose one generator fails (generate: 1, nothing written).
    const genRepo = path.join(dir, "gen-repo");
    fs.mkdirSync(genRepo);
    fs.writeFileSync(path.join(genRepo, "secrets.nix"), "{ }\n");
    fs.writeFileSync(
      path.join(genRepo, "generators.nix"),
      `{ admins = [ "${a}" ]; generators.broken = { files.x = { }; script = "exit 3"; }; }\n`,
    );
    const rulesDir = path.join(dir, "rules-is-a-dir");
    fs.mkdirSync(rulesDir);
    // A user's agent.json with a mistake (read before the agent looks for a terminal).
    const xdg = path.join(dir, "xdg");
    fs.mkdirSync(path.join(xdg, "nixseal"), { recursive: true });
    fs.writeFileSync(path.join(xdg, "nixseal", "agent.json"), '{"secrets": {"t": {"command": []}}}');

    // A plan whose one key's command fails: reported before any connection (127.0.0.1 is never asked).
    fs.writeFileSync(
      path.join(dir, "push-plan.json"),
      JSON.stringify({
        version: 1,
        hosts: { h: { targetHost: "127.0.0.1", keys: { k: { source: { command: ["false"] } } } } },
      }),
    );
    const cases: Record<string, Case[]> = {
      init: [
        { args: ["init", "a", "b"], code: 2, why: /too many arguments/ },
        { args: ["init", "-i", path.join(dir, "missing.txt")], code: 1, why: /missing\.txt/ },
      ],
      edit: [
        { args: ["edit"], code: 2, why: /missing NAME/ },
        { args: ["edit", "x.age"], code: 1, why: /VISUAL and EDITOR are not set/ },
      ],
      encrypt: [
        { args: ["encrypt"], code: 2, why: /expected exactly one/ },
        { args: ["encrypt", "x.yaml", "--in", path.join(dir, "missing")], code: 1, why: /missing/, cwd: dir },
      ],
      decrypt: [
        { args: ["decrypt", "--bogus"], code: 2, why: /unknown option "--bogus"/ },
        {
          args: ["decrypt", "x.yaml", "-i", "/dev/null"],
          code: 1,
          why: /no identity in \/dev\/null/,
          cwd: dir,
        },
      ],
      set: [
        { args: ["set", "x.yaml"], code: 2, why: /expected a sops FILE and a PATH/ },
        {
          args: ["set", "x.yaml", '["k"]', "-i", "/dev/null"],
          code: 1,
          why: /no identity/,
          input: "1",
          cwd: dir,
        },
      ],
      updatekeys: [
        { args: ["updatekeys"], code: 2, why: /at least one sops FILE/ },
        { args: ["updatekeys", "missing.yaml"], code: 1, why: /missing\.yaml/, cwd: sops },
      ],
      rotate: [
        { args: ["rotate"], code: 2, why: /exactly one sops FILE/ },
        { args: ["rotate", "x.yaml", "-i", "/dev/null"], code: 1, why: /no identity/, cwd: dir },
      ],
      rekey: [
        { args: ["rekey", "--bogus"], code: 2, why: /unknown option/ },
        {
          args: ["rekey", "--force", "-i", path.join(dir, "b.txt")],
          code: 1,
          why: /nothing was changed/,
          cwd: drifted,
        },
      ],
      check: [
        { args: ["check", "extra"], code: 2, why: /takes no arguments/ },
        { args: ["check"], code: 1, why: /1 problem/, cwd: drifted },
      ],
      list: [
        { args: ["list", "extra"], code: 2, why: /takes no arguments/ },
        { args: ["list", "--rules", rulesDir], code: 1, why: /rules-is-a-dir/ },
      ],
      who: [
        { args: ["who"], code: 2, why: /expected one secret NAME/ },
        {
          args: ["who", "nonsense"],
          code: 2,
          why: /neither a secret nor a recipient/,
          cwd: repo,
          needsNix: true,
        },
        { args: ["who", b], code: 1, why: /no secret in .*secrets\.nix is for/, cwd: repo, needsNix: true },
      ],
      "git-setup": [
        { args: ["git-setup", "extra"], code: 2, why: /takes no arguments/ },
        { args: ["git-setup"], code: 1, why: /not inside a git repository/, cwd: repo, needsNix: true },
      ],
      generate: [
        { args: ["generate", "--bogus"], code: 2, why: /unknown option/ },
        {
          args: ["generate"],
          code: 1,
          why: /generator broken: its script failed: exited with status 3/,
          cwd: genRepo,
          needsNix: true,
        },
      ],
      "git-textconv": [{ args: ["git-textconv"], code: 2, why: /exactly one FILE/ }],
      age: [{ args: ["age", "-r", "bogus"], code: 1, why: /unknown recipient type/, input: "x" }],
      "age-keygen": [{ args: ["age-keygen", "a", "b"], code: 1, why: /too many arguments/ }],
      gen: [
        { args: ["gen", "password", "--length", "0"], code: 2, why: /length must be 1 to/ },
        { args: ["gen", "hex", "8", "--out", path.join(dir, "no-such-dir")], code: 1, why: /no-such-dir/ },
      ],
      install: [{ args: ["install"], code: 2, why: /expected --manifest FILE/ }],
      audit: [{ args: ["audit"], code: 2, why: /nothing to scan/ }],
      "host-key": [
        { args: ["host-key"], code: 2, why: /missing subcommand/ },
        { args: ["host-key", "recipient", path.join(dir, "missing.cred")], code: 1, why: /missing\.cred/ },
      ],
      host: [
        { args: ["host", "add", "if", "--ssh", "web1"], code: 2, why: /"if" is a Nix keyword/ },
        {
          args: ["host", "add", "web1", "--ssh", "root@127.0.0.1", "--port", "1"],
          code: 1,
          why: /cannot read the ed25519 host key .*connection refused/,
          cwd: repo,
          needsNix: true,
        },
      ],
      "build-hook": [
        { args: ["build-hook"], code: 2, why: /expected DRV/ },
        // A sweep timer must see the failure.
        {
          args: ["build-hook", "--sweep", "--policy", path.join(dir, "none.json")],
          code: 1,
          why: /none\.json/,
        },
        // The doctor fails on any problem (here: no policy at all).
        {
          args: ["build-hook", "--check", "--policy", path.join(dir, "none.json")],
          code: 1,
          why: /problem: cannot read the build-secrets policy .*none\.json/,
        },
        { args: ["build-hook", "--update"], code: 2, why: /--update goes with --fetcher-path/ },
      ],
      agent: [
        { args: ["agent", "extra"], code: 2, why: /takes no arguments/ },
        { args: ["agent", "--agent-dir", dir], code: 1, why: /needs a terminal/ },
        { args: ["agent", "--remember", "forever"], code: 2, why: /--remember "forever" is not a duration/ },
        {
          args: ["agent", "--agent-dir", dir],
          code: 1,
          why: /agent\.json: secrets\."t"\.command: must have 1 to 64 elements/,
          env: { XDG_CONFIG_HOME: xdg },
        },
      ],
      push: [
        { args: ["push"], code: 2, why: /give either --plan FILE or --flake REF/ },
        { args: ["push", "--plan", path.join(dir, "missing-plan.json")], code: 2, why: /missing-plan\.json/ },
        {
          args: ["push", "--plan", path.join(dir, "push-plan.json")],
          code: 1,
          why: /command "false" failed \(exit 1\)/,
        },
      ],
      receive: [
        { args: ["receive", "extra"], code: 2, why: /takes no arguments/ },
        {
          args: ["receive", "--restore", "--credstore", "relative/dir"],
          code: 2,
          why: /--credstore must be an absolute, normalised path/,
        },
        {
          args: ["receive"],
          code: 1,
          why: /does not speak nixseal's push protocol/,
          input: "GET / HTTP/1.0\r\n\r\n",
        },
      ],
      build: [
        { args: ["build", "--agent-dir"], code: 2, why: /needs a directory/ },
        { args: ["build", "--remember", "1y", ".#x"], code: 2, why: /--remember "1y" is not a duration/ },
        { args: ["build", ".#x"], code: 1, why: /nix is not on PATH/, env: { PATH: "/nonexistent" } },
      ],
    };
    for (const name of allCommands()) assert.ok(cases[name]?.length, `no failing case for ${name}`);
    const table = readmeTable();
    for (const [name, list] of Object.entries(cases)) {
      for (const c of list) {
        if (c.needsNix && !NIX) continue;
        const r = nixseal(c.args, { cwd: c.cwd ?? dir, env: { ...env, ...c.env }, input: c.input });
        const what = `nixseal ${c.args.join(" ")}`;
        assert.equal(r.status, c.code, `${what}: exit ${r.status}\n${r.stderr}`);
        assert.match(r.stderr, c.why, what);
        assert.ok(table.get(name)!.has(c.code), `${what}: ${c.code} is documented for ${name}`);
      }
    }
  });

  test("nixseal itself: no command and an unknown command are usage errors (2); --help is 0", () => {
    const none = nixseal([], { env });
    assert.equal(none.status, 2);
    assert.equal(none.stdout.length, 0, "the overview goes to stderr on a usage error");
    assert.match(none.stderr, /Usage: nixseal COMMAND/);
    const unknown = nixseal(["bogus"], { env });
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command "bogus"/);
    const help = nixseal(["--help"], { env });
    assert.equal(help.status, 0);
    assert.match(help.stdout.toString(), /Usage: nixseal COMMAND/);
  });
});

describe("agent at a terminal", { skip: SCRIPT ? false : "script (util-linux) is not installed" }, () => {
  test("Ctrl-C, its normal end, exits 0 (as --help says) and removes its socket", () => {
    const agents = path.join(dir, "agents");
    fs.mkdirSync(agents, { mode: 0o1733 });
    const socket = path.join(agents, String(process.getuid?.() ?? 0));
    // Ctrl-C is typed once the agent listens (a pty from script(1) turns it into SIGINT).
    const feeder = `t=0; while [ ! -S '${socket}' ] && [ $t -lt 600 ]; do sleep 0.05; t=$((t+1)); done; sleep 0.2; printf '\\003'; sleep 1`;
    // script(1) runs the command through $SHELL -c (/bin/sh when unset, as in CI). Ctrl-C signals the
    // whole foreground group, and dash, which does not exec a lone command, dies of the SIGINT itself
    // however the agent ends: `exec` leaves the agent alone in the group, as at a user's shell prompt.
    const cmd = `exec '${process.execPath}' '${CLI}' agent --agent-dir '${agents}'`;
    const r = run("/bin/sh", ["-c", `(${feeder}) | '${SCRIPT}' -qec "${cmd}" /dev/null`], {
      env: { ...env, SHELL: "/bin/sh" },
    });
    const out = r.stdout.toString();
    assert.match(out, /nixseal agent: listening on /);
    assert.equal(r.status, 0, out);
    assert.doesNotMatch(out, /interrupted/);
    assert.equal(fs.existsSync(socket), false, "the socket is removed");
  });
});

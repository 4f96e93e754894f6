#!/usr/bin/env -S node --max-semi-space-size=2
/**
 * The nixseal command. Start-up matters (nixseal runs once per secret in scripts, in activation,
 * as a build hook): this file imports only what enables Node's compile cache and the version;
 * everything else, each command first, is imported when it is needed, after the cache is on, so
 * a command loads only its own modules. Only src/cli/ prints or exits.
 *
 * The first line keeps V8's young generation at 2 MiB a half (nodeFlagsOf in bench/common.ts
 * reads the flags from there; ./nixseal passes the same): by default it grows to 16 MiB a half
 * while a large manifest or sops file is read, and each new page of it is a page fault, which
 * costs more than the extra collections of a small young generation (bench/RESULTS.md, "V8's
 * young generation"). 2 MiB rather than the smallest, 1 MiB: the install of many secrets, whose
 * threads collect garbage themselves (src/common/efficiency-mode.ts), spends half as long
 * collecting and ran 130-200 ms faster; commands on one thread were 0-20 ms faster at 1 MiB
 * (`set` and `updatekeys` of 10 000 values the most: "The young generation at 2 MiB").
 */
import { enableCompileCache } from "./compile-cache.js";
import { version } from "./version.js";

// Before any other module of nixseal is loaded (static imports would run before this line).
enableCompileCache();

export interface Command {
  /** Runs the command; returns the exit code. Throws NixsealError for failures. */
  run(argv: string[]): Promise<number>;
  /** The program name errors are reported under (e.g. "age" errors as "nixseal age"). */
  readonly name: string;
  /** Exit code for errors (age-compatible commands use 1). */
  readonly errorExitCode: number;
  /**
   * Exit code for usage and configuration errors (USAGE, RULES, NOT_IN_RULES, SOPS_CONFIG). Repository
   * commands use 2; age-compatible commands leave it unset (everything is 1, as age).
   */
  readonly usageExitCode?: number;
  /**
   * The command takes --json: then a failure also prints `{"error": {...}}` on stdout (see
   * report.ts, failureJson).
   */
  readonly json?: boolean;
  /**
   * Once run() has returned, nothing is left to do (output written, temp files committed or
   * removed, no child or timer that matters): the process ends at once, as long as stdout and
   * stderr hold nothing unwritten. Returning to the event loop would let V8 finish the major
   * garbage collection that a large sops document's tree started and Node tear the heap down:
   * work for no one (bench/RESULTS.md, "sops after sops-300").
   */
  readonly exitWhenDone?: boolean;
}

const USAGE_CODES = new Set(["USAGE", "RULES", "NOT_IN_RULES", "SOPS_CONFIG", "GENERATORS", "PUSH_PLAN"]);

/** A command's module in src/cli/, loaded when the command runs; it exports `command: Command`. */
type Loader = () => Promise<{ command: Command }>;

/**
 * Command name -> [summary, loader]. Each loader is a literal import() of one module, so only the
 * command that runs is loaded, and a bundler sees every command (one split point each).
 */
const COMMANDS: Record<string, [summary: string, load: Loader]> = {
  init: ["set up a secrets repository with an identity", () => import("./init.js")],
  edit: ["edit a secret in $EDITOR (plaintext only in RAM)", () => import("./edit.js")],
  encrypt: ["encrypt stdin (or --in FILE) into a secret", () => import("./encrypt.js")],
  decrypt: ["decrypt a secret to stdout (or -o FILE, 0600)", () => import("./decrypt.js")],
  set: ["set one value of a sops file (value on stdin)", () => import("./set.js")],
  updatekeys: ["re-wrap a sops file's data key for its .sops.yaml keys", () => import("./updatekeys.js")],
  rotate: ["give a sops file a new data key", () => import("./rotate.js")],
  rekey: ["re-encrypt secrets whose recipients changed", () => import("./rekey.js")],
  check: ["check files against the rules (CI, no private key needed)", () => import("./check.js")],
  list: ["list secrets and who can read them", () => import("./list.js")],
  who: ["who can read a secret / what a recipient can read", () => import("./who.js")],
  "git-setup": ["show decrypted diffs in git", () => import("./git-setup.js")],
  generate: ["create generated secrets (passwords, keys) from generators.nix", () => import("./generate.js")],
  install: ["install a host's secrets from an activation manifest", () => import("./install.js")],
  audit: ["prove no secret reached the Nix store (closures, .drv files, paths)", () => import("./audit.js")],
  age: ["encrypt and decrypt files, drop-in for age", () => import("./age.js")],
  gen: ["generate a password, key pair or hash into $out (for generator scripts)", () => import("./gen.js")],
  "age-keygen": ["generate an age identity, drop-in for age-keygen", () => import("./age-keygen.js")],
  "host-key": [
    "seal a host identity as a systemd credential (host key / TPM2)",
    () => import("./host-key.js"),
  ],
  host: ["add a host to the secrets repository (hosts.nix) and rekey its secrets", () => import("./host.js")],
  agent: ["approve build secrets for your builds at the terminal", () => import("./agent.js")],
  build: ["nix build with a nixseal agent at this terminal", () => import("./build.js")],
  "build-hook": [
    "Nix pre/post-build hook giving secrets to allowed fetchers",
    () => import("./build-hook.js"),
  ],
  push: ["push deploy-time keys to hosts over ssh (only what changed)", () => import("./push.js")],
  receive: ["(run by push over ssh) install pushed keys on this host", () => import("./receive.js")],
};

/** Commands other programs call (git's textconv driver); not listed in the help. */
const HIDDEN_COMMANDS: Record<string, [summary: string, load: Loader]> = {
  "git-textconv": ["(internal) git diff driver, see git-setup", () => import("./git-textconv.js")],
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, [summary]]) => `  ${name.padEnd(12)} ${summary}`);
  return `nixseal: secrets for Nix and NixOS that never leak into the Nix store

Usage: nixseal COMMAND [ARGS...]

Commands:
${lines.join("\n")}

Run 'nixseal COMMAND --help' for a command's options, an example and its exit codes.
Exit codes: 0 success, 1 failure, 2 usage error (no or an unknown COMMAND).
`;
}

/** The command that ran returned normally and asks to end at once (Command.exitWhenDone). */
let endAtOnce = false;

/** Set once src/common/ is loaded (no temp file can exist before). */
let abortAllAtomicFiles = (): void => {};

function installSignalHandlers(): void {
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    // Never leave a half-written temp file behind (docs/architecture.md, invariant 3).
    abortAllAtomicFiles();
    process.stderr.write(`nixseal: interrupted by ${signal}\n`);
    process.exit(code);
  };
  process.on("SIGINT", () => onSignal("SIGINT", 130));
  process.on("SIGTERM", () => onSignal("SIGTERM", 143));
  process.on("SIGHUP", () => onSignal("SIGHUP", 129));
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    // A usage error like an unknown command: the overview goes to stderr, stdout stays empty.
    process.stderr.write(usage());
    process.stderr.write("nixseal: error: no COMMAND given\n");
    return 2;
  }
  if (name === "-h" || name === "--help" || name === "help") {
    process.stdout.write(usage());
    return 0;
  }
  if (name === "--version" || name === "-V" || name === "version") {
    process.stdout.write(`nixseal ${version()}\n`);
    return 0;
  }
  const entry = COMMANDS[name] ?? HIDDEN_COMMANDS[name];
  if (!entry) {
    // What was typed is quoted, shortened, and not at all if it may be a secret key.
    const { quoteArg } = await import("./report.js");
    process.stderr.write(`nixseal: error: unknown command ${quoteArg(name)}\n`);
    process.stderr.write(`nixseal: hint: run 'nixseal --help' for the list of commands\n`);
    return 2;
  }
  installSignalHandlers();
  const [common, { command }] = await Promise.all([import("../common/index.js"), entry[1]()]);
  abortAllAtomicFiles = common.abortAllAtomicFiles;
  try {
    const code = await command.run(rest);
    endAtOnce = command.exitWhenDone === true;
    return code;
  } catch (e) {
    abortAllAtomicFiles();
    const { reportFailure, wantsJson } = await import("./report.js");
    reportFailure(`nixseal ${command.name}`, e, command.json === true && wantsJson(rest));
    if (command.usageExitCode !== undefined && common.isNixsealError(e) && USAGE_CODES.has(e.code)) {
      return command.usageExitCode;
    }
    return command.errorExitCode;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    if (endAtOnce && process.stdout.writableLength === 0 && process.stderr.writableLength === 0)
      process.exit(code);
  },
  async (e) => {
    process.exitCode = 1;
    const { printError } = await import("./report.js");
    abortAllAtomicFiles();
    printError("nixseal", e);
  },
);

/**
 * `nixseal build-hook`: Nix's pre-build-hook (and, with --post, its post-build-hook) that gives
 * build secrets to the fixed-output derivations the policy allows. See src/build-secrets/hook.ts.
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import {
  addFetcherToStore,
  askAgent,
  checkBuildSetup,
  DEFAULT_POLICY_FILE,
  DEFAULT_SWEEP_AGE_MS,
  FETCHER_FILE,
  MARKER_TEXT,
  postBuildHook,
  preBuildHook,
  readPolicy,
  sweepSecretDirs,
  updatePolicyFetcher,
} from "../build-secrets/index.js";
import { findExecutable, NixsealError } from "../common/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { quoteArg, sanitize } from "./report.js";

const HELP = `Usage: nixseal build-hook DRV [CHROOT]          (Nix's pre-build-hook)
       nixseal build-hook --post                   (Nix's post-build-hook; reads DRV_PATH)
       nixseal build-hook --sweep [--max-age-minutes N] [--json]
       nixseal build-hook --wrapper pre|post       (print a fast /bin/sh wrapper for nix.conf)
       nixseal build-hook --check [--json]         (is this host set up? every problem, with hints)
       nixseal build-hook --fetcher-path [--update] (the fetcher's store path; pin it in the policy)

As the pre-build-hook, for a derivation that names a build secret (attribute nixsealSecret),
checks it against the policy and, if it is allowed, decrypts the secret with the host identity
into a per-build file that only that build's sandbox sees, at /run/nixseal-secret. Refusals
(with the reasons) go to stderr, i.e. the nix-daemon log, and to the build, whose fetcher shows
them. Derivations that name no secret cost one read of the .drv; the --wrapper script checks
them with grep and starts no Node at all.

Options:
    --policy FILE          The policy (default ${DEFAULT_POLICY_FILE}).
    --post                 Post-build: remove the secret of the build named by $DRV_PATH.
    --sweep                Remove secrets of builds that have ended or are older than the
                           maximum age (failed builds get no post-build hook).
    --max-age-minutes N    For --sweep (default ${DEFAULT_SWEEP_AGE_MS / 60000}).
    --wrapper pre|post     Print a /bin/sh wrapper that calls this nixseal only when needed.
    --check                Check the set-up: the policy parses; its fetchers are this nixseal's;
                           its interpreters, git programs, identities and secret files exist;
                           the nix.conf Nix reads (nix show-config, NIX_CONF_DIR included) has
                           sandbox = true and both hooks as working wrappers for this policy;
                           runtimeDir is on tmpfs/ramfs; agentDir is root's with mode 1733.
    --fetcher-path         Add this nixseal's fetcher to the Nix store (as nixseal-fetcher.mjs)
                           and print its store path. It changes with every nixseal upgrade.
    --update               With --fetcher-path: pin that path as every secret's fetcher in the
                           policy (replacing older nixseal fetchers there).
    --json                 With --sweep: print {"removed": [...]}; with --check:
                           {"ok": ..., "problems": [{"message", "hint"}], "checked": [...]}.
    -h, --help             This help.

Example (nix.conf on a non-NixOS machine; the NixOS module sets this up itself):
    $ nixseal build-hook --wrapper pre  > /usr/local/libexec/nixseal-pre-build-hook
    $ nixseal build-hook --wrapper post > /usr/local/libexec/nixseal-post-build-hook
    $ chmod 755 /usr/local/libexec/nixseal-*-build-hook
    # /etc/nix/nix.conf:
    sandbox = true
    pre-build-hook = /usr/local/libexec/nixseal-pre-build-hook
    post-build-hook = /usr/local/libexec/nixseal-post-build-hook
    $ nixseal build-hook --fetcher-path --update   # pin this nixseal's fetcher in the policy
    $ nixseal build-hook --check                   # then: every remaining problem, with a hint
    (All steps: docs/build-secrets.md, "Another Linux with Nix".)

Exit codes: 0 success (as a hook always: a refusal prints nothing for Nix and the build fails
with the fetcher's message; a failing hook would stop every build), 1 failure (--sweep: the
policy is missing or invalid, BUILD_POLICY; --check: any problem; --fetcher-path: nix-store
failed or --update found no valid policy), 2 usage error.
`;

const OPTIONS = {
  policy: { type: "string" },
  post: { type: "boolean" },
  sweep: { type: "boolean" },
  "max-age-minutes": { type: "string" },
  wrapper: { type: "string" },
  check: { type: "boolean" },
  "fetcher-path": { type: "boolean" },
  update: { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function log(line: string): void {
  process.stderr.write(`nixseal build-hook: ${sanitize(line)}\n`);
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

/** A /bin/sh wrapper: the fast path (no Node) for builds that do not concern nixseal. */
export function wrapperScript(kind: "pre" | "post", policyFile: string): string {
  const node = shellQuote(process.execPath);
  const main = shellQuote(path.join(path.dirname(fileURLToPath(import.meta.url)), "main.js"));
  const policy = shellQuote(policyFile);
  const grep = shellQuote(findExecutable("grep") ?? "/usr/bin/grep");
  if (kind === "pre") {
    return `#!/bin/sh
# nixseal pre-build hook (generated by 'nixseal build-hook --wrapper pre').
# Nix runs it before every build; only derivations naming a build secret start Node.
[ -f "$1" ] && ${grep} -qF ${shellQuote(MARKER_TEXT)} "$1" || exit 0
exec ${node} ${main} build-hook --policy ${policy} "$@"
`;
  }
  // The post-build hook must clean up in the runtimeDir the policy names when it runs, not when
  // this script was made: so the script only decides whether Node starts (the derivation named
  // a secret) and the hook reads the policy.
  return `#!/bin/sh
# nixseal post-build hook (generated by 'nixseal build-hook --wrapper post').
# Nix runs it after every build; only builds of derivations naming a build secret start Node.
[ -n "$DRV_PATH" ] && [ -f "$DRV_PATH" ] && ${grep} -qF ${shellQuote(MARKER_TEXT)} "$DRV_PATH" || exit 0
exec ${node} ${main} build-hook --post --policy ${policy}
`;
}

export const command: Command = {
  name: "build-hook",
  // Only --sweep and --wrapper can fail: the hooks themselves never throw (see below).
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal build-hook --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const policyFile = values.policy ?? DEFAULT_POLICY_FILE;
    if (values.wrapper !== undefined) {
      if (values.wrapper !== "pre" && values.wrapper !== "post") {
        throw new NixsealError("USAGE", `--wrapper takes pre or post, not ${quoteArg(values.wrapper, 20)}`, {
          hint: "nixseal build-hook --wrapper pre",
        });
      }
      process.stdout.write(wrapperScript(values.wrapper, policyFile));
      return 0;
    }
    if (values.update && !values["fetcher-path"]) {
      throw new NixsealError("USAGE", "--update goes with --fetcher-path", {
        hint: "nixseal build-hook --fetcher-path --update [--policy FILE]",
      });
    }
    if (values["fetcher-path"]) {
      const storePath = addFetcherToStore();
      if (values.update) {
        const changed = updatePolicyFetcher(policyFile, storePath);
        log(
          changed.length === 0
            ? `${policyFile} already pins ${storePath}`
            : `pinned ${storePath} as the fetcher of ${changed.map((n) => JSON.stringify(n)).join(", ")} in ${policyFile}`,
        );
      }
      process.stdout.write(`${storePath}\n`);
      return 0;
    }
    if (values.check) {
      const report = checkBuildSetup({ policyFile, fetcherFile: FETCHER_FILE });
      if (values.json) {
        process.stdout.write(
          `${JSON.stringify({ ok: report.problems.length === 0, problems: report.problems, checked: report.checked })}\n`,
        );
      } else {
        for (const c of report.checked) process.stdout.write(`ok: ${sanitize(c)}\n`);
        for (const p of report.problems) {
          process.stderr.write(
            `nixseal build-hook: problem: ${sanitize(p.message)}\n  hint: ${sanitize(p.hint)}\n`,
          );
        }
        process.stderr.write(
          report.problems.length === 0
            ? "nixseal build-hook: the build-secrets set-up is complete\n"
            : `nixseal build-hook: ${report.problems.length} problem(s) found\n`,
        );
      }
      return report.problems.length === 0 ? 0 : 1;
    }
    if (values.sweep) {
      const minutes =
        values["max-age-minutes"] === undefined
          ? DEFAULT_SWEEP_AGE_MS / 60000
          : Number(values["max-age-minutes"]);
      if (!Number.isFinite(minutes) || minutes < 0) {
        throw new NixsealError("USAGE", "--max-age-minutes needs a number of minutes", {
          hint: "e.g. --max-age-minutes 60",
        });
      }
      const policy = readPolicy(policyFile);
      const removed = sweepSecretDirs(policy.runtimeDir, policy.storeDir, minutes * 60000);
      if (values.json) process.stdout.write(`${JSON.stringify({ removed })}\n`);
      else for (const r of removed) log(`removed the secret directory of ${r}`);
      return 0;
    }
    if (values.post) {
      const drvPath = process.env.DRV_PATH;
      if (!drvPath) {
        throw new NixsealError("USAGE", "--post needs DRV_PATH in the environment", {
          hint: "set it as Nix's post-build-hook, which sets DRV_PATH",
        });
      }
      // A failing post-build hook stops all further builds: never fail here.
      try {
        for (const line of postBuildHook(drvPath, policyFile).log) log(line);
      } catch (e) {
        log(`internal error for ${drvPath}: ${(e as Error).message}`);
      }
      return 0;
    }
    if (positionals.length < 1 || positionals.length > 2) {
      throw new NixsealError("USAGE", "expected DRV [CHROOT]", {
        hint: "Nix calls the pre-build-hook with the .drv path and the sandbox directory",
      });
    }
    try {
      const result = await preBuildHook(positionals[0]!, positionals[1], {
        policyFile,
        ppid: process.ppid,
        askAgent,
      });
      for (const line of result.log) log(line);
      process.stdout.write(result.output);
    } catch (e) {
      // Never fail a build because of the hook; the fetcher reports the missing secret.
      log(`internal error for ${positionals[0]}: ${(e as Error).message}`);
    }
    return 0;
  },
};

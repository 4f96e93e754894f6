/**
 * `nixseal audit`: proves that no secret the user can decrypt reached the Nix store (or any
 * other tree): every secret and its common encodings, one pass over every file.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Identity } from "../age/index.js";
import {
  type AuditReport,
  auditPaths,
  closureOf,
  DEFAULT_MIN_LENGTH,
  derivationsOf,
  ENCODINGS,
  type Leak,
  type LoadedSecrets,
  loadSecrets,
  type ScanStats,
  storePathOf,
  wipeSecrets,
} from "../audit/index.js";
import { NixsealError } from "../common/index.js";
import { findSopsConfig, loadSopsConfig, type SopsConfig } from "../sops/index.js";
import { findRulesFile, loadRules, type Rules } from "../vault/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printError, printWarning, quoteArg, sanitize, useColor } from "./report.js";
import { displayPath } from "./sops-file.js";
import { identitiesOf, keyContext, VAULT_OPTIONS } from "./vault-context.js";

const HELP = `Usage: nixseal audit [PATH...] [--closure STORE_PATH]... [--system] [--drv]
                     [--json] [--min-length N] [--ignore NAME]... [-i IDENTITY]...
                     [--rules FILE] [--sops FILE]... [--config FILE]

Looks for every secret you can decrypt, in its common encodings, in PATHs (files or
directories) and store closures, and reports where it is: secret name, file, byte offset and
encoding, never the value or the text around it.

Secrets: every age file of secrets.nix and every encrypted value of the sops files that your
identities can decrypt: the files the .sops.yaml's creation rules cover, and --sops FILEs.
Files you cannot decrypt are listed and not checked. Values shorter than --min-length, common
words and values with fewer than 4 distinct bytes are skipped (and listed).

Encodings: ${ENCODINGS.join(", ")}
(base64 at every alignment in a longer stream, padded or not; see docs/audit.md).

What is scanned:
    PATH                  A file or directory; a symlink given here is followed, symlinks
                          inside are not (their target text is checked). Names are checked too.
    --closure STORE_PATH  Every path in the closure of STORE_PATH (nix-store -qR); repeatable.
    --drv                 Also the derivations (.drv files) that produced the closure and the
                          PATHs in the store, their input derivations and their sources.
    --system              Same as --closure /run/current-system --drv.

Options:
    --min-length N        Skip values shorter than N bytes (default ${DEFAULT_MIN_LENGTH}).
    --ignore NAME         Do not look for this secret (its name as reported); repeatable.
    --sops FILE           A sops file to take secrets from (repeatable), besides those the
                          .sops.yaml covers.
    --config FILE         The .sops.yaml (default: $SOPS_CONFIG, else found from the current
                          directory upward).
    --rules FILE          The rules file (default: $RULES, else secrets.nix found from the
                          current directory upward, else ./secrets/secrets.nix; none is fine
                          when there are sops files).
    -i, --identity FILE   An identity to decrypt with (repeatable; default identities otherwise).
    --json                One JSON object on stdout: leaks, secrets, scanned, problems.
    --no-cache            Evaluate secrets.nix again instead of using the cache.
    -h, --help            This help.

Example (CI, for a host of a flake):
    $ nixseal audit --closure "$(nix build --print-out-paths .#nixosConfigurations.web.config.system.build.toplevel)" --drv
    leak: secret "hosts/web/db-password.age" in /nix/store/…-nginx.conf at byte 1532 (raw)
    leak: secret "hosts/web/db-password.age" in /nix/store/…-nginx.conf.drv at byte 2210 (raw)
    nixseal audit: 2 leaks of 1 secret in 2 files (14 secrets checked, 41 233 files, 2.1 GiB)

Exit codes: 0 no leak, 1 a leak was found (even if some files could not be read), 2 an error
(bad flags, a path that does not exist, a file that cannot be read, nothing decryptable).
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  closure: { type: "string", multiple: true },
  system: { type: "boolean" },
  drv: { type: "boolean" },
  "min-length": { type: "string" },
  ignore: { type: "string", multiple: true },
  sops: { type: "string", multiple: true },
  config: { type: "string" },
} as const;

const PROG = "nixseal audit";

function positiveInt(text: string, flag: string): number {
  if (!/^[1-9][0-9]{0,5}$/.test(text)) {
    throw new NixsealError("USAGE", `${flag} needs a positive whole number, not ${quoteArg(text, 20)}`, {
      hint: `e.g. ${flag} 8`,
    });
  }
  return Number(text);
}

/** secrets.nix when there is one; none is not an error here (sops-only repositories). */
function rulesIfAny(values: { rules?: string; "no-cache"?: boolean }): Rules | null {
  let file: string;
  try {
    file = findRulesFile({ rules: values.rules });
  } catch (e) {
    if (values.rules === undefined && !process.env.RULES && e instanceof NixsealError && e.code === "RULES")
      return null;
    throw e;
  }
  return loadRules({ rules: file, noCache: values["no-cache"] === true });
}

function sopsConfigIfAny(values: { config?: string }): SopsConfig | null {
  const location = findSopsConfig(process.cwd(), values.config ?? process.env.SOPS_CONFIG);
  if (location.warning) printWarning(PROG, location.warning);
  if (location.file === null) return null;
  const config = loadSopsConfig(location.file);
  for (const w of config.warnings) printWarning(PROG, w.message);
  return config;
}

interface Targets {
  paths: string[];
  /** How each group of paths was found, for the summary. */
  closurePaths: number;
  drvPaths: number;
  missingDerivers: number;
}

function targetsOf(positionals: string[], closures: string[], drv: boolean): Targets {
  const paths = new Set(positionals.map((p) => path.resolve(p)));
  let closurePaths = 0;
  const storePaths = new Set<string>();
  for (const c of closures) {
    for (const p of closureOf(c)) {
      if (!paths.has(p)) closurePaths++;
      paths.add(p);
      storePaths.add(p);
    }
  }
  let drvPaths = 0;
  let missingDerivers = 0;
  if (drv) {
    for (const p of positionals) {
      const s = storePathOf(path.resolve(p));
      if (s !== null) storePaths.add(s);
    }
    if (storePaths.size === 0) {
      throw new NixsealError("USAGE", "--drv needs --closure, --system or PATHs in the Nix store", {
        hint: "e.g. nixseal audit --closure ./result --drv",
      });
    }
    const d = derivationsOf([...storePaths]);
    missingDerivers = d.missingDerivers.length;
    for (const p of d.paths) {
      if (!paths.has(p)) drvPaths++;
      paths.add(p);
    }
  }
  return { paths: [...paths], closurePaths, drvPaths, missingDerivers };
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** A one-line progress display on stderr, only when it is a terminal. */
function progressBar(): { update(stats: Readonly<ScanStats>, current: string): void; done(): void } | null {
  const err = process.stderr;
  if (!err.isTTY || process.env.TERM === "dumb") return null;
  const start = Date.now();
  let shown = false;
  return {
    update(stats, current) {
      const seconds = Math.max(0.001, (Date.now() - start) / 1000);
      const head = `scanning: ${stats.files} files, ${size(stats.bytes)}, ${size(stats.bytes / seconds)}/s `;
      const room = Math.max(0, (err.columns || 80) - head.length - 1);
      const tail = current.length > room ? `…${current.slice(current.length - room + 1)}` : current;
      err.write(`\r\x1b[K${head}${sanitize(tail)}`);
      shown = true;
    },
    done() {
      if (shown) err.write("\r\x1b[K");
    },
  };
}

function leakLine(l: Leak, paint: (c: string, s: string) => string): string {
  const where =
    l.place === "name"
      ? `in the name of ${l.file}`
      : l.place === "link-target"
        ? `in the target of the symlink ${l.file} at byte ${l.offset}`
        : `in ${l.file} at byte ${l.offset}`;
  return `${paint("31", "leak:")} ${sanitize(`secret "${l.secret}" ${where} (${l.encoding})`)}`;
}

function firstLine(s: string): string {
  return s.split("\n")[0] ?? s;
}

function jsonReport(
  report: AuditReport,
  loaded: LoadedSecrets,
  targets: Targets,
  ignored: number,
  seconds: number,
): unknown {
  return {
    leaks: report.leaks.map((l) => ({
      secret: l.secret,
      secretFile: displayPath(l.secretFile),
      file: l.file,
      offset: l.offset,
      encoding: l.encoding,
      place: l.place,
    })),
    secrets: {
      checked: report.checked,
      patterns: report.patterns,
      ignored,
      skipped: report.skipped.map((s) => ({ secret: s.secret, file: displayPath(s.file), reason: s.reason })),
      undecryptable: loaded.undecryptable.map((u) => ({
        file: displayPath(u.file),
        ...(u.name === undefined ? {} : { secret: u.name }),
        code: u.error.code,
        message: firstLine(u.error.message),
      })),
    },
    scanned: {
      paths: targets.paths.length,
      closurePaths: targets.closurePaths,
      derivationPaths: targets.drvPaths,
      missingDerivers: targets.missingDerivers,
      ...report.stats,
      seconds: Number(seconds.toFixed(3)),
    },
    problems: report.problems.map((p) => ({
      code: p.code,
      ...(p.file === undefined ? {} : { file: p.file }),
      message: p.message,
      ...(p.hint === undefined ? {} : { hint: p.hint }),
    })),
  };
}

export const command: Command = {
  name: "audit",
  errorExitCode: 2,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal audit --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const closures = [...(values.closure ?? [])];
    if (values.system) {
      if (!fs.existsSync("/run/current-system")) {
        throw new NixsealError(
          "AUDIT_STORE",
          "--system: /run/current-system does not exist (this is not a NixOS system)",
          {
            hint: "give the system to check with --closure STORE_PATH --drv",
          },
        );
      }
      closures.push("/run/current-system");
    }
    if (positionals.length === 0 && closures.length === 0) {
      throw new NixsealError("USAGE", "nothing to scan: give PATHs, --closure STORE_PATH or --system", {
        hint: "e.g. nixseal audit --closure ./result --drv",
      });
    }
    const minLength =
      values["min-length"] === undefined
        ? DEFAULT_MIN_LENGTH
        : positiveInt(values["min-length"], "--min-length");
    const started = Date.now();

    // What to scan first: a bad store path fails before anything is decrypted.
    const targets = targetsOf(positionals, closures, values.drv === true || values.system === true);

    const rules = rulesIfAny(values);
    const sopsConfig = sopsConfigIfAny(values);
    const sopsFiles = values.sops ?? [];
    if (rules === null && sopsConfig === null && sopsFiles.length === 0) {
      throw new NixsealError(
        "AUDIT_NO_SECRETS",
        `no secrets.nix or .sops.yaml found in ${process.cwd()} or any parent directory, and no --sops FILE: nothing to compare against`,
        {
          hint: "run nixseal audit in your secrets repository, or pass --rules FILE, --config FILE or --sops FILE",
        },
      );
    }
    const identities: Identity[] = await identitiesOf(values, keyContext());
    const loaded = await loadSecrets({ identities, rules, sopsConfig, sopsFiles, display: displayPath });
    const ignore = new Set(values.ignore ?? []);
    const secrets = loaded.secrets.filter((s) => !ignore.has(s.name));
    const ignored = loaded.secrets.length - secrets.length;
    wipeSecrets(loaded.secrets.filter((s) => ignore.has(s.name)));

    for (const u of loaded.undecryptable) {
      const who = u.name === undefined ? displayPath(u.file) : `${u.name} (${displayPath(u.file)})`;
      printWarning(PROG, `not checked: ${who}: ${firstLine(u.error.message)} (${u.error.code})`);
    }
    if (loaded.problems.length > 0 || secrets.length === 0) {
      wipeSecrets(secrets);
      const problems = [...loaded.problems];
      if (secrets.length === 0 && loaded.problems.length === 0) {
        problems.push(
          loaded.undecryptable.length > 0
            ? new NixsealError(
                "AUDIT_NO_SECRETS",
                "no identity could decrypt any secret: nothing to compare against",
                {
                  hint: `pass an identity that can decrypt the secrets with -i (${plural(loaded.undecryptable.length, "file")} could not be decrypted, listed above)`,
                },
              )
            : new NixsealError(
                "AUDIT_NO_SECRETS",
                ignored > 0
                  ? "every secret is --ignore'd: nothing to compare against"
                  : "the repository has no secret yet: nothing to compare against",
                { hint: "add secrets (nixseal edit NAME), or pass --sops FILE" },
              ),
        );
      }
      throw NixsealError.many(problems);
    }

    const bar = values.json ? null : progressBar();
    let report: AuditReport;
    try {
      report = await auditPaths(secrets, targets.paths, {
        minLength,
        scan: { onProgress: bar ? (s, c) => bar.update(s, c) : undefined },
      });
    } finally {
      bar?.done();
    }
    const seconds = (Date.now() - started) / 1000;

    if (report.checked === 0) {
      throw new NixsealError(
        "AUDIT_NO_SECRETS",
        `every secret was skipped (${report.skipped.length}: too short, common or too uniform): nothing to compare against`,
        { hint: `lower --min-length (now ${minLength}) if your secrets are that short` },
      );
    }

    if (values.json) {
      process.stdout.write(`${JSON.stringify(jsonReport(report, loaded, targets, ignored, seconds))}\n`);
    } else {
      const color = useColor(process.stdout);
      const paint = (code: string, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
      for (const l of report.leaks) process.stdout.write(`${leakLine(l, paint)}\n`);
      for (const s of report.skipped) {
        process.stderr.write(`${PROG}: skipped ${sanitize(`${s.secret}: ${s.reason}`)}\n`);
      }
      if (report.problems.length > 0) printError(PROG, NixsealError.many(report.problems));
      const st = report.stats;
      const extra = [
        st.symlinks ? `${plural(st.symlinks, "symlink")} not followed` : "",
        st.special ? `${plural(st.special, "socket, FIFO or device")} skipped` : "",
        targets.missingDerivers
          ? `${plural(targets.missingDerivers, "store path")} without a .drv in the store`
          : "",
        st.unlistedHits ? `${st.unlistedHits} more matches not listed` : "",
      ].filter(Boolean);
      const scanned = `${plural(report.checked, "secret")} checked (${report.patterns} patterns) in ${plural(st.files, "file")}, ${size(st.bytes)}, ${seconds.toFixed(1)} s`;
      const leakFiles = new Set(report.leaks.map((l) => l.file)).size;
      const leakSecrets = new Set(report.leaks.map((l) => l.secret)).size;
      const head =
        report.leaks.length === 0
          ? report.problems.length === 0
            ? `no leak: ${scanned}`
            : `no leak in what could be read (${plural(report.problems.length, "problem")} above): ${scanned}`
          : `${plural(report.leaks.length, "leak")} of ${plural(leakSecrets, "secret")} in ${plural(leakFiles, "file")}; ${scanned}`;
      process.stderr.write(`${PROG}: ${head}${extra.length ? `; ${extra.join(", ")}` : ""}\n`);
    }
    if (report.leaks.length > 0) return 1;
    return report.problems.length > 0 ? 2 : 0;
  },
};

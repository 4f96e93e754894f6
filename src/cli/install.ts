/** `nixseal install --manifest FILE`: activation (the NixOS and home-manager modules run it). */
import { NixsealError, rethrowUnlessNixseal, writeAllSync } from "../common/index.js";
import {
  checkManifestFiles,
  type EarlyWorker,
  type InstallReport,
  install,
  parseManifest,
  readManifestText,
  startEarlyWorker,
} from "../install/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { failureObject, printError, printWarning, sanitize, useColor } from "./report.js";

const HELP = `Usage: nixseal install --manifest FILE [--dry-run] [--check] [--json]

Installs the secrets a NixOS or home-manager activation manifest lists (docs/manifest.md), in one
process: mounts a ramfs on generationsDir (unless it is one), creates the next generation, decrypts
in memory (each encrypted file once) with the host's identities every secret that is new or
changed (a secret whose encrypted file, identities, owner, group and mode are those of the active
generation takes its file from there, a hard link checked against the keyed hash kept with it),
writes each file with its final owner, group and mode, renders templates, switches secretsDir to
the new generation atomically, makes the path symlinks, and prunes old generations. When nothing
changed at all, the active generation is verified (encrypted files, owners, modes, keyed hashes)
and stays active: no new generation is made. Units of secrets that
were added, changed (content, owner, group or mode) or removed are appended to the restart and
reload lists that switch-to-configuration reads (restartMode "systemctl": restarted with one
systemctl call per verb, for installs run from a unit).

Secrets and templates with a "credential" are not written to the generation: they are sealed
with systemd-creds (host key and/or TPM2; the plaintext through a pipe) into the credential store
(credstoreDir, default /var/lib/nixseal/credstore), which units load with
LoadCredentialEncrypted=. Only credentials whose value changed are encrypted again, and only
their units are restarted; credentials no longer listed are removed. Identities of type
"systemd-creds" (nixseal host-key seal/new) are decrypted in memory.

Every problem (a file that does not decrypt, a missing sops key, an unknown user, a template
whose secret failed) is reported together; if there is any, the new generation is discarded and
the previous one stays active. Only names are printed, never a value.

Options:
    --manifest FILE   The manifest (JSON, written by the modules into the Nix store).
    --dry-run         Decrypt and compare with the active generation, change nothing; write
                      only the dry-activation restart/reload lists.
    --check           Validate the manifest and the structure of the encrypted files (age
                      headers parse, sops keys exist) without decrypting; needs no key, so the
                      module runs it at build time.
    --json            Machine-readable report on standard output. The text report names at
                      most 20 secrets or units a line ("... and 9980 more"); --json lists all.

Example:
    $ nixseal install --manifest /nix/store/...-nixseal-manifest.json
    nixseal install: generation 4 active (/run/nixseal/secrets)
    nixseal install: changed: db/password
    nixseal install: restart: postgresql.service

Exit codes: 0 installed (or checked), 1 a secret could not be installed (the previous generation
stays active), 2 invalid manifest or usage.
`;

const OPTIONS = {
  manifest: { type: "string" },
  "dry-run": { type: "boolean" },
  check: { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * Standard output written directly (write(2) on descriptor 1): Node builds process.stdout on
 * first use, a stream (for a pipe or a socket a net.Socket) costing ~4-7 ms of CPU, for the few
 * lines an activation prints. A reader that went away (EPIPE) loses the report; the install and
 * its exit code stand.
 */
function writeStdout(text: string): void {
  try {
    writeAllSync(1, Buffer.from(text));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPIPE") throw e;
  }
}

function problemJson(e: NixsealError): Record<string, string | null> {
  return { code: e.code, message: e.message, hint: e.hint ?? null, file: e.file ?? null };
}

function flatten(e: unknown): NixsealError[] {
  rethrowUnlessNixseal(e);
  return e.problems.length > 0 ? e.problems : [e];
}

/**
 * Names on one line of the text report, at most: the activation's log keeps its lines readable
 * (a first install of 10 000 secrets listed every name on one line of ~140 KB, longer than
 * journald keeps as one line). The rest are counted; --json lists every name.
 */
const REPORT_NAMES_SHOWN = 20;

function printReport(r: InstallReport, manifest: { secretsDir: string }): void {
  const out = (line: string) => writeStdout(`nixseal install: ${sanitize(line)}\n`);
  const list = (label: string, names: readonly string[]) => {
    if (names.length === 0) return;
    const shown = names.slice(0, REPORT_NAMES_SHOWN).join(", ");
    const more = names.length - REPORT_NAMES_SHOWN;
    out(`${label}: ${shown}${more > 0 ? ` and ${more} more (--json lists them all)` : ""}`);
  };
  if (r.dryRun) out("dry run: nothing was changed");
  else if (r.generation !== null) {
    out(`generation ${r.generation} active (${manifest.secretsDir})${r.mounted ? ", ramfs mounted" : ""}`);
  }
  list("added", r.added);
  list("changed", r.changed);
  list("removed", r.removed);
  if (r.added.length + r.changed.length + r.removed.length === 0 && r.problems.length === 0) {
    out(`no change (${r.unchanged} unchanged)`);
  }
  list(r.dryRun ? "would restart" : "restart", r.restartUnits);
  list(r.dryRun ? "would reload" : "reload", r.reloadUnits);
  const c = r.credentials;
  list("credentials created", c.created);
  list("credentials updated", c.updated);
  list("credentials removed", c.removed);
  if (c.keyRenewed)
    out(
      `the credential store's key did not unseal (new host key or TPM2): every credential ${r.dryRun ? "would be" : "was"} encrypted again`,
    );
  if (r.pruned.length > 0) out(`pruned generation${r.pruned.length === 1 ? "" : "s"} ${r.pruned.join(", ")}`);
}

export const command: Command = {
  name: "install",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal install --help' for usage");
    if (values.help) {
      writeStdout(HELP);
      return 0;
    }
    if (positionals.length > 0 || values.manifest === undefined) {
      throw new NixsealError("USAGE", "expected --manifest FILE and no other arguments", {
        hint: "nixseal install --manifest FILE [--dry-run] [--check]",
      });
    }
    if (values.check && values["dry-run"]) {
      throw new NixsealError("USAGE", "--check and --dry-run cannot be combined", {
        hint: "--check validates without keys; --dry-run decrypts and compares",
      });
    }
    const json = values.json === true;
    let manifest: ReturnType<typeof parseManifest>;
    let early: EarlyWorker | null = null;
    try {
      const text = readManifestText(values.manifest);
      // Its start overlaps with the parsing when the text names many age files (--check decrypts nothing).
      if (!values.check) early = await startEarlyWorker(text);
      manifest = parseManifest(text, values.manifest);
    } catch (e) {
      await early?.close();
      const problems = flatten(e);
      if (json) {
        writeStdout(
          `${JSON.stringify({
            ok: false,
            manifestValid: false,
            error: failureObject(NixsealError.many(problems)),
            problems: problems.map(problemJson),
          })}\n`,
        );
      } else {
        printError("nixseal install", NixsealError.many(problems));
      }
      return 2;
    }

    if (values.check) {
      const r = await checkManifestFiles(manifest);
      if (json) {
        const { problems, ...rest } = r;
        writeStdout(
          `${JSON.stringify({ ok: problems.length === 0, manifestValid: true, ...rest, problems: problems.map(problemJson) })}\n`,
        );
      } else if (r.problems.length > 0) {
        printError("nixseal install", NixsealError.many(r.problems));
      } else {
        process.stderr.write(
          `nixseal install: manifest valid: ${r.secrets} secret${r.secrets === 1 ? "" : "s"} from ${r.files} file${r.files === 1 ? "" : "s"}, ${r.templates} template${r.templates === 1 ? "" : "s"}\n`,
        );
      }
      return r.problems.length === 0 ? 0 : 1;
    }

    const report = await install(manifest, { dryRun: values["dry-run"] === true, earlyWorker: early });
    if (json) {
      const { warnings, problems, ...rest } = report;
      writeStdout(
        `${JSON.stringify({ ok: problems.length === 0, ...rest, warnings: warnings.map(problemJson), problems: problems.map(problemJson) })}\n`,
      );
    } else {
      for (const w of report.warnings)
        printWarning("nixseal install", `${w.message}${w.hint ? ` (${w.hint})` : ""}`);
      printReport(report, manifest);
      if (report.problems.length > 0) {
        printError("nixseal install", NixsealError.many(report.problems));
        const color = useColor(process.stderr);
        const n = report.problems.length;
        const tail =
          report.generation !== null
            ? `generation ${report.generation} is active, but not everything around it was done`
            : report.dryRun
              ? "a real install would fail and keep the active generation"
              : report.previousGeneration !== null
                ? `nothing was installed; generation ${report.previousGeneration} stays active`
                : "nothing was installed";
        const head = `${n} problem${n === 1 ? "" : "s"}`;
        process.stderr.write(`nixseal install: ${color ? `\x1b[31m${head}\x1b[0m` : head}: ${tail}\n`);
      }
    }
    return report.problems.length === 0 ? 0 : 1;
  },
};

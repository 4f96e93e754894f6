/** `nixseal generate`: secrets that create themselves, from generators.nix (docs/generators.md). */
import * as fs from "node:fs";
import { isObject, NixsealError } from "../common/index.js";
import type { Answers, Generators, Plan, PromptNeed } from "../generate/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { printWarning, redactSecrets, safeText, useColor } from "./report.js";
import { VAULT_OPTIONS, VAULT_OPTIONS_HELP } from "./vault-options.js";

const HELP = `Usage: nixseal generate [NAME...] [--dry-run] [--regenerate NAME]... [--flake FLAKE#HOST]
                        [--prompt-file FILE] [--rules FILE] [-i IDENTITY]... [--json]

Creates the secrets generators.nix (beside secrets.nix) describes: passwords, keys, certificates,
values imported from a password manager. Outputs go to generated/<name>[/<host>]/: <file>.age for
secret files (encrypted to the admins and the hosts that use them), <file> for public ones;
generated/.state.json records every generator's state, without secrets. generated/rules.nix lists the secret files; import it
from secrets.nix ((import ./generated/rules.nix) // { ... }), and check, rekey, list, who and
decrypt treat them like any other secret.

First the plan, printed: what is missing, what is regenerated and why (its validation changed,
a dependency changed, rotation is due, --regenerate), what is only re-encrypted (its recipients
changed). --dry-run stops there. Then the prompts, all asked up front; then the generators run,
in dependency order, each in an empty environment in a private RAM directory (as root also in
private mount and network namespaces). All or nothing: if one fails, no file changes and every
failure is listed. Written files are staged with git add; nothing is committed.

Options:
    NAME                  Only these generators (and what they depend on); default: all.
    --dry-run             Print the plan; run and write nothing.
    --regenerate NAME     Generate NAME again even if nothing changed (repeatable); its
                          dependents follow.
    --flake FLAKE#HOST    Read the generators of a NixOS configuration
                          (config.system.build.nixsealGenerators) instead of generators.nix.
    --prompt-file FILE    Answers as JSON {"<generator>": {"<prompt>": "answer"}}, for runs
                          without a terminal (the file holds secrets: keep it on a RAM disk).
${VAULT_OPTIONS_HELP}
Environment: NIXSEAL_NOW (ISO 8601) replaces the clock for rotation.

Example:
    $ nixseal generate
    generate   db-password/web: not generated yet
    regenerate db-hash/web: dependency db-password/web is regenerated
    nixseal generate: 2 generated, 4 files written and staged with git add

Output: the plan on stdout, one line per generator that has something to do; with --json one
object {"plan":[{"generator","action","reasons"}],"dryRun","generated","rekeyed","written",
"staged","failed":[{"generator","error","hint"}],"isolation":{"namespaces","reason"}}.

Exit codes: 0 success (also: nothing to do, --dry-run), 1 failure (a generator failed, a prompt
has no answer, an output cannot be decrypted: nothing was written), 2 usage, rules or
generators.nix error.
`;

const OPTIONS = {
  ...VAULT_OPTIONS,
  "dry-run": { type: "boolean" },
  regenerate: { type: "string", multiple: true },
  flake: { type: "string" },
  "prompt-file": { type: "string" },
} as const;

const MAX_PROMPT_FILE = 1024 * 1024;

function now(): Date {
  const v = process.env.NIXSEAL_NOW;
  if (v === undefined || v === "") return new Date();
  const t = Date.parse(v);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/.test(v)) {
    throw new NixsealError("USAGE", `NIXSEAL_NOW ${JSON.stringify(v.slice(0, 40))} is not an ISO 8601 date`, {
      hint: "write e.g. NIXSEAL_NOW=2026-01-31T12:00:00Z, or unset it",
    });
  }
  return new Date(t);
}

/** Reads --prompt-file strictly: every generator and prompt it names must exist. */
function readPromptFile(file: string, spec: Generators): Answers {
  let text: Buffer;
  try {
    const st = fs.statSync(file);
    if (st.size > MAX_PROMPT_FILE) throw new Error("larger than 1 MiB");
    text = fs.readFileSync(file);
  } catch (e) {
    throw new NixsealError("USAGE", `--prompt-file ${file} cannot be read: ${(e as Error).message}`, {
      file,
      hint: "give a JSON file of answers",
    });
  }
  let v: unknown;
  try {
    v = JSON.parse(text.toString("utf8"));
  } catch {
    // The parser's message may quote the content: it holds secrets.
    throw new NixsealError("USAGE", `--prompt-file ${file} is not valid JSON`, {
      file,
      hint: 'write {"<generator>": {"<prompt>": "answer"}}',
    });
  } finally {
    text.fill(0);
  }
  const problems: NixsealError[] = [];
  const answers: Answers = new Map();
  if (!isObject(v))
    throw new NixsealError("USAGE", `--prompt-file ${file} must hold a JSON object`, {
      file,
      hint: 'write {"<generator>": {"<prompt>": "answer"}}',
    });
  for (const [g, prompts] of Object.entries(v)) {
    const gen = spec.generators.get(g);
    if (gen === undefined) {
      problems.push(
        new NixsealError("USAGE", `--prompt-file ${file}: "${safeText(g.slice(0, 64))}" is not a generator`, {
          file,
          hint: "remove it or fix its name",
        }),
      );
      continue;
    }
    if (!isObject(prompts)) {
      problems.push(
        new NixsealError("USAGE", `--prompt-file ${file}: "${g}" must map prompt names to answers`, {
          file,
          hint: `write {"${g}": {"<prompt>": "answer"}}`,
        }),
      );
      continue;
    }
    const m = new Map<string, Uint8Array>();
    for (const [p, answer] of Object.entries(prompts)) {
      if (!gen.prompts.some((x) => x.name === p)) {
        problems.push(
          new NixsealError(
            "USAGE",
            `--prompt-file ${file}: generator "${g}" has no prompt "${safeText(p.slice(0, 64))}"`,
            { file, hint: "remove it or fix its name" },
          ),
        );
      } else if (typeof answer !== "string") {
        problems.push(
          new NixsealError("USAGE", `--prompt-file ${file}: the answer to ${g}.${p} must be a string`, {
            file,
            hint: "write the answer as a JSON string",
          }),
        );
      } else m.set(p, Buffer.from(answer, "utf8"));
    }
    answers.set(g, m);
  }
  if (problems.length > 0) throw NixsealError.many(problems);
  return answers;
}

/** Every answer the plan needs, asked once up front; fails before anything runs. */
async function collectAnswers(
  needs: PromptNeed[],
  fromFile: Answers | null,
  hasFile: boolean,
): Promise<Answers> {
  const answers: Answers = new Map();
  const missing: PromptNeed[] = [];
  for (const need of needs) {
    const given = fromFile?.get(need.generator)?.get(need.prompt.name);
    if (given !== undefined) {
      if (!answers.has(need.generator)) answers.set(need.generator, new Map());
      answers.get(need.generator)!.set(need.prompt.name, given);
    } else missing.push(need);
  }
  if (missing.length === 0) return answers;
  const { askGeneratorPrompt, hasTerminal } = await import("./terminal.js");
  if (!hasTerminal()) {
    const names = missing.map((n) => `${n.generator}.${n.prompt.name}`).join(", ");
    throw new NixsealError(
      hasFile ? "GENERATE" : "NO_TERMINAL",
      `no answer for ${names}${hasFile ? " in --prompt-file" : ", and no terminal to ask"}`,
      {
        hint: `add them to the --prompt-file JSON: {"<generator>": {"<prompt>": "answer"}}; nothing was run`,
      },
    );
  }
  for (const need of missing) {
    const label = `${need.generator}: ${need.prompt.description || need.prompt.name}`;
    const v = await askGeneratorPrompt(label, need.prompt.type);
    if (v === null) throw new NixsealError("NO_TERMINAL", "the terminal went away", { hint: "run again" });
    if (!answers.has(need.generator)) answers.set(need.generator, new Map());
    answers.get(need.generator)!.set(need.prompt.name, v);
  }
  return answers;
}

/**
 * Warns when secrets.nix does not mention generated/rules.nix: then check, rekey, list and
 * decrypt do not know the generated secrets. A text check: the rules are not evaluated for it.
 */
function warnUnlessImported(prog: string, rulesFile: string): void {
  let text: string;
  try {
    text = fs.readFileSync(rulesFile, "utf8");
  } catch {
    return;
  }
  if (/generated\/rules\.nix/.test(text)) return;
  printWarning(
    prog,
    `${rulesFile} does not import generated/rules.nix, so check, rekey, list and decrypt do not see the generated secrets; fix: make it (import ./generated/rules.nix) // { ... }`,
  );
}

function planJson(plan: Plan): { generator: string; action: string; reasons: string[] }[] {
  return [
    ...plan.work.map((e) => ({ generator: e.instance.id, action: e.action as string, reasons: e.reasons })),
    ...plan.prompts.map((p) => ({
      generator: `${p.gen.name}/prompt.${p.prompt}`,
      action: "rekey",
      reasons: ["recipients changed"],
    })),
    ...(plan.rulesStale
      ? [{ generator: "generated/rules.nix", action: "write", reasons: ["out of date"] }]
      : []),
  ];
}

export const command: Command = {
  name: "generate",
  errorExitCode: 1,
  usageExitCode: 2,
  json: true,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, "run 'nixseal generate --help' for usage");
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const prog = "nixseal generate";
    const when = now();
    const [{ findRulesFile }, gen] = await Promise.all([
      import("../vault/index.js"),
      import("../generate/index.js"),
    ]);
    const rulesFile = findRulesFile({ rules: values.rules });
    const repository = (await import("node:path")).dirname(rulesFile);
    const spec =
      values.flake !== undefined
        ? gen.loadFlakeGenerators(values.flake)
        : gen.loadGeneratorsFile(rulesFile, { noCache: values["no-cache"] === true });
    const plan = await gen.makePlan(spec, repository, {
      names: positionals,
      regenerate: values.regenerate ?? [],
      now: when,
    });
    const dryRun = values["dry-run"] === true;
    if (!values.json) warnUnlessImported(prog, rulesFile);

    const planned = planJson(plan);
    if (!values.json) {
      const width = Math.max(0, ...planned.map((e) => e.action.length));
      process.stdout.write(
        planned
          .map((e) => `${e.action.padEnd(width)} ${safeText(`${e.generator}: ${e.reasons.join("; ")}`)}\n`)
          .join(""),
      );
    }
    const emptyResult = { generated: [], rekeyed: [], written: [], staged: false, failed: [] };
    if (planned.length === 0 || dryRun) {
      if (values.json) {
        process.stdout.write(
          `${JSON.stringify({ plan: planned, dryRun, ...emptyResult, isolation: null })}\n`,
        );
      } else if (planned.length === 0) {
        process.stderr.write(`${prog}: nothing to do (${plan.entries.length} up to date)\n`);
      } else
        process.stderr.write(`${prog}: ${planned.length} to do; --dry-run: nothing was run or written\n`);
      return 0;
    }

    const [engine, { identitiesOf, keyContext }] = await Promise.all([
      gen.loadEngine(),
      import("./vault-context.js"),
    ]);
    // From a flake, runtimeInputs are store paths nix eval did not build: built before any
    // answer is read, so a failed build holds no secret.
    engine.realiseRuntimeInputs(
      spec,
      plan.work.filter((e) => e.action !== "rekey").map((e) => e.instance.gen.name),
    );
    // Prompts first, all of them, before anything runs.
    const promptFile = values["prompt-file"];
    const fromFile = promptFile === undefined ? null : readPromptFile(promptFile, spec);
    const answers = await collectAnswers(engine.promptsNeeded(plan), fromFile, promptFile !== undefined);
    const scripts = plan.work.some((e) => e.action !== "rekey" && e.instance.gen.script !== null);
    const isolation = scripts
      ? engine.probeIsolation()
      : { namespaces: false, reason: "no script runs", sh: "/bin/sh", unshare: null, mount: null };
    if (scripts && !isolation.namespaces && !values.json) {
      printWarning(
        prog,
        `scripts run without private mount and network namespaces (${isolation.reason}): they can reach the network and the real /tmp`,
      );
    }
    const ctx = keyContext();
    const result = await engine.executePlan(plan, {
      spec,
      answers,
      identities: () => identitiesOf(values, ctx),
      ctx,
      isolation,
      now: when,
      callerPath: process.env.PATH,
    });
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({
          plan: planned,
          dryRun,
          generated: result.generated,
          rekeyed: result.rekeyed,
          written: result.written,
          staged: result.staged,
          failed: result.failed.map((f) => ({
            generator: f.id,
            error: redactSecrets(f.message),
            hint: redactSecrets(f.hint),
          })),
          isolation: { namespaces: isolation.namespaces, reason: isolation.reason },
        })}\n`,
      );
    }
    if (result.failed.length > 0) {
      const red = (s: string) => (useColor(process.stderr) ? `\x1b[31m${s}\x1b[0m` : s);
      for (const f of result.failed) {
        // What the script itself said: the user's own tool, shown as it is (control characters made safe).
        if (f.stderr.trim() !== "" && !values.json)
          process.stderr.write(
            f.stderr
              .trimEnd()
              .split("\n")
              .map((l) => `  ${f.id} | ${safeText(l)}\n`)
              .join(""),
          );
        process.stderr.write(`${prog}: ${red("error:")} ${safeText(f.message)}\n`);
      }
      const hints = [...new Set(result.failed.map((f) => f.hint).filter((h) => h !== ""))];
      process.stderr.write(`${prog}: hint: ${safeText(["nothing was written", ...hints].join("; "))}\n`);
      return 1;
    }
    if (!values.json) {
      const parts = [`${result.generated.length} generated`];
      if (result.rekeyed.length > 0) parts.push(`${result.rekeyed.length} re-encrypted`);
      const files = `${result.written.length} file${result.written.length === 1 ? "" : "s"} written`;
      process.stderr.write(
        `${prog}: ${parts.join(", ")}, ${files}${result.staged ? " and staged with git add" : ""}\n`,
      );
    }
    return 0;
  },
};

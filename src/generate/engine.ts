/**
 * Carrying out a plan (plan.ts): every generator that must run runs, in dependency order and a few
 * at a time, in a fresh 0700 directory on a RAM-backed filesystem that is wiped on every exit
 * path; outputs are encrypted in memory; and only when every generator succeeded are the files
 * written (each atomically, src/common/atomic-file.ts) and staged with `git add`. A failure
 * anywhere: no file of the repository changes, and every failure is listed.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Identity, Recipient } from "../age/index.js";
import { AtomicFile, findExecutable, ioError, NixsealError, syncDirectory, wipe } from "../common/index.js";
import { type KeyContext, loadRecipients } from "../keys/index.js";
import { chooseEditBase, evaluationRoot, loadAgeSecrets, type SecretRule, wipeTree } from "../vault/index.js";
import { runBuiltin } from "./builtin.js";
import {
  GENERATED_RULES,
  generatedRules,
  type Instance,
  LEGACY_STATE_FILE,
  OUTPUT_DIR,
  outputFileName,
  type Plan,
  type PlanEntry,
  promptFile,
  promptRecipients,
  STATE_INDEX,
  type StateRecord,
  stateIndexText,
} from "./plan.js";
import {
  type Isolation,
  MAX_OUTPUT_SIZE,
  readOutputs,
  runImport,
  runtimePath,
  ScriptRunner,
} from "./sandbox.js";
import type { GeneratorSpec, Generators, PromptSpec } from "./spec.js";

export interface PromptNeed {
  generator: string;
  prompt: PromptSpec;
}

/** Answers by generator, then prompt (plaintext: the caller wipes them). */
export type Answers = Map<string, Map<string, Uint8Array>>;

/** The generators that will run. */
function running(plan: Plan): PlanEntry[] {
  return plan.work.filter((e) => e.action === "generate" || e.action === "regenerate");
}

/** Prompts to ask before anything runs: those of running generators without a kept answer. */
export function promptsNeeded(plan: Plan): PromptNeed[] {
  const out: PromptNeed[] = [];
  const seen = new Set<string>();
  for (const e of running(plan)) {
    const gen = e.instance.gen;
    if (seen.has(gen.name)) continue;
    seen.add(gen.name);
    for (const prompt of gen.prompts) {
      if (prompt.persist && fs.existsSync(promptFile(plan.repository, gen, prompt.name))) continue;
      out.push({ generator: gen.name, prompt });
    }
  }
  return out;
}

export interface Failure {
  /** The instance ("name" or "name/host"). */
  id: string;
  message: string;
  hint: string;
  /** What its script wrote on stderr (for the user's terminal; never part of a message). */
  stderr: string;
}

export interface GenerateResult {
  generated: string[];
  rekeyed: string[];
  /** Files written, relative to the repository. */
  written: string[];
  /** True when the written files were staged with `git add`. */
  staged: boolean;
  failed: Failure[];
}

export interface GenerateOptions {
  spec: Generators;
  answers: Answers;
  /** The user's identities (loaded when a dependency's, a kept answer's or a rekeyed output must be read). */
  identities: () => Promise<Identity[]>;
  ctx: KeyContext;
  isolation: Isolation;
  now: Date;
  /** The caller's PATH, where runtimeInputs named by command are found. */
  callerPath?: string;
  /** How many generators run at once (default: the cores, at least 2). */
  concurrency?: number;
}

type Outcome = { ok: true; files: Map<string, Uint8Array>; generation: string } | { ok: false };

function rule(repository: string, rel: string, publicKeys: string[]): SecretRule {
  return { name: rel, file: path.join(repository, rel), publicKeys, armor: false };
}

/** A public output of the repository: a regular file, never read through a symlink, bounded. */
function readPublicOutput(file: string): Uint8Array {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > MAX_OUTPUT_SIZE) {
      throw new NixsealError(
        "GENERATE",
        `${file} is not a regular file of at most ${MAX_OUTPUT_SIZE} bytes`,
        {
          file,
          hint: "a public output is a file nixseal generate wrote; run with --regenerate for its generator",
        },
      );
    }
    return new Uint8Array(fs.readFileSync(fd));
  } finally {
    fs.closeSync(fd);
  }
}

/** A file with content, created with its mode (O_EXCL: never through something planted). */
function writePrivate(file: string, data: Uint8Array): void {
  const fd = fs.openSync(
    file,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
    0o600,
  );
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
  } finally {
    fs.closeSync(fd);
  }
}

/** At most `n` tasks at once. */
function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return async (task) => {
    if (active >= n) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await task();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

/** Tasks run `perTurn` at a time, each batch in its own turn of the event loop (setImmediate). */
class TurnQueue {
  private tasks: (() => void)[] = [];
  private next = 0;
  private scheduled = false;

  constructor(private readonly perTurn: number) {}

  add(task: () => void): void {
    this.tasks.push(task);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.turn);
    }
  }

  private readonly turn = (): void => {
    for (let n = 0; n < this.perTurn && this.next < this.tasks.length; n++) this.tasks[this.next++]!();
    if (this.next < this.tasks.length) setImmediate(this.turn);
    else {
      this.tasks = [];
      this.next = 0;
      this.scheduled = false;
    }
  };

  clear(): void {
    this.tasks = [];
    this.next = 0;
  }
}

const WORK_PREFIX = "nixseal-generate.";
const STALE_WORK_DIR = /^nixseal-generate\.(\d+)\.[A-Za-z0-9]{6}$/;

/**
 * Removes work directories a killed run (SIGKILL, a crash) left in `base`: ours (same uid), named
 * like ours, whose process is gone. Best effort.
 */
function sweepStaleWorkDirs(base: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(base);
  } catch {
    return;
  }
  const uid = process.getuid?.();
  for (const name of entries) {
    const m = STALE_WORK_DIR.exec(name);
    if (!m) continue;
    const p = path.join(base, name);
    try {
      const st = fs.lstatSync(p);
      if (!st.isDirectory() || st.uid !== uid) continue;
      process.kill(Number(m[1]), 0);
      continue; // Its process is alive.
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ESRCH") continue;
    }
    wipeTree(p);
  }
}

/** The private RAM directory of one run: created 0700, wiped on every exit path. */
class WorkDir {
  readonly dir: string;
  private readonly onExit = () => this.dispose();
  private disposed = false;

  constructor() {
    let base: string;
    try {
      base = chooseEditBase().dir;
    } catch {
      throw new NixsealError("GENERATE", "no RAM-backed directory for the generators' files", {
        hint: "set XDG_RUNTIME_DIR to a tmpfs directory, or mount a tmpfs on /dev/shm",
      });
    }
    sweepStaleWorkDirs(base);
    try {
      this.dir = fs.mkdtempSync(path.join(base, `${WORK_PREFIX}${process.pid}.`));
    } catch (e) {
      throw ioError("create a private directory in", base, e);
    }
    // mkdtemp creates it 0700; main's signal handlers call process.exit, which runs this.
    process.on("exit", this.onExit);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    process.removeListener("exit", this.onExit);
    wipeTree(this.dir);
  }
}

interface Write {
  rel: string;
  data: Uint8Array;
}

/**
 * Stages files with `git add` (and the removal of `removed`, the per-instance state files moved
 * into generated/.state.json) when the repository is a git work tree; false when it is not.
 */
function gitAdd(repository: string, rels: string[], removed: string[]): boolean {
  const root = evaluationRoot(path.join(repository, "x"));
  if (!fs.existsSync(path.join(root, ".git")) || rels.length === 0) return false;
  const git = findExecutable("git");
  if (git === null) return false;
  const run = (args: string[]) => {
    const r = spawnSync(git, args, {
      cwd: repository,
      stdio: ["ignore", "ignore", "pipe"],
      encoding: "utf8",
    });
    if (r.status !== 0) {
      throw new NixsealError("IO", `git ${args[0]} failed: ${(r.stderr ?? "").trim().split("\n")[0] ?? ""}`, {
        hint: "the files were written; stage them yourself with git add",
      });
    }
  };
  run(["add", "--", ...rels]);
  if (removed.length > 0) run(["rm", "--cached", "--quiet", "--ignore-unmatch", "--", ...removed]);
  return true;
}

/** Runs the plan. Throws only for problems outside the generators (no RAM directory, I/O at the end). */
export async function executePlan(plan: Plan, options: GenerateOptions): Promise<GenerateResult> {
  const { spec } = options;
  const { decryptSecret, encryptSecret } = await loadAgeSecrets();
  const failed: Failure[] = [];
  const outcomes = new Map<string, Promise<Outcome>>();
  const plaintexts: Uint8Array[] = [];
  const byId = new Map(plan.entries.map((e) => [e.instance.id, e]));
  const recipientCache = new Map<string, Recipient[]>();
  const recipientsOf = (keys: string[], id: string): Recipient[] => {
    const k = keys.join("\n");
    let r = recipientCache.get(k);
    if (r === undefined) {
      try {
        r = loadRecipients({ strings: keys }, options.ctx);
      } catch (e) {
        if (e instanceof NixsealError)
          throw new NixsealError(
            "GENERATORS",
            `${spec.source}: generator "${id}": ${e.message.replace(/^-r: /, "")}`,
            {
              file: spec.source,
              hint: e.hint ?? "fix the recipient in admins, hosts or recipients",
            },
          );
        throw e;
      }
      recipientCache.set(k, r);
    }
    return r;
  };
  let identities: Promise<Identity[]> | null = null;
  const getIdentities = () => (identities ??= options.identities());
  const decryptRel = async (rel: string): Promise<Uint8Array> => {
    const v = await decryptSecret(rule(plan.repository, rel, []), await getIdentities());
    plaintexts.push(v);
    return v;
  };

  // The private RAM directory, made when the first script or import runs (builtins need none).
  let workDir: WorkDir | null = null;
  const work = () => (workDir ??= new WorkDir());
  // One script runner for the run, started with the first script.
  let runner: ScriptRunner | null = null;
  const scripts = () => (runner ??= new ScriptRunner(options.isolation));
  const encryptions = new TurnQueue(16);
  try {
    // Kept answers of persisted prompts, read once per generator.
    const kept = new Map<string, Promise<Map<string, Uint8Array>>>();
    const answersOf = (gen: GeneratorSpec): Promise<Map<string, Uint8Array>> => {
      let p = kept.get(gen.name);
      if (p === undefined) {
        p = (async () => {
          const m = new Map<string, Uint8Array>();
          for (const prompt of gen.prompts) {
            const given = options.answers.get(gen.name)?.get(prompt.name);
            if (given !== undefined) m.set(prompt.name, given);
            else if (prompt.persist)
              m.set(
                prompt.name,
                await decryptRel(
                  path.relative(plan.repository, promptFile(plan.repository, gen, prompt.name)),
                ),
              );
            else
              throw new NixsealError(
                "GENERATE",
                `prompt "${prompt.name}" of generator "${gen.name}" has no answer`,
                {
                  hint: "answer it at the terminal, or in --prompt-file",
                },
              );
          }
          return m;
        })();
        kept.set(gen.name, p);
      }
      return p;
    };

    const limit = limiter(options.concurrency ?? Math.max(2, os.availableParallelism()));
    let counter = 0;
    const fail = (id: string, e: unknown, stderr = ""): Outcome => {
      if (e instanceof NixsealError) failed.push({ id, message: e.message, hint: e.hint ?? "", stderr });
      else throw e;
      return { ok: false };
    };
    const runOne = async (entry: PlanEntry): Promise<Outcome> => {
      const inst = entry.instance;
      const gen = inst.gen;
      // Dependencies first: those regenerated now from memory, the others from the repository.
      const inputs = new Map<string, Map<string, Uint8Array>>();
      for (const [name, dep] of inst.deps) {
        const pending = outcomes.get(dep.id);
        if (pending !== undefined) {
          const o = await pending;
          if (!o.ok) {
            failed.push({
              id: inst.id,
              message: `not run: its dependency ${dep.id} failed`,
              hint: "fix the dependency first",
              stderr: "",
            });
            return { ok: false };
          }
          inputs.set(name, o.files);
          continue;
        }
        const files = new Map<string, Uint8Array>();
        try {
          for (const f of dep.gen.files) {
            const rel = `${dep.relDir}/${outputFileName(f)}`;
            if (f.secret) files.set(f.name, await decryptRel(rel));
            else {
              const v = readPublicOutput(path.join(plan.repository, rel));
              files.set(f.name, v);
            }
          }
        } catch (e) {
          if (e instanceof NixsealError) return fail(inst.id, e);
          return fail(inst.id, ioError("read an output of", dep.id, e));
        }
        inputs.set(name, files);
      }
      let answers: Map<string, Uint8Array>;
      try {
        answers = await answersOf(gen);
      } catch (e) {
        return fail(inst.id, e);
      }
      if (gen.builtin !== null) {
        try {
          const r = await runBuiltin(gen.builtin, inputs, answers);
          if (!r.ok)
            return fail(
              inst.id,
              new NixsealError("GENERATE", `generator ${inst.id}: ${r.message}`, {
                hint: "fix the value it reads (a dependency's file or a prompt's answer)",
              }),
            );
          for (const v of r.files.values()) plaintexts.push(v);
          return { ok: true, files: r.files, generation: randomBytes(16).toString("hex") };
        } catch (e) {
          return fail(inst.id, e);
        }
      }
      return limit(async () => {
        const dir = path.join(work().dir, String(counter++));
        const dirs = {
          out: path.join(dir, "out"),
          in: path.join(dir, "in"),
          prompts: path.join(dir, "prompts"),
          tmp: path.join(dir, "tmp"),
        };
        try {
          fs.mkdirSync(dir, { mode: 0o700 });
          for (const d of Object.values(dirs)) fs.mkdirSync(d, { mode: 0o700 });
          for (const [name, files] of inputs) {
            fs.mkdirSync(path.join(dirs.in, name), { mode: 0o700 });
            for (const [f, v] of files) writePrivate(path.join(dirs.in, name, f), v);
          }
          for (const [p, v] of answers) writePrivate(path.join(dirs.prompts, p), v);
          const r =
            gen.importCommand !== null
              ? await runImport(gen, plan.repository)
              : await scripts().run(gen, dirs, runtimePath(gen, options.callerPath));
          if (!r.ok) {
            wipe(r.stdout);
            const what = gen.importCommand !== null ? "its import command" : "its script";
            return fail(
              inst.id,
              new NixsealError("GENERATE", `generator ${inst.id}: ${what} failed: ${r.message}`, {
                hint:
                  r.stderr.trim() !== "" ? "its output is shown above" : "run the script by hand to see why",
              }),
              r.stderr,
            );
          }
          let files: Map<string, Uint8Array>;
          if (gen.importCommand !== null) {
            files = new Map([[gen.files[0]!.name, new Uint8Array(r.stdout)]]);
            wipe(r.stdout);
          } else {
            const read = readOutputs(gen, dirs.out);
            if (read.problem !== null) {
              for (const v of read.files.values()) wipe(v);
              return fail(
                inst.id,
                new NixsealError("GENERATE", `generator ${inst.id}: ${read.problem}`, {
                  hint: "a script writes each file its files attribute declares into $out, and nothing else",
                }),
                r.stderr,
              );
            }
            files = read.files;
          }
          for (const v of files.values()) plaintexts.push(v);
          return { ok: true, files, generation: randomBytes(16).toString("hex") } as Outcome;
        } catch (e) {
          if (e instanceof NixsealError) return fail(inst.id, e);
          return fail(inst.id, ioError("prepare the files of generator", inst.id, e));
        } finally {
          wipeTree(dir);
        }
      });
    };
    // Each instance's secret outputs are encrypted as soon as it succeeded, while the others
    // still run (a failure anywhere still writes nothing: the ciphertexts are then dropped). A
    // few at a time, between turns of the event loop: scripts run in other processes, and
    // starting the next one must not wait for a thousand encryptions.
    const encrypted = new Map<string, Promise<Uint8Array>>();
    const encryptOutputs = (inst: Instance, o: Outcome) => {
      if (!o.ok) return;
      for (const f of inst.gen.files) {
        if (!f.secret) continue;
        const rel = `${inst.relDir}/${outputFileName(f)}`;
        const p = new Promise<Uint8Array>((resolve, reject) =>
          encryptions.add(() =>
            (async () =>
              encryptSecret(
                rule(plan.repository, rel, inst.recipients),
                o.files.get(f.name)!,
                recipientsOf(inst.recipients, inst.id),
              ))().then(resolve, reject),
          ),
        );
        // Awaited below (or dropped when something failed): never an unhandled rejection.
        p.catch(() => {});
        encrypted.set(rel, p);
      }
    };
    // What a script or an import reads is made first (in dependency order still): those run in
    // other processes, at the same time as the builtins and the encryption here.
    const runs = running(plan);
    const feedsProcess = new Set<string>();
    const mark = (inst: Instance): void => {
      if (feedsProcess.has(inst.id)) return;
      feedsProcess.add(inst.id);
      for (const d of inst.deps.values()) mark(d);
    };
    for (const e of runs) if (e.instance.gen.builtin === null) mark(e.instance);
    const first = runs.filter((e) => feedsProcess.has(e.instance.id));
    for (const entry of [...first, ...runs.filter((e) => !feedsProcess.has(e.instance.id))])
      outcomes.set(
        entry.instance.id,
        runOne(entry).then((o) => {
          encryptOutputs(entry.instance, o);
          return o;
        }),
      );
    const done = new Map<string, Outcome>();
    for (const [id, p] of outcomes) done.set(id, await p);

    // Rekey only: each secret output decrypted and encrypted to the recipients wanted now.
    const rekeyed = new Map<string, Map<string, Uint8Array>>();
    for (const entry of plan.work.filter((e) => e.action === "rekey")) {
      const inst = entry.instance;
      const m = new Map<string, Uint8Array>();
      try {
        for (const f of inst.gen.files)
          if (f.secret) m.set(f.name, await decryptRel(`${inst.relDir}/${outputFileName(f)}`));
        rekeyed.set(inst.id, m);
      } catch (e) {
        fail(inst.id, e);
      }
    }
    // Kept answers whose recipients changed (unless answered anew in this run).
    const promptRekeys = new Map<string, Uint8Array>();
    for (const p of plan.prompts) {
      if (options.answers.get(p.gen.name)?.has(p.prompt)) continue;
      try {
        promptRekeys.set(p.rel, await decryptRel(p.rel));
      } catch (e) {
        fail(`${p.gen.name}/prompt.${p.prompt}`, e);
      }
    }
    if (failed.length > 0) return { generated: [], rekeyed: [], written: [], staged: false, failed };

    // Everything in memory, encrypted; nothing written yet.
    const writes: Write[] = [];
    const newState = new Map<string, StateRecord>();
    const generationOf = (dep: Instance): string => {
      const o = done.get(dep.id);
      if (o?.ok) return o.generation;
      return byId.get(dep.id)?.state?.generation ?? "";
    };
    for (const entry of running(plan)) {
      const inst = entry.instance;
      const o = done.get(inst.id)!;
      if (!o.ok) continue;
      const keys = inst.recipients;
      for (const f of inst.gen.files) {
        const rel = `${inst.relDir}/${outputFileName(f)}`;
        const value = o.files.get(f.name)!;
        if (f.secret) writes.push({ rel, data: await encrypted.get(rel)! });
        else writes.push({ rel, data: Uint8Array.from(value) });
      }
      const state: StateRecord = {
        version: 1,
        generation: o.generation,
        generatedAt: options.now.toISOString(),
        validation: inst.gen.validationHash,
        dependencies: Object.fromEntries([...inst.deps.values()].map((d) => [d.id, generationOf(d)]).sort()),
        recipients: [...keys].sort(),
        files: inst.gen.files.map((f) => f.name),
      };
      newState.set(inst.id, state);
    }
    for (const entry of plan.work.filter((e) => e.action === "rekey")) {
      const inst = entry.instance;
      const keys = inst.recipients;
      for (const [name, value] of rekeyed.get(inst.id)!) {
        const rel = `${inst.relDir}/${name}.age`;
        writes.push({
          rel,
          data: await encryptSecret(rule(plan.repository, rel, keys), value, recipientsOf(keys, inst.id)),
        });
      }
      newState.set(inst.id, { ...entry.state!, recipients: [...keys].sort() });
    }
    // Newly given answers of persisted prompts, kept encrypted.
    const promptsDone = new Set<string>();
    for (const entry of running(plan)) {
      const gen = entry.instance.gen;
      if (promptsDone.has(gen.name)) continue;
      promptsDone.add(gen.name);
      for (const prompt of gen.prompts) {
        const given = options.answers.get(gen.name)?.get(prompt.name);
        if (!prompt.persist || given === undefined) continue;
        const rel = path.relative(plan.repository, promptFile(plan.repository, gen, prompt.name));
        const keys = promptRecipients(
          spec,
          plan.entries.map((e) => e.instance),
          gen,
        );
        writes.push({
          rel,
          data: await encryptSecret(rule(plan.repository, rel, keys), given, recipientsOf(keys, gen.name)),
        });
      }
    }
    for (const p of plan.prompts) {
      const value = promptRekeys.get(p.rel);
      if (value === undefined) continue;
      writes.push({
        rel: p.rel,
        data: await encryptSecret(
          rule(plan.repository, p.rel, p.recipients),
          value,
          recipientsOf(p.recipients, p.gen.name),
        ),
      });
    }
    // The state of every instance, one file: as read, with the records an earlier nixseal kept
    // beside the outputs moved in, and this run's records.
    const records = new Map(plan.stateIndex);
    for (const inst of plan.legacyStates) records.set(inst.id, byId.get(inst.id)!.state!);
    for (const [id, state] of newState) records.set(id, state);
    const indexRel = `${OUTPUT_DIR}/${STATE_INDEX}`;
    const indexText = Buffer.from(stateIndexText(records));
    let indexNow: Buffer | null = null;
    try {
      indexNow = fs.readFileSync(path.join(plan.repository, indexRel));
    } catch {}
    if (indexNow === null || !indexNow.equals(indexText)) writes.push({ rel: indexRel, data: indexText });
    const writing = new Set(writes.map((w) => w.rel));
    const rulesRel = `${OUTPUT_DIR}/${GENERATED_RULES}`;
    const rulesText = Buffer.from(
      generatedRules(
        plan.entries,
        spec,
        (rel) => writing.has(rel) || fs.existsSync(path.join(plan.repository, rel)),
      ),
    );
    let current: Buffer | null = null;
    try {
      current = fs.readFileSync(path.join(plan.repository, rulesRel));
    } catch {}
    if (current === null || !current.equals(rulesText)) writes.push({ rel: rulesRel, data: rulesText });

    commitAll(plan.repository, writes);
    // Now in the index: the per-instance records are removed (a leftover one would be ignored).
    const removed: string[] = [];
    for (const inst of plan.legacyStates) {
      const rel = `${inst.relDir}/${LEGACY_STATE_FILE}`;
      try {
        fs.unlinkSync(path.join(plan.repository, rel));
        removed.push(rel);
      } catch {}
    }
    const written = writes.map((w) => w.rel);
    const staged = gitAdd(plan.repository, written, removed);
    return {
      generated: running(plan).map((e) => e.instance.id),
      rekeyed: [
        ...plan.work.filter((e) => e.action === "rekey").map((e) => e.instance.id),
        ...plan.prompts.filter((p) => promptRekeys.has(p.rel)).map((p) => `${p.gen.name}/prompt.${p.prompt}`),
      ],
      written,
      staged,
      failed,
    };
  } finally {
    // Encryptions not started yet (something failed) are dropped: their plaintexts are wiped now.
    encryptions.clear();
    for (const v of plaintexts) wipe(v);
    for (const m of options.answers.values()) for (const v of m.values()) wipe(v);
    (runner as ScriptRunner | null)?.close();
    (workDir as WorkDir | null)?.dispose();
  }
}

/**
 * Writes every file: all temp files first (each with its final mode, fsync-ed), then the renames,
 * so an error while writing leaves every file as it was.
 */
function commitAll(repository: string, writes: Write[]): void {
  const files: AtomicFile[] = [];
  // Each directory is made and checked once, and fsync-ed once after all its renames.
  const dirs = new Set<string>();
  try {
    for (const w of writes) {
      const target = path.join(repository, w.rel);
      const dir = path.dirname(target);
      if (!dirs.has(dir)) {
        try {
          fs.mkdirSync(dir, { recursive: true });
          if (fs.lstatSync(dir).isSymbolicLink() || !fs.statSync(dir).isDirectory())
            throw new Error("not a directory");
        } catch (e) {
          throw ioError("create the directory", dir, e);
        }
        dirs.add(dir);
      }
      const f = AtomicFile.open(target, 0o666);
      files.push(f);
      f.write(w.data);
    }
  } catch (e) {
    for (const f of files) f.abort();
    throw e;
  }
  for (const f of files) f.commit({ syncDirectory: false });
  for (const dir of dirs) syncDirectory(dir);
}

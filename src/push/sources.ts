/**
 * The deployer's side of key values: every source of a run resolved once, however many keys and
 * hosts use it. An encrypted file is read and decrypted once (its sops keys taken out of it in
 * memory), a command run once (argv directly, no shell; its stdout is the value). Values live in
 * memory only and are wiped by close(). Problems name the key and the source, never a value.
 */
import type { Identity } from "../age/index.js";
import { type Captured, captureOutput, NixsealError, rethrowUnlessNixseal, wipe } from "../common/index.js";
import { decryptSource, readEncryptedFile } from "../install/index.js";
import type { KeySource, Plan } from "./plan.js";
import { MAX_KEY_SIZE } from "./protocol.js";

export function sourceId(s: KeySource): string {
  return s.kind === "file"
    ? `file\0${s.format}\0${s.file}\0${s.key ?? ""}`
    : `command\0${JSON.stringify(s.argv)}`;
}

function describe(s: KeySource): string {
  if (s.kind === "command") return `command ${JSON.stringify(s.argv.join(" ").slice(0, 80))}`;
  return s.key === null ? s.file : `${s.file} (key "${s.key}")`;
}

export class ResolvedValues {
  private readonly values = new Map<string, Uint8Array>();
  /** How many commands ran and files were decrypted (tests: once per source, not per key). */
  commandsRun = 0;
  filesDecrypted = 0;

  get(s: KeySource): Uint8Array {
    const v = this.values.get(sourceId(s));
    if (v === undefined) throw new NixsealError("INTERNAL", "a key's value was not resolved");
    return v;
  }

  set(s: KeySource, v: Uint8Array): void {
    this.values.set(sourceId(s), v);
  }

  close(): void {
    for (const v of this.values.values()) wipe(v);
    this.values.clear();
  }
}

/** The last non-empty line a failing command wrote on stderr, shortened. */
function lastLine(text: string): string {
  const line = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .at(-1);
  return line === undefined ? "" : line.length > 200 ? `${line.slice(0, 200)}...` : line;
}

async function runCommand(argv: string[]): Promise<Uint8Array> {
  let r: Captured;
  try {
    r = await captureOutput(argv[0]!, argv.slice(1), {
      maxStdout: MAX_KEY_SIZE,
      maxStderr: 4096,
      stderrTail: true,
      stopWith: "SIGTERM",
    });
  } catch (e) {
    throw new NixsealError(
      "PUSH",
      `cannot run ${argv[0]}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      {
        hint: "install it or fix the command of the key's source",
      },
    );
  }
  if (r.code === 0 && r.stopped === null) return r.stdout;
  wipe(r.stdout);
  const said =
    r.stopped !== null ? `printed more than ${MAX_KEY_SIZE / 1024 / 1024} MiB` : lastLine(r.stderr);
  throw new NixsealError(
    "PUSH",
    `failed (${r.signal ?? `exit ${r.code}`})${said === "" ? "" : `: ${said}`}`,
    {
      hint: "run the command by hand to see why; its standard output is the key",
    },
  );
}

/**
 * Resolves every source of the plan's keys; returns the values, or throws every problem at once.
 * `identities` is called (once) only if an encrypted file is to be decrypted.
 */
export async function resolveSources(
  plan: Plan,
  identities: () => Promise<Identity[]>,
): Promise<ResolvedValues> {
  const values = new ResolvedValues();
  const problems: NixsealError[] = [];
  // Distinct sources, each with the keys that use it (for the messages).
  const sources = new Map<string, { source: KeySource; users: string[] }>();
  for (const h of plan.hosts.values()) {
    for (const k of h.keys) {
      const id = sourceId(k.source);
      const s = sources.get(id) ?? { source: k.source, users: [] };
      s.users.push(`${h.host}.${k.key}`);
      sources.set(id, s);
    }
  }
  const label = (users: string[]) =>
    `key ${users.length > 3 ? `${users.slice(0, 3).join(", ")} (and ${users.length - 3} more)` : users.join(", ")}`;

  // Commands: one after another (a password manager may ask at the terminal).
  for (const { source, users } of sources.values()) {
    if (source.kind !== "command") continue;
    try {
      values.commandsRun++;
      values.set(source, await runCommand(source.argv));
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(
        new NixsealError("PUSH", `${label(users)}: ${describe(source)} ${e.message}`, { hint: e.hint }),
      );
    }
  }

  // Files: each read and decrypted once; every key of it taken out in memory.
  const byFile = new Map<string, { source: KeySource & { kind: "file" }; users: string[] }[]>();
  for (const s of sources.values()) {
    if (s.source.kind !== "file") continue;
    const f = `${s.source.format}\0${s.source.file}`;
    const list = byFile.get(f) ?? [];
    list.push(s as { source: KeySource & { kind: "file" }; users: string[] });
    byFile.set(f, list);
  }
  let ids: Identity[] | null = null;
  for (const list of byFile.values()) {
    const { file, format } = list[0]!.source;
    const everyone = list.flatMap((x) => x.users);
    let opened: Awaited<ReturnType<typeof decryptSource>>;
    try {
      const data = readEncryptedFile(file);
      ids ??= await identities();
      values.filesDecrypted++;
      opened = await decryptSource(data, file, format, ids);
    } catch (e) {
      rethrowUnlessNixseal(e);
      problems.push(
        new NixsealError(
          e.code,
          `${label(everyone)}: ${e.message.includes(file) ? e.message : `${file}: ${e.message}`}`,
          {
            hint: e.hint,
            file,
          },
        ),
      );
      continue;
    }
    try {
      for (const { source, users } of list) {
        try {
          const { value, owned } = opened.valueOf({ key: source.key });
          values.set(source, owned ? value : Uint8Array.from(value));
        } catch (e) {
          rethrowUnlessNixseal(e);
          problems.push(
            new NixsealError("PUSH", `${label(users)}: ${file}: ${e.message}`, { hint: e.hint, file }),
          );
        }
      }
    } finally {
      opened.close();
    }
  }
  for (const [, { source }] of sources) {
    try {
      if (values.get(source).length > MAX_KEY_SIZE)
        problems.push(
          new NixsealError("PUSH", `${describe(source)} is larger than ${MAX_KEY_SIZE / 1024 / 1024} MiB`, {
            hint: "keys are held in memory; keep them small",
          }),
        );
    } catch {}
  }
  if (problems.length > 0) {
    values.close();
    throw NixsealError.many(problems);
  }
  return values;
}

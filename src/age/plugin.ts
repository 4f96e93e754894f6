/**
 * The client side of age plugins: recipients and identities whose work is done by an
 * `age-plugin-<name>` program. age-plugin spec: "Wrapping with recipient-v1", "Unwrapping with
 * identity-v1"; the Go reference is age's plugin/client.go.
 *
 * Unlike age (one process per recipient), recipients and identities are grouped: one plugin
 * process per plugin name per operation, as rage does, so a plugin asks for a PIN once.
 * Batches of files go through one process too (`wrapFileKeys`, `unwrapFileKeys`).
 *
 * Nothing here prints: the plugin's messages and questions go to an injected PluginUI.
 */
import { base64nopad } from "@scure/base";
import { isNixsealError, NixsealError, wipe } from "../common/index.js";
import type * as Connection from "./plugin-connection.js";
import type { PluginRunOptions } from "./plugin-connection.js";
import { parsePluginKey, pluginBinaryName } from "./plugin-encoding.js";
import { FILE_KEY_SIZE, type Identity, type Recipient, type Stanza } from "./types.js";

export type { PluginRunOptions } from "./plugin-connection.js";
export {
  encodePluginIdentity,
  encodePluginRecipient,
  findPluginBinary,
  isPluginIdentity,
  isPluginRecipient,
  isValidPluginName,
  type PluginKey,
  parsePluginIdentity,
  parsePluginKey,
  parsePluginRecipient,
  pluginBinaryName,
  pluginNameOf,
} from "./plugin-encoding.js";

/**
 * How a plugin talks to the user. The CLI implements it on the terminal; lower layers never
 * print. A callback that throws makes us answer `fail` to the plugin (age-plugin spec), and if
 * the operation then fails, that error is the one reported (it is the root cause).
 * Values the user types are secrets: implementations must not log or echo them.
 */
export interface PluginUI {
  /** `msg`: show a message (e.g. "touch your YubiKey"). Throw if it cannot be shown. */
  displayMessage(plugin: string, message: string): void | Promise<void>;
  /** `request-public` / `request-secret`: ask the user for a value (secret: no echo). */
  requestValue(plugin: string, prompt: string, secret: boolean): Promise<string>;
  /** `confirm`: ask a yes/no question; `no` may be absent (then only `yes` can be chosen). */
  confirm(plugin: string, prompt: string, yes: string, no?: string): Promise<boolean>;
  /** Called once when a plugin has been silent for 5 s (e.g. waiting for a hardware touch). */
  waitTimer?(plugin: string): void;
}

function noTerminal(plugin: string, what: string): NixsealError {
  return new NixsealError(
    "AGE_PLUGIN",
    `${pluginBinaryName(plugin)} needs to ${what}, but nixseal is not running interactively`,
    { hint: "run in a terminal" },
  );
}

/** For scripts and services: messages cannot be shown, questions cannot be asked. */
export const nonInteractivePluginUI: PluginUI = {
  displayMessage(plugin) {
    throw noTerminal(plugin, "show a message");
  },
  async requestValue(plugin, prompt, secret) {
    throw noTerminal(plugin, `ask for ${secret ? "a secret" : "a value"} ("${prompt.slice(0, 80)}")`);
  },
  async confirm(plugin, prompt) {
    throw noTerminal(plugin, `ask for a confirmation ("${prompt.slice(0, 80)}")`);
  },
};

/** Options of a plugin run: read timeout, wait timer, stderr handling, PATH. */
export type PluginOptions = PluginRunOptions;

// --- one run of a state machine ------------------------------------------------------------------

/** A non-negative decimal without leading zeros, as the plugin framework writes them. */
function parseIndex(s: string | undefined): number | null {
  if (s === undefined || !/^(0|[1-9][0-9]{0,8})$/.test(s)) return null;
  return Number(s);
}

/** A `confirm` option: canonical unpadded base64 (age spec), or null. */
function decodeOption(arg: string): Uint8Array | null {
  try {
    return base64nopad.decode(arg);
  } catch {
    return null;
  }
}

/**
 * The plugin process itself (plugin-connection.ts: spawning, the framed protocol, timeouts),
 * loaded when a plugin first runs (runSession): reading a plugin identity or recipient runs
 * nothing, and most runs meet no plugin at all.
 */
let connection: typeof Connection | undefined;

function conn(): typeof Connection {
  if (connection === undefined) {
    throw new NixsealError("INTERNAL", "the plugin connection was used before runSession loaded it", {
      hint: "this is a bug in nixseal; please report it",
    });
  }
  return connection;
}

/** What one plugin run shares: the process, the UI, the errors the plugin reported. */
class PluginSession {
  readonly plugin: string;
  readonly proc: Connection.PluginProcess;
  private readonly ui: PluginUI;
  /** A UI callback that failed: if the run fails, this is why. */
  private uiError: unknown = null;
  readonly errors: NixsealError[] = [];

  constructor(plugin: string, stateMachine: string, ui: PluginUI, options: PluginOptions) {
    this.plugin = plugin;
    this.ui = ui;
    this.proc = conn().PluginProcess.start(plugin, stateMachine, options);
  }

  get binary(): string {
    return pluginBinaryName(this.plugin);
  }

  /** Set once the plugin sent an `error` command of any kind. */
  sawError = false;

  async read(): Promise<Stanza> {
    const ui = this.ui;
    try {
      return await this.proc.read(ui.waitTimer ? () => this.notifyWaiting() : undefined);
    } catch (e) {
      // age's plugin framework exits right after an error command, without `done`: the error
      // it reported is the story, not the exit.
      if (this.sawError && this.proc.stopped) return { type: "done", args: [], body: new Uint8Array(0) };
      throw e;
    }
  }

  private notifyWaiting(): void {
    try {
      this.ui.waitTimer?.(this.plugin);
    } catch {
      // A UI that cannot say "waiting..." must not break the run.
    }
  }

  /** Records an `error` stanza as a NixsealError and acknowledges it. */
  pluginError(s: Stanza, describe: (args: string[]) => { what: string; hint: string } | null): void {
    this.sawError = true;
    const text = conn().sanitizePluginText(s.body) || "(no message)";
    const d = describe(s.args) ?? {
      what: `error (${conn().sanitizePluginText(s.args.join(" "), 60)})`,
      hint: `see the documentation of ${this.binary}`,
    };
    this.errors.push(new NixsealError("AGE_PLUGIN", `${this.binary}: ${d.what}: ${text}`, { hint: d.hint }));
    this.proc.send("ok");
  }

  /**
   * Handles the interactive commands of phase 2 (msg, confirm, request-public, request-secret)
   * and answers `unsupported` to anything else. age-plugin spec: bi-directional phases.
   */
  async interact(s: Stanza): Promise<void> {
    switch (s.type) {
      case "msg": {
        const message = conn().sanitizePluginText(s.body, 1000);
        try {
          await this.ui.displayMessage(this.plugin, message);
          this.proc.send("ok");
        } catch {
          // Not being able to show a message is not a reason to fail by itself.
          this.proc.send("fail");
        }
        return;
      }
      case "confirm": {
        if (s.args.length !== 1 && s.args.length !== 2) {
          throw this.proc.protocolError("a confirm command has the wrong number of arguments");
        }
        const options = s.args.map(decodeOption);
        if (options.some((o) => o === null)) throw this.proc.protocolError("a confirm option is not base64");
        const yes = conn().sanitizePluginText(options[0]!, 100);
        const no = options[1] ? conn().sanitizePluginText(options[1], 100) : undefined;
        const prompt = conn().sanitizePluginText(s.body, 1000);
        let answer: boolean;
        try {
          answer = await this.ui.confirm(this.plugin, prompt, yes, no);
        } catch (e) {
          this.uiError ??= e;
          this.proc.send("fail");
          return;
        }
        if (!answer && no === undefined) {
          // Only "yes" was offered and the user did not take it.
          this.proc.send("fail");
          return;
        }
        this.proc.send("ok", [answer ? "yes" : "no"]);
        return;
      }
      case "request-public":
      case "request-secret": {
        const secret = s.type === "request-secret";
        const prompt = conn().sanitizePluginText(s.body, 1000);
        let value: string;
        try {
          value = await this.ui.requestValue(this.plugin, prompt, secret);
        } catch (e) {
          this.uiError ??= e;
          this.proc.send("fail");
          return;
        }
        const bytes = Buffer.from(value, "utf8");
        this.proc.send("ok", [], bytes);
        wipe(bytes);
        return;
      }
      default:
        // Grease and commands from newer versions of the protocol.
        this.proc.send("unsupported");
    }
  }

  /** The error to throw when the run failed: the UI's failure if there was one, else `fallback`. */
  failure(fallback: NixsealError): NixsealError {
    if (this.uiError === null) return fallback;
    if (isNixsealError(this.uiError)) return this.uiError;
    const why =
      this.uiError instanceof Error ? conn().sanitizePluginText(this.uiError.message, 200) : "unknown error";
    return new NixsealError("AGE_PLUGIN", `could not ask the user what ${this.binary} needs: ${why}`, {
      hint: "run in a terminal",
      cause: this.uiError,
    });
  }

  /** All errors the plugin reported, as one NixsealError (each is in `cause` when there are several). */
  reportedErrors(): NixsealError | null {
    if (this.errors.length === 0) return null;
    if (this.errors.length === 1) return this.failure(this.errors[0]!);
    const combined = new NixsealError("AGE_PLUGIN", this.errors.map((e) => e.message).join("; "), {
      hint: this.errors[0]!.hint,
      cause: this.errors,
    });
    return this.failure(combined);
  }
}

/**
 * Runs one state machine to its end: `body` does the phases; on any error the child is killed
 * and a UI failure, if any, is reported as the cause.
 */
async function runSession<T>(
  plugin: string,
  stateMachine: string,
  ui: PluginUI,
  options: PluginOptions,
  body: (session: PluginSession) => Promise<T>,
): Promise<T> {
  connection ??= await import("./plugin-connection.js");
  const session = new PluginSession(plugin, stateMachine, ui, options);
  let result: T;
  try {
    result = await body(session);
  } catch (e) {
    await session.proc.kill();
    if (isNixsealError(e) && e.code === "AGE_PLUGIN") throw session.failure(e);
    throw e;
  }
  await session.proc.finish();
  return result;
}

// --- recipient-v1 ---------------------------------------------------------------------------------

/**
 * All recipients (and identities used as recipients) of one plugin: one `recipient-v1` run per
 * file key (or per batch of file keys). The labels the plugin reports are `labels` after a wrap.
 */
export class PluginRecipient implements Recipient {
  readonly plugin: string;
  /** `age1<name>1...` strings, in the order sent (the plugin's recipient indices). */
  readonly recipients: readonly string[];
  /** `AGE-PLUGIN-<NAME>-1...` strings wrapped to as recipients (secret-ish: never in messages). */
  private readonly identities: readonly string[];
  private readonly ui: PluginUI;
  private readonly options: PluginOptions;
  private lastLabels: readonly string[] = [];

  constructor(
    plugin: string,
    recipients: readonly string[],
    identities: readonly string[],
    ui: PluginUI,
    options: PluginOptions = {},
  ) {
    this.plugin = plugin;
    this.recipients = recipients;
    this.identities = identities;
    this.ui = ui;
    this.options = options;
  }

  /** The label set of the stanzas of the last wrap (age-plugin spec: extension-labels). */
  get labels(): readonly string[] {
    return this.lastLabels;
  }

  /** For messages: the plugin and how many keys, never an identity. */
  toString(): string {
    const n = this.recipients.length + this.identities.length;
    return `${pluginBinaryName(this.plugin)} (${n} recipient${n === 1 ? "" : "s"})`;
  }

  async wrapFileKey(fileKey: Uint8Array): Promise<Stanza[]> {
    const [stanzas] = await this.wrapFileKeys([fileKey]);
    return stanzas!;
  }

  /** Wraps several file keys (one per file) in one plugin run; result i is for file key i. */
  async wrapFileKeys(fileKeys: readonly Uint8Array[]): Promise<Stanza[][]> {
    if (fileKeys.length === 0) return [];
    return runSession(this.plugin, "recipient-v1", this.ui, this.options, async (session) => {
      const { proc } = session;
      // Phase 1 [client, uni-directional].
      proc.write(
        ...this.recipients.map((r) => conn().encodeCommand("add-recipient", [r])),
        ...this.identities.map((i) => conn().encodeCommand("add-identity", [i])),
        ...fileKeys.map((k) => conn().encodeCommand("wrap-file-key", [], k)),
        conn().encodeCommand("extension-labels", []),
        conn().encodeCommand("done", []),
      );
      // Phase 2 [plugin, bi-directional].
      const stanzas: Stanza[][] = fileKeys.map(() => []);
      let labels: string[] | null = null;
      for (;;) {
        const s = await session.read();
        if (s.type === "done") break;
        switch (s.type) {
          case "recipient-stanza": {
            const index = parseIndex(s.args[0]);
            if (s.args.length < 2 || index === null || index >= fileKeys.length) {
              throw proc.protocolError("a recipient-stanza has a wrong file index or no stanza type");
            }
            stanzas[index]!.push({ type: s.args[1]!, args: s.args.slice(2), body: s.body });
            proc.send("ok");
            break;
          }
          case "labels": {
            if (labels !== null) throw proc.protocolError("it sent labels twice");
            if (new Set(s.args).size !== s.args.length) throw proc.protocolError("it sent duplicate labels");
            labels = s.args;
            proc.send("ok");
            break;
          }
          case "error":
            session.pluginError(s, (args) => this.describeError(args));
            break;
          default:
            await session.interact(s);
        }
      }
      const reported = session.reportedErrors();
      if (reported !== null) throw reported;
      if (stanzas.some((ss) => ss.length === 0)) {
        throw session.failure(proc.protocolError("it returned no recipient stanza for a file key"));
      }
      this.lastLabels = labels ?? [];
      return stanzas;
    });
  }

  private describeError(args: string[]): { what: string; hint: string } | null {
    const binary = pluginBinaryName(this.plugin);
    const index = parseIndex(args[1]);
    if (args[0] === "recipient" && args.length === 2 && index !== null) {
      const r = this.recipients[index];
      return {
        what: `recipient ${index}${r === undefined ? "" : ` (${shorten(r)})`}`,
        hint: `check the recipient, and that ${binary} supports it`,
      };
    }
    if (args[0] === "identity" && args.length === 2 && index !== null) {
      return { what: `identity ${index}`, hint: `check the identity, and that ${binary} supports it` };
    }
    if (args[0] === "internal" && args.length === 1) {
      return { what: "internal error", hint: `see the documentation of ${binary}` };
    }
    return null;
  }
}

/** A recipient as errors show it: its type prefix (age1<name>1) only. */
function shorten(s: string): string {
  const sep = s.lastIndexOf("1");
  return sep > 0 && sep <= 40 ? `${s.slice(0, sep + 1)}…` : "…";
}

// --- identity-v1 ----------------------------------------------------------------------------------

/** The outcome for one file of a batch unwrap. */
export interface PluginUnwrapResult {
  /** The file key, or null if no identity matched (or the file's stanzas were rejected). */
  fileKey: Uint8Array | null;
  /** Set when the plugin reported a stanza of this file as invalid (age-plugin spec: error stanza). */
  error?: NixsealError;
}

/** All identities of one plugin: one `identity-v1` run per file (or per batch of files). */
export class PluginIdentity implements Identity {
  readonly plugin: string;
  readonly description: string;
  private readonly identities: readonly string[];
  private readonly ui: PluginUI;
  private readonly options: PluginOptions;

  constructor(plugin: string, identities: readonly string[], ui: PluginUI, options: PluginOptions = {}) {
    this.plugin = plugin;
    this.identities = identities;
    this.ui = ui;
    this.options = options;
    const n = identities.length;
    this.description = `${pluginBinaryName(plugin)} (${n} identit${n === 1 ? "y" : "ies"})`;
  }

  /**
   * age-plugin spec: the plugin gets every stanza of the file (stanza types are not tied to
   * plugin names) and is not started at all if there are none. Returns null if nothing matched.
   */
  async unwrapFileKey(stanzas: readonly Stanza[]): Promise<Uint8Array | null> {
    const [result] = await this.unwrapFileKeys([stanzas]);
    if (result!.error) throw result!.error;
    return result!.fileKey;
  }

  /**
   * Unwraps the file keys of several files in one plugin run (one PIN prompt, not one per file).
   * Errors about identities or the plugin itself throw; a file whose stanza the plugin rejects
   * gets `error` (the others still decrypt).
   */
  async unwrapFileKeys(files: readonly (readonly Stanza[])[]): Promise<PluginUnwrapResult[]> {
    const results: PluginUnwrapResult[] = files.map(() => ({ fileKey: null }));
    // File indices on the wire are consecutive over the files that have stanzas.
    const sent: number[] = [];
    files.forEach((f, i) => {
      if (f.length > 0) sent.push(i);
    });
    if (sent.length === 0) return results;
    try {
      await runSession(this.plugin, "identity-v1", this.ui, this.options, async (session) => {
        const { proc } = session;
        // Phase 1 [client, uni-directional].
        const phase1: Buffer[] = this.identities.map((id) => conn().encodeCommand("add-identity", [id]));
        sent.forEach((fileIndex, wireIndex) => {
          for (const st of files[fileIndex]!) {
            phase1.push(
              conn().encodeCommand("recipient-stanza", [String(wireIndex), st.type, ...st.args], st.body),
            );
          }
        });
        phase1.push(conn().encodeCommand("done", []));
        proc.write(...phase1);
        // Phase 2 [plugin, bi-directional].
        const stanzaErrors = new Map<number, NixsealError>();
        for (;;) {
          const s = await session.read();
          if (s.type === "done") break;
          switch (s.type) {
            case "file-key": {
              const wireIndex = parseIndex(s.args[0]);
              if (s.args.length !== 1 || wireIndex === null || wireIndex >= sent.length) {
                wipe(s.body);
                throw proc.protocolError("a file-key has a wrong file index");
              }
              const result = results[sent[wireIndex]!]!;
              if (result.fileKey !== null) {
                wipe(s.body);
                throw proc.protocolError("it sent two file keys for one file");
              }
              if (s.body.length !== FILE_KEY_SIZE) {
                wipe(s.body);
                throw proc.protocolError(`a file key is ${s.body.length} bytes, not ${FILE_KEY_SIZE}`);
              }
              result.fileKey = s.body;
              proc.send("ok");
              break;
            }
            case "error": {
              const fileIndex = s.args[0] === "stanza" && s.args.length === 3 ? parseIndex(s.args[1]) : null;
              if (fileIndex !== null && parseIndex(s.args[2]) !== null && fileIndex < sent.length) {
                const text = conn().sanitizePluginText(s.body) || "(no message)";
                stanzaErrors.set(
                  fileIndex,
                  new NixsealError(
                    "AGE_PLUGIN",
                    `${pluginBinaryName(this.plugin)}: invalid recipient stanza ${s.args[2]}: ${text}`,
                    {
                      hint: "the file is damaged, or was encrypted with an incompatible version of the plugin",
                    },
                  ),
                );
                session.sawError = true;
                proc.send("ok");
              } else {
                session.pluginError(s, (args) => this.describeError(args));
              }
              break;
            }
            default:
              await session.interact(s);
          }
        }
        const reported = session.reportedErrors();
        if (reported !== null) throw reported;
        for (const [wireIndex, error] of stanzaErrors) {
          const result = results[sent[wireIndex]!]!;
          // age-plugin spec: an invalid stanza makes that file's header invalid.
          wipe(result.fileKey);
          result.fileKey = null;
          result.error = error;
        }
      });
    } catch (e) {
      for (const r of results) wipe(r.fileKey);
      throw e;
    }
    return results;
  }

  private describeError(args: string[]): { what: string; hint: string } | null {
    const binary = pluginBinaryName(this.plugin);
    const index = parseIndex(args[1]);
    if (args[0] === "identity" && args.length === 2 && index !== null) {
      return {
        what: `identity ${index}`,
        hint: `check the identity, and that what ${binary} needs (a device, a service) is available`,
      };
    }
    if (args[0] === "internal" && args.length === 1) {
      return { what: "internal error", hint: `see the documentation of ${binary}` };
    }
    return null;
  }
}

// --- grouping -------------------------------------------------------------------------------------

/** Groups key strings by plugin name, keeping the order of first appearance; drops duplicates. */
function groupByPlugin(
  strings: readonly string[],
  accept: (s: string) => { plugin: string; kind: "recipient" | "identity" },
): Map<string, { recipients: string[]; identities: string[] }> {
  const groups = new Map<string, { recipients: string[]; identities: string[] }>();
  for (const s of strings) {
    const { plugin, kind } = accept(s);
    let g = groups.get(plugin);
    if (g === undefined) {
      g = { recipients: [], identities: [] };
      groups.set(plugin, g);
    }
    const list = kind === "recipient" ? g.recipients : g.identities;
    if (!list.includes(s)) list.push(s);
  }
  return groups;
}

/**
 * Plugin recipients, one Recipient per plugin name: `age1<name>1...` recipients, and
 * `AGE-PLUGIN-<NAME>-1...` identities to encrypt to (sent as add-identity). Throws
 * AGE_RECIPIENT for a string that is neither. The plugin program is looked up when used.
 */
export function pluginRecipients(
  strings: readonly string[],
  ui: PluginUI,
  options: PluginOptions = {},
): PluginRecipient[] {
  const groups = groupByPlugin(strings, (s) => {
    const k = parsePluginKey(s);
    if (k === null) {
      throw new NixsealError("AGE_RECIPIENT", `not a plugin recipient (${s.length} characters)`, {
        hint: "a plugin recipient looks like age1<name>1...",
      });
    }
    wipe(k.data);
    return k;
  });
  return [...groups].map(
    ([plugin, g]) => new PluginRecipient(plugin, g.recipients, g.identities, ui, options),
  );
}

/**
 * Plugin identities, one Identity per plugin name (all of its identities go to one process).
 * Throws AGE_IDENTITY for a string that is not `AGE-PLUGIN-<NAME>-1...` (without repeating it).
 */
export function pluginIdentities(
  strings: readonly string[],
  ui: PluginUI,
  options: PluginOptions = {},
): PluginIdentity[] {
  const groups = groupByPlugin(strings, (s) => {
    const k = parsePluginKey(s);
    if (k !== null) wipe(k.data);
    if (k === null || k.kind !== "identity") {
      throw new NixsealError("AGE_IDENTITY", "not a plugin identity (AGE-PLUGIN-<NAME>-1...)", {
        hint: "check the identity file",
      });
    }
    return k;
  });
  return [...groups].map(([plugin, g]) => new PluginIdentity(plugin, g.identities, ui, options));
}

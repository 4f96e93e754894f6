/**
 * Talking to the user at the terminal: passphrases (from /dev/tty, as age does, so piped
 * stdin/stdout keep working) or, for scripts, from the file named by NIXSEAL_PASSPHRASE_FILE.
 */
import { createRequire } from "node:module";
import type * as Tty from "node:tty";
import type { Options as ReadOptions } from "read";
import { nonInteractivePluginUI, type PluginUI } from "../age/index.js";
import { nodeFs as fs, ioError, NixsealError } from "../common/index.js";
import { sanitize } from "./report.js";

const MAX_PASSPHRASE_FILE = 64 * 1024;

/** The `read` package's prompt, loaded when a prompt is shown (most runs never show one). */
async function read(options: ReadOptions): Promise<string> {
  const mod = await import("read");
  return mod.read(options);
}

/** node:tty, loaded when a terminal is opened: it loads node:net and its streams. */
let ttyModule: typeof Tty | undefined;

/** Opens the controlling terminal, or null when there is none (CI, cron, systemd). */
function openTty(): { input: Tty.ReadStream; output: Tty.WriteStream; close(): void } | null {
  let rfd: number;
  let wfd: number;
  try {
    rfd = fs.openSync("/dev/tty", "r");
    wfd = fs.openSync("/dev/tty", "w");
  } catch {
    return null;
  }
  ttyModule ??= createRequire(import.meta.url)("node:tty") as typeof Tty;
  const tty = ttyModule;
  if (!tty.isatty(rfd)) {
    fs.closeSync(rfd);
    fs.closeSync(wfd);
    return null;
  }
  const input = new tty.ReadStream(rfd);
  const output = new tty.WriteStream(wfd);
  return {
    input,
    output,
    close() {
      input.setRawMode?.(false);
      input.destroy();
      output.destroy();
    },
  };
}

export function hasTerminal(): boolean {
  const t = openTty();
  t?.close();
  return t !== null;
}

/** Reads NIXSEAL_PASSPHRASE_FILE: its content less one trailing newline. */
function passphraseFromFile(file: string): Uint8Array {
  let data: Buffer;
  try {
    const st = fs.statSync(file);
    if (st.size > MAX_PASSPHRASE_FILE) {
      throw new NixsealError("AGE_PASSPHRASE", `NIXSEAL_PASSPHRASE_FILE ${file} is too large`, {
        hint: "it must hold just the passphrase",
      });
    }
    data = fs.readFileSync(file);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read the passphrase file", file, e);
  }
  let end = data.length;
  if (end > 0 && data[end - 1] === 0x0a) end--;
  if (end > 0 && data[end - 1] === 0x0d) end--;
  const pass = Uint8Array.from(data.subarray(0, end));
  data.fill(0);
  if (pass.length === 0) {
    throw new NixsealError("AGE_PASSPHRASE", `NIXSEAL_PASSPHRASE_FILE ${file} is empty`, {
      hint: "write the passphrase into the file",
    });
  }
  return pass;
}

async function promptHidden(t: NonNullable<ReturnType<typeof openTty>>, prompt: string): Promise<string> {
  return String(await read({ prompt, silent: true, replace: "", input: t.input, output: t.output }));
}

/**
 * Asks for a passphrase. `confirm` asks twice (for encryption). JS strings can't be wiped, so
 * the typed text is turned into bytes at once and the string dropped.
 */
export async function askPassphrase(what: string, options: { confirm?: boolean } = {}): Promise<Uint8Array> {
  const file = process.env.NIXSEAL_PASSPHRASE_FILE;
  if (file) return passphraseFromFile(file);
  const t = openTty();
  if (t === null) {
    throw new NixsealError("AGE_PASSPHRASE", `a passphrase is needed for ${what}, but there is no terminal`, {
      hint: "run in a terminal, or set NIXSEAL_PASSPHRASE_FILE to a file holding the passphrase",
    });
  }
  try {
    const first = await promptHidden(t, `Enter passphrase for ${what}: `);
    if (first.length === 0) {
      throw new NixsealError("AGE_PASSPHRASE", "the passphrase is empty", { hint: "type a passphrase" });
    }
    if (options.confirm) {
      const second = await promptHidden(t, "Confirm passphrase: ");
      if (second !== first) {
        throw new NixsealError("AGE_PASSPHRASE", "the passphrases didn't match", { hint: "try again" });
      }
    }
    return Buffer.from(first, "utf8");
  } finally {
    t.close();
  }
}

/** Asks a yes/no question at the terminal (plugins' confirm). */
export async function askConfirm(prompt: string, yes: string, no?: string): Promise<boolean> {
  const t = openTty();
  if (t === null) {
    throw new NixsealError("AGE_PLUGIN", "a plugin asks for confirmation, but there is no terminal", {
      hint: "run in a terminal",
    });
  }
  try {
    const choices = no ? `[1] ${yes} / [2] ${no}` : `[1] ${yes}`;
    const answer = String(await read({ prompt: `${prompt} ${choices}: `, input: t.input, output: t.output }));
    return answer.trim() === "1" || answer.trim().toLowerCase() === yes.toLowerCase();
  } finally {
    t.close();
  }
}

/**
 * Shows `prompt` at the terminal and waits for Enter. False without a terminal (scripts), so the
 * caller goes on without waiting.
 */
export async function waitForEnter(prompt: string): Promise<boolean> {
  const t = openTty();
  if (t === null) return false;
  try {
    await read({ prompt, input: t.input, output: t.output });
    return true;
  } finally {
    t.close();
  }
}

/** Reads a visible value at the terminal (plugins' request-public). */
export async function askValue(prompt: string, secret: boolean): Promise<string> {
  const t = openTty();
  if (t === null) {
    throw new NixsealError("AGE_PLUGIN", "a plugin asks for input, but there is no terminal", {
      hint: "run in a terminal",
    });
  }
  try {
    return String(
      await read({ prompt: `${prompt} `, silent: secret, replace: "", input: t.input, output: t.output }),
    );
  } finally {
    t.close();
  }
}

/** Shows a message on the terminal (or stderr without one). */
export function tellUser(message: string): void {
  process.stderr.write(`${sanitize(message)}\n`);
}

const terminalPluginUI: PluginUI = {
  displayMessage(plugin, message) {
    tellUser(`age-plugin-${plugin}: ${message}`);
  },
  requestValue(plugin, prompt, secret) {
    return askValue(`age-plugin-${plugin}: ${prompt}`, secret);
  },
  confirm(plugin, prompt, yes, no) {
    return askConfirm(`age-plugin-${plugin}: ${prompt}`, yes, no);
  },
  waitTimer(plugin) {
    tellUser(`waiting on age-plugin-${plugin}...`);
  },
};

/**
 * How plugins talk to the user: at /dev/tty (stdin may be the ciphertext), or, without a
 * terminal, the non-interactive UI whose prompts fail with a clear error. Which one is decided
 * when a plugin first asks: opening the terminal to find out costs start-up time (Node's tty
 * streams), and most runs use no plugin.
 */
export function pluginUI(): PluginUI {
  let chosen: PluginUI | undefined;
  const ui = () => {
    chosen ??= hasTerminal() ? terminalPluginUI : nonInteractivePluginUI;
    return chosen;
  };
  return {
    displayMessage: (plugin, message) => ui().displayMessage(plugin, message),
    requestValue: (plugin, prompt, secret) => ui().requestValue(plugin, prompt, secret),
    confirm: (plugin, prompt, yes, no) => ui().confirm(plugin, prompt, yes, no),
    waitTimer: (plugin) => ui().waitTimer?.(plugin),
  };
}

/**
 * Asks a generator's prompt at the terminal: one line, or (multiline types) lines until one
 * holding only "."; hidden types are not echoed. The answer becomes bytes at once. Null without a
 * terminal.
 */
export async function askGeneratorPrompt(
  label: string,
  type: "hidden" | "line" | "multiline" | "multiline-hidden",
): Promise<Uint8Array | null> {
  const t = openTty();
  if (t === null) return null;
  const silent = type === "hidden" || type === "multiline-hidden";
  const ask = async (prompt: string) =>
    String(await read({ prompt, silent, replace: "", input: t.input, output: t.output }));
  try {
    if (type === "hidden" || type === "line") return Buffer.from(await ask(`${sanitize(label)}: `), "utf8");
    t.output.write(`${sanitize(label)} (end with a line holding only "."):\n`);
    const lines: string[] = [];
    for (;;) {
      const line = await ask("");
      if (line === ".") break;
      lines.push(line);
    }
    return Buffer.from(lines.map((l) => `${l}\n`).join(""), "utf8");
  } finally {
    t.close();
  }
}

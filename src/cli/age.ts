/**
 * `nixseal age`: a drop-in for the age command (same flags, stdin/stdout behaviour and exit
 * codes as age 1.x). Streams with bounded memory; -o writes atomically.
 */
import { createRequire } from "node:module";
import {
  AgeDecryptor,
  AgeEncryptor,
  type Identity,
  type Recipient,
  ScryptIdentity,
  ScryptRecipient,
  type Stanza,
} from "../age/index.js";
import {
  AtomicFile,
  nodeFs as fs,
  ioError,
  NixsealError,
  readSome,
  wipe,
  writeAllSync,
} from "../common/index.js";
import {
  type KeyContext,
  loadIdentities,
  loadIdentitiesAsRecipients,
  loadRecipients,
} from "../keys/index.js";
import { parse } from "./args.js";
import type { Command } from "./main.js";
import { askPassphrase, hasTerminal, pluginUI } from "./terminal.js";
import { version } from "./version.js";

/** node:tty, loaded only to ask whether encryption's output is a terminal (it loads node:net). */
function isTerminal(fd: number): boolean {
  return (createRequire(import.meta.url)("node:tty") as typeof import("node:tty")).isatty(fd);
}

const HELP = `Usage:
    nixseal age [--encrypt] (-r RECIPIENT | -R PATH)... [--armor] [-o OUTPUT] [INPUT]
    nixseal age [--encrypt] --passphrase [--armor] [-o OUTPUT] [INPUT]
    nixseal age --decrypt [-i PATH]... [-o OUTPUT] [INPUT]

Options:
    -e, --encrypt               Encrypt the input to the output. Default if omitted.
    -d, --decrypt               Decrypt the input to the output.
    -o, --output OUTPUT         Write the result to the file at path OUTPUT (atomically).
    -a, --armor                 Encrypt to a PEM encoded format.
    -p, --passphrase            Encrypt with a passphrase.
    -r, --recipient RECIPIENT   Encrypt to the specified RECIPIENT. Can be repeated.
    -R, --recipients-file PATH  Encrypt to recipients listed at PATH. Can be repeated.
    -i, --identity PATH         Use the identity file at PATH. Can be repeated.

INPUT defaults to standard input, and OUTPUT defaults to standard output.
If OUTPUT exists, it is replaced only once the operation has succeeded.

RECIPIENT can be an age public key (age1...), a post-quantum one (age1pq1...), a plugin
recipient (age1<plugin>1...), or an SSH public key ("ssh-ed25519 AAAA...", "ssh-rsa AAAA...").
PATH is a file with one recipient per line; empty lines and "#" comments are ignored.

Identity files hold AGE-SECRET-KEY-1... lines, plugin identities, or an SSH private key
(passphrase-protected keys are asked for at the terminal, once). With -e, identities are
also used as recipients. Passphrases come from the terminal, or from the file named by
NIXSEAL_PASSPHRASE_FILE for scripts.

Example:
    $ nixseal age-keygen -o key.txt
    Public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    $ tar cvz ~/data | nixseal age -r age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p > data.tar.gz.age
    $ nixseal age --decrypt -i key.txt -o data.tar.gz data.tar.gz.age

Exit codes: 0 success, 1 any error (as age).
`;

const OPTIONS = {
  encrypt: { type: "boolean", short: "e" },
  decrypt: { type: "boolean", short: "d" },
  output: { type: "string", short: "o" },
  armor: { type: "boolean", short: "a" },
  passphrase: { type: "boolean", short: "p" },
  recipient: { type: "string", short: "r", multiple: true },
  "recipients-file": { type: "string", short: "R", multiple: true },
  identity: { type: "string", short: "i", multiple: true },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

/**
 * Reads of 2 MiB. A read then holds fewer than two of the payload engine's batches (31 whole
 * chunks: the last one is held back in case it is the final chunk), so the engine seals or opens
 * it on this thread and never starts its worker threads, while the next read runs on libuv's
 * thread pool (pump). Measured on 1 GiB on 2 cores (interleaved, medians), against 8 MiB reads
 * with a worker thread: encryption 620 against 740 ms wall and 830 against 1130 ms CPU time
 * (`age` 690), decryption 640 against 770 ms wall (`age` 1060). The worker's start, its
 * messages and the larger buffers' page faults (~11 µs each here) cost more than the second
 * core gave. The two read buffers live in shared memory; their pages are only touched as far as
 * the input goes, so a small file costs no more.
 */
const READ_SIZE = 2 * 1024 * 1024;
/**
 * The first read is small: decryption copies everything up to the end of the header out of the
 * read buffer (to parse it, and to tell armor from binary), which for a full first read is a
 * whole read's worth copied three times into fresh memory; the payload after it is read in
 * place.
 */
const FIRST_READ_SIZE = 64 * 1024;

/**
 * Output buffers at least this large are freed as soon as they are written (see release()):
 * larger than Node's 8 KiB Buffer pool slabs, so a pooled slice is never taken for a whole one.
 */
const RELEASE_MIN = 16 * 1024;

/**
 * Frees written output buffers at once instead of leaving them to the garbage collector. Every
 * 64 KiB chunk the payload engine makes is a fresh buffer from node:crypto; collected only
 * every few hundred MiB, they grow the heap by that much, and a 1 GiB file pays ~40k page faults
 * and cold caches for it (~40% of the CPU time of an encryption). Freed here, the next chunk
 * reuses the memory, still in cache. Only a buffer that is the whole of its own ArrayBuffer is
 * freed (detached): the engine hands those over and keeps no reference to them.
 */
function release(parts: readonly Uint8Array[]): void {
  for (const p of parts) {
    const ab = p.buffer;
    if (
      p.byteLength >= RELEASE_MIN &&
      p.byteOffset === 0 &&
      ab.byteLength === p.byteLength &&
      ab instanceof ArrayBuffer
    ) {
      free(ab);
    }
  }
}

/** Detaches an ArrayBuffer, which frees its memory now (ES2024 ArrayBuffer.prototype.transfer). */
function free(ab: ArrayBuffer): void {
  (ab as ArrayBuffer & { transfer(length: number): ArrayBuffer }).transfer(0);
}

/**
 * Keeps freed memory in the process for the next chunks. Freed output buffers come back a read's
 * worth (up to 8 MiB) at a time, and glibc's malloc gives free memory at the top of a heap back to
 * the kernel as soon as it passes its trim threshold (128 KiB at first), so every read would
 * fault its output memory in again (for encryption on worker threads, 50k-180k page faults per
 * GiB). Freeing one block larger than the mmap threshold raises both thresholds for the rest of
 * the process (mallopt(3), "dynamic mmap threshold": the trim threshold becomes twice the size of
 * the freed block, here 48 MiB). Costs one mmap and munmap of untouched memory; with another
 * allocator it does nothing.
 */
function keepFreedMemory(): void {
  free(Buffer.allocUnsafeSlow(24 * 1024 * 1024).buffer as ArrayBuffer);
}

function usageError(message: string, hint?: string): NixsealError {
  return new NixsealError("USAGE", message, { hint: hint ?? "run 'nixseal age --help' for usage" });
}

/** Refuses to run with an scrypt file when identities were given, as age does. */
class ScryptGuard implements Identity {
  /** Not a real identity: left out of "tried: ..." lists. */
  readonly description = "";
  unwrapFileKey(stanzas: readonly Stanza[]): null {
    if (stanzas.some((s) => s.type === "scrypt")) {
      throw usageError(
        "file is passphrase-encrypted but identities were specified with -i/--identity",
        "remove all -i/--identity flags to decrypt passphrase-encrypted files",
      );
    }
    return null;
  }
}

/** With no -i: the file must be passphrase-encrypted; asks for the passphrase then. */
class PassphrasePrompt implements Identity {
  readonly description = "passphrase";
  async unwrapFileKey(stanzas: readonly Stanza[]): Promise<Uint8Array | null> {
    if (!stanzas.some((s) => s.type === "scrypt")) {
      throw usageError(
        "the file is not passphrase-encrypted, identities are required",
        "specify identities with -i/--identity",
      );
    }
    const pass = await askPassphrase("the encrypted file");
    const id = new ScryptIdentity(pass);
    wipe(pass);
    try {
      return id.unwrapFileKey(stanzas);
    } finally {
      id.wipe();
    }
  }
}

function keyContext(): KeyContext {
  return { passphrase: (what) => askPassphrase(what), pluginUI: pluginUI() };
}

function openInput(name: string | undefined): number {
  if (name === undefined || name === "-") return 0;
  try {
    return fs.openSync(name, "r");
  } catch (e) {
    throw ioError("open input file", name, e);
  }
}

interface Sink {
  write(parts: readonly Uint8Array[]): void;
  commit(): void;
  abort(): void;
}

function openOutput(name: string | undefined, mode: number): Sink {
  if (name === undefined || name === "-") {
    return {
      write: (parts) => {
        try {
          writeAllSync(1, parts);
        } catch (e) {
          throw ioError("write", "standard output", e);
        }
      },
      commit: () => {},
      abort: () => {},
    };
  }
  // Devices and pipes (-o /dev/null, a FIFO) are written directly: there is nothing to replace.
  let special = false;
  try {
    special = !fs.statSync(name).isFile();
  } catch {}
  if (special) {
    let fd: number;
    try {
      fd = fs.openSync(name, fs.constants.O_WRONLY);
    } catch (e) {
      throw ioError("open output file", name, e);
    }
    return {
      write: (parts) => {
        try {
          writeAllSync(fd, parts);
        } catch (e) {
          throw ioError("write", name, e);
        }
      },
      commit: () => fs.closeSync(fd),
      abort: () => fs.closeSync(fd),
    };
  }
  const f = AtomicFile.open(name, mode);
  return { write: (parts) => f.write(parts), commit: () => f.commit(), abort: () => f.abort() };
}

/**
 * Reads the input into `push` and writes what comes out. From a regular file, reads are
 * double-buffered: the next read runs (on libuv's thread pool) while the current block is
 * processed, so push() must be done with its input when it returns. Pipes and terminals are read
 * one block at a time, so that an error is reported at once, not after the next read.
 */
async function pump(
  input: number,
  push: (chunk: Buffer, out: Buffer[]) => void | Promise<void>,
  sink: Sink,
): Promise<void> {
  const buffers = [
    Buffer.from(new SharedArrayBuffer(READ_SIZE)),
    Buffer.from(new SharedArrayBuffer(READ_SIZE)),
  ];
  const used = [0, 0];
  const read = async (i: number, size = READ_SIZE): Promise<number> => {
    try {
      const n = await readSome(input, buffers[i]!.subarray(0, size));
      used[i] = Math.max(used[i]!, n);
      return n;
    } catch (e) {
      throw ioError("read", input === 0 ? "standard input" : "the input file", e);
    }
  };
  keepFreedMemory();
  let readAhead = false;
  try {
    readAhead = fs.fstatSync(input).isFile();
  } catch {}
  const out: Buffer[] = [];
  let current = 0;
  let pending: Promise<number> | null = read(current, FIRST_READ_SIZE);
  try {
    for (;;) {
      const n = await pending;
      pending = null;
      if (n === 0) return;
      const chunk = buffers[current]!.subarray(0, n);
      if (readAhead) {
        current ^= 1;
        pending = read(current);
      }
      out.length = 0;
      await push(chunk, out);
      if (out.length > 0) {
        sink.write(out);
        release(out);
      }
      pending ??= read(current);
    }
  } finally {
    // A read still running must end before its buffer and the descriptor go away.
    await pending?.catch(() => 0);
    // The buffers may hold plaintext (when encrypting).
    buffers[0]!.fill(0, 0, used[0]);
    buffers[1]!.fill(0, 0, used[1]);
  }
}

async function encryptCommand(values: Values, input: string | undefined): Promise<void> {
  const ctx = keyContext();
  let recipients: Recipient[];
  if (values.passphrase) {
    const pass = await askPassphrase("the new file", { confirm: true });
    recipients = [new ScryptRecipient(pass)];
    wipe(pass);
  } else {
    recipients = loadRecipients({ strings: values.recipient, files: values["recipients-file"] }, ctx);
    if (values.identity?.length) recipients.push(...(await loadIdentitiesAsRecipients(values.identity, ctx)));
  }
  const out = values.output;
  if ((out === undefined || out === "-") && !values.armor && isTerminal(1)) {
    throw usageError("refusing to output binary to the terminal", "did you mean to use -a/--armor?");
  }
  const enc = new AgeEncryptor(recipients, { armor: values.armor === true });
  const first: Buffer[] = [];
  await enc.start(first); // recipients run (plugins, prompts) before any output exists
  const fd = openInput(input);
  const sink = openOutput(out, 0o666);
  try {
    sink.write(first);
    await pump(fd, (chunk, o) => enc.push(chunk, o), sink);
    const tail: Buffer[] = [];
    enc.finish(tail);
    sink.write(tail);
    sink.commit();
  } catch (e) {
    sink.abort();
    enc.destroy();
    throw e;
  } finally {
    if (fd !== 0) fs.closeSync(fd);
    for (const r of recipients) (r as { wipe?: () => void }).wipe?.();
  }
}

async function decryptCommand(values: Values, input: string | undefined): Promise<void> {
  const identities: Identity[] = values.identity?.length
    ? [new ScryptGuard(), ...(await loadIdentities(values.identity, keyContext()))]
    : [new PassphrasePrompt()];
  const fd = openInput(input);
  // Plaintext output files are created 0600 with their final mode.
  const sink = openOutput(values.output, 0o600);
  const dec = new AgeDecryptor(identities);
  try {
    await pump(fd, (chunk, o) => dec.push(chunk, o), sink);
    const tail: Buffer[] = [];
    await dec.finish(tail);
    sink.write(tail);
    sink.commit();
  } catch (e) {
    sink.abort();
    dec.destroy();
    throw e instanceof NixsealError && input && input !== "-" ? e.withFile(input) : e;
  } finally {
    if (fd !== 0) fs.closeSync(fd);
  }
}

type Values = ReturnType<typeof parseAgeArgs>["values"];
function parseAgeArgs(argv: string[]) {
  return parse(argv, OPTIONS, "run 'nixseal age --help' for usage");
}

export const command: Command = {
  name: "age",
  errorExitCode: 1,
  async run(argv) {
    const { values, positionals } = parseAgeArgs(argv);
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (values.version) {
      process.stdout.write(`${version()}\n`);
      return 0;
    }
    if (positionals.length > 1) {
      throw usageError(
        `too many INPUT arguments: ${positionals.map((p) => JSON.stringify(p)).join(" ")}`,
        "only one input file; put flags before it (-o/--output, -r/--recipient, ...)",
      );
    }
    const input = positionals[0];
    if (values.decrypt) {
      if (values.encrypt) throw usageError("-e/--encrypt can't be used with -d/--decrypt");
      if (values.armor) {
        throw usageError(
          "-a/--armor can't be used with -d/--decrypt",
          "note that armored files are detected automatically, try again without -a/--armor",
        );
      }
      if (values.passphrase) {
        throw usageError(
          "-p/--passphrase can't be used with -d/--decrypt",
          "note that password protected files are detected automatically",
        );
      }
      if (values.recipient?.length) {
        throw usageError(
          "-r/--recipient can't be used with -d/--decrypt",
          "did you mean to use -i/--identity?",
        );
      }
      if (values["recipients-file"]?.length) {
        throw usageError(
          "-R/--recipients-file can't be used with -d/--decrypt",
          "did you mean to use -i/--identity?",
        );
      }
      await decryptCommand(values, input);
      return 0;
    }
    const hasRecipients = (values.recipient?.length ?? 0) + (values["recipients-file"]?.length ?? 0) > 0;
    if (values.identity?.length && !values.encrypt) {
      throw usageError(
        "-i/--identity can't be used in encryption mode unless symmetric encryption is explicitly selected with -e/--encrypt",
        "did you forget to specify -d/--decrypt?",
      );
    }
    if (!values.passphrase && !hasRecipients && !values.identity?.length) {
      throw usageError(
        "missing recipients",
        "did you forget to specify -r/--recipient, -R/--recipients-file or -p/--passphrase?",
      );
    }
    if (values.passphrase && hasRecipients) throw usageError("-p/--passphrase can't be combined with -r/-R");
    if (values.passphrase && values.identity?.length)
      throw usageError("-p/--passphrase can't be combined with -i/--identity");
    if (values.passphrase && !process.env.NIXSEAL_PASSPHRASE_FILE && !hasTerminal()) {
      throw new NixsealError("AGE_PASSPHRASE", "-p/--passphrase needs a terminal to ask for the passphrase", {
        hint: "run in a terminal, or set NIXSEAL_PASSPHRASE_FILE to a file holding the passphrase",
      });
    }
    await encryptCommand(values, input);
    return 0;
  },
};

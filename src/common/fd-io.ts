/**
 * Plain file-descriptor I/O for streaming large files with bounded memory. Works with files,
 * pipes and terminals; retries EAGAIN for descriptors a parent left in non-blocking mode.
 */
import { nodeFs as fs } from "./node-fs.js";

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function pause(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

function isAgain(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "EAGAIN" || code === "EWOULDBLOCK";
}

/** Reads up to buf.length bytes; returns 0 at end of file. */
export async function readSome(fd: number, buf: Buffer): Promise<number> {
  for (;;) {
    try {
      return await new Promise<number>((resolve, reject) =>
        fs.read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))),
      );
    } catch (e) {
      if (!isAgain(e)) throw e;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

/** Fills buf as far as the input goes; returns the number of bytes read (< length only at EOF). */
export async function readFull(fd: number, buf: Buffer): Promise<number> {
  let n = 0;
  while (n < buf.length) {
    const r = await readSome(fd, buf.subarray(n));
    if (r === 0) break;
    n += r;
  }
  return n;
}

/** Reads a whole descriptor, refusing more than maxBytes (hostile or mistaken input). */
export async function readAll(fd: number, maxBytes: number): Promise<Buffer | null> {
  const parts: Buffer[] = [];
  let total = 0;
  for (;;) {
    const buf = Buffer.allocUnsafe(64 * 1024);
    const n = await readSome(fd, buf);
    if (n === 0) break;
    total += n;
    if (total > maxBytes) {
      for (const p of parts) p.fill(0);
      return null;
    }
    parts.push(buf.subarray(0, n));
  }
  const all = Buffer.concat(parts);
  for (const p of parts) p.fill(0);
  return all;
}

/**
 * Reads the first `size` bytes of an open regular file (the size fstat gave), synchronously,
 * with positional reads: one read for most files, where readFileSync would fstat and read
 * again. Returns fewer bytes if the file is shorter by now.
 */
export function readAllSync(fd: number, size: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let n = 0;
  while (n < buf.length) {
    const r = fs.readSync(fd, buf, n, buf.length - n, n);
    if (r === 0) break;
    n += r;
  }
  return n === buf.length ? buf : buf.subarray(0, n);
}

/** Writes everything, synchronously, with writev for batches. */
export function writeAllSync(fd: number, data: Uint8Array | readonly Uint8Array[]): void {
  const parts: Uint8Array[] = data instanceof Uint8Array ? [data] : data.filter((d) => d.length > 0);
  while (parts.length > 0) {
    let n: number;
    try {
      n = parts.length === 1 ? fs.writeSync(fd, parts[0]!) : fs.writevSync(fd, parts.slice(0, 1024));
    } catch (e) {
      if (isAgain(e)) {
        pause(2);
        continue;
      }
      throw e;
    }
    // Drop what was written; keep the rest of a partially written part.
    while (n > 0 && parts.length > 0) {
      const first = parts[0]!;
      if (n >= first.length) {
        n -= first.length;
        parts.shift();
      } else {
        parts[0] = first.subarray(n);
        n = 0;
      }
    }
  }
}

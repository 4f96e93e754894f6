/**
 * A strict parser for Nix store derivations (`.drv` files), the ATerm text Nix writes:
 *
 *   Derive([outputs],[inputDrvs],[inputSrcs],"platform","builder",[args],[env])
 *
 * outputs   = ("name","path","hashAlgo","hash")       (hashAlgo/hash empty unless fixed-output)
 * inputDrvs = ("/nix/store/...drv",["out",...])
 * inputSrcs = "/nix/store/..."
 * env       = ("key","value")
 *
 * Strings are Nix's printString: `"` and `\` escaped, and \n \r \t written as escapes; every other
 * byte literally (Nix's parseString reads `\x` as x for any other x). The pre-build hook runs as
 * root on a file any user can make Nix write, so everything is bounded: the file size, list
 * lengths, and duplicates (two outputs or env keys of one name) are errors rather than "last wins".
 */
import * as fs from "node:fs";
import { NixsealError, readAllSync } from "../common/index.js";

/** Bigger .drv files exist (huge env strings), but not ones that ask for a secret. */
export const MAX_DRV_BYTES = 32 * 1024 * 1024;
/** Upper bound on any one list (outputs, inputs, args, env entries). */
export const MAX_DRV_LIST = 1 << 20;

export interface DerivationOutput {
  path: string;
  /** "" for input-addressed outputs; e.g. "sha256" or "r:sha256" (recursive) when fixed. */
  hashAlgo: string;
  /** "" unless fixed-output: the expected hash in base-16. */
  hash: string;
}

export interface Derivation {
  outputs: Map<string, DerivationOutput>;
  inputDrvs: Map<string, string[]>;
  inputSrcs: string[];
  platform: string;
  builder: string;
  args: string[];
  env: Map<string, string>;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function formatError(source: string, offset: number, what: string): NixsealError {
  return new NixsealError("DRV_FORMAT", `${source}: not a valid derivation at byte ${offset}: ${what}`, {
    file: source,
    hint: "the hook reads .drv files as Nix writes them (nix-instantiate); this file is damaged or not a .drv",
  });
}

class Reader {
  pos = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly source: string,
  ) {}

  fail(what: string): never {
    throw formatError(this.source, this.pos, what);
  }

  expect(text: string): void {
    for (let i = 0; i < text.length; i++) {
      if (this.buf[this.pos + i] !== text.charCodeAt(i)) this.fail(`expected "${text}"`);
    }
    this.pos += text.length;
  }

  peek(): number | undefined {
    return this.buf[this.pos];
  }

  string(): string {
    if (this.buf[this.pos] !== 0x22) this.fail("expected a string");
    this.pos++;
    const parts: Uint8Array[] = [];
    let start = this.pos;
    for (;;) {
      const c = this.buf[this.pos];
      if (c === undefined) this.fail("unterminated string");
      if (c === 0x22) break;
      if (c === 0x5c) {
        parts.push(this.buf.subarray(start, this.pos));
        const e = this.buf[this.pos + 1];
        if (e === undefined) this.fail("unterminated escape");
        const out = e === 0x6e ? 0x0a : e === 0x72 ? 0x0d : e === 0x74 ? 0x09 : e;
        parts.push(Uint8Array.of(out));
        this.pos += 2;
        start = this.pos;
        continue;
      }
      this.pos++;
    }
    parts.push(this.buf.subarray(start, this.pos));
    this.pos++; // closing quote
    const total = parts.reduce((n, p) => n + p.length, 0);
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      bytes.set(p, o);
      o += p.length;
    }
    try {
      return utf8.decode(bytes);
    } catch {
      this.fail("a string is not valid UTF-8");
    }
  }

  /** `[item,item,...]` */
  list<T>(item: () => T): T[] {
    this.expect("[");
    const out: T[] = [];
    if (this.peek() === 0x5d) {
      this.pos++;
      return out;
    }
    for (;;) {
      if (out.length >= MAX_DRV_LIST) this.fail("a list is too long");
      out.push(item());
      const c = this.peek();
      if (c === 0x2c) {
        this.pos++;
        continue;
      }
      if (c === 0x5d) {
        this.pos++;
        return out;
      }
      this.fail('expected "," or "]"');
    }
  }

  get atEnd(): boolean {
    return this.pos === this.buf.length;
  }
}

function isStorePathLike(s: string): boolean {
  return s.startsWith("/") && !s.includes("\0");
}

/** Parses the bytes of a .drv file. `source` names it in errors. */
export function parseDerivation(bytes: Uint8Array, source: string): Derivation {
  if (bytes.length > MAX_DRV_BYTES) {
    throw new NixsealError("DRV_FORMAT", `${source}: derivation larger than ${MAX_DRV_BYTES} bytes`, {
      file: source,
      hint: "derivations that ask for a build secret are small; this one is refused",
    });
  }
  const r = new Reader(bytes, source);
  r.expect("Derive(");

  const outputs = new Map<string, DerivationOutput>();
  r.list(() => {
    r.expect("(");
    const name = r.string();
    r.expect(",");
    const path = r.string();
    r.expect(",");
    const hashAlgo = r.string();
    r.expect(",");
    const hash = r.string();
    r.expect(")");
    if (name === "" || outputs.has(name)) r.fail(`duplicate or empty output name "${name}"`);
    if (path !== "" && !isStorePathLike(path)) r.fail(`output "${name}" has no absolute path`);
    outputs.set(name, { path, hashAlgo, hash });
  });
  if (outputs.size === 0) r.fail("a derivation has at least one output");
  r.expect(",");

  const inputDrvs = new Map<string, string[]>();
  r.list(() => {
    r.expect("(");
    const p = r.string();
    r.expect(",");
    const outs = r.list(() => r.string());
    r.expect(")");
    if (!isStorePathLike(p) || inputDrvs.has(p)) r.fail(`bad or duplicate input derivation "${p}"`);
    inputDrvs.set(p, outs);
  });
  r.expect(",");

  const inputSrcs = r.list(() => {
    const p = r.string();
    if (!isStorePathLike(p)) r.fail(`input source "${p}" is not an absolute path`);
    return p;
  });
  r.expect(",");
  const platform = r.string();
  r.expect(",");
  const builder = r.string();
  r.expect(",");
  const args = r.list(() => r.string());
  r.expect(",");

  const env = new Map<string, string>();
  r.list(() => {
    r.expect("(");
    const k = r.string();
    r.expect(",");
    const v = r.string();
    r.expect(")");
    if (env.has(k)) r.fail(`duplicate environment variable "${k}"`);
    env.set(k, v);
  });
  r.expect(")");
  if (!r.atEnd) r.fail("trailing data after the derivation");
  return { outputs, inputDrvs, inputSrcs, platform, builder, args, env };
}

/**
 * Reads and parses a .drv file. A missing file is an IO error (remote builds: the hook may run
 * before the .drv exists); symlinks and non-regular files are refused.
 */
export function readDerivationFile(file: string): Derivation {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    throw new NixsealError(
      "IO",
      `cannot read derivation ${file}: ${errno === "ENOENT" ? "no such file" : (errno ?? "I/O error")}`,
      {
        file,
        hint: "the pre-build hook needs the .drv on this machine (remote builders need their own hook)",
        cause: e,
      },
    );
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      throw new NixsealError("DRV_FORMAT", `${file} is not a regular file`, {
        file,
        hint: "pass the path of a .drv file in the Nix store",
      });
    }
    if (st.size > MAX_DRV_BYTES) return parseDerivation(new Uint8Array(MAX_DRV_BYTES + 1), file);
    return parseDerivation(readAllSync(fd, st.size), file);
  } finally {
    fs.closeSync(fd);
  }
}

/** True when the derivation is fixed-output: exactly one output "out" with a hash. */
export function isFixedOutput(drv: Derivation): boolean {
  const out = drv.outputs.get("out");
  return drv.outputs.size === 1 && out !== undefined && out.hashAlgo !== "" && out.hash !== "";
}

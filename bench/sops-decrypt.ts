/**
 * sops-decrypt: one sops YAML file holding 10 000 values (100 services × 100 keys, 8-64 random
 * characters each, a comment per service), encrypted to one X25519 identity, decrypted by
 * `nixseal decrypt FILE -i IDENTITY -o OUT`, the command users run: data key, every value, the
 * MAC, the plaintext written out. Start-up included. Target: 0.3 s. There is no sops binary on
 * the benchmark machine, so there is no anchor in the same run.
 */
import { randomBytes, randomInt } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { X25519Identity } from "../src/age/x25519.js";
import { encryptNewDocument, YamlStore } from "../src/sops/index.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  interleaved,
  previousLabel,
  scratchDir,
  which,
} from "./common.js";

/** A plaintext YAML document with `services × keys` string values. */
export function plainDocument(services: number, keys: number): string {
  let out = "";
  for (let s = 0; s < services; s++) {
    out += `# service ${s}\nservice_${String(s).padStart(3, "0")}:\n`;
    for (let k = 0; k < keys; k++) {
      const value = randomBytes(48).toString("base64url").slice(0, randomInt(8, 65));
      out += `    key_${String(k).padStart(3, "0")}: ${value}\n`;
    }
  }
  return out;
}

/** The benchmarks' sops file: its identity file, plaintext (as the store prints it) and file. */
export interface SopsFixture {
  services: number;
  keys: number;
  identity: X25519Identity;
  identityFile: string;
  /** The plaintext document as nixseal prints it (what decrypting the file gives). */
  expected: Buffer;
  sopsFile: string;
}

/** A sops YAML file of `services` × `keys` values in `dir`, encrypted to a new X25519 identity. */
export async function sopsFixture(dir: string, services = 100, keys = 100): Promise<SopsFixture> {
  const identity = X25519Identity.generate();
  const identityFile = path.join(dir, "keys.txt");
  fs.writeFileSync(identityFile, `${identity.encode()}\n`, { mode: 0o600 });
  const store = new YamlStore();
  const branches = store.parsePlain(Buffer.from(plainDocument(services, keys)));
  const expected = Buffer.from(store.emitPlain(branches));
  const sopsFile = path.join(dir, "secrets.yaml");
  fs.writeFileSync(
    sopsFile,
    await encryptNewDocument(branches, store, { keyGroups: [[identity.recipient().toString()]] }),
  );
  return { services, keys, identity, identityFile, expected, sopsFile };
}

export const sopsDecrypt: Benchmark = {
  name: "sops-decrypt",
  description: "a sops YAML file with 10 000 values decrypted by one nixseal process (no sops anchor)",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const { dir, remove } = scratchDir(ctx.scratch, "sops");
    try {
      const { services, keys, identityFile, expected, sopsFile } = await sopsFixture(dir);
      const outFile = path.join(dir, "out.yaml");
      ctx.log(`sops-decrypt: ${services * keys} values, ${fs.statSync(sopsFile).size} bytes encrypted`);
      // Without a sops binary, the anchor in the same run can only be a previous nixseal build.
      const previous = ctx.text("--previous");
      const previousOut = path.join(dir, "out-previous.yaml");
      const times = interleaved(ctx, [
        {
          name: "nixseal",
          argv: [...cliArgv(ctx.cli), "decrypt", sopsFile, "-i", identityFile, "-o", outFile],
        },
        ...(previous === undefined
          ? []
          : [
              {
                name: "previous",
                argv: [...cliArgv(previous), "decrypt", sopsFile, "-i", identityFile, "-o", previousOut],
              },
            ]),
      ]);
      if (!fs.readFileSync(outFile).equals(expected)) throw new Error("nixseal wrote a wrong plaintext");
      if (previous !== undefined && !fs.readFileSync(previousOut).equals(expected))
        throw new Error("the previous nixseal wrote a wrong plaintext");
      const sops = which("sops");
      return {
        title: `sops-decrypt: a sops YAML file with ${services * keys} values`,
        rows: [
          {
            name: `${services * keys} values, 1 age (X25519) key`,
            nixseal: times.get("nixseal")!,
            anchorName:
              previous !== undefined
                ? `the previous nixseal (${previousLabel(previous)})`
                : sops
                  ? "not measured"
                  : "sops (not installed)",
            anchor: previous !== undefined ? times.get("previous")! : null,
            target: "< 300 ms",
          },
        ],
        notes: [
          `One YAML file: ${services} mappings of ${keys} string values (8-64 characters) with a comment ` +
            `each (${Math.round(fs.statSync(sopsFile).size / 1024)} KiB encrypted), encrypted by nixseal ` +
            "to one X25519 recipient. nixseal: `nixseal decrypt FILE -i IDENTITY -o OUT` (start-up included) loads the identity " +
            "file, unwraps the data key, decrypts every value and comment, verifies the MAC and writes " +
            "the plaintext document to a file in a tmpfs; the output is checked.",
          "There is no sops binary on this machine, so the same file was not timed with `sops decrypt` " +
            "in the same run" +
            (previous !== undefined
              ? "; the anchor is a previous nixseal build decrypting the same file in the same rounds."
              : "."),
        ],
      };
    } finally {
      remove();
    }
  },
};

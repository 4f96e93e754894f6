/**
 * sops-write: the writes of a sops YAML file holding 10 000 values (the file of sops-decrypt.ts),
 * each by one nixseal process, start-up included, the command users run:
 * - `set`: one value changed (`nixseal set FILE PATH --string < VALUE`);
 * - `updatekeys`: a second age recipient added by .sops.yaml's creation rule;
 * - `edit`: one value changed by an editor (a script running sed on the plaintext file).
 * Each run starts from the same file (copied before it, untimed). Target: 0.3 s each. There is no
 * sops binary on the benchmark machine: the anchor is a previous nixseal build, in the same rounds.
 * `edit` and `set` have a floor (bench/edit-floor.ts: only the work such a write cannot skip),
 * timed in the same rounds.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { X25519Identity } from "../src/age/x25519.js";
import {
  type BenchContext,
  type Benchmark,
  type BenchResult,
  cliArgv,
  nodeFlagsOf,
  previousLabel,
  type ResultRow,
  rounds,
  type Step,
  scratchDir,
} from "./common.js";
import { sopsFixture } from "./sops-decrypt.js";

/** The value `set` and the editor write, and where (the 51st key of the 51st service). */
const NEW_VALUE = "a-new-value-written-by-the-benchmark";
const SERVICE = "service_050";
const KEY = "key_050";

/** `plain` with SERVICE's KEY set to NEW_VALUE (the document's own line). */
function withNewValue(plain: string): string {
  const at = plain.indexOf(`\n${SERVICE}:\n`);
  const line = plain.indexOf(`\n    ${KEY}: `, at) + 1;
  const end = plain.indexOf("\n", line);
  return `${plain.slice(0, line)}    ${KEY}: ${NEW_VALUE}${plain.slice(end)}`;
}

/** Lines of `a` not in `b` at the same place (both the same number of lines). */
function changedLines(a: string, b: string): string[] {
  const x = a.split("\n");
  const y = b.split("\n");
  if (x.length !== y.length) throw new Error("a write changed the number of lines of the file");
  return x.filter((l, i) => l !== y[i]);
}

/**
 * Checks that a write of one value changed only that value's line, the MAC and lastmodified
 * (the same second as the file it started from leaves lastmodified as it was): every other
 * value keeps its ciphertext.
 */
function onlyOneValueChanged(who: string, written: string, original: string): void {
  const changed = changedLines(written, original);
  const value = changed.filter((l) => l.startsWith(`    ${KEY}: `));
  const rest = changed.filter((l) => !/^ {4}(?:mac|lastmodified): /.test(l) && !value.includes(l));
  if (value.length !== 1 || !changed.some((l) => l.startsWith("    mac: ")) || rest.length > 0)
    throw new Error(`${who} changed other lines than the value, the MAC and lastmodified`);
}

/** bench/edit-floor.ts, built beside this file. */
const EDIT_FLOOR = fileURLToPath(new URL("./edit-floor.js", import.meta.url));

function sh(script: string): string[] {
  return ["/bin/sh", "-c", script];
}

function q(arg: string): string {
  return `'${arg.replace(/'/g, "'\\''")}'`;
}

export const sopsWrite: Benchmark = {
  name: "sops-write",
  description: "set, updatekeys and edit of a sops YAML file with 10 000 values, one nixseal process each",
  async run(ctx: BenchContext): Promise<BenchResult | null> {
    const { dir, remove } = scratchDir(ctx.scratch, "sops-write");
    try {
      const fixture = await sopsFixture(dir);
      const { services, keys, identityFile } = fixture;
      const id = fixture.identity;
      const added = X25519Identity.generate().recipient().toString();
      const expected = fixture.expected.toString("utf8");
      const original = fixture.sopsFile;
      const originalText = fs.readFileSync(original, "utf8");
      const config = path.join(dir, "sops.yaml");
      fs.writeFileSync(
        config,
        `creation_rules:\n  - path_regex: \\.yaml$\n    age: ${id.recipient().toString()},${added}\n`,
      );
      const valueFile = path.join(dir, "value");
      fs.writeFileSync(valueFile, NEW_VALUE);
      const editor = path.join(dir, "editor.sh");
      fs.writeFileSync(
        editor,
        `#!/bin/sh\nexec sed -i '/^${SERVICE}:/,/^service_/ s/^    ${KEY}: .*/    ${KEY}: ${NEW_VALUE}/' "$1"\n`,
        { mode: 0o755 },
      );
      ctx.log(`sops-write: ${services * keys} values, ${originalText.length} bytes encrypted`);

      const previous = ctx.text("--previous");
      const builds: [string, string][] = [["nixseal", ctx.cli]];
      if (previous !== undefined) builds.push(["previous", previous]);
      const steps: Step[] = [];
      const outputs = new Map<string, string>();
      const run = `cd ${q(dir)} && exec`;
      for (const [who, cli] of builds) {
        const file = (op: string) => {
          const f = path.join(dir, `${who}-${op}.yaml`);
          outputs.set(`${who} ${op}`, f);
          return f;
        };
        const fresh = (f: string) => () => fs.copyFileSync(original, f);
        const setFile = file("set");
        const updateFile = file("updatekeys");
        const editFile = file("edit");
        steps.push(
          {
            name: `${who} set`,
            prepare: fresh(setFile),
            argv: () =>
              sh(
                `${run} ${cliArgv(cli).map(q).join(" ")} set ${q(setFile)} '["${SERVICE}"]["${KEY}"]' --string -i ${q(identityFile)} < ${q(valueFile)}`,
              ),
            check: () => onlyOneValueChanged(`${who} set`, fs.readFileSync(setFile, "utf8"), originalText),
          },
          {
            name: `${who} updatekeys`,
            prepare: fresh(updateFile),
            argv: () =>
              sh(
                `${run} ${cliArgv(cli).map(q).join(" ")} updatekeys ${q(updateFile)} --config ${q(config)} -i ${q(identityFile)}`,
              ),
            check: () => {
              if (!fs.readFileSync(updateFile, "utf8").includes(added))
                throw new Error(`${who} updatekeys did not add the recipient`);
            },
          },
          {
            name: `${who} edit`,
            prepare: fresh(editFile),
            argv: () =>
              sh(
                `${run} env EDITOR=${q(editor)} ${cliArgv(cli).map(q).join(" ")} edit ${q(editFile)} -i ${q(identityFile)}`,
              ),
            check: () => onlyOneValueChanged(`${who} edit`, fs.readFileSync(editFile, "utf8"), originalText),
          },
        );
      }
      // The floors of edit and set (bench/edit-floor.ts), with this checkout's Node flags.
      const floor = [process.execPath, ...nodeFlagsOf(ctx.cli), EDIT_FLOOR].map(q).join(" ");
      const floorFile = path.join(dir, "floor-edit.yaml");
      const setFloorFile = path.join(dir, "floor-set.yaml");
      steps.push(
        {
          name: "edit floor",
          prepare: () => fs.copyFileSync(original, floorFile),
          argv: () => sh(`${run} env EDITOR=${q(editor)} ${floor} ${q(floorFile)} ${q(identityFile)}`),
          check: () => onlyOneValueChanged("edit floor", fs.readFileSync(floorFile, "utf8"), originalText),
        },
        {
          name: "set floor",
          prepare: () => fs.copyFileSync(original, setFloorFile),
          argv: () =>
            sh(
              `${run} ${floor} ${q(setFloorFile)} ${q(identityFile)} --set ${SERVICE} ${KEY} ${q(valueFile)}`,
            ),
          check: () => onlyOneValueChanged("set floor", fs.readFileSync(setFloorFile, "utf8"), originalText),
        },
      );
      const times = rounds(ctx, steps);

      // What the last runs wrote, decrypted by this build: the value changed, nothing else.
      const decrypted = (f: string) => {
        const r = spawnSync(
          process.execPath,
          [...cliArgv(ctx.cli).slice(1), "decrypt", f, "-i", identityFile],
          {
            encoding: "utf8",
          },
        );
        if (r.status !== 0) throw new Error(`decrypting ${f} failed: ${r.stderr}`);
        return r.stdout;
      };
      for (const [who] of builds) {
        if (decrypted(outputs.get(`${who} set`)!) !== withNewValue(expected))
          throw new Error(`${who} set wrote a wrong document`);
        if (decrypted(outputs.get(`${who} edit`)!) !== withNewValue(expected))
          throw new Error(`${who} edit wrote a wrong document`);
        if (decrypted(outputs.get(`${who} updatekeys`)!) !== expected)
          throw new Error(`${who} updatekeys changed the document`);
      }
      if (decrypted(floorFile) !== withNewValue(expected))
        throw new Error("the edit floor wrote a wrong document");
      if (decrypted(setFloorFile) !== withNewValue(expected))
        throw new Error("the set floor wrote a wrong document");

      const rows: ResultRow[] = ["set", "updatekeys", "edit"].map((op) => ({
        name: `${op}, ${services * keys} values`,
        nixseal: times.get(`nixseal ${op}`)!,
        anchorName: previous !== undefined ? `the previous nixseal (${previousLabel(previous)})` : "",
        anchor: previous !== undefined ? times.get(`previous ${op}`)! : null,
        target: "< 300 ms",
      }));
      rows.push({
        name: `set, ${services * keys} values`,
        nixseal: times.get("nixseal set")!,
        anchorName: "its floor: a bare script (bench/edit-floor.ts --set)",
        anchor: times.get("set floor")!,
      });
      rows.push({
        name: `edit, ${services * keys} values`,
        nixseal: times.get("nixseal edit")!,
        anchorName: "its floor: a bare script (bench/edit-floor.ts)",
        anchor: times.get("edit floor")!,
      });
      return {
        title: `sops-write: set, updatekeys and edit of a sops YAML file with ${services * keys} values`,
        rows,
        notes: [
          `The file of sops-decrypt (${services} mappings of ${keys} string values with a comment each, ${Math.round(originalText.length / 1024)} KiB encrypted, one X25519 recipient), copied before each run (untimed). ` +
            "`set`: one value, read from a file on standard input (`nixseal set FILE PATH --string < VALUE`). " +
            "`updatekeys`: .sops.yaml's creation rule names a second age recipient (`--config`). " +
            "`edit`: EDITOR is a shell script running sed on the plaintext file to change one value. " +
            "Each command runs through `/bin/sh -c 'cd DIR && exec ...'` (a few ms). Checked: set and edit change only the value's line, the MAC and lastmodified (every other value keeps its ciphertext), and what every build wrote decrypts to the expected document.",
          "The floor of edit (bench/edit-floor.ts) is a bare script doing only what this edit cannot skip: the age entry unwrapped with nixseal's `decrypt()`, every `ENC[...]` line decrypted with node:crypto and the MAC checked, the plaintext written to a private tmpfs directory, the same editor, the changed line encrypted again, the MAC again, the file written in pieces and renamed. No YAML tree. The floor of set is the same script with `--set`: no plaintext file and no editor, the value read from the same file. Both are timed in the same rounds, with this checkout's Node flags.",
          "There is no sops binary on this machine, so sops itself was not timed in the same run" +
            (previous !== undefined ? "; the anchor is a previous nixseal build in the same rounds." : "."),
        ],
      };
    } finally {
      remove();
    }
  },
};

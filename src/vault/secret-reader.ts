/**
 * Reading and decrypting one secret file, apart from secrets.ts: `decrypt` loads this alone
 * (loadSecretReader() in index.ts), without the recipients record, recipients from src/keys or
 * describing them, which writing and checking secrets need.
 */
import { decrypt, type Identity } from "../age/index.js";
import { nodeFs as fs, ioError, NixsealError } from "../common/index.js";
import { MAX_SECRET_FILE_SIZE, type SecretRule } from "./rules.js";

/** Reads an encrypted secret file (refusing symlinks that lead elsewhere and huge files). */
export function readSecretFile(rule: SecretRule): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(rule.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP") {
      throw new NixsealError("IO", `${rule.file} is a symbolic link`, {
        file: rule.file,
        hint: "secret files must be regular files inside the repository",
      });
    }
    if (code === "ENOENT") {
      throw new NixsealError("IO", `secret "${rule.name}" has no file yet (${rule.file})`, {
        file: rule.file,
        hint: `create it with 'nixseal edit ${rule.name}' or 'nixseal encrypt ${rule.name}'`,
      });
    }
    throw ioError("read", rule.file, e);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new NixsealError("IO", `${rule.file} is not a regular file`, { file: rule.file });
    if (st.size > MAX_SECRET_FILE_SIZE) {
      throw new NixsealError("IO", `${rule.file} is too large for a secret`, { file: rule.file });
    }
    return fs.readFileSync(fd);
  } catch (e) {
    if (e instanceof NixsealError) throw e;
    throw ioError("read", rule.file, e);
  } finally {
    fs.closeSync(fd);
  }
}

/** Decrypts a secret; errors name the file. The caller wipes the result. */
export async function decryptSecret(rule: SecretRule, identities: readonly Identity[]): Promise<Uint8Array> {
  const data = readSecretFile(rule);
  try {
    return await decrypt(data, identities);
  } catch (e) {
    if (e instanceof NixsealError) throw e.withFile(rule.file);
    throw e;
  }
}

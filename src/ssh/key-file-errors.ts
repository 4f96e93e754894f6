/** The errors an ssh private key file raises: each one line naming the file, with a hint. */
import { NixsealError } from "../common/index.js";

export function formatError(file: string, message: string, hint?: string): NixsealError {
  return new NixsealError("KEY_FORMAT", `malformed ssh private key ${file}: ${message}`, {
    file,
    hint: hint ?? "the key file is damaged or truncated; restore it or generate a new key with ssh-keygen",
  });
}

export function wrongPassphrase(file: string): NixsealError {
  return new NixsealError("KEY_ENCRYPTED", `cannot decrypt the ssh key ${file}: wrong passphrase`, {
    file,
    hint: "wrong passphrase; try again (check NIXSEAL_PASSPHRASE_FILE if you set it)",
  });
}

export function noPassphrase(file: string): NixsealError {
  return new NixsealError(
    "KEY_ENCRYPTED",
    `the ssh key ${file} is passphrase-protected and no passphrase is available`,
    {
      file,
      hint: "the key is passphrase-protected; run in a terminal or set NIXSEAL_PASSPHRASE_FILE",
    },
  );
}

export function unsupportedFormat(file: string, what: string, hint: string): NixsealError {
  return new NixsealError("KEY_UNSUPPORTED", `${file}: ${what} is not supported`, { file, hint });
}

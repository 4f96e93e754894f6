/**
 * One table of the rules the manifest, the build-secrets policy and the Nix modules share
 * (src/common/validation.ts, nix/modules/shared.nix), written by hand from those rules: shadow's
 * user names within NixOS's 31 characters, absolute normalised paths, modes, unit names. Both
 * sides are held to it: test/common/validation.test.ts (TypeScript), test/nix/rules.test.ts
 * (Nix). Not a test itself.
 */

/** [value, accepted] */
export type Cases = readonly (readonly [string, boolean])[];

export const PRINCIPALS: Cases = [
  ["postgres", true],
  ["Alice", true],
  ["_apt", true],
  ["machine$", true],
  ["svc.backup", true],
  ["1password", true],
  [".hidden", true],
  ["a".repeat(31), true],
  ["0", true],
  ["65534", true],
  ["4294967294", true],
  ["a".repeat(32), false],
  ["4294967295", false],
  ["99999999999", false],
  ["01", false],
  ["-dash", false],
  ["bad name", false],
  ["a$b", false],
  ["$", false],
  [".", false],
  ["..", false],
  ["", false],
  ["ümlaut", false],
  ["colon:x", false],
];

export const PATHS: Cases = [
  ["/var/lib/nixseal/key.txt", true],
  ["/etc/app/db password", true],
  ["/a", true],
  [`/${"a".repeat(4095)}`, true],
  [`/${"a".repeat(4096)}`, false],
  ["/", false],
  ["", false],
  ["relative/path", false],
  ["/trailing/", false],
  ["/double//slash", false],
  ["/dot/./x", false],
  ["/dotdot/../x", false],
  ["/new\nline", false],
  ["/carriage\rreturn", false],
];

export const MODES: Cases = [
  ["0400", true],
  ["440", true],
  ["0777", true],
  ["0000", true],
  ["4755", false],
  ["1777", false],
  ["0800", false],
  ["40", false],
  ["04000", false],
  ["rw-------", false],
];

export const UNITS: Cases = [
  ["foo.service", true],
  ["bar@x.socket", true],
  ["nightly.timer", true],
  ["sys-devices-x.device", true],
  ["a\\x2db.mount", true],
  [`${"a".repeat(247)}.service`, true],
  [`${"a".repeat(248)}.service`, false],
  ["foo", false],
  ["foo.unknown", false],
  ["../foo.service", false],
  ["foo bar.service", false],
  ["foo.service\n", false],
  ["", false],
];

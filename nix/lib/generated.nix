# Where `nixseal generate` puts a generator's outputs (docs/generators.md, "Instances and where outputs go"), and
# reading a *public* one back at evaluation (a WireGuard public key, an ssh host key line, a
# certificate) from secrets.nix or a NixOS configuration. A secret output (`<file>.age`) is never
# read here: it is only named, and decrypted by `nixseal install` on the host.
#
#   nixsealLib = import ./nix/lib { };                 # or the flake's `lib`
#   nixsealLib.generated.publicValue {
#     dir = ./generated; generator = "wireguard"; host = "web1"; file = "key.pub";
#   }                                                  # => "xTIB...=\n", or null before a run
let
  # Generator and host names are plain identifiers; file names may have dots inside (key.pub),
  # never first: no name can step out of the directory (docs/generators.md).
  checked =
    what: pattern: s:
    if builtins.isString s && builtins.match pattern s != null && builtins.match ".*[.][.].*" s == null then
      s
    else
      throw "nixseal generated: ${what} ${builtins.toJSON s} is not a plain name (${
        if what == "file" then
          "a letter, digit or _, then letters, digits, _, - or . (never two dots in a row)"
        else
          "a letter or _, then letters, digits, _ or -"
      }; at most 64)";
  identifier = "[A-Za-z_][A-Za-z0-9_-]{0,63}";
  fileName = "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}";
in
rec {
  # "<generator>/<file>" for a shared or host-less generator, "<generator>/<host>/<file>" for
  # one host's instance; a secret file is "<file>.age".
  relativePath =
    {
      generator,
      host ? null,
      file,
      secret ? false,
    }:
    "${checked "generator" identifier generator}/${
      if host == null then "" else "${checked "host" identifier host}/"
    }${checked "file" fileName file}${if secret then ".age" else ""}";

  # The public file's text, or null when it has not been generated yet. `dir` is the repository's
  # generated directory as a Nix path (./generated).
  publicValue =
    {
      dir,
      generator,
      host ? null,
      file,
    }:
    let
      p = dir + "/${relativePath { inherit generator host file; }}";
    in
    if builtins.pathExists p then builtins.readFile p else null;
}

# nixseal's Nix library (the flake's `lib` output).
#
#   credentials: the module-author convention for systemd credentials (docs/systemd-credentials.md).
#   generated:   where `nixseal generate` writes outputs, and `publicValue` to read a public one
#                (docs/generators.md, "Reading generated files from Nix").
#   fetchurl:    fixed-output downloads whose credential comes from the nixseal build hook
#                (docs/build-secrets.md); needs the fetcher's store path:
#
#   nixsealLib = import ./nix/lib { fetcher = ...; interpreter = "${pkgs.nodejs}/bin/node"; };
#   nixsealLib.fetchurl { url = ...; hash = ...; secret = "mods-token"; }
#
# The flake's `lib` has `credentials` and `generated` only (it is the same on every system); `libFor.<system>`
# adds `fetchurl` with the fetcher of that system's nixseal package.
{
  # Store path of nixseal's fetcher (dist/src/build-secrets/fetcher.js of the nixseal package).
  fetcher ? null,
  # The Node.js that runs it (null if `fetcher` is directly executable).
  interpreter ? null,
  system ? builtins.currentSystem or null,
}:

{
  credentials = import ./credentials.nix;
  generated = import ./generated.nix;
  fetchurl =
    if fetcher == null then
      throw "nixseal lib.fetchurl needs the fetcher: use nixseal.libFor.<system>.fetchurl, or import nix/lib { fetcher = ...; }"
    else
      import ./fetchurl.nix { inherit fetcher interpreter system; };
}

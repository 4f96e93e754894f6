# nixseal's Nix library (exported as `lib` by flake.nix). Build-time secrets: see
# docs/build-secrets.md.
#
#   nixsealLib = import ./nix/lib { fetcher = ...; interpreter = "${pkgs.nodejs}/bin/node"; };
#   nixsealLib.fetchurl { url = ...; hash = ...; secret = "mods-token"; }
{
  # Store path of nixseal's fetcher (dist/src/build/fetcher.js of the nixseal package).
  fetcher,
  # The Node.js that runs it (null if `fetcher` is directly executable).
  interpreter ? null,
  system ? builtins.currentSystem,
}:

{
  fetchurl = import ./fetchurl.nix { inherit fetcher interpreter system; };
}

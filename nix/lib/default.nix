# nixseal's Nix library (the flake's `lib` output).
#
#   credentials: the module-author convention for systemd credentials (docs/systemd-credentials.md).
#   generated:   where `nixseal generate` writes outputs, and `publicValue` to read a public one
#                (docs/generators.md, "Reading generated files from Nix").
#   fetchurl:    fixed-output downloads whose credential comes from the nixseal build hook
#                (docs/build-secrets.md); needs the fetcher's store path:
#   fetchgit:    the same for a commit of a private git repository; needs `git` too.
#
#   nixsealLib = import ./nix/lib { fetcher = ...; interpreter = "${pkgs.nodejs}/bin/node";
#                                   git = "${pkgs.gitMinimal}/bin/git"; };
#   nixsealLib.fetchurl { url = ...; hash = ...; secret = "mods-token"; }
#   nixsealLib.fetchgit { url = ...; rev = ...; hash = ...; secret = "git-token"; }
#
# The flake's `lib` has `credentials` and `generated` only (it is the same on every system); `libFor.<system>`
# adds `fetchurl` with the fetcher of that system's nixseal package.
{
  # Store path of nixseal's fetcher (dist/src/build-secrets/fetcher.js of the nixseal package).
  fetcher ? null,
  # The Node.js that runs it (null if `fetcher` is directly executable).
  interpreter ? null,
  # The git program fetchgit runs (a store path the policy lists in gitPaths).
  git ? null,
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
  fetchgit =
    if fetcher == null || git == null then
      throw "nixseal lib.fetchgit needs the fetcher and git: import nix/lib { fetcher = ...; git = ...; }"
    else
      import ./fetchgit.nix { inherit fetcher interpreter git system; };
}

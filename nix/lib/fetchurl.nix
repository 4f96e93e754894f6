# nixseal's fetchurl: a fixed-output derivation that downloads `url` with a build secret in one
# request header. The derivation names the secret only; the secret itself is given to this one
# build by nixseal's pre-build hook (`nixseal build-hook`) if the host's policy allows it
# (/etc/nixseal/build-secrets.json, or `nixseal.buildSecrets` in NixOS), and never reaches the
# store, the .drv or the log. See docs/build-secrets.md.
#
#   fetchurl {
#     url = "https://mods.example.com/api/download/mod.zip";
#     hash = "sha256-...";                         # the download is pinned like any fetchurl
#     secret = "mods-token";                        # a name in the host's policy
#     header = "Authorization: Bearer {secret}";    # the default; "X-Api-Key: {secret}" etc.
#   }
#
# The builder is nixseal's fetcher at a fixed store path (`fetcher`), run directly or by
# `interpreter` (a Node.js; on NixOS `${pkgs.nodejs}/bin/node`); the policy pins both. The
# derivation may carry no other attributes: the hook refuses any it does not know, since every
# attribute becomes an environment variable of the fetcher.
{
  # The fetcher program: a store path (or a path, added to the store by name).
  fetcher,
  # Runs `fetcher` when it is a script without its own interpreter; null: run it directly.
  interpreter ? null,
  system ? builtins.currentSystem,
}:

{
  url,
  hash,
  secret,
  header ? "Authorization: Bearer {secret}",
  # The store name: the last path segment of the URL, without a query.
  name ? builtins.head (builtins.split "[?#]" (baseNameOf url)),
}:

assert builtins.isString secret && secret != "";
assert builtins.match ".*\\{secret}.*" header != null;

derivation (
  {
    inherit name system url;
    builder = if interpreter == null then "${fetcher}" else interpreter;
    args = if interpreter == null then [ ] else [ "${fetcher}" ];
    nixsealSecret = secret;
    outputHash = hash;
    outputHashMode = "flat";
    # The host with the hook and the policy builds it, not a remote builder.
    preferLocalBuild = true;
  }
  // (if header == "Authorization: Bearer {secret}" then { } else { nixsealHeader = header; })
)

# nixseal's fetchgit: a fixed-output derivation holding the tree of commit `rev` of a private git
# repository (no .git), fetched with a token that nixseal's pre-build hook gives to this one build
# if the host's policy allows it (docs/build-secrets.md). The derivation names the secret only.
#
#   fetchgit {
#     url = "https://git.example.com/org/repo.git";
#     rev = "0123456789abcdef0123456789abcdef01234567";  # a full commit id
#     hash = "sha256-...";        # the NAR hash of the checkout, as nix-prefetch-git prints it
#     secret = "git-token";       # a name in the host's policy
#     user = "x-access-token";    # the default; the user name sent with the token
#   }
#
# The output is what an unauthenticated clone of `rev` checks out, without .git and without
# submodules. The builder is nixseal's fetcher (run by `interpreter`), which runs `git` (a store
# path the policy lists in gitPaths) with a credential helper that reads the secret when git asks.
{
  fetcher,
  interpreter ? null,
  # The git program: "${pkgs.gitMinimal}/bin/git" (with its libexec/git-core beside bin/).
  git,
  system ? builtins.currentSystem,
}:

{
  url,
  rev,
  hash,
  secret,
  user ? "x-access-token",
  # The store name: the repository's last path segment without ".git".
  name ? builtins.head (builtins.match "(.*[^.])(\\.git)?" (baseNameOf url)),
}:

assert builtins.isString secret && secret != "";
assert builtins.match "[0-9a-f]{40}|[0-9a-f]{64}" rev != null;

derivation (
  {
    inherit name system url rev;
    builder = if interpreter == null then "${fetcher}" else interpreter;
    args = if interpreter == null then [ ] else [ "${fetcher}" ];
    nixsealSecret = secret;
    # A string with the store path's context: git and its closure are inputs of the build.
    nixsealGit = git;
    outputHash = hash;
    outputHashMode = "recursive";
    preferLocalBuild = true;
  }
  // (if user == "x-access-token" then { } else { nixsealUser = user; })
)

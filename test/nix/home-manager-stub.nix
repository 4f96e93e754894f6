# Test stub: the home-manager options the nixseal home-manager module sets or reads, with
# permissive types (home-manager itself is not available offline).
{ lib, ... }:
let
  inherit (lib) mkOption types;
  anyAttrs = types.lazyAttrsOf types.anything;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    home.username = mkOption { type = types.str; };
    home.homeDirectory = mkOption { type = types.str; };
    home.activation = mkOption {
      type = types.attrsOf anyAttrs;
      default = { };
    };
    systemd.user.services = mkOption {
      type = types.attrsOf anyAttrs;
      default = { };
    };
  };
  # The package cannot be built here (no nixpkgs): a store file stands in for it, so that the
  # paths of `nixseal install` in scripts are real store paths.
  config.nixseal.package = lib.mkOverride 1250 (builtins.toFile "nixseal-package-stub" "");
  config.home = {
    username = lib.mkDefault "alice";
    homeDirectory = lib.mkDefault "/home/alice";
  };
}

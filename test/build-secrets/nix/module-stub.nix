# Test stub: the few NixOS options nix/modules/build-secrets.nix sets or reads, with permissive
# types (only nixpkgs' lib is available offline).
{ lib, ... }:
let
  inherit (lib) mkOption types;
  anything = mkOption {
    type = types.lazyAttrsOf types.anything;
    default = { };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    nix.settings = anything;
    environment.etc = anything;
    systemd.services = anything;
    systemd.timers = anything;
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
  };
}

# Test stub: the few NixOS options the nixseal module sets or reads, declared with permissive
# types (nixpkgs itself is not available offline, only its lib). Semantics kept where the module
# relies on them: list values of systemd unit options concatenate, activation scripts are
# { deps, text, supportsDryActivation }, root exists, openssh's default host keys.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  anyAttrs = types.lazyAttrsOf types.anything;

  # As NixOS's unitOption: list definitions concatenate, anything else must be equal.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if lib.any (d: builtins.isList d.value) defs then
        lib.concatMap (d: lib.toList d.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  unit = types.submodule {
    freeformType = anyAttrs;
    options = {
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      wantedBy = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      requiredBy = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      before = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      after = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
  };
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
    users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          freeformType = anyAttrs;
          options.group = mkOption {
            type = types.str;
            default = "";
          };
        }
      );
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (types.submodule { freeformType = anyAttrs; });
      default = { };
    };
    users.mutableUsers = mkOption {
      type = types.bool;
      default = true;
    };
    systemd.services = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    # NixOS's systemd package (null here unless a test sets one: no nixpkgs).
    systemd.package = mkOption {
      type = types.nullOr types.unspecified;
      default = null;
    };
    systemd.sysusers.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.userborn.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.openssh.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.openssh.hostKeys = mkOption {
      type = types.listOf anyAttrs;
      default = [
        {
          type = "rsa";
          bits = 4096;
          path = "/etc/ssh/ssh_host_rsa_key";
        }
        {
          type = "ed25519";
          path = "/etc/ssh/ssh_host_ed25519_key";
        }
      ];
    };
    system.activationScripts = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            deps = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            text = mkOption {
              type = types.lines;
              default = "";
            };
            supportsDryActivation = mkOption {
              type = types.bool;
              default = false;
            };
          };
        }
      );
      default = { };
    };
    system.build = mkOption {
      type = types.lazyAttrsOf types.unspecified;
      default = { };
    };
    environment.etc = mkOption {
      type = types.attrsOf anyAttrs;
      default = { };
    };
    # Set by build-secrets.nix (imported by nixos.nix) when nixseal.buildSecrets is used.
    nix.settings = mkOption {
      type = types.attrsOf types.unspecified;
      default = { };
    };
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # Read by nix/modules/nixos/keys.nix (the plan's host name and address), NixOS's default.
    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    systemd.timers = mkOption {
      type = types.attrsOf anyAttrs;
      default = { };
    };
  };

  config = {
    # The package cannot be built here (no nixpkgs): a store file stands in for it (weaker than
    # mkDefault, so the flake's own default wins where a test uses it).
    nixseal.package = lib.mkOverride 1250 (builtins.toFile "nixseal-package-stub" "");
    users.users.root = {
      uid = 0;
      group = "root";
    };
    users.groups.root.gid = 0;
  };
}

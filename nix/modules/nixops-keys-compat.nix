# NixOps/colmena compatibility for a host deployed without them: declares their options
# `deployment.keys.<name>` (keyFile, keyCommand, text, destDir, user, group, permissions,
# uploadAt, name, path) and `deployment.targetHost/targetUser/targetPort`, with NixOps's
# defaults, so that a configuration written for NixOps or colmena evaluates unchanged and
# `nixseal push` sends its keys. The mapping onto nixseal.keys is
# nix/modules/colmena-keys-compat.nix's; this module adds NixOps's unit names: each key unit is
# also <name>-key.service.
#
# Inside a colmena hive or a NixOps network, which declare `deployment.*` themselves, import
# nix/modules/colmena-keys-compat.nix (the flake's nixosModules.colmena-keys-compat) instead:
# declaring these options a second time would be an error there.
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    literalExpression
    mkOption
    types
    ;

  keyType = types.submodule (
    { name, config, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
          description = "The key's file name in destDir.";
        };
        text = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The key itself. Discouraged: it is in plaintext in the configuration and the Nix store (a warning says so).";
        };
        keyFile = mkOption {
          type = types.nullOr (types.either types.str types.path);
          default = null;
          apply = f: if f == null then null else toString f;
          description = "A plaintext file on the deployer whose content is the key (read at push time; not copied to the store).";
        };
        keyCommand = mkOption {
          type = types.nullOr (types.listOf types.str);
          default = null;
          example = [
            "pass"
            "show"
            "db"
          ];
          description = "A command run on the deployer; its standard output is the key.";
        };
        destDir = mkOption {
          type = types.str;
          default = "/run/keys";
          description = "The directory on the host the key is placed in.";
        };
        path = mkOption {
          type = types.str;
          readOnly = true;
          default = "${config.destDir}/${config.name}";
          defaultText = literalExpression ''"''${destDir}/''${name}"'';
          description = "Where the key is found on the host.";
        };
        user = mkOption {
          type = types.str;
          default = "root";
          description = "User owning the key file.";
        };
        group = mkOption {
          type = types.str;
          default = "root";
          description = "Group of the key file.";
        };
        permissions = mkOption {
          type = types.str;
          default = "0600";
          description = "Permissions of the key file, in octal.";
        };
        uploadAt = mkOption {
          type = types.enum [
            "pre-activation"
            "post-activation"
          ];
          default = "pre-activation";
          description = "When the key is sent: before the new system is activated, or after.";
        };
      };
    }
  );
in
{
  imports = [ ./colmena-keys-compat.nix ];

  options.deployment = {
    keys = mkOption {
      type = types.attrsOf keyType;
      default = { };
      description = "Keys sent to the host by `nixseal push` (NixOps's and colmena's option).";
    };
    targetHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The address ssh connects to (null: nixseal.push.targetHost's default, the host name).";
    };
    targetUser = mkOption {
      type = types.nullOr types.str;
      default = "root";
      description = "The user ssh logs in as (null: ssh's default).";
    };
    targetPort = mkOption {
      type = types.nullOr (types.ints.between 1 65535);
      default = null;
      description = "The ssh port (null: ssh's default).";
    };
  };

  config.nixseal.compat.deploymentKeyUnitAliases = true;
}

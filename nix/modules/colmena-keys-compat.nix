# NixOps/colmena `deployment.keys` mapped onto nixseal.keys (nix/modules/nixos/keys.nix), so that
# `nixseal push` sends the keys those tools would have uploaded, to the same paths with the same
# owners and modes. This module declares no `deployment.*` option: inside a colmena hive (or a
# NixOps network) they are the tool's own; nix/modules/nixops-keys-compat.nix declares them for a
# host that no longer has either (and adds NixOps's unit names).
#
# The sources keep the old tools' meaning (docs/push.md, "Migrating from NixOps and colmena"):
# - keyCommand: run on the deployer, its output is the key: source.command;
# - keyFile: a *plaintext* file on the deployer, read at push time (`cat FILE`); the path is not
#   copied to the store (but a flake's own files are in the store already: a warning says so);
# - text: the key is in the configuration; it is written to the deployer's store so that the plan
#   names a file, not the key, and a warning names the command that moves it into an encrypted
#   file.
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    filterAttrs
    mapAttrs
    mapAttrsToList
    mkDefault
    mkIf
    mkMerge
    mkOption
    optional
    types
    ;

  deployment = config.deployment or { };
  # NixOps 1 took a plain string as the key's text.
  keys = mapAttrs (_: k: if builtins.isString k then { text = k; } else k) (deployment.keys or { });
  withAliases = config.nixseal.compat.deploymentKeyUnitAliases;

  where = name: "deployment.keys.${lib.strings.escapeNixIdentifier name}";
  set = k: attr: (k.${attr} or null) != null;
  given = k: builtins.filter (set k) [
    "text"
    "keyFile"
    "keyCommand"
  ];
  storePrefix = "${builtins.storeDir}/";

  # The file for `cat`: a path value as its name (toString does not copy it to the store).
  keyFilePath = k: toString k.keyFile;

  sourceOf =
    k:
    if set k "keyCommand" then
      { command = k.keyCommand; }
    else if set k "keyFile" then
      {
        command = [
          "cat"
          (keyFilePath k)
        ];
      }
    else
      {
        command = [
          "cat"
          (builtins.toFile "deployment-key-text" k.text)
        ];
      };

  encryptHint =
    name:
    "printf %s \"$KEY\" | nixseal encrypt secrets/${name}.age (or --in FILE on a RAM-backed filesystem such as /dev/shm), then replace it with nixseal.keys.${lib.strings.escapeNixIdentifier name}.source.file = ./secrets/${name}.age";
in
{
  imports = [ ./nixos.nix ];

  options.nixseal.compat.deploymentKeyUnitAliases = mkOption {
    type = types.bool;
    default = false;
    internal = true;
    description = "Name each key unit <name>-key.service too, as NixOps does (set where no colmena or NixOps module defines those units).";
  };

  config = mkMerge [
    (mkIf (keys != { }) {
      # Only keys with one source; the others are problems (below), so no plan is emitted.
      nixseal.keys = mapAttrs (
        name: k:
        {
          source = sourceOf k;
          name = k.name or name;
          destDir = k.destDir or "/run/keys";
          owner = k.user or "root";
          group = k.group or "root";
          mode = k.permissions or "0600";
          uploadAt = k.uploadAt or "pre-activation";
        }
        // lib.optionalAttrs withAliases { unitAliases = [ "${name}-key.service" ]; }
      ) (filterAttrs (_: k: builtins.length (given k) == 1) keys);

      nixseal.push.problems =
        mapAttrsToList (
          name: k:
          "${where name}: set exactly one of text, keyFile or keyCommand (${
            if given k == [ ] then "none is set" else "set: ${lib.concatStringsSep ", " (given k)}"
          })."
        ) (filterAttrs (_: k: builtins.length (given k) != 1) keys)
        ++ mapAttrsToList (
          name: k:
          "${where name}.keyFile = ${builtins.toJSON (keyFilePath k)} is not an absolute path; use a Nix path (./key, without quotes) or an absolute path on the deployer."
        ) (filterAttrs (_: k: set k "keyFile" && !(lib.hasPrefix "/" (keyFilePath k))) keys);

      warnings =
        mapAttrsToList (
          name: k:
          "${where name}.text puts the key in plaintext in the configuration and the world-readable Nix store; move it into an encrypted file: ${encryptHint name}."
        ) (filterAttrs (_: k: set k "text") keys)
        ++ mapAttrsToList (
          name: k:
          "${where name}.keyFile is in the Nix store (${keyFilePath k}: a flake's files are copied there), where the plaintext key is world-readable; move it into an encrypted file: ${encryptHint name}."
        ) (filterAttrs (_: k: set k "keyFile" && lib.hasPrefix storePrefix (keyFilePath k)) keys);
    })

    # Where the tool has them: the address, user and port ssh uses.
    {
      nixseal.push = mkMerge (
        optional ((deployment.targetHost or null) != null) { targetHost = mkDefault deployment.targetHost; }
        ++ optional (deployment ? targetUser) { targetUser = mkDefault deployment.targetUser; }
        ++ optional ((deployment.targetPort or null) != null) { targetPort = mkDefault deployment.targetPort; }
      );
    }
  ];
}

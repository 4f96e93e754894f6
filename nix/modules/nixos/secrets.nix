# The secrets part of the NixOS module (imported by nix/modules/nixos.nix): the option
# nixseal.secrets (each secret's file, format and key from nix/modules/common-options.nix, as the
# home-manager module has them; owner, group, mode, path and restart lists from
# nix/modules/nixos/lib.nix, as templates have them; installedPath), the system stage's manifest
# (system.build.nixsealManifest: the secrets without neededForUsers, and the templates), and the
# checks that apply to every secret and template: names, files, keys, owners, groups.
# `neededForUsers` is nix/modules/nixos/users-stage.nix's, `services` and `credential` are
# nix/modules/nixos/credentials.nix's.
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    concatMap
    filterAttrs
    literalExpression
    mkIf
    mkMerge
    mkOption
    types
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg;

  secretType = types.submodule (
    { name, config, ... }:
    {
      options = l.entryOptions {
        kind = "secret";
        inherit config;
      }
      // l.common.secretFileOptions config
      // {
        installedPath = mkOption {
          type = types.str;
          readOnly = true;
          default = l.installedPathOf {
            kind = "secret";
            inherit name config;
            otherwise = "${if config.neededForUsers then cfg.secretsForUsersDir else cfg.secretsDir}/${name}";
          };
          defaultText = literalExpression ''path, or "''${secretsDir}/<name>"; for a credential, "/run/credentials/<its one service>.service/<credential name>"'';
          description = "Where services find the secret: `path` if set, else its place in the secrets directory. A `credential` secret has no file of its own: this is where its one service finds it (with several services, reading this is an error naming `$CREDENTIALS_DIRECTORY`).";
        };
      };
    }
  );

  forSystem = filterAttrs (_: s: !s.neededForUsers) cfg.secrets;

  principalKnown = set: p: p == "root" || shared.isNumericId p || set ? ${p};

  assertionsFor =
    e:
    let
      where = attr: shared.optionPath e.kind e.name attr;
      v = e.value;
      isSecret = e.kind == "secrets";
      # Owned by root whatever users exist (nix/modules/nixos/users-stage.nix checks them).
      forUsersSecret = isSecret && v.neededForUsers;
    in
    [
      {
        assertion = shared.validName e.name;
        message = "nixseal.${e.kind}.${lib.strings.escapeNixIdentifier e.name}: the name must be a relative path of segments made of A-Z a-z 0-9 . _ @ + = - (no `.` or `..` segment, no empty segment, at most 255 bytes a segment); `/` makes subdirectories.";
      }
      {
        assertion = forUsersSecret || principalKnown config.users.users v.owner;
        message = "${where "owner"} = \"${v.owner}\" is not in users.users; declare the user, use a numeric id, or give the secret to a DynamicUser= service with `services = [ \"...\" ]` (owner root).";
      }
      {
        assertion = forUsersSecret || principalKnown config.users.groups v.group;
        message = "${where "group"} = \"${v.group}\" is not in users.groups; declare the group or use a numeric id.";
      }
    ]
    ++ lib.optionals isSecret [
      {
        assertion = shared.fileIsStorable v.file;
        message = "${where "file"} is a string outside the Nix store; write it as a Nix path (./file.age, without quotes) so that the encrypted file is copied to the store.";
      }
      {
        assertion = v.key == null || builtins.elem v.format shared.sopsFormats && v.format != "binary";
        message = "${where "key"} is set, but format is \"${v.format}\": a key selects a value inside a yaml, json, dotenv or ini sops file; remove it, or set the format.";
      }
    ];

  # Secret names are unique among secrets, template names among templates.
  duplicateNames = builtins.attrNames (builtins.intersectAttrs cfg.secrets cfg.templates);
  directoryNames = shared.namesUsedAsDirectories (map (e: e.name) l.everything);
in
{
  options.nixseal.secrets = mkOption {
    type = types.attrsOf secretType;
    default = { };
    example = literalExpression ''
      {
        "db/password" = { file = ./secrets/db-password.age; owner = "postgres"; restartUnits = [ "postgresql.service" ]; };
        api-token = { file = ./secrets/app.yaml; key = "api/token"; services = [ "myapp" ]; };
      }
    '';
    description = ''
      Secrets decrypted at activation into {option}`nixseal.secretsDir` (a name with `/` makes
      subdirectories). Only the encrypted files are in the store.
    '';
  };

  config = mkMerge [
    {
      system.build.nixsealManifest = l.writeManifest {
        name = "nixseal-manifest.json";
        stage = "system";
        inherit (cfg) secretsDir generationsDir templates;
        secrets = forSystem;
      };
    }

    (mkIf (cfg.secrets != { } || cfg.templates != { }) {
      assertions =
        concatMap assertionsFor l.everything
        ++ [
          {
            assertion = duplicateNames == [ ];
            message = "nixseal: ${lib.concatStringsSep ", " duplicateNames} is the name of both a secret and a template; they share the secrets directory, so rename one.";
          }
          {
            assertion = directoryNames == [ ];
            message = "nixseal: ${lib.concatStringsSep ", " directoryNames} is both a file and the directory of another name (\"a\" and \"a/b\"); rename one.";
          }
        ];
    })
  ];
}

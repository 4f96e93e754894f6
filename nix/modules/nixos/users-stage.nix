# The users stage of the NixOS module (imported by nix/modules/nixos.nix): secrets with
# `neededForUsers` (for `users.users.<name>.hashedPasswordFile`) are installed before users and
# groups are created, owned by root, into their own directories. This part owns the option
# `neededForUsers` of nixseal.secrets, those directories, the users manifest
# (system.build.nixsealUsersManifest), its checks, and how it is installed: from the activation
# script before NixOS's `users` script, or from a unit before systemd-sysusers / userborn.
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    filterAttrs
    mapAttrsToList
    mkIf
    mkMerge
    mkOption
    optional
    types
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg;

  forUsers = filterAttrs (_: s: s.neededForUsers) cfg.secrets;
  haveUsersStage = forUsers != { };

  usersManifest = config.system.build.nixsealUsersManifest;

  # The placeholder of each secret needed for users -> its name: templates are rendered in the
  # system stage, which does not hold them.
  usersPlaceholderOwners = l.common.placeholderOwners forUsers;

  secretAssertions =
    name: v:
    let
      where = shared.optionPath "secrets" name;
    in
    [
      {
        assertion = builtins.elem v.owner [ "root" "0" ] && builtins.elem v.group [ "root" "0" ];
        message = "${where "neededForUsers"}: a secret needed for users is installed before users and groups exist, so it must be owned by root:root (owner and group \"root\" or \"0\"), not ${v.owner}:${v.group}.";
      }
      {
        assertion = v.restartUnits == [ ] && v.reloadUnits == [ ] && v.services == [ ];
        message = "${where "neededForUsers"}: a secret needed for users is installed before users exist and restarts nothing; remove its restartUnits, reloadUnits and services, or give it to them through a second secret.";
      }
    ];

  templateAssertion =
    name: t:
    let
      used = builtins.filter (p: usersPlaceholderOwners ? ${p}) (shared.placeholdersIn t.content);
    in
    {
      assertion = used == [ ];
      message = "${shared.optionPath "templates" name "content"} uses secret(s) ${lib.concatMapStringsSep ", " (p: "\"${usersPlaceholderOwners.${p}}\"") used} with neededForUsers; templates are rendered in the system stage, which does not hold them. Declare a second secret from the same file without neededForUsers.";
    };
in
{
  options.nixseal = {
    secrets = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.neededForUsers = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Install this secret before users and groups are created (for
              `users.users.<name>.hashedPasswordFile`), into {option}`nixseal.secretsForUsersDir`.
              Such secrets are owned by root and restart nothing.
            '';
          };
        }
      );
    };

    secretsForUsersDir = mkOption {
      type = shared.hostPath;
      default = "/run/nixseal-for-users";
      description = "{option}`nixseal.secretsDir` of the secrets with `neededForUsers`.";
    };

    usersStageUnit = mkOption {
      type = types.strMatching "[A-Za-z0-9:_.@-]+";
      default = "nixseal-install-for-users";
      internal = true;
      description = ''
        Name (without .service) of the unit that installs the users stage under
        systemd-sysusers / userborn. The compat modules give it the old tool's name
        (sops-install-secrets-for-users), so that a host's own settings of that unit, such as a
        `preStart` that provides the key, apply to it and run before the install.
      '';
    };

    generationsForUsersDir = mkOption {
      type = shared.hostPath;
      default = "/run/nixseal-for-users.d";
      description = "{option}`nixseal.generationsDir` of the secrets with `neededForUsers`.";
    };
  };

  config = mkMerge [
    {
      system.build.nixsealUsersManifest = l.writeManifest {
        name = "nixseal-manifest-for-users.json";
        stage = "users";
        secretsDir = cfg.secretsForUsersDir;
        generationsDir = cfg.generationsForUsersDir;
        secrets = forUsers;
        templates = { };
      };
    }

    (mkIf haveUsersStage {
      assertions =
        lib.concatLists (mapAttrsToList secretAssertions forUsers)
        ++ mapAttrsToList templateAssertion cfg.templates;
    })

    # Classic activation: before the `users` script.
    (mkIf (!l.useSystemdActivation && haveUsersStage) {
      system.activationScripts = {
        nixsealForUsers = {
          deps = [ "specialfs" ];
          text = l.installScript usersManifest;
          supportsDryActivation = true;
        };
        users.deps = [ "nixsealForUsers" ];
      };
    })

    # systemd-sysusers / userborn create users from a unit: this one runs before it.
    (mkIf (l.useSystemdActivation && haveUsersStage) {
      systemd.services.${cfg.usersStageUnit} = l.installService usersManifest // {
        description = "nixseal: install secrets needed for users";
        wantedBy = [ "sysinit.target" ];
        before =
          optional l.sysusers "systemd-sysusers.service"
          ++ optional l.userborn "userborn.service";
        requiredBy =
          optional l.sysusers "systemd-sysusers.service"
          ++ optional l.userborn "userborn.service";
      };
    })
  ];
}

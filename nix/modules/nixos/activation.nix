# How the system stage is installed, the part of the NixOS module imported by
# nix/modules/nixos.nix: `nixseal install` on the system manifest (nix/modules/nixos/secrets.nix)
# from the activation script after NixOS's `users` and `groups` scripts, or, where
# systemd-sysusers / userborn create users from a unit, from a unit ordered after them. The users
# stage is installed by nix/modules/nixos/users-stage.nix, before either.
#
# Restart lists: with the activation script, `nixseal install` appends the units to restart or
# reload to NixOS's lists, which switch-to-configuration reads after activation; from a unit it
# restarts them itself with systemctl (the manifest's restartListFile and restartMode, written
# by nix/modules/nixos/lib.nix).
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    mkIf
    mkMerge
    optional
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) cfg;

  systemManifest = config.system.build.nixsealManifest;
  haveSystemStage = lib.any (s: !s.neededForUsers) (builtins.attrValues cfg.secrets) || cfg.templates != { };
in
{
  config = mkMerge [
    (mkIf (!l.useSystemdActivation && haveSystemStage) {
      system.activationScripts.nixseal = {
        deps = [
          "specialfs"
          "users"
          "groups"
        ];
        text = l.installScript systemManifest;
        supportsDryActivation = true;
      };
    })

    # After the users exist, and again on each switch, through sysinit-reactivation.target.
    (mkIf (l.useSystemdActivation && haveSystemStage) {
      systemd.services.nixseal-install = l.installService systemManifest // {
        description = "nixseal: install secrets";
        wantedBy = [ "sysinit.target" ];
        after = [
          "local-fs.target"
        ]
        ++ optional l.sysusers "systemd-sysusers.service"
        ++ optional l.userborn "userborn.service";
        before = [ "sysinit-reactivation.target" ];
        requiredBy = [ "sysinit-reactivation.target" ];
      };
    })
  ];
}

# Not a module: what the parts of the NixOS module (nix/modules/nixos/*.nix) share. Each part
# imports it with its own `config`, `lib` and `options`: the identities, whether users come from
# a unit (sysusers/userborn), the options every secret and template has, and how the manifest of
# a stage (docs/manifest.md) is made from config.nixseal and written to the store.
#
# Each part that imports it computes these values anew, so they are cheap or functions; what is
# costly stays in the one part that needs it (the checks, the wiring of services, each manifest,
# which the others read back from system.build).
{
  config,
  lib,
  options,
}:
let
  inherit (lib)
    literalExpression
    mapAttrsToList
    mkOption
    optional
    types
    ;

  common = import ../common-options.nix { inherit lib; };
  inherit (common) shared;
  cfg = config.nixseal;
  usersCfg = config.users.users;

  # The primary group of a user NixOS knows; "root" for root, numeric ids and unknown users.
  defaultGroupOf =
    owner:
    let
      g = usersCfg.${owner}.group or "";
    in
    if owner == "root" || owner == "0" then "root" else if g != "" then g else "root";

  fileOptions = common.fileOptions { pathExample = "/etc/myapp/password"; };

  serviceUnits = services: map (s: "${shared.serviceAttr s}.service") services;

  # The manifest's `credential`: present only when set (absent means a file in the generation).
  credentialEntry =
    e:
    lib.optionalAttrs (e.credential != null) {
      credential = {
        inherit (e.credential) name tpm2Pcrs;
        withKey = e.credential.encrypt;
        services = serviceUnits e.credential.services;
      };
    };
in
rec {
  inherit shared common cfg serviceUnits;
  creds = import ../../lib/credentials.nix;

  # The module needs pkgs only to write the manifest as a checked derivation and for the default
  # package; without it (evaluation tests of the module alone) it falls back to builtins.toFile.
  pkgs = config._module.args.pkgs or null;

  nixsealBin = "${cfg.package}/bin/nixseal";

  # systemd-sysusers / userborn create users from a unit, not from the activation script.
  sysusers = options.systemd ? sysusers && config.systemd.sysusers.enable;
  userborn = options.services ? userborn && config.services.userborn.enable;
  useSystemdActivation = sysusers || userborn;

  # The identities of both manifests (options of nix/modules/nixos/identities.nix).
  identities = common.identities {
    inherit (cfg)
      sealedIdentityPaths
      ageKeyFile
      identityPaths
      extraIdentities
      ;
  };

  # Whether any secret or template is sealed as a credential (nix/modules/nixos/credentials.nix).
  haveCredentials = lib.any (e: e.credential != null) (
    builtins.attrValues cfg.secrets ++ builtins.attrValues cfg.templates
  );

  # gpg, for identities that open sops files' pgp entries (sops-nix's sops.gnupg.*).
  gnupgPath = optional (
    lib.any (i: i.type == "gpg" || i.type == "gpg-ssh") identities && cfg.gnupgPackage != null
  ) cfg.gnupgPackage;

  # `nixseal install` on a stage's manifest from the activation script. NixOS runs scripts that
  # support dry activation with NIXOS_ACTION=dry-activate; the installer then only compares and
  # writes the dry restart lists. The activation script's PATH has no systemd (and
  # /run/current-system is not made yet at first boot): systemd-creds (credentials, sealed
  # identities) comes from the system's systemd package, when there is a systemd option (not in
  # evaluation tests).
  installScript =
    manifest:
    let
      systemdPackage = config.systemd.package or null;
      binDirs =
        optional (systemdPackage != null) "${systemdPackage}/bin"
        ++ map (p: "${p}/bin") gnupgPath;
      withSystemd = lib.optionalString (binDirs != [ ]) "PATH=${lib.concatStringsSep ":" binDirs}:$PATH ";
    in
    ''
      if [ "''${NIXOS_ACTION-}" = dry-activate ]; then
        ${withSystemd}${nixsealBin} install --dry-run --manifest ${manifest}
      else
        ${withSystemd}${nixsealBin} install --manifest ${manifest}
      fi
    '';

  # The same from a unit, where users come from systemd-sysusers or userborn.
  installService = manifest: {
    restartTriggers = [ manifest ];
  }
  // lib.optionalAttrs (gnupgPath != [ ]) { path = gnupgPath; }
  // {
    unitConfig = {
      DefaultDependencies = false;
      RequiresMountsFor = map (i: i.path) identities ++ optional haveCredentials cfg.credstoreDir;
    };
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      ExecStart = "${nixsealBin} install --manifest ${manifest}";
    };
  };

  # Secrets then templates, each as { kind; name; value; }: what the assertions and the service
  # wiring go through.
  everything =
    mapAttrsToList (name: s: {
      kind = "secrets";
      inherit name;
      value = s;
    }) cfg.secrets
    ++ mapAttrsToList (name: t: {
      kind = "templates";
      inherit name;
      value = t;
    }) cfg.templates;

  # The options every secret and template has (nix/modules/nixos/secrets.nix,
  # nix/modules/nixos/templates.nix): mode and path as the home-manager module has them
  # (nix/modules/common-options.nix), owner, group, restart and reload lists; `services` and
  # `credential` are nix/modules/nixos/credentials.nix's. All but `group` (whose default is the
  # owner's group) are made once per kind, not once per entry.
  staticEntryOptions = lib.genAttrs [ "secret" "template" ] (
    kind:
    fileOptions
    // {
      owner = mkOption {
        type = shared.principal;
        default = "root";
        example = "postgres";
        description = "User owning the installed file: a name from users.users, or a numeric id.";
      };
      restartUnits = mkOption {
        type = types.listOf shared.unitName;
        default = [ ];
        example = [ "myapp.service" ];
        description = "Units restarted when this ${kind} changes (content, owner, group or mode), or is added or removed.";
      };
      reloadUnits = mkOption {
        type = types.listOf shared.unitName;
        default = [ ];
        example = [ "nginx.service" ];
        description = "Units reloaded when this ${kind} changes.";
      };
    }
  );

  # The read-only installedPath of a secret or template: `path`, else `otherwise`; a credential
  # has no file of its own, so it is where its one service finds it (several: an error saying where).
  installedPathOf =
    {
      kind,
      name,
      config,
      otherwise,
    }:
    if config.credential != null then
      (
        let
          svcs = config.credential.services;
          svc = builtins.head svcs;
          unit = if lib.hasSuffix ".service" svc then svc else "${svc}.service";
        in
        if builtins.length svcs == 1 then
          "/run/credentials/${unit}/${config.credential.name}"
        else
          throw "nixseal.${kind}s.${name}.installedPath: this ${kind} is a systemd credential loaded by ${toString (builtins.length svcs)} services, so it has no one file; each service reads it as $CREDENTIALS_DIRECTORY/${config.credential.name} (%d/${config.credential.name} in unit settings)"
      )
    else if config.path != null then
      config.path
    else
      otherwise;

  entryOptions =
    { kind, config }:
    staticEntryOptions.${kind}
    // {
      group = mkOption {
        type = shared.principal;
        default = defaultGroupOf config.owner;
        defaultText = literalExpression ''config.users.users.''${owner}.group, or "root"'';
        description = "Group of the installed file: a name from users.groups, or a numeric id.";
      };
    };

  secretEntry = name: s: {
    inherit name;
    file = shared.fileString s.file;
    inherit (s)
      format
      key
      owner
      group
      mode
      path
      reloadUnits
      ;
    restartUnits = lib.unique (s.restartUnits ++ serviceUnits s.services);
  }
  // credentialEntry s;

  templateEntry = name: t: {
    inherit name;
    inherit (t)
      content
      owner
      group
      mode
      path
      reloadUnits
      ;
    restartUnits = lib.unique (t.restartUnits ++ serviceUnits t.services);
  }
  // credentialEntry t;

  # The manifest of one stage, written to the store (checked by `nixseal install --check` when
  # nixseal.checkManifest is set).
  writeManifest =
    {
      name,
      stage,
      secretsDir,
      generationsDir,
      secrets,
      templates,
    }:
    let
      system = stage == "system";
      # From a unit (sysusers/userborn), switch-to-configuration has read its lists already.
      lists = system && !useSystemdActivation;
    in
    shared.writeManifest {
      inherit pkgs name;
      value = shared.failIfAny (common.fileProblems cfg.secrets) (
        {
          version = shared.manifestVersion;
          inherit stage secretsDir generationsDir;
          inherit (cfg) keepGenerations mount;
          # The encrypted files are store paths: an unchanged one is not read again at the next
          # activation (docs/manifest.md, storeDir).
          inherit (builtins) storeDir;
        }
        // lib.optionalAttrs cfg.replaceExisting { replaceExisting = true; }
        // lib.optionalAttrs (cfg.changeDetection != "records") { inherit (cfg) changeDetection; }
        // {
          restartListFile = if lists then "/run/nixos/activation-restart-list" else null;
          reloadListFile = if lists then "/run/nixos/activation-reload-list" else null;
          dryRestartListFile = if lists then "/run/nixos/dry-activation-restart-list" else null;
          dryReloadListFile = if lists then "/run/nixos/dry-activation-reload-list" else null;
        }
        // lib.optionalAttrs system {
          restartMode = if useSystemdActivation then "systemctl" else "lists";
          # Always named, so that the last credential's removal also removes it from the store.
          inherit (cfg) credstoreDir;
        }
        // {
          inherit identities;
          secrets = mapAttrsToList secretEntry secrets;
          templates = mapAttrsToList templateEntry templates;
          placeholders = common.placeholders secrets;
        }
      );
      check = if cfg.checkManifest then nixsealBin else null;
    };
}

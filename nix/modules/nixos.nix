# The nixseal NixOS module: options -> two manifests (docs/manifest.md) -> `nixseal install`.
#
# The module only validates options and writes the manifests; every behaviour (mounting,
# decrypting, owners, templates, generations, restart lists) lives in `nixseal install`. The
# manifests hold store paths of *encrypted* files, names, owners, modes, template texts with
# placeholders and unit names: never a secret. Nothing here reads a secret file.
#
# Two stages, as NixOS needs them:
# - "users": secrets with `neededForUsers` (e.g. for `users.users.<name>.hashedPasswordFile`),
#   installed before users and groups are created, owned by root, in /run/nixseal-for-users;
# - "system": everything else, after users and groups exist.
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
    mapAttrs
    mapAttrsToList
    mkIf
    mkMerge
    mkOption
    optional
    types
    ;

  shared = import ./shared.nix { inherit lib; };
  cfg = config.nixseal;

  # The module needs pkgs only to write the manifest as a checked derivation and for the default
  # package; without it (evaluation tests of the module alone) it falls back to builtins.toFile.
  pkgs = config._module.args.pkgs or null;

  usersCfg = config.users.users;
  groupsCfg = config.users.groups;

  # The primary group of a user NixOS knows; "root" for root, numeric ids and unknown users.
  defaultGroupOf =
    owner:
    let
      g = usersCfg.${owner}.group or "";
    in
    if owner == "root" || owner == "0" then "root" else if g != "" then g else "root";

  commonOptions =
    {
      kind,
      name,
      config,
    }:
    {
      owner = mkOption {
        type = shared.principal;
        default = "root";
        example = "postgres";
        description = "User owning the installed file: a name from users.users, or a numeric id.";
      };
      group = mkOption {
        type = shared.principal;
        default = defaultGroupOf config.owner;
        defaultText = literalExpression ''config.users.users.''${owner}.group, or "root"'';
        description = "Group of the installed file: a name from users.groups, or a numeric id.";
      };
      mode = mkOption {
        type = shared.mode;
        default = "0400";
        example = "0440";
        description = "Permissions of the installed file, in octal (at most 0777). The file is created with them.";
      };
      path = mkOption {
        type = types.nullOr shared.hostPath;
        default = null;
        example = "/etc/myapp/password";
        description = "If set, a symlink made there pointing to the installed file (which stays in the secrets directory).";
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
      services = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "myapp" ];
        description = ''
          Services (attributes of systemd.services) that get this ${kind} as a systemd credential:
          `LoadCredential=` puts a copy at `$CREDENTIALS_DIRECTORY/<name>` (with `/` in the name
          replaced by `-`), readable by the service's user, DynamicUser= included. These
          services are also restarted when it changes.
        '';
      };
    };

  secretType = types.submodule (
    { name, config, ... }:
    {
      options = commonOptions {
        kind = "secret";
        inherit name config;
      }
      // {
        file = mkOption {
          type = shared.encryptedFile;
          example = literalExpression "./secrets/db-password.age";
          description = ''
            The encrypted file (age, or a sops file). Write it as a Nix path (`./db.age`, no
            quotes): the *encrypted* file is copied to the store. A string must be a store path.
          '';
        };
        format = mkOption {
          type = types.enum shared.formats;
          default = shared.formatOf config.file;
          defaultText = literalExpression ''"yaml"/"json"/"dotenv"/"ini" by the file's extension, else "age"'';
          description = "The file's format: an age file, or a sops file in one of sops's stores.";
        };
        key = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "db/password";
          description = ''
            sops files only: the path of the value inside the document (`a/b`; the key for
            dotenv; `section/key` for ini). null: the whole decrypted document.
          '';
        };
        neededForUsers = mkOption {
          type = types.bool;
          default = false;
          description = ''
            Install this secret before users and groups are created (for
            `users.users.<name>.hashedPasswordFile`), into {option}`nixseal.secretsForUsersDir`.
            Such secrets are owned by root and restart nothing.
          '';
        };
        installedPath = mkOption {
          type = types.str;
          readOnly = true;
          default =
            if config.path != null then
              config.path
            else
              "${if config.neededForUsers then cfg.secretsForUsersDir else cfg.secretsDir}/${name}";
          defaultText = literalExpression ''path, or "''${secretsDir}/<name>"'';
          description = "Where services find the secret: `path` if set, else its place in the secrets directory.";
        };
      };
    }
  );

  templateType = types.submodule (
    { name, config, ... }:
    {
      options = commonOptions {
        kind = "template";
        inherit name config;
      }
      // {
        content = mkOption {
          type = types.lines;
          example = literalExpression ''
            '''
              [database]
              password = ''${config.nixseal.placeholder."db/password"}
            '''
          '';
          description = ''
            The file's text, with `config.nixseal.placeholder.<secret>` where a secret's value
            goes. Rendered at activation; only the placeholders are in the store.
          '';
        };
        installedPath = mkOption {
          type = types.str;
          readOnly = true;
          default = if config.path != null then config.path else "${cfg.secretsDir}/${name}";
          defaultText = literalExpression ''path, or "''${secretsDir}/<name>"'';
          description = "Where services find the rendered file.";
        };
      };
    }
  );

  identityType = types.submodule {
    options = {
      type = mkOption {
        type = types.enum [
          "ssh"
          "age"
        ];
        description = "`ssh`: an OpenSSH ed25519 or rsa private key. `age`: a file of AGE-SECRET-KEY-1... lines.";
      };
      path = mkOption {
        type = shared.hostPath;
        description = "The identity file on the host.";
      };
    };
  };

  forUsers = filterAttrs (_: s: s.neededForUsers) cfg.secrets;
  forSystem = filterAttrs (_: s: !s.neededForUsers) cfg.secrets;

  identities = lib.unique (
    optional (cfg.ageKeyFile != null) {
      type = "age";
      path = cfg.ageKeyFile;
    }
    ++ map (path: {
      type = "ssh";
      inherit path;
    }) cfg.identityPaths
    ++ map (i: { inherit (i) type path; }) cfg.extraIdentities
  );

  serviceUnits = services: map (s: "${shared.serviceAttr s}.service") services;

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
  };

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
  };

  # Refused outright, not only by assertion: the manifest must never name a file outside the
  # store (it would not be in the closure; a plaintext string path is a likely mistake).
  fileProblems = mapAttrsToList (
    name: s:
    "${shared.optionPath "secrets" name "file"} = \"${toString s.file}\" is a string outside the Nix store; write it as a Nix path (./file.age, without quotes) so that the encrypted file is copied to the store"
  ) (filterAttrs (_: s: !(shared.fileIsStorable s.file)) cfg.secrets);

  manifestFor =
    {
      stage,
      secretsDir,
      generationsDir,
      secrets,
      templates,
    }:
    shared.failIfAny fileProblems {
      version = shared.manifestVersion;
      inherit stage secretsDir generationsDir;
      inherit (cfg) keepGenerations mount;
      restartListFile = if stage == "system" then "/run/nixos/activation-restart-list" else null;
      reloadListFile = if stage == "system" then "/run/nixos/activation-reload-list" else null;
      dryRestartListFile = if stage == "system" then "/run/nixos/dry-activation-restart-list" else null;
      dryReloadListFile = if stage == "system" then "/run/nixos/dry-activation-reload-list" else null;
      inherit identities;
      secrets = mapAttrsToList secretEntry secrets;
      templates = mapAttrsToList templateEntry templates;
      placeholders = mapAttrs (name: _: shared.placeholderFor name) secrets;
    };

  systemManifestValue = manifestFor {
    stage = "system";
    inherit (cfg) secretsDir generationsDir;
    secrets = forSystem;
    inherit (cfg) templates;
  };
  usersManifestValue = manifestFor {
    stage = "users";
    secretsDir = cfg.secretsForUsersDir;
    generationsDir = cfg.generationsForUsersDir;
    secrets = forUsers;
    templates = { };
  };

  checkCommand = if cfg.checkManifest then "${cfg.package}/bin/nixseal" else null;
  systemManifest = shared.writeManifest {
    inherit pkgs;
    name = "nixseal-manifest.json";
    value = systemManifestValue;
    check = checkCommand;
  };
  usersManifest = shared.writeManifest {
    inherit pkgs;
    name = "nixseal-manifest-for-users.json";
    value = usersManifestValue;
    check = checkCommand;
  };

  haveSystemStage = forSystem != { } || cfg.templates != { };
  haveUsersStage = forUsers != { };

  sysusers = options.systemd ? sysusers && config.systemd.sysusers.enable;
  userborn = options.services ? userborn && config.services.userborn.enable;
  useSystemdActivation = sysusers || userborn;

  nixsealBin = "${cfg.package}/bin/nixseal";

  # NixOS runs scripts that support dry activation with NIXOS_ACTION=dry-activate; the installer
  # then only compares and writes the dry restart lists.
  installScript = manifest: ''
    if [ "''${NIXOS_ACTION-}" = dry-activate ]; then
      ${nixsealBin} install --dry-run --manifest ${manifest}
    else
      ${nixsealBin} install --manifest ${manifest}
    fi
  '';

  installService = manifest: {
    restartTriggers = [ manifest ];
    unitConfig = {
      DefaultDependencies = false;
      RequiresMountsFor = map (i: i.path) identities;
    };
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      ExecStart = "${nixsealBin} install --manifest ${manifest}";
    };
  };

  # --- assertions -----------------------------------------------------------------------------

  principalKnown =
    set: p: p == "root" || shared.isNumericId p || set ? ${p};

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

  allNames = map (e: e.name) everything;
  placeholderOwners = lib.listToAttrs (
    mapAttrsToList (name: s: lib.nameValuePair (shared.placeholderFor name) name) cfg.secrets
  );

  assertionsFor =
    e:
    let
      where = attr: shared.optionPath e.kind e.name attr;
      v = e.value;
      isSecret = e.kind == "secrets";
      forUsersSecret = isSecret && v.neededForUsers;
      unknownPlaceholders = builtins.filter (p: !(placeholderOwners ? ${p})) (
        if isSecret then [ ] else shared.placeholdersIn v.content
      );
      usersPlaceholders = builtins.filter (p: placeholderOwners ? ${p} && cfg.secrets.${placeholderOwners.${p}}.neededForUsers) (
        if isSecret then [ ] else shared.placeholdersIn v.content
      );
    in
    [
      {
        assertion = shared.validName e.name;
        message = "nixseal.${e.kind}.${lib.strings.escapeNixIdentifier e.name}: the name must be a relative path of segments made of A-Z a-z 0-9 . _ @ + = - (no `.` or `..` segment, no empty segment, at most 255 bytes a segment); `/` makes subdirectories.";
      }
      {
        assertion = !isSecret || shared.fileIsStorable v.file;
        message = "${where "file"} is a string outside the Nix store; write it as a Nix path (./file.age, without quotes) so that the encrypted file is copied to the store.";
      }
      {
        assertion = !isSecret || v.key == null || builtins.elem v.format shared.sopsFormats && v.format != "binary";
        message = "${where "key"} is set, but format is \"${if isSecret then v.format else ""}\": a key selects a value inside a yaml, json, dotenv or ini sops file; remove it, or set the format.";
      }
      {
        assertion = forUsersSecret || principalKnown usersCfg v.owner;
        message = "${where "owner"} = \"${v.owner}\" is not in users.users; declare the user, use a numeric id, or give the secret to a DynamicUser= service with `services = [ \"...\" ]` (owner root).";
      }
      {
        assertion = forUsersSecret || principalKnown groupsCfg v.group;
        message = "${where "group"} = \"${v.group}\" is not in users.groups; declare the group or use a numeric id.";
      }
      {
        assertion = !forUsersSecret || (builtins.elem v.owner [ "root" "0" ] && builtins.elem v.group [ "root" "0" ]);
        message = "${where "neededForUsers"}: a secret needed for users is installed before users and groups exist, so it must be owned by root:root (owner and group \"root\" or \"0\"), not ${v.owner}:${v.group}.";
      }
      {
        assertion = !forUsersSecret || (v.restartUnits == [ ] && v.reloadUnits == [ ] && v.services == [ ]);
        message = "${where "neededForUsers"}: a secret needed for users is installed before users exist and restarts nothing; remove its restartUnits, reloadUnits and services, or give it to them through a second secret.";
      }
      {
        assertion = unknownPlaceholders == [ ];
        message = "${where "content"} uses a placeholder that names no secret of nixseal.secrets (${lib.concatStringsSep ", " unknownPlaceholders}); use config.nixseal.placeholder.<name> of a declared secret.";
      }
      {
        assertion = usersPlaceholders == [ ];
        message = "${where "content"} uses secret(s) ${lib.concatMapStringsSep ", " (p: "\"${placeholderOwners.${p}}\"") usersPlaceholders} with neededForUsers; templates are rendered in the system stage, which does not hold them. Declare a second secret from the same file without neededForUsers.";
      }
    ];

  # Secret names are unique among secrets, template names among templates.
  duplicateNames = builtins.attrNames (builtins.intersectAttrs cfg.secrets cfg.templates);
  directoryNames = shared.namesUsedAsDirectories allNames;

  # Two entries given to one service under the same credential ID ("a/b" and "a-b").
  credentialClashes = lib.concatLists (
    mapAttrsToList (
      service: ids:
      map (id: "${service}: ${id}") (
        builtins.attrNames (filterAttrs (_: same: builtins.length same > 1) (builtins.groupBy (id: id) ids))
      )
    ) (lib.zipAttrs (concatMap (e: map (svc: { ${shared.serviceAttr svc} = shared.credentialId e.name; }) e.value.services) everything))
  );

  # LoadCredential= wiring: systemd copies the file into the service's credentials directory at
  # start, readable by the service's user whoever owns the original.
  credentialWiring = concatMap (
    e:
    let
      dir =
        if e.kind == "secrets" && e.value.neededForUsers then cfg.secretsForUsersDir else cfg.secretsDir;
    in
    map (svc: {
      ${shared.serviceAttr svc}.serviceConfig.LoadCredential = [
        "${shared.credentialId e.name}:${dir}/${e.name}"
      ];
    }) e.value.services
  ) everything;
in
{
  # Build-time secrets (nixseal.buildSecrets): their own file, docs/build-secrets.md.
  imports = [ ./build-secrets.nix ];

  options.nixseal = {
    secrets = mkOption {
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

    templates = mkOption {
      type = types.attrsOf templateType;
      default = { };
      description = "Files rendered at activation from a text with placeholders of secrets, into {option}`nixseal.secretsDir`.";
    };

    placeholder = mkOption {
      type = types.attrsOf types.str;
      readOnly = true;
      default = mapAttrs (name: _: shared.placeholderFor name) cfg.secrets;
      defaultText = literalExpression ''"<nixseal:" + sha256 of the name + ":placeholder>" for each secret'';
      description = "The placeholder of each secret, to use in {option}`nixseal.templates.<name>.content`.";
    };

    identityPaths = mkOption {
      type = types.listOf shared.hostPath;
      default =
        if config.services.openssh.enable or false then
          # ed25519 first: cheaper, and it also opens files encrypted to its ssh-to-age recipient.
          map (k: k.path) (
            builtins.filter (k: k.type == "ed25519") config.services.openssh.hostKeys
            ++ builtins.filter (k: k.type == "rsa") config.services.openssh.hostKeys
          )
        else
          [ ];
      defaultText = literalExpression "the ed25519, then the rsa keys of services.openssh.hostKeys, when openssh is enabled";
      description = ''
        OpenSSH private keys used to decrypt (ssh-ed25519 and ssh-rsa recipients; an ed25519 key
        also acts as the age X25519 identity ssh-to-age derives from it, for sops-nix files).
        Strings, not Nix paths: a private key must never be copied to the store.
      '';
    };

    ageKeyFile = mkOption {
      type = types.nullOr shared.hostPath;
      default = null;
      example = "/var/lib/nixseal/key.txt";
      description = "A file of age identities (AGE-SECRET-KEY-1... lines) on the host, tried first.";
    };

    extraIdentities = mkOption {
      type = types.listOf identityType;
      default = [ ];
      example = literalExpression ''[ { type = "age"; path = "/var/lib/nixseal/old-key.txt"; } ]'';
      description = "More identity files, tried after the others.";
    };

    secretsDir = mkOption {
      type = shared.hostPath;
      default = "/run/nixseal/secrets";
      description = "The stable path services use: a symlink to the active generation, switched atomically.";
    };

    generationsDir = mkOption {
      type = shared.hostPath;
      default = "/run/nixseal/generations";
      description = "Where generations live (a ramfs, or tmpfs with {option}`nixseal.mount`).";
    };

    secretsForUsersDir = mkOption {
      type = shared.hostPath;
      default = "/run/nixseal-for-users";
      description = "{option}`nixseal.secretsDir` of the secrets with `neededForUsers`.";
    };

    generationsForUsersDir = mkOption {
      type = shared.hostPath;
      default = "/run/nixseal-for-users.d";
      description = "{option}`nixseal.generationsDir` of the secrets with `neededForUsers`.";
    };

    keepGenerations = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "Older generations kept besides the active one (0: only the active one).";
    };

    mount = mkOption {
      type = types.enum [
        "ramfs"
        "tmpfs-noswap"
      ];
      default = "ramfs";
      description = ''
        What the generations directory is mounted as: ramfs (never swapped), or tmpfs with
        `noswap` (Linux 6.4 or later; has a size limit and shows usage in df).
      '';
    };

    package = mkOption {
      type = types.package;
      default =
        if pkgs != null && pkgs ? nixseal then
          pkgs.nixseal
        else
          throw "nixseal.package is not set: use the flake's nixosModules.default, add its overlays.default, or set nixseal.package.";
      defaultText = literalExpression "pkgs.nixseal (the flake's package, with nixosModules.default)";
      description = "The nixseal package whose `nixseal install` runs at activation.";
    };

    checkManifest = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `nixseal install --check` on the manifests when they are built: their structure, and
        that each encrypted file parses and holds the sops keys asked for. Nothing is decrypted.
      '';
    };
  };

  config = mkMerge [
    {
      system.build.nixsealManifest = systemManifest;
      system.build.nixsealUsersManifest = usersManifest;
    }

    (mkIf (cfg.secrets != { } || cfg.templates != { }) {
      assertions =
        concatMap assertionsFor everything
        ++ [
          {
            assertion = duplicateNames == [ ];
            message = "nixseal: ${lib.concatStringsSep ", " duplicateNames} is the name of both a secret and a template; they share the secrets directory, so rename one.";
          }
          {
            assertion = directoryNames == [ ];
            message = "nixseal: ${lib.concatStringsSep ", " directoryNames} is both a file and the directory of another name (\"a\" and \"a/b\"); rename one.";
          }
          {
            assertion = credentialClashes == [ ];
            message = "nixseal: two secrets or templates would be the same credential of a service (`/` becomes `-`): ${lib.concatStringsSep "; " credentialClashes}; rename one.";
          }
          {
            assertion = identities != [ ];
            message = "nixseal: no identity to decrypt with; enable services.openssh (its host keys are used) or set nixseal.identityPaths or nixseal.ageKeyFile.";
          }
        ];
    })

    (mkIf (credentialWiring != [ ]) { systemd.services = mkMerge credentialWiring; })

    # Classic activation: the users stage before the `users` script, the system stage after users
    # and groups exist.
    (mkIf (!useSystemdActivation) {
      system.activationScripts = mkMerge [
        (mkIf haveUsersStage {
          nixsealForUsers = {
            deps = [ "specialfs" ];
            text = installScript usersManifest;
            supportsDryActivation = true;
          };
          users.deps = [ "nixsealForUsers" ];
        })
        (mkIf haveSystemStage {
          nixseal = {
            deps = [
              "specialfs"
              "users"
              "groups"
            ];
            text = installScript systemManifest;
            supportsDryActivation = true;
          };
        })
      ];
    })

    # systemd-sysusers / userborn create users from a unit, not from the activation script: the
    # users stage runs before them, the system stage after them (and again on each switch,
    # through sysinit-reactivation.target).
    (mkIf useSystemdActivation {
      systemd.services = mkMerge [
        (mkIf haveUsersStage {
          nixseal-install-for-users = installService usersManifest // {
            description = "nixseal: install secrets needed for users";
            wantedBy = [ "sysinit.target" ];
            before =
              optional sysusers "systemd-sysusers.service"
              ++ optional userborn "userborn.service";
            requiredBy =
              optional sysusers "systemd-sysusers.service"
              ++ optional userborn "userborn.service";
          };
        })
        (mkIf haveSystemStage {
          nixseal-install = installService systemManifest // {
            description = "nixseal: install secrets";
            wantedBy = [ "sysinit.target" ];
            after = [
              "local-fs.target"
            ]
            ++ optional sysusers "systemd-sysusers.service"
            ++ optional userborn "userborn.service";
            before = [ "sysinit-reactivation.target" ];
            requiredBy = [ "sysinit-reactivation.target" ];
          };
        })
      ];
    })
  ];
}

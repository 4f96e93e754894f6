# The nixseal NixOS module: options -> two manifests (docs/manifest.md) -> `nixseal install`.
#
# The module only validates options and writes the manifests; every behaviour (mounting,
# decrypting, owners, templates, generations, restart lists) lives in `nixseal install`. The
# manifests hold store paths of *encrypted* files, names, owners, modes, template texts with
# placeholders and unit names: never a secret. Nothing here reads a secret file.
#
# Secrets and templates with `credential` set are sealed by `nixseal install` into a persistent
# credential store with systemd-creds (host key and/or TPM2) instead of the ramfs, and the listed
# units load them with LoadCredentialEncrypted= (nix/lib/credentials.nix, the convention module
# authors use too).
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
  creds = import ../lib/credentials.nix;
  cfg = config.nixseal;

  # systemd-creds for the activation script, whose PATH lacks systemd (and /run/current-system
  # is not made yet at first boot). null where there is no systemd option (evaluation tests).
  systemdPackage = config.systemd.package or null;

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

  credentialType =
    name:
    types.submodule {
      options = {
        encrypt = mkOption {
          type = types.enum [
            "auto"
            "host"
            "tpm2"
            "host+tpm2"
          ];
          default = "auto";
          description = ''
            What the credential is sealed with (`systemd-creds encrypt --with-key=`): `host`, the
            host's key in /var/lib/systemd/credential.secret; `tpm2`, the TPM2 chip; `host+tpm2`,
            both; `auto`, the host key plus the TPM2 when the host has one.
          '';
        };
        services = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "myapp" ];
          description = ''
            Services (attributes of systemd.services) that load it with
            `LoadCredentialEncrypted=`; they read it at `$CREDENTIALS_DIRECTORY/<name>` (`%d/<name>`
            in unit settings) and are restarted when it changes.
          '';
        };
        name = mkOption {
          type = types.str;
          default = shared.credentialId name;
          defaultText = literalExpression ''the secret's name with "/" replaced by "-"'';
          description = "The credential's name (ID): letters, digits and `._@+=-`, not starting with `.`.";
        };
        tpm2Pcrs = mkOption {
          type = types.nullOr (types.strMatching "[0-9]{1,2}([+][0-9]{1,2})*");
          default = null;
          example = "7";
          description = "TPM2 PCRs the credential is bound to (`--tpm2-pcrs=`); null: systemd's default.";
        };
      };
    };

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
          services are also restarted when it changes. For hosts with systemd-creds, prefer
          {option}`credential`: the plaintext is then nowhere but in the unit's credentials.
        '';
      };
      credential = mkOption {
        type = types.nullOr (credentialType name);
        default = null;
        example = literalExpression ''{ encrypt = "tpm2"; services = [ "myapp" ]; }'';
        description = ''
          Seal this ${kind} as an encrypted systemd credential instead of writing it to the secrets
          directory: at activation `nixseal install` encrypts it on the host with systemd-creds
          (host key and/or TPM2) into {option}`nixseal.credstoreDir`, and each listed service gets
          `LoadCredentialEncrypted=<name>:<credstoreDir>/<name>`. It is encrypted again (and the
          services restarted) only when its value changes.
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
          "systemd-creds"
        ];
        description = "`ssh`: an OpenSSH ed25519 or rsa private key. `age`: a file of AGE-SECRET-KEY-1... lines. `systemd-creds`: a key sealed with `nixseal host-key seal` or `new`.";
      };
      path = mkOption {
        type = shared.hostPath;
        description = "The identity file on the host.";
      };
      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "`systemd-creds` only: the name it was sealed under (`--name`); null: the file's name.";
      };
    };
  };

  forUsers = filterAttrs (_: s: s.neededForUsers) cfg.secrets;
  forSystem = filterAttrs (_: s: !s.neededForUsers) cfg.secrets;

  identities = lib.unique (
    map (path: {
      type = "systemd-creds";
      inherit path;
    }) cfg.sealedIdentityPaths
    ++ optional (cfg.ageKeyFile != null) {
      type = "age";
      path = cfg.ageKeyFile;
    }
    ++ map (path: {
      type = "ssh";
      inherit path;
    }) cfg.identityPaths
    ++ map (i: { inherit (i) type path; } // lib.optionalAttrs (i.name != null) { inherit (i) name; }) cfg.extraIdentities
  );

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
    let
      system = stage == "system";
      # From a unit (sysusers/userborn), switch-to-configuration has read its lists already.
      lists = system && !useSystemdActivation;
    in
    shared.failIfAny fileProblems (
      {
        version = shared.manifestVersion;
        inherit stage secretsDir generationsDir;
        inherit (cfg) keepGenerations mount;
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
        placeholders = mapAttrs (name: _: shared.placeholderFor name) secrets;
      }
    );

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
  # The activation script's PATH has no systemd: systemd-creds (credentials, sealed identities)
  # comes from the system's systemd package.
  withSystemd = lib.optionalString (systemdPackage != null) "PATH=${systemdPackage}/bin:$PATH ";
  installScript = manifest: ''
    if [ "''${NIXOS_ACTION-}" = dry-activate ]; then
      ${withSystemd}${nixsealBin} install --dry-run --manifest ${manifest}
    else
      ${withSystemd}${nixsealBin} install --manifest ${manifest}
    fi
  '';

  installService = manifest: {
    restartTriggers = [ manifest ];
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
      c = v.credential;
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
        assertion = c == null || creds.isValidName c.name;
        message = "${where "credential.name"} = ${builtins.toJSON (if c == null then "" else c.name)} is not a valid credential name: letters, digits and ._@+=-, no `/` or `:`, not starting with `.`, at most 255 characters.";
      }
      {
        assertion = c == null || !forUsersSecret;
        message = "${where "credential"}: a secret needed for users is installed before any service runs; it cannot be a credential. Declare a second secret from the same file for the service.";
      }
      {
        assertion = c == null || v.path == null;
        message = "${where "path"}: a credential is not written to the secrets directory, so a symlink to it would point nowhere; remove `path` (services read $CREDENTIALS_DIRECTORY/${if c == null then "" else c.name}).";
      }
      {
        assertion = c == null || v.services == [ ];
        message = "${where "services"}: with `credential` set the ${if isSecret then "secret" else "template"} is not in the secrets directory for `LoadCredential=`; list the services in ${where "credential.services"} instead.";
      }
      {
        assertion = c == null || c.tpm2Pcrs == null || c.encrypt != "host";
        message = "${where "credential.tpm2Pcrs"} is set, but credential.encrypt is \"host\": no TPM2 is involved; remove tpm2Pcrs or use \"tpm2\", \"host+tpm2\" or \"auto\".";
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

  # Two entries given to one service under the same credential ID ("a/b" and "a-b"), through
  # `services` or `credential.services`.
  credentialClashes = lib.concatLists (
    mapAttrsToList (
      service: ids:
      map (id: "${service}: ${id}") (
        builtins.attrNames (filterAttrs (_: same: builtins.length same > 1) (builtins.groupBy (id: id) ids))
      )
    ) (
      lib.zipAttrs (
        concatMap (
          e:
          map (svc: { ${shared.serviceAttr svc} = shared.credentialId e.name; }) e.value.services
          ++ lib.optionals (e.value.credential != null) (
            map (svc: { ${shared.serviceAttr svc} = e.value.credential.name; }) e.value.credential.services
          )
        ) everything
      )
    )
  );

  # Entries sealed as credentials, and credential names used by two entries.
  withCredential = builtins.filter (e: e.value.credential != null) everything;
  haveCredentials = withCredential != [ ];
  duplicateCredentials = builtins.attrNames (
    filterAttrs (_: same: builtins.length same > 1) (builtins.groupBy (n: n) (map (e: e.value.credential.name) withCredential))
  );

  # LoadCredentialEncrypted= wiring: systemd decrypts the sealed credential into the service's
  # credentials directory at start (mkCredential, the convention of nix/lib/credentials.nix).
  encryptedWiring = concatMap (
    e:
    map (
      svc:
      {
        ${shared.serviceAttr svc} =
          (creds.mkCredential {
            name = e.value.credential.name;
            service = shared.serviceAttr svc;
            source = "${cfg.credstoreDir}/${e.value.credential.name}";
          }).service;
      }
    ) e.value.credential.services
  ) (builtins.filter (e: creds.isValidName e.value.credential.name) withCredential);

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

    sealedIdentityPaths = mkOption {
      type = types.listOf shared.hostPath;
      default = [ ];
      example = [ "/var/lib/nixseal/host-key.cred" ];
      description = ''
        Identities sealed as systemd credentials with `nixseal host-key new` or `nixseal host-key
        seal` (sealed under the file's name), tried first. They are decrypted by systemd-creds in
        memory at activation: a copy of the disk without the host key (or the TPM2) opens nothing.
        For one sealed under another name, use {option}`nixseal.extraIdentities` with `name`.
      '';
    };

    credstoreDir = mkOption {
      type = shared.hostPath;
      default = creds.credstoreDir;
      description = ''
        Where `nixseal install` keeps the credentials of entries with `credential` set (a
        directory it owns, 0700 root, on persistent storage: with an impermanent root, persist it).
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
            assertion = duplicateCredentials == [ ];
            message = "nixseal: the credential name(s) ${lib.concatStringsSep ", " duplicateCredentials} are used by more than one secret or template; set credential.name so that each is unique.";
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

    (mkIf (credentialWiring != [ ] || encryptedWiring != [ ]) {
      systemd.services = mkMerge (credentialWiring ++ encryptedWiring);
    })

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

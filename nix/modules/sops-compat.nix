# sops-nix compatibility: the sops-nix NixOS module's options (`sops.secrets.<name>`,
# `sops.templates.<name>`, `config.sops.placeholder`, `sops.age.*`, ...), mapped onto nixseal's,
# so moving from sops-nix is replacing one import. Names, defaults and paths are sops-nix's
# (modules/sops of Mic92/sops-nix): a secret is found at `sops.secrets.<name>.path`, by default
# /run/secrets/<name> (/run/secrets-for-users/<name> with neededForUsers), a template at
# /run/secrets/rendered/<name>. As with sops-nix, /run/secrets itself is the symlink to the active
# generation (/run/secrets.d/N; /run/secrets-for-users -> /run/secrets-for-users.d/N), so
# /run/secrets/<name> is the file itself, with its owner and mode (nixseal.secretsDir and
# generationsDir are set so); only a `path` elsewhere gets a symlink, to that file. The same sops
# files, the same age keys, the same ssh host keys (used directly, no ssh-to-age step).
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    literalExpression
    mapAttrs
    mapAttrs'
    mkDefault
    mkIf
    mkMerge
    mkOption
    types
    ;

  shared = import ./shared.nix { inherit lib; };
  cfg = config.sops;
  users = config.users.users;

  ownershipOptions =
    config:
    {
      mode = mkOption {
        type = types.str;
        default = "0400";
        description = "Permissions mode, in octal.";
      };
      owner = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "User of the file. Can only be set if uid is 0.";
      };
      uid = mkOption {
        type = types.nullOr types.int;
        default = 0;
        description = "UID of the file, only applied when owner is null.";
      };
      group = mkOption {
        type = types.nullOr types.str;
        default = if config.owner != null then users.${config.owner}.group else null;
        defaultText = literalExpression "config.users.users.\${owner}.group";
        description = "Group of the file. Can only be set if gid is 0.";
      };
      gid = mkOption {
        type = types.nullOr types.int;
        default = 0;
        description = "GID of the file, only applied when group is null.";
      };
      restartUnits = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "sshd.service" ];
        description = "Units restarted when this changes.";
      };
      reloadUnits = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Units reloaded when this changes.";
      };
    };

  secretType = types.submodule (
    { config, name, ... }:
    {
      config.sopsFile = lib.mkOptionDefault cfg.defaultSopsFile;
      options = ownershipOptions config // {
        name = mkOption {
          type = types.str;
          default = name;
          description = "Name of the file used in /run/secrets (nixseal's secret name).";
        };
        key = mkOption {
          type = types.str;
          default = if cfg.defaultSopsKey != null then cfg.defaultSopsKey else name;
          description = ''Key used to look the value up in the sops file ("a/b" for nested keys; "" means the whole file).'';
        };
        path = mkOption {
          type = types.str;
          default =
            if config.neededForUsers then "/run/secrets-for-users/${config.name}" else "/run/secrets/${config.name}";
          description = "Path where the secret is found: the file itself when it is /run/secrets/<name>, else a symlink to that file.";
        };
        format = mkOption {
          type = types.enum [
            "yaml"
            "json"
            "binary"
            "dotenv"
            "ini"
          ];
          default = cfg.defaultSopsFormat;
          description = "File format used to decrypt the sops secret.";
        };
        sopsFile = mkOption {
          type = types.path;
          description = "Sops file the secret is loaded from.";
        };
        neededForUsers = mkOption {
          type = types.bool;
          default = false;
          description = "Install the secret before users and groups are created (owned by root).";
        };
      };
    }
  );

  templateType = types.submodule (
    { config, name, ... }:
    {
      options = ownershipOptions config // {
        name = mkOption {
          type = types.singleLineStr;
          default = name;
          description = "Name of the file used in /run/secrets/rendered.";
        };
        path = mkOption {
          type = types.singleLineStr;
          default = "/run/secrets/rendered/${config.name}";
          description = "Path where the rendered file is found: /run/secrets/rendered/<name> itself, or a symlink to it elsewhere.";
        };
        content = mkOption {
          type = types.lines;
          default = "";
          description = "Content of the file, with config.sops.placeholder.<secret> where a secret goes.";
        };
        file = mkOption {
          type = types.nullOr types.path;
          default = null;
          description = "File used as the template instead of `content` (it holds placeholders, not secrets).";
        };
      };
    }
  );

  nixsealCfg = config.nixseal;
  # Where nixseal installs a secret: a `path` there needs no symlink (it is the file itself).
  installDirOf = s: if s.neededForUsers then nixsealCfg.secretsForUsersDir else nixsealCfg.secretsDir;
  linkUnlessInstalled = installed: p: if p == installed then null else p;

  ownerOf = v: if v.owner != null then v.owner else toString v.uid;
  groupOf = v: if v.group != null then v.group else toString v.gid;

  # sops-nix installs templates under /run/secrets/rendered; nixseal names them so as well,
  # which also keeps them apart from secrets of the same name.
  templateName = t: "rendered/${t.name}";
in
{
  imports = [ ./nixos.nix ];

  options.sops = {
    secrets = mkOption {
      type = types.attrsOf secretType;
      default = { };
      description = "sops-nix's secrets, installed by nixseal.";
    };
    templates = mkOption {
      type = types.attrsOf templateType;
      default = { };
      description = "sops-nix's templates, rendered by nixseal.";
    };
    placeholder = mkOption {
      type = types.attrsOf types.str;
      default = { };
      visible = false;
      description = "The placeholder of each secret, for template contents (nixseal's placeholders).";
    };
    defaultSopsFile = mkOption {
      type = types.path;
      description = "Default sops file used for all secrets.";
    };
    defaultSopsFormat = mkOption {
      type = types.str;
      default = "yaml";
      description = "Default sops format used for all secrets.";
    };
    defaultSopsKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Default key used to look up all secrets.";
    };
    validateSopsFiles = mkOption {
      type = types.bool;
      default = true;
      description = "Accepted for compatibility: nixseal always requires sops files in the store and checks them at build time (nixseal.checkManifest).";
    };
    keepGenerations = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "Number of secrets generations to keep; 0 keeps all of them, as in sops-nix (nixseal.keepGenerations \"all\").";
    };
    useTmpfs = mkOption {
      type = types.bool;
      default = false;
      description = "Use tmpfs instead of ramfs; nixseal mounts it with noswap (nixseal.mount).";
    };
    log = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Accepted for compatibility and unused: nixseal always logs the names of changed secrets.";
    };
    environment = mkOption {
      type = types.attrsOf (types.either types.str types.path);
      default = { };
      description = "Accepted for compatibility and unused.";
    };
    age = {
      keyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/sops-nix/key.txt";
        description = "Path to the age key file (nixseal.ageKeyFile).";
      };
      sshKeyPaths = mkOption {
        type = types.listOf types.path;
        default =
          if config.services.openssh.enable or false then
            map (e: e.path) (builtins.filter (e: e.type == "ed25519") config.services.openssh.hostKeys)
          else
            [ ];
        defaultText = literalExpression "the ed25519 keys of services.openssh.hostKeys";
        description = "ssh ed25519 keys used as age keys (nixseal.identityPaths; no ssh-to-age step needed).";
      };
      generateKey = mkOption {
        type = types.bool;
        default = false;
        description = "Not supported: create the key once with `nixseal age-keygen -o FILE`.";
      };
      plugins = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
        description = "age plugins; nixseal runs any age-plugin-NAME on its PATH.";
      };
    };
    gnupg = {
      home = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/sops";
        description = "A GnuPG home whose keys open the files' pgp entries (gpg decrypts them at activation): a `gpg` identity of nixseal.";
      };
      sshKeyPaths = mkOption {
        type = types.listOf types.path;
        # As sops-nix: the RSA host keys. Nothing runs for them unless a file names their PGP
        # fingerprint (computed without gpg); set [ ] with sops.gnupg.home, as sops-nix requires.
        default =
          if config.services.openssh.enable or false then
            map (e: e.path) (builtins.filter (e: e.type == "rsa") config.services.openssh.hostKeys)
          else
            [ ];
        defaultText = literalExpression "the rsa keys of services.openssh.hostKeys";
        example = [ "/etc/ssh/ssh_host_rsa_key" ];
        description = ''
          RSA ssh keys used as the PGP keys sops-nix makes of them, for the files' pgp entries (a
          `gpg-ssh` identity of nixseal each). As with sops-nix, the default is the host's RSA
          host keys, and it must be set to [ ] when sops.gnupg.home is set.
        '';
      };
    };
  };

  config = mkMerge [
    {
      sops.placeholder = mapAttrs (_: s: mkDefault (shared.placeholderFor s.name)) cfg.secrets;
    }
    (mkIf (cfg.secrets != { } || cfg.templates != { }) {
      nixseal.secrets = mapAttrs' (
        _: s:
        lib.nameValuePair s.name {
          file = s.sopsFile;
          inherit (s)
            format
            mode
            restartUnits
            reloadUnits
            neededForUsers
            ;
          path = linkUnlessInstalled "${installDirOf s}/${s.name}" s.path;
          key = if s.format == "binary" || s.key == "" then null else s.key;
          owner = ownerOf s;
          group = groupOf s;
        }
      ) cfg.secrets;

      nixseal.templates = mapAttrs' (
        _: t:
        lib.nameValuePair (templateName t) {
          content = if t.file != null then builtins.readFile t.file else t.content;
          inherit (t)
            mode
            restartUnits
            reloadUnits
            ;
          # Rendered to /run/secrets/rendered/<name> as sops-nix does; a `path` elsewhere is a
          # symlink to it (both exist, as with sops-nix).
          path = linkUnlessInstalled "${nixsealCfg.secretsDir}/${templateName t}" t.path;
          owner = ownerOf t;
          group = groupOf t;
        }
      ) cfg.templates;

      # sops-nix's layout: the stable symlinks /run/secrets and /run/secrets-for-users, the
      # generations beside them.
      nixseal.secretsDir = mkDefault "/run/secrets";
      nixseal.generationsDir = mkDefault "/run/secrets.d";
      nixseal.secretsForUsersDir = mkDefault "/run/secrets-for-users";
      nixseal.generationsForUsersDir = mkDefault "/run/secrets-for-users.d";

      # Under systemd-sysusers / userborn, sops-nix installs the users stage from
      # sops-install-secrets-for-users.service; hosts add to that unit (a preStart that fetches
      # the key), so nixseal's unit takes its name.
      nixseal.usersStageUnit = mkDefault "sops-install-secrets-for-users";
      # sops-nix replaces a file at a secret's path by its symlink; so does nixseal here, naming it.
      nixseal.replaceExisting = mkDefault true;
      # sops-nix compares with the files of the active generation and restarts nothing at boot.
      nixseal.changeDetection = mkDefault "files";

      nixseal.identityPaths = mkDefault (map toString cfg.age.sshKeyPaths);
      nixseal.ageKeyFile = mkIf (cfg.age.keyFile != null) (mkDefault cfg.age.keyFile);
      # PGP: gpg opens the pgp entries, with the keys of a GnuPG home or with RSA ssh keys made
      # into the PGP keys sops-nix makes of them (src/sops/ssh-to-pgp.ts).
      nixseal.extraIdentities =
        lib.optional (cfg.gnupg.home != null) {
          type = "gpg";
          path = cfg.gnupg.home;
        }
        ++ map (p: {
          type = "gpg-ssh";
          path = toString p;
        }) cfg.gnupg.sshKeyPaths;
      # sops-nix's 0 means "never prune"; nixseal's 0 means "only the active one".
      nixseal.keepGenerations = mkDefault (if cfg.keepGenerations == 0 then "all" else cfg.keepGenerations);
      nixseal.mount = mkIf cfg.useTmpfs (mkDefault "tmpfs-noswap");

      assertions = [
        {
          # As sops-nix: one or the other.
          assertion = cfg.gnupg.home == null || cfg.gnupg.sshKeyPaths == [ ];
          message = "sops.gnupg: set only one of sops.gnupg.home and sops.gnupg.sshKeyPaths (with sops.gnupg.home, set sops.gnupg.sshKeyPaths = [ ]: its default is the RSA host keys, as in sops-nix).";
        }
      ];
      warnings = lib.optional cfg.age.generateKey "sops.age.generateKey: nixseal does not generate keys at activation; create ${toString cfg.age.keyFile} once with `nixseal age-keygen -o ${toString cfg.age.keyFile}`.";
    })
  ];
}

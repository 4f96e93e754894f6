# Deploy-time keys, the part of the NixOS module imported by nix/modules/nixos.nix: the options
# nixseal.keys (what `nixseal push` sends to this host, docs/push.md) and nixseal.push (how the
# deployer reaches it), the push plan (system.build.nixsealPushPlan), the `keys` group, a key unit
# per key, and nixseal on the host's PATH for `nixseal receive`.
#
# The plan is an attribute set, not a store file, so that `nix eval --json
# .#nixosConfigurations.<host>.config.system.build.nixsealPushPlan` prints it without building
# anything. It holds the sources of the keys (store paths of *encrypted* files, commands, pass
# entry names), never a key: the deployer reads and decrypts them at push time
# (docs/architecture.md, invariant 1).
#
# Key units: nixseal-key-<name>.service is a oneshot unit (running `true`) with RemainAfterExit=
# and ConditionPathExists= on the key's path. `nixseal receive` starts it when the key arrives and
# stops it when the key is removed; at boot (wanted by multi-user.target) it is active only if the
# key is there (a RAM-backed destDir is empty after a reboot until the next push). A service
# that needs the key orders itself after it and binds to it (docs/push.md, "Key units").
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    concatMap
    literalExpression
    mapAttrs
    mapAttrsToList
    mkIf
    mkMerge
    mkOption
    optional
    optionalAttrs
    types
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg;
  pushCfg = cfg.push;

  planVersion = 1;

  # Key names make unit names (nixseal-key-<name>.service, and <name>-key.service for the NixOps
  # compat module): characters systemd takes in a unit name without escaping, no `@` (a template
  # instance), no leading `.` or `-`, and room for the prefix and suffix within 255 characters.
  keyNamePattern = "[A-Za-z0-9_][A-Za-z0-9._-]*";
  maxKeyName = 235;
  validKeyName =
    n: builtins.stringLength n <= maxKeyName && builtins.match keyNamePattern n != null && !(lib.hasInfix ".." n);

  # The file name in destDir, and the host's name in the plan: one path segment, no leading `.`,
  # no `..` (the plan's rule for names, as `nixseal push` checks it).
  fileNamePattern = "[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*";
  validFileName =
    n: builtins.stringLength n <= 255 && builtins.match fileNamePattern n != null && !(lib.hasInfix ".." n);

  # ssh's destination: a host name, an IPv4 or IPv6 address (bare or in brackets), never
  # something ssh would read as an option.
  validTargetHost =
    h:
    builtins.stringLength h <= 253
    && builtins.match "[A-Za-z0-9_][A-Za-z0-9._%-]*|\\[[0-9A-Za-z:.%]+]|[0-9A-Fa-f:]+" h != null;

  # The program ssh runs on the host (through the login shell): no shell syntax.
  validRemoteCommand = c: builtins.stringLength c <= 4096 && builtins.match "[A-Za-z0-9_./+@][A-Za-z0-9_./+@-]*" c != null;

  # A `pass` entry: a relative path in the password store, not an option of `pass show`.
  validPassEntry =
    e:
    builtins.stringLength e <= 4096
    && builtins.match "[^-].*" e != null
    && !(lib.hasInfix "\n" e)
    && lib.all (s: s != "" && s != "." && s != "..") (lib.splitString "/" e);

  sourceType = types.submodule {
    options = {
      file = mkOption {
        type = types.nullOr shared.encryptedFile;
        default = null;
        example = literalExpression "./secrets/db-password.age";
        description = ''
          An encrypted file (age, or a sops file) the deployer decrypts with its own identities.
          A Nix path (`./db.age`, no quotes) is copied to the store, so it must be encrypted; a
          string must be an absolute path on the deployer.
        '';
      };
      key = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "db/password";
        description = "With a sops `file` only: the path of the value inside the document (`a/b`).";
      };
      command = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = null;
        example = [
          "vault"
          "read"
          "-field=password"
          "secret/db"
        ];
        description = "A program and its arguments, run on the deployer without a shell; its standard output is the key.";
      };
      pass = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "hosts/web1/db";
        description = "An entry of the deployer's password store (`pass show ENTRY`).";
      };
    };
  };

  keyType = types.submodule (
    { name, config, ... }:
    {
      options = {
        source = mkOption {
          type = sourceType;
          example = literalExpression "{ file = ./secrets/db-password.age; }";
          description = "Where the deployer gets the key: exactly one of `file` (with `key` for a sops value), `command` or `pass`.";
        };
        name = mkOption {
          type = types.str;
          default = name;
          defaultText = literalExpression "<name>";
          description = "The key's file name in destDir (one path segment, not starting with `.`).";
        };
        destDir = mkOption {
          type = types.str;
          default = "/run/keys";
          description = "The directory on the host the key is placed in (absolute; /run/keys is RAM-backed on NixOS).";
        };
        owner = mkOption {
          type = types.str;
          default = "root";
          description = "User owning the key file on the host: a name from users.users, or a numeric id.";
        };
        group = mkOption {
          type = types.str;
          default = "keys";
          description = "Group of the key file on the host: a name from users.groups, or a numeric id.";
        };
        mode = mkOption {
          type = types.str;
          default = "0440";
          description = "Permissions of the key file, in octal (at most 0777). The file is created with them.";
        };
        restartUnits = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "myapp.service" ];
          description = "Units restarted when the key is added or changes.";
        };
        reloadUnits = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "nginx.service" ];
          description = "Units reloaded when the key is added or changes.";
        };
        uploadAt = mkOption {
          type = types.enum [
            "pre-activation"
            "post-activation"
          ];
          default = "pre-activation";
          description = "When `nixseal push --upload-at` sends the key: before the new system is activated, or after (for an owner the new system creates).";
        };
        persist = mkOption {
          type = types.enum [
            false
            "credential"
          ];
          default = false;
          description = ''
            false: the key lives only in RAM and is gone after a reboot until the next push.
            "credential": the host also seals it with systemd-creds, so it survives a reboot.
          '';
        };
        path = mkOption {
          type = types.str;
          readOnly = true;
          default = "${config.destDir}/${config.name}";
          defaultText = literalExpression ''"''${destDir}/''${name}"'';
          description = "Where services find the key on the host.";
        };
        unit = mkOption {
          type = types.str;
          readOnly = true;
          default = "nixseal-key-${name}.service";
          defaultText = literalExpression ''"nixseal-key-<name>.service"'';
          description = "The key unit: active while the key is present (docs/push.md, \"Key units\").";
        };
        unitAliases = mkOption {
          type = types.listOf types.str;
          default = [ ];
          internal = true;
          description = "Other names of the key unit (the NixOps compat module's <name>-key.service).";
        };
      };
    }
  );

  where = name: attr: shared.optionPath "keys" name attr;
  quoted = s: builtins.toJSON s;

  sourceProblems =
    name: s:
    let
      given = builtins.filter (a: s.${a} != null) [
        "file"
        "command"
        "pass"
      ];
    in
    optional (builtins.length given != 1)
      "${where name "source"}: set exactly one of file, command or pass (${
        if given == [ ] then "none is set" else "set: ${lib.concatStringsSep ", " given}"
      })."
    ++ optional (s.key != null && s.file == null) "${where name "source.key"} is set without source.file: a key selects a value inside a sops file."
    ++ optional (
      s.key != null && s.file != null && shared.formatOf s.file == "age"
    ) "${where name "source.key"} is set, but ${quoted (baseNameOf (toString s.file))} is an age file (sops files end in .yaml, .yml, .json, .env or .ini); remove key, or name the sops file."
    ++ optional (
      s.file != null && !(builtins.isPath s.file) && !(shared.isNormalisedAbsolute (toString s.file))
    ) "${where name "source.file"} = ${quoted (toString s.file)} is not an absolute path; write it as a Nix path (./file.age, without quotes: the encrypted file is copied to the store) or as an absolute path on the deployer."
    ++ optional (
      s.command != null && (s.command == [ ] || builtins.head s.command == "")
    ) "${where name "source.command"} is empty; give the program and its arguments, e.g. [ \"vault\" \"read\" \"-field=password\" \"secret/db\" ]."
    ++ optional (
      s.pass != null && !(validPassEntry s.pass)
    ) "${where name "source.pass"} = ${quoted s.pass} is not an entry of a password store; use its relative path, as `pass show` takes it (e.g. \"hosts/web1/db\"), not starting with `-`.";

  principalKnown = set: p: p == "root" || shared.isNumericId p || set ? ${p};

  keyProblems =
    name: k:
    optional (!(validKeyName name))
      "nixseal.keys.${lib.strings.escapeNixIdentifier name}: the name must be at most ${toString maxKeyName} characters of A-Z a-z 0-9 . _ -, not starting with `.` or `-`, without `..` (no `/`: it names the unit nixseal-key-<name>.service; set `name` for the file name)."
    ++ sourceProblems name k.source
    ++ optional (!(validFileName k.name))
      "${where name "name"} = ${quoted k.name} is not a file name; use one path segment of A-Z a-z 0-9 . _ @ + = - (no `/` or `..`, not starting with `.`), at most 255 bytes."
    ++ optional (!(shared.isNormalisedAbsolute k.destDir) || shared.isInStore k.destDir)
      "${where name "destDir"} = ${quoted k.destDir} is not a normalised absolute path outside the Nix store; write it like \"/run/keys\" (no `.` or `..` segment, no trailing `/`)."
    ++ optional (!(shared.validMode k.mode))
      "${where name "mode"} = ${quoted k.mode} is not an octal mode; write 3 or 4 octal digits, at most 0777, e.g. \"0440\"."
    ++ optional (!(shared.validPrincipal k.owner))
      "${where name "owner"} = ${quoted k.owner} is not a user name or numeric id."
    ++ optional (shared.validPrincipal k.owner && !(principalKnown config.users.users k.owner))
      "${where name "owner"} = ${quoted k.owner} is not in users.users; declare the user or use a numeric id."
    ++ optional (!(shared.validPrincipal k.group))
      "${where name "group"} = ${quoted k.group} is not a group name or numeric id."
    ++ optional (shared.validPrincipal k.group && !(principalKnown config.users.groups k.group))
      "${where name "group"} = ${quoted k.group} is not in users.groups; declare the group or use a numeric id."
    ++ map (
      u: "${where name "restartUnits"}: ${quoted u} is not a unit name with its suffix, e.g. \"myapp.service\"."
    ) (builtins.filter (u: !(shared.validUnitName u)) k.restartUnits)
    ++ map (
      u: "${where name "reloadUnits"}: ${quoted u} is not a unit name with its suffix, e.g. \"nginx.service\"."
    ) (builtins.filter (u: !(shared.validUnitName u)) k.reloadUnits);

  # Two keys at one path would overwrite each other on the host.
  samePath = lib.filterAttrs (_: names: builtins.length names > 1) (
    builtins.groupBy (name: cfg.keys.${name}.path) (builtins.attrNames cfg.keys)
  );

  # Each destDir becomes one directory of its own on the host, so one may not hold another.
  destDirs = lib.unique (mapAttrsToList (_: k: k.destDir) cfg.keys);
  nestedDestDirs = concatMap (
    outer: map (inner: { inherit outer inner; }) (builtins.filter (d: lib.hasPrefix "${outer}/" d) destDirs)
  ) destDirs;

  hostProblems =
    optional (pushCfg.name == "")
      "nixseal.push.name is empty (networking.hostName is not set); set the host's name in the plan."
    ++ optional (pushCfg.targetHost == null || pushCfg.targetHost == "")
      "nixseal.push.targetHost is not set (networking.hostName is empty); set the address `nixseal push` connects to."
    ++ optional (pushCfg.targetHost != null && pushCfg.targetHost != "" && !(validTargetHost pushCfg.targetHost))
      "nixseal.push.targetHost = ${quoted pushCfg.targetHost} is not a host name or address; use a name, an IPv4 address or an IPv6 address (with a zone in brackets: [fe80::1%eth0]), not starting with `-`, and the port in nixseal.push.targetPort."
    ++ optional (pushCfg.targetUser != null && !(shared.validPrincipal pushCfg.targetUser && !(shared.isNumericId pushCfg.targetUser)))
      "nixseal.push.targetUser = ${quoted pushCfg.targetUser} is not a user name; use the name ssh logs in as (e.g. \"root\"), or null for ssh's default."
    ++ optional (pushCfg.name != "" && !(validFileName pushCfg.name))
      "nixseal.push.name = ${quoted pushCfg.name} is not a name for the plan; use A-Z a-z 0-9 . _ @ + = - (no `/` or `..`, not starting with `.`)."
    ++ optional (!(validRemoteCommand pushCfg.nixsealCommand))
      "nixseal.push.nixsealCommand = ${quoted pushCfg.nixsealCommand} is not a program name or path; use letters, digits and _ . / + @ - (no spaces or shell syntax: ssh runs it through a shell)."
    ++ map (
      o: "nixseal.push.sshOptions: ${quoted o} contains a newline or carriage return; give each ssh argument as one string without them."
    ) (builtins.filter (o: lib.hasInfix "\n" o || lib.hasInfix "\r" o) pushCfg.sshOptions);

  problems =
    pushCfg.problems
    ++ lib.optionals pushCfg.enable (
      hostProblems
      ++ concatMap (name: keyProblems name cfg.keys.${name}) (builtins.attrNames cfg.keys)
      ++ mapAttrsToList (
        path: names:
        "nixseal.keys: ${lib.concatStringsSep ", " names} share the path ${path}; give each its own `name` or `destDir`."
      ) samePath
      ++ map (
        n:
        "nixseal.keys: destDir ${n.inner} is inside destDir ${n.outer}; `nixseal push` gives each destDir a directory of its own, so keep them apart (e.g. /run/keys and /run/app-keys)."
      ) nestedDestDirs
    );

  sourceEntry =
    s:
    if s.file != null then
      # A Nix path is copied to the store here (it is encrypted); a string stays as it is.
      { file = shared.fileString s.file; }
      // optionalAttrs (s.key != null) { inherit (s) key; }
    else if s.command != null then
      { inherit (s) command; }
    else
      { inherit (s) pass; };

  keyEntry = _: k: {
    source = sourceEntry k.source;
    inherit (k)
      name
      destDir
      owner
      group
      mode
      restartUnits
      reloadUnits
      uploadAt
      persist
      ;
    keyUnit = k.unit;
  };

  hostEntry = {
    inherit (pushCfg) targetHost;
  }
  // optionalAttrs (pushCfg.targetUser != null) { inherit (pushCfg) targetUser; }
  // optionalAttrs (pushCfg.targetPort != null) { inherit (pushCfg) targetPort; }
  // optionalAttrs (pushCfg.sshOptions != [ ]) { inherit (pushCfg) sshOptions; }
  // {
    inherit (pushCfg) nixsealCommand;
    keys = mapAttrs keyEntry cfg.keys;
  };

  # Read directly by `nix eval`, which does not check assertions: a plan with a problem is never
  # emitted (each problem is an assertion too, for a system build).
  plan =
    if problems != [ ] then
      throw "nixseal: refusing to emit the push plan:\n${lib.concatMapStringsSep "\n" (p: "- ${p}") problems}"
    else if !pushCfg.enable then
      {
        version = planVersion;
        hosts = { };
      }
    else
      {
        version = planVersion;
        hosts.${pushCfg.name} = hostEntry;
      };

  hostName = config.networking.hostName or "";

  # Keys the host seals with systemd-creds, restored from there at boot (docs/push.md).
  persistedKeys = lib.filterAttrs (_: k: k.persist == "credential") cfg.keys;

  # coreutils' true; without nixpkgs (evaluation tests), the name systemd finds in its search path.
  trueCommand = if l.pkgs != null && l.pkgs ? coreutils then "${l.pkgs.coreutils}/bin/true" else "true";
in
{
  options.nixseal.keys = mkOption {
    type = types.attrsOf keyType;
    default = { };
    example = literalExpression ''
      {
        db-password = { source.file = ./secrets/db-password.age; owner = "postgres"; restartUnits = [ "postgresql.service" ]; };
        api-token = { source.command = [ "vault" "read" "-field=token" "secret/api" ]; };
        smtp = { source.pass = "hosts/web1/smtp"; destDir = "/run/mail-keys"; };
      }
    '';
    description = ''
      Deploy-time keys: sent to the host by `nixseal push` over SSH and kept in RAM there
      (docs/push.md). Unlike nixseal.secrets, the host needs no key to decrypt them.
    '';
  };

  options.nixseal.push = {
    enable = mkOption {
      type = types.bool;
      default = cfg.keys != { };
      defaultText = literalExpression "config.nixseal.keys != { }";
      description = ''
        Whether the plan names this host (and nixseal is on its PATH for `nixseal receive`).
        Keep it true when removing the last key, so that the next push removes it from the host.
      '';
    };
    name = mkOption {
      type = types.str;
      default = hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = "The host's name in the plan (`nixseal push --host NAME`).";
    };
    targetHost = mkOption {
      type = types.nullOr types.str;
      default = config.networking.fqdnOrHostName or hostName;
      defaultText = literalExpression "config.networking.fqdnOrHostName (networking.hostName, with networking.domain if set)";
      description = "The host name or address ssh connects to.";
    };
    targetUser = mkOption {
      type = types.nullOr types.str;
      default = "root";
      description = "The user ssh logs in as (null: ssh's default). `nixseal receive` must run as root to set owners.";
    };
    targetPort = mkOption {
      type = types.nullOr (types.ints.between 1 65535);
      default = null;
      description = "The ssh port (null: ssh's default or its configuration).";
    };
    sshOptions = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "-o"
        "ProxyJump=bastion"
      ];
      description = "Extra arguments for ssh, as they are given to it.";
    };
    nixsealCommand = mkOption {
      type = types.str;
      default = "/run/current-system/sw/bin/nixseal";
      description = "The program that runs `receive` on the host.";
    };
    problems = mkOption {
      type = types.listOf types.str;
      default = [ ];
      internal = true;
      description = "Problems found by a compat module (nix/modules/colmena-keys-compat.nix): assertions, and the plan is refused.";
    };
  };

  config = mkMerge [
    { system.build.nixsealPushPlan = plan; }

    {
      assertions = map (message: {
        assertion = false;
        inherit message;
      }) problems;
    }

    (mkIf pushCfg.enable {
      environment.systemPackages = [ cfg.package ];

      # NixOS's own keys group (it owns /run/keys) is merged with this one.
      users.groups.keys = { };

      systemd.services = lib.mapAttrs' (
        name: k:
        lib.nameValuePair (lib.removeSuffix ".service" k.unit) (
          {
            description = "nixseal: key ${name} is present at ${k.path}";
            wantedBy = [ "multi-user.target" ];
            # It runs nothing, so a new definition (a new coreutils) needs no restart, which would
            # also restart every service bound to it; `nixseal receive` starts and stops it.
            restartIfChanged = false;
            # `%` starts a specifier in unit settings.
            unitConfig.ConditionPathExists = builtins.replaceStrings [ "%" ] [ "%%" ] k.path;
            serviceConfig = {
              Type = "oneshot";
              RemainAfterExit = true;
              # systemd refuses a service with no command at all.
              ExecStart = trueCommand;
            };
          }
          // optionalAttrs (k.unitAliases != [ ]) { aliases = k.unitAliases; }
        )
      ) cfg.keys;
    })

    (mkIf (pushCfg.enable && persistedKeys != { }) {
      # At boot, before the key units (whose ConditionPathExists= then finds the keys): the keys
      # with persist = "credential" unsealed from the credential store back into RAM.
      systemd.services.nixseal-restore-keys = {
        description = "nixseal: restore the pushed keys sealed with systemd-creds";
        wantedBy = [ "multi-user.target" ];
        before = mapAttrsToList (_: k: k.unit) persistedKeys;
        # Once per boot: a switch neither runs it again nor stops it.
        restartIfChanged = false;
        stopIfChanged = false;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${l.nixsealBin} receive --restore";
        };
      };
    })
  ];
}

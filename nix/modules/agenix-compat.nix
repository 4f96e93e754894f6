# agenix compatibility: the agenix NixOS module's options (`age.secrets.<name>`,
# `age.identityPaths`, ...), mapped onto nixseal's, so moving from agenix is replacing one
# import. Names, defaults and paths are agenix's (modules/age.nix of ryantm/agenix): a secret is
# found at `age.secrets.<name>.path`, by default /run/agenix/<name>, as a symlink to where nixseal
# installs it. Existing .age files and host keys work unchanged.
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    filterAttrs
    literalExpression
    mapAttrs'
    mapAttrsToList
    mkDefault
    mkIf
    mkOption
    types
    ;

  cfg = config.age;
  octalMode = m: builtins.match "0?[0-7]{3}" m != null;
  users = config.users.users;

  secretType = types.submodule (
    { config, name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
          description = "Name of the secret (its file name under age.secretsDir; nixseal's secret name).";
        };
        file = mkOption {
          type = types.path;
          description = "Age file the secret is loaded from.";
        };
        path = mkOption {
          type = types.str;
          default = "${cfg.secretsDir}/${config.name}";
          defaultText = literalExpression ''"''${cfg.secretsDir}/''${config.name}"'';
          description = "Path where the decrypted secret is found (a symlink to nixseal's copy).";
        };
        mode = mkOption {
          type = types.str;
          default = "0400";
          description = "Permissions mode of the decrypted secret (octal; nixseal does not take chmod's symbolic modes).";
        };
        owner = mkOption {
          type = types.str;
          default = "0";
          description = "User of the decrypted secret.";
        };
        group = mkOption {
          type = types.str;
          default = users.${config.owner}.group or "0";
          defaultText = literalExpression ''users.''${config.owner}.group or "0"'';
          description = "Group of the decrypted secret.";
        };
        symlink = lib.mkEnableOption "symlinking secrets to their destination" // {
          default = true;
        };
      };
    }
  );

  # age.identityPaths holds ssh keys and age identity files alike (agenix passes them all to
  # `age -i`); a manifest says which is which. Files named as OpenSSH names keys, or kept in an
  # ssh directory, are ssh keys; anything else is taken for an age identity file. Set
  # nixseal.identityPaths / nixseal.extraIdentities directly if that guess is wrong.
  looksLikeSshKey =
    p:
    let
      base = baseNameOf p;
    in
    lib.hasPrefix "ssh_host_" base
    || builtins.match "id_(ed25519|rsa|ecdsa)(_.*)?" base != null
    || lib.hasInfix "/.ssh/" p
    || lib.hasInfix "/ssh/" p;
  identityStrings = map toString cfg.identityPaths;

  # agenix decrypts every secret before NixOS creates users, so a user's password file may be an
  # agenix secret. nixseal's system stage runs after users are created; such secrets go to its
  # users stage instead (installed before users, owned by root: the users stage checks that).
  # The password files of users: hashedPasswordFile (which nixpkgs's renamed passwordFile sets
  # too), or passwordFile on a NixOS without hashedPasswordFile.
  passwordFiles = lib.concatMap (
    u:
    let
      f = if u ? hashedPasswordFile then u.hashedPasswordFile else u.passwordFile or null;
    in
    lib.optional (f != null) (toString f)
  ) (builtins.attrValues users);
  neededForUsers = s: builtins.elem s.path passwordFiles;
in
{
  imports = [
    ./nixos.nix
    (lib.mkRenamedOptionModule
      [
        "age"
        "sshKeyPaths"
      ]
      [
        "age"
        "identityPaths"
      ]
    )
  ];

  options.age = {
    secrets = mkOption {
      type = types.attrsOf secretType;
      default = { };
      description = "Attrset of secrets (agenix's option, installed by nixseal).";
    };
    secretsDir = mkOption {
      type = types.str;
      default = "/run/agenix";
      description = "The directory agenix's default secret paths are under; nixseal makes a symlink there for each secret.";
    };
    secretsMountPoint = mkOption {
      type = types.str;
      default = "/run/agenix.d";
      description = "Accepted for compatibility and unused: nixseal keeps its generations in nixseal.generationsDir.";
    };
    ageBin = mkOption {
      type = types.str;
      default = "age";
      description = "Accepted for compatibility and unused: nixseal decrypts in-process, with no age binary.";
    };
    identityPaths = mkOption {
      type = types.listOf types.path;
      default =
        if config.services.openssh.enable or false then
          map (e: e.path) (
            builtins.filter (e: e.type == "rsa" || e.type == "ed25519") config.services.openssh.hostKeys
          )
        else
          [ ];
      defaultText = literalExpression "the rsa and ed25519 keys of services.openssh.hostKeys, when openssh is enabled";
      description = "Keys to decrypt with: OpenSSH keys and age identity files (strings; a Nix path would copy a private key to the store).";
    };
  };

  config = mkIf (cfg.secrets != { }) {
    nixseal.secrets = mapAttrs' (
      _: s:
      lib.nameValuePair s.name {
        inherit (s)
          file
          owner
          group
          ;
        # A symbolic mode (agenix passes it to chmod) fails the assertion below, named as the
        # user wrote it; nixseal's own option then keeps its default rather than a type error.
        mode = if octalMode s.mode then s.mode else "0400";
        path = s.path;
        neededForUsers = neededForUsers s;
      }
    ) cfg.secrets;

    # agenix replaces a file at a secret's path by its symlink; so does nixseal here, naming it.
    nixseal.replaceExisting = mkDefault true;

    nixseal.identityPaths = mkDefault (builtins.filter looksLikeSshKey identityStrings);
    nixseal.extraIdentities = mkDefault (
      map (path: {
        type = "age";
        inherit path;
      }) (builtins.filter (p: !(looksLikeSshKey p)) identityStrings)
    );

    assertions = mapAttrsToList (name: s: {
      assertion = octalMode s.mode;
      message = "age.secrets.${name}.mode = \"${s.mode}\": use an octal mode such as \"0400\" or \"0440\" (nixseal creates the file with its mode and never runs chmod, so symbolic modes like u=r are not understood).";
    }) cfg.secrets;

    warnings = mapAttrsToList (
      name: _:
      "age.secrets.${name}.symlink = false: nixseal installs the secret in its generation and makes a symlink at its path anyway (the file is never written in place)."
    ) (filterAttrs (_: s: !s.symlink) cfg.secrets);
  };
}

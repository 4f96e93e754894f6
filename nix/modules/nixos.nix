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
#
# This file holds the options of the whole module (where the generations live, the package: some
# declared in common-options.nix, as the home-manager module has them too) and imports the parts,
# one a feature; each says what it owns:
# - nixos/secrets.nix: nixseal.secrets, the system manifest, the checks of names, owners, groups;
# - nixos/templates.nix: nixseal.templates and nixseal.placeholder;
# - nixos/users-stage.nix: neededForUsers, the users manifest, its activation script and unit;
# - nixos/credentials.nix: `services` and `credential` (LoadCredential=, LoadCredentialEncrypted=);
# - nixos/identities.nix: what decrypts (host keys, age keys, sealed identities);
# - nixos/activation.nix: the system stage's activation script and unit;
# - nixos/keys.nix: deploy-time keys (nixseal.keys, nixseal.push, the plan of `nixseal push`,
#   docs/push.md);
# - nixos/generators.nix: nixseal.generators (generated secrets), system.build.nixsealGenerators;
# - nixos/lib.nix (not a module): what the parts share, such as the writing of a manifest;
# - build-secrets.nix: build-time secrets (nixseal.buildSecrets, docs/build-secrets.md).
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkOption types;
  shared = import ./shared.nix { inherit lib; };
  common = import ./common-options.nix { inherit lib; };
  pkgs = config._module.args.pkgs or null;
in
{
  imports = [
    ./nixos/secrets.nix
    ./nixos/templates.nix
    ./nixos/users-stage.nix
    ./nixos/credentials.nix
    ./nixos/identities.nix
    ./nixos/activation.nix
    ./nixos/keys.nix
    ./nixos/generators.nix
    ./build-secrets.nix
  ];

  options.nixseal = common.general {
    inherit pkgs;
    flakeModule = "nixosModules.default";
  }
  // {
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

    replaceExisting = mkOption {
      type = types.bool;
      default = false;
      internal = true;
      description = ''
        Replace a regular file at a secret's `path` by the symlink, with a warning naming it,
        instead of stopping the install. What sops-nix and agenix do; the compat modules set it.
      '';
    };

    changeDetection = mkOption {
      type = types.enum [
        "records"
        "files"
      ];
      default = "records";
      internal = true;
      description = ''
        How `nixseal install` finds what changed (docs/manifest.md): "records", or "files" as
        sops-nix does (the active files as found, nothing restarted at boot); sops-compat sets it.
      '';
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
  };
}

# What decrypts, the part of the NixOS module imported by nix/modules/nixos.nix: the options that
# name the host's identities (its OpenSSH host keys, age key files, identities sealed with
# systemd-creds) and the check that there is one. The list both manifests carry, in the order
# `nixseal install` tries them, is `identities` of nix/modules/nixos/lib.nix. Private keys are
# strings (shared.hostPath of nix/modules/shared.nix), never Nix paths: they never reach the store.
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    literalExpression
    mkIf
    mkOption
    types
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg;

  identityType = types.submodule {
    options = {
      type = mkOption {
        type = types.enum [
          "ssh"
          "age"
          "systemd-creds"
          "gpg"
          "gpg-ssh"
        ];
        description = "`ssh`: an OpenSSH ed25519 or rsa private key. `age`: a file of AGE-SECRET-KEY-1... lines. `systemd-creds`: a key sealed with `nixseal host-key seal` or `new`. `gpg`: a GnuPG home directory whose keys open sops files' pgp entries (with gpg). `gpg-ssh`: an OpenSSH rsa private key used as the PGP key sops-nix makes of it (`sops.gnupg.sshKeyPaths`).";
      };
      path = mkOption {
        type = shared.hostPath;
        description = "The identity file (for `gpg`: the GnuPG home directory) on the host.";
      };
      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "`systemd-creds` only: the name it was sealed under (`--name`); null: the file's name.";
      };
    };
  };
in
{
  options.nixseal = {
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

    ageKeyFile = mkOption {
      type = types.nullOr shared.hostPath;
      default = null;
      example = "/var/lib/nixseal/key.txt";
      description = "A file of age identities (AGE-SECRET-KEY-1... lines) on the host, tried first.";
    };

    gnupgPackage = mkOption {
      type = types.nullOr types.package;
      default = if l.pkgs == null then null else l.pkgs.gnupg;
      defaultText = literalExpression "pkgs.gnupg";
      description = "The GnuPG whose gpg opens sops files' pgp entries, on the installer's PATH when an identity is of type `gpg` or `gpg-ssh`.";
    };

    extraIdentities = mkOption {
      type = types.listOf identityType;
      default = [ ];
      example = literalExpression ''[ { type = "age"; path = "/var/lib/nixseal/old-key.txt"; } ]'';
      description = "More identity files, tried after the others.";
    };
  };

  config = mkIf (cfg.secrets != { } || cfg.templates != { }) {
    assertions = [
      {
        assertion = l.identities != [ ];
        message = "nixseal: no identity to decrypt with; enable services.openssh (its host keys are used) or set nixseal.identityPaths or nixseal.ageKeyFile.";
      }
    ];
  };
}

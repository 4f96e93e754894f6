# nixseal build-time secrets (the `nixseal.buildSecrets` part of the NixOS module; imported by
# nixos.nix). Options -> the policy /etc/nixseal/build-secrets.json (docs/build-secrets.md) and the
# nix.conf settings: sandbox = true, pre-build-hook and post-build-hook (`nixseal build-hook`).
# All behaviour lives in `nixseal build-hook`; nothing here reads a secret.
#
#   nixseal.buildSecrets.mods-token = {
#     file = ./secrets/mods-token.age;                        # age file for the host's identity
#     allowedUrlPrefixes = [ "https://mods.example.com/api/" ];
#     allowedUsers = [ "alice" ];                             # optional: who may build with it
#     prompt = false;                                         # true: alice's `nixseal agent` approves
#   };
#   nixseal.buildSecrets.api-key = {                          # the host holds nothing:
#     source = "agent";                                       # the requesting user's agent supplies it
#     allowedUrlPrefixes = [ "https://api.example.com/" ];
#   };
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkIf mkOption types;

  cfg = config.nixseal.buildSecrets;
  settings = config.nixseal.buildSecretsSettings;
  pkgs = config._module.args.pkgs or null;
  package = config.nixseal.package or null;

  policyFile = "/etc/nixseal/build-secrets.json";

  # The host identities, as the activation manifest lists them (from the main module's options
  # when it is imported too): sealed keys, the age key file, ssh keys, extraIdentities. Build
  # secrets are age files: the manifest's gpg identities (sops files' pgp entries) open none.
  mainIdentities =
    let
      n = config.nixseal;
    in
    builtins.filter (i: i.type != "gpg" && i.type != "gpg-ssh") (
      (import ./common-options.nix { inherit lib; }).identities {
      sealedIdentityPaths = n.sealedIdentityPaths or [ ];
      ageKeyFile = n.ageKeyFile or null;
      identityPaths = n.identityPaths or [ ];
      extraIdentities = n.extraIdentities or [ ];
    }
    );

  secretType = types.submodule {
    options = {
      source = mkOption {
        type = types.enum [
          "host"
          "agent"
          "host-or-agent"
        ];
        default = "host";
        description = ''
          Who supplies the value: "host" (`file`, decrypted with the host identities), "agent" (the
          requesting user's `nixseal agent`, from their agent.json, a command or typed; the host
          holds nothing, so no `file`), or "host-or-agent" (`file` when it is there and decrypts,
          else the agent).
        '';
      };
      file = mkOption {
        type = types.nullOr (types.either types.path types.str);
        default = null;
        description = "The age-encrypted secret (a path: copied to the store, which is fine for ciphertext); required unless source = \"agent\".";
      };
      allowedUrlPrefixes = mkOption {
        type = types.nonEmptyListOf types.str;
        example = [ "https://mods.example.com/api/" ];
        description = ''
          The URLs the secret may be sent to: canonical https:// URLs (http:// only to localhost);
          a URL matches when scheme, host and port are equal and its path starts with the prefix's
          path at a segment boundary.
        '';
      };
      allowedUsers = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Users (names or uids) whose builds may get the secret; empty: any user allowed to build.";
      };
      prompt = mkOption {
        type = types.bool;
        default = false;
        description = "The building user confirms each build at their `nixseal agent`, even for a value the host or their agent.json gives.";
      };
      fetcherStorePaths = mkOption {
        type = types.listOf types.str;
        default = lib.optional (settings.fetcher != null) settings.fetcher;
        defaultText = lib.literalExpression "[ config.nixseal.buildSecretsSettings.fetcher ]";
        description = "Store paths of the trusted fetcher that may receive the secret.";
      };
    };
  };

  hookScript =
    kind:
    let
      nixseal = if package != null then "${package}/bin/nixseal" else "nixseal";
      grep = if pkgs != null then "${pkgs.gnugrep}/bin/grep" else "grep";
      text =
        if kind == "pre" then
          ''
            #!/bin/sh
            # Only derivations that name a build secret start nixseal.
            [ -f "$1" ] && ${grep} -qF '("nixsealSecret",' "$1" || exit 0
            exec ${nixseal} build-hook --policy ${policyFile} "$@"
          ''
        else
          ''
            #!/bin/sh
            # Only builds of derivations that named a build secret start nixseal, which cleans
            # up in the runtimeDir the policy names.
            [ -n "$DRV_PATH" ] && [ -f "$DRV_PATH" ] && ${grep} -qF '("nixsealSecret",' "$DRV_PATH" || exit 0
            exec ${nixseal} build-hook --post --policy ${policyFile}
          '';
    in
    if pkgs != null then
      pkgs.writeScript "nixseal-${kind}-build-hook" text
    else
      # Evaluation tests without nixpkgs only: not executable, never used by a real system.
      builtins.toFile "nixseal-${kind}-build-hook" text;

  policy = {
    version = 1;
    inherit (settings) runtimeDir agentDir agentTimeoutSeconds;
    identities = map (
      i: { inherit (i) type path; } // lib.optionalAttrs ((i.name or null) != null) { inherit (i) name; }
    ) settings.identities;
    interpreters = lib.optional (settings.interpreter != null) settings.interpreter;
    gitPaths = lib.optional (settings.git != null) settings.git;
    secrets = lib.mapAttrs (
      _: s:
      lib.optionalAttrs (s.file != null) { file = toString s.file; }
      // {
        inherit (s)
          source
          allowedUrlPrefixes
          allowedUsers
          prompt
          fetcherStorePaths
          ;
      }
    ) cfg;
  };
in
{
  options.nixseal.buildSecrets = mkOption {
    type = types.attrsOf secretType;
    default = { };
    description = ''
      Secrets that fixed-output derivations made with nixseal's `lib.fetchurl` may get at build
      time, through nixseal's pre-build hook (see docs/build-secrets.md). Setting any turns on
      `nix.settings.sandbox` and the hooks.
    '';
  };

  options.nixseal.buildSecretsSettings = {
    identities = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            type = mkOption {
              type = types.enum [
                "ssh"
                "age"
                "systemd-creds"
              ];
            };
            path = mkOption { type = types.str; };
            name = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "systemd-creds only: the name the key was sealed under (default: the file's name).";
            };
          };
        }
      );
      default = mainIdentities;
      defaultText = lib.literalExpression "the identities of the activation manifest (nixseal.identityPaths, ageKeyFile, extraIdentities)";
      description = "Host identities that decrypt build secrets (private keys stay on the host: strings, not paths).";
    };
    fetcher = mkOption {
      type = types.nullOr types.str;
      default = if package != null then "${package}/lib/node_modules/nixseal/dist/src/build-secrets/fetcher.js" else null;
      defaultText = lib.literalExpression ''"''${config.nixseal.package}/lib/node_modules/nixseal/dist/src/build-secrets/fetcher.js"'';
      description = "The store path of nixseal's fetcher that lib.fetchurl uses (pass the same to lib.fetchurl).";
    };
    interpreter = mkOption {
      type = types.nullOr types.str;
      default = if pkgs != null then "${pkgs.nodejs}/bin/node" else null;
      defaultText = lib.literalExpression ''"''${pkgs.nodejs}/bin/node"'';
      description = "The Node.js that runs the fetcher (the derivation's builder; its args are [ fetcher ]).";
    };
    git = mkOption {
      type = types.nullOr types.str;
      default = if pkgs != null then "${pkgs.gitMinimal}/bin/git" else null;
      defaultText = lib.literalExpression ''"''${pkgs.gitMinimal}/bin/git"'';
      description = "The git that lib.fetchgit's derivations may run (the policy's gitPaths; pass the same to lib.fetchgit).";
    };
    runtimeDir = mkOption {
      type = types.str;
      default = "/run/nixseal/build";
      description = "Where per-build secret files live while their build runs (tmpfs, 0700 root).";
    };
    agentDir = mkOption {
      type = types.str;
      default = "/run/nixseal/agents";
      description = "Where users' `nixseal agent` sockets are (root-owned, mode 1733).";
    };
    agentTimeoutSeconds = mkOption {
      type = types.ints.between 1 3600;
      default = 120;
      description = "How long a build waits for a user to answer a prompt before it is refused.";
    };
  };

  config = mkIf (cfg != { }) {
    assertions = [
      {
        assertion = (config.nix.settings.sandbox or true) != false;
        message = "nixseal.buildSecrets needs nix.settings.sandbox = true: Nix runs no pre-build hook for unsandboxed builds.";
      }
      {
        assertion = settings.fetcher != null || lib.all (s: s.fetcherStorePaths != [ ]) (lib.attrValues cfg);
        message = "nixseal.buildSecrets: set nixseal.buildSecretsSettings.fetcher (or nixseal.package) so the policy can pin the trusted fetcher.";
      }
      {
        assertion = lib.all (s: (s.source == "agent") == (s.file == null)) (lib.attrValues cfg);
        message = "nixseal.buildSecrets: ${
          lib.concatStringsSep ", " (
            lib.attrNames (lib.filterAttrs (_: s: (s.source == "agent") != (s.file == null)) cfg)
          )
        }: a secret with source = \"agent\" has no file (the host holds nothing); any other source needs file.";
      }
      {
        assertion = settings.identities != [ ] || lib.all (s: s.source == "agent") (lib.attrValues cfg);
        message = "nixseal.buildSecrets: no host identity to decrypt build secrets with (nixseal.identityPaths, ageKeyFile or buildSecretsSettings.identities).";
      }
    ];

    nix.settings = {
      # The hook runs only for sandboxed builds, and only the sandbox keeps the secret to one build.
      sandbox = lib.mkDefault true;
      pre-build-hook = hookScript "pre";
      post-build-hook = hookScript "post";
    };

    # A real file, not a symlink into the store: the hook refuses a policy it cannot trust.
    environment.etc."nixseal/build-secrets.json" = {
      text = builtins.toJSON policy;
      mode = "0644";
    };

    systemd.tmpfiles.rules = [ "d ${settings.agentDir} 1733 root root -" ];

    # Failed builds get no post-build hook: sweep their secrets.
    systemd.services.nixseal-build-secrets-sweep = {
      description = "Remove build secrets of nix builds that have ended";
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${if package != null then "${package}/bin/nixseal" else "nixseal"} build-hook --sweep --policy ${policyFile}";
      };
    };
    systemd.timers.nixseal-build-secrets-sweep = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "5min";
        OnUnitActiveSec = "5min";
      };
    };
  };
}

# The nixseal home-manager module: the same as the NixOS module, for one user. Secrets and
# templates are installed by a systemd user service (nixseal.service) into
# $XDG_RUNTIME_DIR/nixseal, owned by the user; a template with `path = ".../.gitconfig"` puts a
# token in ~/.gitconfig without the token ever being in the store.
#
# $XDG_RUNTIME_DIR is only known when the service runs (/run/user/<uid>). Unless
# `nixseal.runtimeDir` is set, the manifest says `/@XDG_RUNTIME_DIR@` where it goes, and the
# service writes a copy of the manifest with the real directory (a manifest holds no secret)
# before `nixseal install` reads it.
#
# The options it shares with the NixOS module (package, checkManifest, keepGenerations,
# placeholder, and each secret's file, format, key, mode and path) are declared in
# nix/modules/common-options.nix.
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    literalExpression
    mapAttrsToList
    mkIf
    mkOption
    types
    ;

  shared = import ./shared.nix { inherit lib; };
  common = import ./common-options.nix { inherit lib; };
  cfg = config.nixseal;
  pkgs = config._module.args.pkgs or null;
  home = config.home.homeDirectory;

  runtimeToken = "/@XDG_RUNTIME_DIR@";
  runtimeDir = if cfg.runtimeDir != null then cfg.runtimeDir else runtimeToken;

  # mode and path, as the NixOS module has them (nix/modules/common-options.nix).
  fileOptions = common.fileOptions {
    pathExample = literalExpression ''"''${config.home.homeDirectory}/.gitconfig"'';
  };

  secretType = types.submodule (
    { config, ... }:
    {
      options = fileOptions // common.secretFileOptions config;
    }
  );

  templateType = types.submodule {
    options = fileOptions // {
      content = mkOption {
        type = types.lines;
        description = "The file's text, with `config.nixseal.placeholder.<secret>` where a secret goes.";
      };
    };
  };

  identities = common.identities { inherit (cfg) ageKeyFile identityPaths; };

  # owner/group null: the user running `nixseal install`. No restart lists: home-manager has no
  # switch that reads them.
  entry = name: v: {
    inherit name;
    inherit (v) mode path;
    owner = null;
    group = null;
    restartUnits = [ ];
    reloadUnits = [ ];
  };

  manifestValue = shared.failIfAny (common.fileProblems cfg.secrets) {
    version = shared.manifestVersion;
    stage = "system";
    secretsDir = "${runtimeDir}/nixseal/secrets";
    generationsDir = "${runtimeDir}/nixseal/generations";
    inherit (cfg) keepGenerations;
    mount = "existing";
    # The encrypted files are store paths: an unchanged one is not read again (docs/manifest.md).
    inherit (builtins) storeDir;
    restartListFile = null;
    reloadListFile = null;
    dryRestartListFile = null;
    dryReloadListFile = null;
    inherit identities;
    secrets = mapAttrsToList (
      name: s:
      entry name s
      // {
        file = shared.fileString s.file;
        inherit (s) format key;
      }
    ) cfg.secrets;
    templates = mapAttrsToList (name: t: entry name t // { inherit (t) content; }) cfg.templates;
    placeholders = common.placeholders cfg.secrets;
  };

  manifest = shared.writeManifest {
    inherit pkgs;
    name = "nixseal-home-manifest.json";
    value = manifestValue;
    check = if cfg.checkManifest then "${cfg.package}/bin/nixseal" else null;
  };

  nixsealBin = "${cfg.package}/bin/nixseal";
  sed = if pkgs != null then "${pkgs.gnused}/bin/sed" else "sed";
  shell = if pkgs != null then pkgs.runtimeShell else "/bin/sh";

  installScriptText =
    if cfg.runtimeDir != null then
      ''
        exec ${nixsealBin} install --manifest ${manifest}
      ''
    else
      ''
        set -eu
        runtime_dir="''${XDG_RUNTIME_DIR-}"
        case "$runtime_dir" in
          /*) ;;
          *) echo "nixseal: XDG_RUNTIME_DIR is not set; set nixseal.runtimeDir" >&2; exit 1 ;;
        esac
        case "$runtime_dir" in
          *[!A-Za-z0-9/._-]*) echo "nixseal: XDG_RUNTIME_DIR has unexpected characters; set nixseal.runtimeDir" >&2; exit 1 ;;
        esac
        mkdir -p -m 0700 "$runtime_dir/nixseal"
        manifest="$runtime_dir/nixseal/manifest.json"
        ${sed} "s|${runtimeToken}|$runtime_dir|g" ${manifest} > "$manifest.tmp"
        mv -f "$manifest.tmp" "$manifest"
        exec ${nixsealBin} install --manifest "$manifest"
      '';
  installScript =
    if pkgs != null then
      pkgs.writeShellScript "nixseal-home-install" installScriptText
    else
      builtins.toFile "nixseal-home-install.sh" installScriptText;

  placeholderOwners = common.placeholderOwners cfg.secrets;
  allNames = builtins.attrNames cfg.secrets ++ builtins.attrNames cfg.templates;
in
{
  options.nixseal = {
    secrets = mkOption {
      type = types.attrsOf secretType;
      default = { };
      description = "Secrets decrypted by the user service into $XDG_RUNTIME_DIR/nixseal/secrets.";
    };
    templates = mkOption {
      type = types.attrsOf templateType;
      default = { };
      example = literalExpression ''
        {
          gitconfig-github = {
            path = "''${config.home.homeDirectory}/.config/git/github-token.inc";
            content = '''
              [url "https://oauth2:''${config.nixseal.placeholder.github-token}@github.com/"]
                insteadOf = https://github.com/
            ''';
          };
        }
      '';
      description = "Files rendered by the user service from a text with placeholders.";
    };
    placeholder = common.placeholder cfg.secrets;
    identityPaths = mkOption {
      type = types.listOf shared.hostPath;
      default = [
        "${home}/.ssh/id_ed25519"
        "${home}/.ssh/id_rsa"
      ];
      defaultText = literalExpression ''[ "~/.ssh/id_ed25519" "~/.ssh/id_rsa" ]'';
      description = "OpenSSH private keys to decrypt with (missing ones are skipped). Strings, never Nix paths.";
    };
    ageKeyFile = mkOption {
      type = types.nullOr shared.hostPath;
      default = "${home}/.config/nixseal/identity.txt";
      defaultText = literalExpression ''"~/.config/nixseal/identity.txt" (made by `nixseal init`)'';
      description = "A file of age identities, tried first (a missing file is skipped).";
    };
    runtimeDir = mkOption {
      type = types.nullOr shared.hostPath;
      default = null;
      example = "/run/user/1000";
      description = ''
        The user's $XDG_RUNTIME_DIR, if known at evaluation time. null: the service finds it
        when it runs (the manifest is then copied there with the directory filled in).
      '';
    };
    secretsDir = mkOption {
      type = types.str;
      readOnly = true;
      default = "${runtimeDir}/nixseal/secrets";
      defaultText = literalExpression ''"''${runtimeDir}/nixseal/secrets"'';
      description = "Where the secrets are (a symlink to the active generation).";
    };
  }
  // common.general {
    inherit pkgs;
    flakeModule = "homeManagerModules.default";
  };

  config = mkIf (cfg.secrets != { } || cfg.templates != { }) {
    assertions =
      lib.concatMap (name: [
        {
          assertion = shared.validName name;
          message = "nixseal: \"${name}\" is not a valid secret or template name (segments of A-Z a-z 0-9 . _ @ + = -, `/` between them).";
        }
      ]) allNames
      ++ mapAttrsToList (name: s: {
        assertion = shared.fileIsStorable s.file;
        message = "${shared.optionPath "secrets" name "file"} is a string outside the Nix store; write it as a Nix path (./file.age, without quotes).";
      }) cfg.secrets
      ++ mapAttrsToList (
        name: t:
        let
          unknown = builtins.filter (p: !(placeholderOwners ? ${p})) (shared.placeholdersIn t.content);
        in
        {
          assertion = unknown == [ ];
          message = "${shared.optionPath "templates" name "content"} uses a placeholder that names no secret of nixseal.secrets (${lib.concatStringsSep ", " unknown}).";
        }
      ) cfg.templates
      ++ [
        {
          assertion = lib.intersectLists (builtins.attrNames cfg.secrets) (builtins.attrNames cfg.templates) == [ ];
          message = "nixseal: a secret and a template share a name; rename one.";
        }
        {
          assertion = shared.namesUsedAsDirectories allNames == [ ];
          message = "nixseal: ${lib.concatStringsSep ", " (shared.namesUsedAsDirectories allNames)} is both a file and the directory of another name; rename one.";
        }
      ];

    systemd.user.services.nixseal = {
      Unit.Description = "nixseal: install the user's secrets";
      Service = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${shell} ${installScript}";
      };
      Install.WantedBy = [ "default.target" ];
    };

    # On a switch, install again (the unit changed with the manifest); at boot the service runs
    # by itself. A DAG entry written out, as lib.hm.dag.entryAfter makes it.
    home.activation.nixseal = {
      after = [
        "writeBoundary"
        "reloadSystemd"
      ];
      before = [ ];
      data = ''
        systemd_status=$(systemctl --user is-system-running 2>&1 || true)
        if [ "$systemd_status" = running ] || [ "$systemd_status" = degraded ]; then
          run systemctl --user restart nixseal.service
        fi
        unset systemd_status
      '';
    };
  };
}

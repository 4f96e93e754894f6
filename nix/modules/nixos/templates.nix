# The templates part of the NixOS module (imported by nix/modules/nixos.nix): the option
# nixseal.templates (files rendered at activation from a text with placeholders), the read-only
# nixseal.placeholder that gives each secret's placeholder (declared in
# nix/modules/common-options.nix, as the home-manager module has it), and the check that a
# template's placeholders name declared secrets. Templates go into the system stage's manifest
# (nix/modules/nixos/secrets.nix); the options they share with secrets are in
# nix/modules/nixos/lib.nix, `services` and `credential` in nix/modules/nixos/credentials.nix.
{
  config,
  lib,
  options,
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

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg;

  templateType = types.submodule (
    { name, config, ... }:
    {
      options = l.entryOptions {
        kind = "template";
        inherit config;
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
          default = l.installedPathOf {
            kind = "template";
            inherit name config;
            otherwise = "${cfg.secretsDir}/${name}";
          };
          defaultText = literalExpression ''path, or "''${secretsDir}/<name>"; for a credential, "/run/credentials/<its one service>.service/<credential name>"'';
          description = "Where services find the rendered file (for a `credential` template, where its one service finds it).";
        };
      };
    }
  );

  placeholderOwners = l.common.placeholderOwners cfg.secrets;
in
{
  options.nixseal = {
    templates = mkOption {
      type = types.attrsOf templateType;
      default = { };
      description = "Files rendered at activation from a text with placeholders of secrets, into {option}`nixseal.secretsDir`.";
    };

    placeholder = l.common.placeholder cfg.secrets;
  };

  config = mkIf (cfg.templates != { }) {
    assertions = mapAttrsToList (
      name: t:
      let
        unknown = builtins.filter (p: !(placeholderOwners ? ${p})) (shared.placeholdersIn t.content);
      in
      {
        assertion = unknown == [ ];
        message = "${shared.optionPath "templates" name "content"} uses a placeholder that names no secret of nixseal.secrets (${lib.concatStringsSep ", " unknown}); use config.nixseal.placeholder.<name> of a declared secret.";
      }
    ) cfg.templates;
  };
}

# The options the NixOS module (nix/modules/nixos.nix and its parts in nix/modules/nixos/) and
# the home-manager module (nix/modules/home-manager.nix) both have, declared here once, and what
# both compute from them the same way. Not a module: each module puts these declarations in its
# own `options`. The rules they check are nix/modules/shared.nix's, passed on as `shared` to the
# parts of the NixOS module.
{ lib }:
let
  inherit (lib)
    literalExpression
    mapAttrs
    mapAttrsToList
    mkOption
    types
    ;

  shared = import ./shared.nix { inherit lib; };
in
rec {
  inherit shared;

  # nixseal.package, nixseal.checkManifest and nixseal.keepGenerations. `flakeModule` is the
  # flake output that sets the package (flake.nix), named when none is set.
  general =
    { pkgs, flakeModule }:
    {
      package = mkOption {
        type = types.package;
        default =
          if pkgs != null && pkgs ? nixseal then
            pkgs.nixseal
          else
            throw "nixseal.package is not set: use the flake's ${flakeModule}, add its overlays.default, or set nixseal.package.";
        defaultText = literalExpression "pkgs.nixseal (the flake's package, with ${flakeModule})";
        description = "The nixseal package whose `nixseal install` runs at activation.";
      };

      checkManifest = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run `nixseal install --check` on each manifest when it is built: its structure, and that
          each encrypted file parses and holds the sops keys asked for. Nothing is decrypted.
        '';
      };

      keepGenerations = mkOption {
        type = types.either types.ints.unsigned (types.enum [ "all" ]);
        default = 1;
        description = ''
          Older generations kept besides the active one (0: only the active one; "all": never
          prune, as sops-nix's keepGenerations = 0).
        '';
      };
    };

  # The placeholder of each secret (docs/manifest.md): nixseal.placeholder, and the manifest's
  # `placeholders`.
  placeholders = secrets: mapAttrs (name: _: shared.placeholderFor name) secrets;

  placeholder =
    secrets:
    mkOption {
      type = types.attrsOf types.str;
      readOnly = true;
      default = placeholders secrets;
      defaultText = literalExpression ''"<nixseal:" + sha256 of the name + ":placeholder>" for each secret'';
      description = "The placeholder of each secret, to use in {option}`nixseal.templates.<name>.content`.";
    };

  # The placeholder of each secret -> its name.
  placeholderOwners =
    secrets:
    lib.listToAttrs (mapAttrsToList (name: _: lib.nameValuePair (shared.placeholderFor name) name) secrets);

  # What a secret is decrypted from: options of each secret (`config` is the secret's). Those
  # that do not depend on it are made once.
  secretFileOptions =
    config:
    secretFileStaticOptions
    // {
      format = mkOption {
        type = types.enum shared.formats;
        default = shared.formatOf config.file;
        defaultText = literalExpression ''"yaml"/"json"/"dotenv"/"ini" by the file's extension, else "age"'';
        description = "The file's format: an age file, or a sops file in one of sops's stores.";
      };
    };

  secretFileStaticOptions = {
    file = mkOption {
      type = shared.encryptedFile;
      example = literalExpression "./secrets/db-password.age";
      description = ''
        The encrypted file (age, or a sops file). Write it as a Nix path (`./db.age`, no
        quotes): the *encrypted* file is copied to the store. A string must be a store path.
      '';
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
  };

  # The installed file: options of each secret and template.
  fileOptions =
    { pathExample }:
    {
      mode = mkOption {
        type = shared.mode;
        default = "0400";
        example = "0440";
        description = "Permissions of the installed file, in octal (at most 0777). The file is created with them.";
      };
      path = mkOption {
        type = types.nullOr shared.hostPath;
        default = null;
        example = pathExample;
        description = "If set, a symlink made there pointing to the installed file (which stays in the secrets directory).";
      };
    };

  # The manifest's `identities`, in the order `nixseal install` tries them: sealed identities,
  # the age key file, the OpenSSH keys, the others (the home-manager module has only the age key
  # file and the OpenSSH keys).
  identities =
    {
      sealedIdentityPaths ? [ ],
      ageKeyFile,
      identityPaths,
      extraIdentities ? [ ],
    }:
    lib.unique (
      map (path: {
        type = "systemd-creds";
        inherit path;
      }) sealedIdentityPaths
      ++ lib.optional (ageKeyFile != null) {
        type = "age";
        path = ageKeyFile;
      }
      ++ map (path: {
        type = "ssh";
        inherit path;
      }) identityPaths
      ++ map (i: { inherit (i) type path; } // lib.optionalAttrs (i.name != null) { inherit (i) name; }) extraIdentities
    );

  # Refused outright, not only by assertion: a manifest must never name a file outside the store
  # (it would not be in the closure; a plaintext string path is a likely mistake).
  fileProblems =
    secrets:
    mapAttrsToList (
      name: s:
      "${shared.optionPath "secrets" name "file"} = \"${toString s.file}\" is a string outside the Nix store; write it as a Nix path (./file.age, without quotes) so that the encrypted file is copied to the store"
    ) (lib.filterAttrs (_: s: !(shared.fileIsStorable s.file)) secrets);
}

# Secrets and templates as systemd credentials, the part of the NixOS module imported by
# nix/modules/nixos.nix. It owns two options of every secret and template:
# - `services`: the installed file is given to those services with LoadCredential= (systemd
#   copies it into the service's credentials directory at start);
# - `credential`: the value is sealed by `nixseal install` with systemd-creds (host key and/or
#   TPM2) into nixseal.credstoreDir instead of the secrets directory, and the services load it
#   with LoadCredentialEncrypted= (mkCredential of nix/lib/credentials.nix, the convention module
#   authors use too);
# and nixseal.credstoreDir, the wiring of systemd.services, and the checks of credential names.
# Where a credential goes in the manifest (and which units restart) is written by
# nix/modules/nixos/lib.nix.
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
    mapAttrsToList
    mkIf
    mkMerge
    mkOption
    types
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg creds;

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

  # The two options, on secrets and on templates alike; `services` is made once per kind.
  servicesOption = lib.genAttrs [ "secret" "template" ] (
    kind:
    mkOption {
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
    }
  );

  entryOptions = kind: name: {
    services = servicesOption.${kind};
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

  # Declared again with only these options: the module system merges them into the submodules of
  # nix/modules/nixos/secrets.nix and nix/modules/nixos/templates.nix.
  entriesWith =
    kind:
    mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: { options = entryOptions kind name; }));
    };

  # Entries sealed as credentials.
  withCredential = builtins.filter (e: e.value.credential != null) l.everything;

  assertionsFor =
    e:
    let
      where = attr: shared.optionPath e.kind e.name attr;
      v = e.value;
      c = v.credential;
      isSecret = e.kind == "secrets";
    in
    [
      {
        assertion = creds.isValidName c.name;
        message = "${where "credential.name"} = ${builtins.toJSON c.name} is not a valid credential name: letters, digits and ._@+=-, no `/` or `:`, not starting with `.`, at most 255 characters.";
      }
      {
        assertion = !(isSecret && v.neededForUsers);
        message = "${where "credential"}: a secret needed for users is installed before any service runs; it cannot be a credential. Declare a second secret from the same file for the service.";
      }
      {
        assertion = v.path == null;
        message = "${where "path"}: a credential is not written to the secrets directory, so a symlink to it would point nowhere; remove `path` (services read $CREDENTIALS_DIRECTORY/${c.name}).";
      }
      {
        assertion = v.services == [ ];
        message = "${where "services"}: with `credential` set the ${if isSecret then "secret" else "template"} is not in the secrets directory for `LoadCredential=`; list the services in ${where "credential.services"} instead.";
      }
      {
        assertion = c.tpm2Pcrs == null || c.encrypt != "host";
        message = "${where "credential.tpm2Pcrs"} is set, but credential.encrypt is \"host\": no TPM2 is involved; remove tpm2Pcrs or use \"tpm2\", \"host+tpm2\" or \"auto\".";
      }
    ];

  # Credential names used by two entries.
  duplicateCredentials = builtins.attrNames (
    filterAttrs (_: same: builtins.length same > 1) (builtins.groupBy (n: n) (map (e: e.value.credential.name) withCredential))
  );

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
        ) l.everything
      )
    )
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
  ) l.everything;
in
{
  options.nixseal = {
    secrets = entriesWith "secret";
    templates = entriesWith "template";

    credstoreDir = mkOption {
      type = shared.hostPath;
      default = creds.credstoreDir;
      description = ''
        Where `nixseal install` keeps the credentials of entries with `credential` set (a
        directory it owns, 0700 root, on persistent storage: with an impermanent root, persist it).
      '';
    };
  };

  config = mkMerge [
    (mkIf (cfg.secrets != { } || cfg.templates != { }) {
      assertions =
        concatMap assertionsFor withCredential
        ++ [
          {
            assertion = duplicateCredentials == [ ];
            message = "nixseal: the credential name(s) ${lib.concatStringsSep ", " duplicateCredentials} are used by more than one secret or template; set credential.name so that each is unique.";
          }
          {
            assertion = credentialClashes == [ ];
            message = "nixseal: two secrets or templates would be the same credential of a service (`/` becomes `-`): ${lib.concatStringsSep "; " credentialClashes}; rename one.";
          }
        ];
    })

    (mkIf (credentialWiring != [ ] || encryptedWiring != [ ]) {
      systemd.services = mkMerge (credentialWiring ++ encryptedWiring);
    })
  ];
}

# nixseal's convention for secrets as systemd credentials, for module authors. Pure Nix: no
# nixpkgs needed (import it directly, or use it as `nixseal.lib.credentials` once the flake's
# lib exports it).
#
# The convention: a module option takes a credential NAME, not a file path. The unit loads the
# credential with `LoadCredentialEncrypted=NAME:<credstore>/NAME` (sealed on the host by
# `nixseal install` with the host key or the TPM2) or `LoadCredential=NAME:<path>` (a plain file,
# for hosts without systemd-creds), and the service reads `$CREDENTIALS_DIRECTORY/NAME`, which is
# `%d/NAME` in unit settings and `/run/credentials/UNIT/NAME` for its processes. Only that unit
# sees the plaintext, whatever user it runs as (DynamicUser= included).
#
#   let creds = import "${nixseal}/nix/lib/credentials.nix";
#       db = creds.mkCredential { name = "grafana-db-password"; service = "grafana"; };
#   in {
#     systemd.services.grafana = db.service;
#     services.grafana.settings.database.password = "$__file{${db.absolutePath}}";
#   }
let
  # Credential names as nixseal accepts them (stricter than systemd, so that they are also safe
  # file names in the credential store): letters, digits and ._@+=-, not starting with '.',
  # at most 255 characters. No '/' and no ':' (LoadCredential='s separator).
  isValidName =
    name:
    builtins.isString name
    && builtins.stringLength name <= 255
    && builtins.match "[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*" name != null;

  checkName =
    name:
    if isValidName name then
      name
    else
      throw "nixseal credentials: ${builtins.toJSON name} is not a valid credential name (letters, digits and ._@+=-, no '/' or ':', not starting with '.', at most 255 characters)";

  # "grafana" and "grafana.service" name the same unit.
  unitName =
    service:
    if builtins.match ".*\\.(service|socket|mount|swap)" service != null then service else "${service}.service";
in
rec {
  inherit isValidName;

  # Where nixseal install keeps encrypted credentials (a directory it owns, 0700 root).
  credstoreDir = "/var/lib/nixseal/credstore";

  # A nixseal secret name as a credential name: `/` becomes `-` (as the NixOS module does).
  credentialName = secretName: checkName (builtins.replaceStrings [ "/" ] [ "-" ] secretName);

  # The credential inside its unit, for unit settings (ExecStart=, Environment=...): "%d/NAME".
  unitPath = name: "%d/${checkName name}";

  # The credential inside its unit, for the service's own processes and config files.
  runtimePath = { name, service }: "/run/credentials/${unitName service}/${checkName name}";

  # mkCredential { name, service, encrypted ? true, source ? null }
  #
  # What a module needs to hand the credential NAME to SERVICE:
  #   service       merge into systemd.services.<service>: the LoadCredential[Encrypted]= line
  #   path          "%d/NAME", for unit settings
  #   absolutePath  "/run/credentials/<unit>/NAME", for programs and config files
  #   envPath       "$CREDENTIALS_DIRECTORY/NAME", for shell scripts the unit runs
  # encrypted = true: sealed by the host (LoadCredentialEncrypted=), from credstoreDir unless
  # `source` names another file. encrypted = false: a plain file (LoadCredential=), `source`
  # is then required (e.g. the secret's path in nixseal's ramfs generation).
  mkCredential =
    {
      name,
      service,
      encrypted ? true,
      source ? null,
    }:
    let
      n = checkName name;
      from =
        if source != null then
          toString source
        else if encrypted then
          "${credstoreDir}/${n}"
        else
          throw "nixseal credentials: mkCredential { name = \"${n}\"; encrypted = false; } needs `source`, the file to load";
      setting = if encrypted then "LoadCredentialEncrypted" else "LoadCredential";
    in
    {
      service.serviceConfig.${setting} = [ "${n}:${from}" ];
      path = "%d/${n}";
      absolutePath = runtimePath { name = n; inherit service; };
      envPath = "$CREDENTIALS_DIRECTORY/${n}";
    };
}

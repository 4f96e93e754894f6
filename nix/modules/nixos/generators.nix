# Generated secrets, the part of the NixOS module imported by nix/modules/nixos.nix
# (docs/generators.md, "The NixOS module"): the options nixseal.generators.<name> (the schema of
# generators.nix, for this host), nixseal.hostName, nixseal.hostPublicKey, nixseal.admins and
# nixseal.generatedDir, and what they compile to:
# - system.build.nixsealGenerators: { admins; hosts.<hostName> = hostPublicKey; generators; },
#   the JSON `nixseal generate --flake .#<host>` reads with `nix eval --json`;
# - each secret file as nixseal.secrets."generated/<name>/<file>" from its encrypted output, so
#   `nixseal install` installs it, with `path` on the file option;
# - each public file's text as `value`, read from generatedDir (nix/lib/generated.nix).
# Nothing here reads a secret: secret outputs are only named (the encrypted `.age` file is
# copied to the store, as every secret's `file`).
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    literalExpression
    mapAttrs
    mkIf
    mkOption
    types
    ;

  l = import ./lib.nix { inherit config lib options; };
  inherit (l) shared cfg;
  generated = import ../../lib/generated.nix;

  # Generator, host, file and prompt names become path segments (as `nixseal generate` checks).
  identifier = types.strMatching "[A-Za-z_][A-Za-z0-9_-]{0,63}";
  period = types.strMatching "[1-9][0-9]{0,5}[hdw]";

  # A secret file's name among nixseal.secrets.
  secretName = gen: file: "generated/${gen}/${file}";

  # This host's instance of a generator: its own directory unless shared.
  hostOf = g: if g.share then null else cfg.hostName;

  outputOf =
    gen: g: file: f:
    generated.relativePath {
      generator = gen;
      host = hostOf g;
      inherit file;
      inherit (f) secret;
    };

  encryptedFileOf = gen: g: file: f: cfg.generatedDir + "/${outputOf gen g file f}";

  fileType =
    gen: g:
    types.submodule (
      { name, config, ... }:
      {
        options = {
          secret = mkOption {
            type = types.bool;
            default = true;
            description = "A secret file (stored encrypted as `<file>.age`, installed on the host) or a public one (stored as it is, readable at evaluation as `value`).";
          };
          owner = mkOption {
            type = shared.principal;
            default = "root";
            description = "Secret files: the installed file's owner (a user name or a numeric id).";
          };
          group = mkOption {
            type = shared.principal;
            default = "root";
            description = "Secret files: the installed file's group.";
          };
          mode = mkOption {
            type = shared.mode;
            default = "0400";
            description = "Secret files: the installed file's permissions, in octal.";
          };
          neededForUsers = mkOption {
            type = types.bool;
            default = false;
            description = "Secret files: installed before users are created (for `users.users.<name>.hashedPasswordFile`); owned by root.";
          };
          value = mkOption {
            type = types.nullOr types.str;
            readOnly = true;
            default =
              if config.secret || cfg.generatedDir == null then
                null
              else
                generated.publicValue {
                  dir = cfg.generatedDir;
                  generator = gen;
                  host = hostOf g;
                  file = name;
                };
            defaultText = literalExpression "the text of generatedDir/<generator>[/<host>]/<file> for a public file; null for a secret one or before it is generated";
            description = "A public file's text, read from {option}`nixseal.generatedDir` (null until `nixseal generate` wrote it; always null for a secret file).";
          };
          path = mkOption {
            type = types.nullOr types.str;
            readOnly = true;
            default =
              if config.secret then
                cfg.secrets.${secretName gen name}.installedPath or "${
                  if config.neededForUsers then cfg.secretsForUsersDir else cfg.secretsDir
                }/${secretName gen name}"
              else
                null;
            defaultText = literalExpression ''config.nixseal.secrets."generated/<generator>/<file>".installedPath for a secret file; null for a public one'';
            description = "Where a secret file is installed on the host (null for a public file).";
          };
        };
      }
    );

  promptType = types.submodule {
    options = {
      type = mkOption {
        type = types.enum [
          "hidden"
          "line"
          "multiline"
          "multiline-hidden"
        ];
        default = "line";
        description = "How the answer is asked: one line or several, shown or hidden.";
      };
      description = mkOption {
        type = types.str;
        default = "";
        description = "What is asked, shown at the prompt.";
      };
      persist = mkOption {
        type = types.bool;
        default = false;
        description = "Keep the answer (encrypted to the admins) and reuse it on later runs.";
      };
    };
  };

  # builtin (docs/generators.md, "Built-in generators in generators.nix"): one kind, with its
  # options; a kind name alone is that kind with its defaults.
  builtinKinds = [
    "password"
    "hex"
    "age-key"
    "ssh-ed25519"
    "wireguard"
    "hash"
  ];
  kindOption =
    options:
    mkOption {
      type = types.nullOr (types.submodule { inherit options; });
      default = null;
    };
  builtinType = types.coercedTo (types.enum builtinKinds) (k: { ${k} = { }; }) (
    types.submodule {
      options = {
        password = kindOption {
          length = mkOption {
            type = types.ints.between 1 4096;
            default = 32;
          };
          charset = mkOption {
            type = types.enum [
              "alnum"
              "base64"
              "hex"
            ];
            default = "alnum";
          };
        };
        hex = kindOption {
          bytes = mkOption {
            type = types.ints.between 1 65536;
            default = 32;
          };
        };
        age-key = kindOption { };
        ssh-ed25519 = kindOption {
          comment = mkOption {
            type = types.str;
            default = "";
          };
        };
        wireguard = kindOption { };
        hash = kindOption {
          sha512Crypt = mkOption {
            type = types.strMatching "[$](in/[A-Za-z_][A-Za-z0-9_-]{0,63}/.+|prompts/[A-Za-z_][A-Za-z0-9_-]{0,63})";
            description = "`$in/<dependency>/<file>` or `$prompts/<prompt>`: the password to hash.";
          };
          rounds = mkOption {
            type = types.ints.between 1000 999999999;
            default = 5000;
          };
        };
      };
    }
  );
  builtinKindsOf = b: builtins.attrNames (lib.filterAttrs (_: v: v != null) b);

  # runtimeInputs: a package stands for its bin directory; a string is a directory as given
  # (tried first: types.package would take a store path string for a package).
  runtimeInput = types.either (types.strMatching "/.*") types.package;
  runtimeDir = x: if lib.isDerivation x then "${lib.getBin x}/bin" else toString x;

  generatorType = types.submodule (
    { name, config, ... }:
    let
      gen = name;
      g = config;
    in
    {
      options = {
        files = mkOption {
          type = types.attrsOf (fileType gen g);
          description = "The files the script writes into `$out` (names: a letter, digit or _, then letters, digits, _, - or `.`; never `..`).";
        };
        script = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "nixseal gen password --length 32";
          description = "A sh script that writes each file into `$out`, reads a dependency's files as `$in/<generator>/<file>` and prompts as `$prompts/<prompt>`. Exactly one of script, `import.command` and `builtin`.";
        };
        builtin = mkOption {
          type = types.nullOr builtinType;
          default = null;
          example = literalExpression ''{ password = { length = 24; }; }'';
          description = "Instead of a script: a built-in generator run inside `nixseal generate` (no process): `\"password\"`, `\"hex\"`, `\"age-key\"`, `\"ssh-ed25519\"`, `\"wireguard\"`, or one of them with options, or `{ hash = { sha512Crypt = \"$in/<dependency>/<file>\"; }; }` (docs/generators.md).";
        };
        import.command = mkOption {
          type = types.nullOr (types.nonEmptyListOf types.str);
          default = null;
          example = [
            "pass"
            "show"
            "db"
          ];
          description = "Instead of a script: a command (run without a shell) whose standard output is the generator's one file.";
        };
        dependencies = mkOption {
          type = types.listOf identifier;
          default = [ ];
          description = "Generators whose files the script reads (`$in/<generator>/<file>`).";
        };
        prompts = mkOption {
          type = types.attrsOf promptType;
          default = { };
          description = "Values asked once at the terminal by `nixseal generate`, given to the script as `$prompts/<prompt>`.";
        };
        share = mkOption {
          type = types.bool;
          default = false;
          description = "One value for every host that declares this generator (`generated/<name>/`), instead of one for this host (`generated/<name>/<host>/`).";
        };
        recipients = mkOption {
          type = types.nullOr (types.listOf types.str);
          default = null;
          description = "Who can decrypt the secret files: host names or recipients. null: the admins and this host.";
        };
        validation = mkOption {
          type = types.anything;
          default = null;
          description = "Any value (it must convert to JSON); when its hash changes, the generator runs again.";
        };
        rotate.every = mkOption {
          type = types.nullOr period;
          default = null;
          example = "90d";
          description = "Regenerate when the files are older than this (hours, days or weeks: \"12h\", \"90d\", \"2w\").";
        };
        runtimeInputs = mkOption {
          type = types.listOf runtimeInput;
          default = [ ];
          example = literalExpression "[ pkgs.openssl pkgs.wireguard-tools ]";
          description = "What the script finds on PATH: packages (their bin directory) or absolute directories.";
        };
        timeout = mkOption {
          type = types.ints.between 1 86400;
          default = 60;
          description = "Seconds before the script is stopped.";
        };
      };
    }
  );

  # The generators.nix form of one generator (docs/generators.md).
  toSpec = _: g: {
    files = mapAttrs (_: f: { inherit (f) secret owner group mode neededForUsers; }) g.files;
    inherit (g)
      script
      dependencies
      share
      recipients
      validation
      timeout
      ;
    import = if g.import.command == null then null else { inherit (g.import) command; };
    builtin = if g.builtin == null then null else lib.filterAttrs (_: v: v != null) g.builtin;
    prompts = mapAttrs (_: p: { inherit (p) type description persist; }) g.prompts;
    hosts = if g.share then [ ] else [ cfg.hostName ];
    rotate = if g.rotate.every == null then null else { inherit (g.rotate) every; };
    runtimeInputs = map runtimeDir g.runtimeInputs;
  };

  haveGenerators = cfg.generators != { };

  # Every file of every generator, as { gen; g; file; f; }.
  allFiles = lib.concatLists (
    lib.mapAttrsToList (
      gen: g:
      lib.mapAttrsToList (file: f: {
        inherit
          gen
          g
          file
          f
          ;
      }) g.files
    ) cfg.generators
  );
  secretFiles = builtins.filter (x: x.f.secret) allFiles;
  generatedSecrets = builtins.filter (
    x: cfg.generatedDir != null && builtins.pathExists (encryptedFileOf x.gen x.g x.file x.f)
  ) secretFiles;
  missingSecrets = builtins.filter (
    x: cfg.generatedDir != null && !(builtins.pathExists (encryptedFileOf x.gen x.g x.file x.f))
  ) secretFiles;

  hostProblem =
    if cfg.hostName == null then
      "nixseal.hostName is not set (nor networking.hostName); set it to this host's name in generated/"
    else if cfg.hostPublicKey == null then
      "nixseal.hostPublicKey is not set; set it to this host's recipient (\"age1...\" or \"ssh-ed25519 ...\", e.g. from `ssh-keyscan`) so that generated secrets are encrypted to it"
    else
      null;
in
{
  options.nixseal = {
    hostName = mkOption {
      type = types.nullOr identifier;
      # networking.hostName may be "" (from DHCP) or a name with dots: then it must be set.
      default =
        let
          h = config.networking.hostName or null;
        in
        if h != null && builtins.match "[A-Za-z_][A-Za-z0-9_-]{0,63}" h != null then h else null;
      defaultText = literalExpression "config.networking.hostName";
      description = "This host's name among generated outputs (`generated/<generator>/<host>/`) and in {option}`system.build.nixsealGenerators`'s `hosts`.";
    };

    hostPublicKey = mkOption {
      type = types.nullOr (types.strMatching "(age1|ssh-ed25519 |ssh-rsa )[^\n]*");
      default = null;
      example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@web1";
      description = "This host's recipient (age1..., or its ssh host key's public line): what generated secrets for this host are encrypted to.";
    };

    admins = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p" ];
      description = "Recipients (age1..., ssh-ed25519 ...) that can read every generated output: the people who run `nixseal generate`.";
    };

    generatedDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = literalExpression "./secrets/generated";
      description = ''
        The `generated` directory of the secrets repository, as a Nix path (no quotes): where
        `nixseal generate` writes outputs. Public files are read from it at evaluation; secret
        files are encrypted there (`<file>.age`) and copied to the store as they are.
      '';
    };

    generators = mkOption {
      type = types.attrsOf generatorType;
      default = { };
      example = literalExpression ''
        {
          db-password = {
            files.password = { owner = "postgres"; };
            script = "nixseal gen password --length 32";
            runtimeInputs = [ config.nixseal.package ];
          };
          wireguard = {
            files.key = { owner = "systemd-network"; };
            files.pub = { secret = false; };
            script = "nixseal gen wireguard --public-name pub";
            runtimeInputs = [ config.nixseal.package ];
          };
        }
      '';
      description = ''
        Secrets that generate themselves (docs/generators.md), for this host: run
        `nixseal generate --flake .#<host>` in the secrets repository, which reads
        {option}`system.build.nixsealGenerators`. Secret files are installed like
        {option}`nixseal.secrets` (`files.<file>.path`); public files are `files.<file>.value`.
      '';
    };
  };

  config = mkIf haveGenerators {
    system.build.nixsealGenerators =
      if hostProblem != null then
        throw hostProblem
      else
        {
          inherit (cfg) admins;
          hosts.${cfg.hostName} = cfg.hostPublicKey;
          generators = mapAttrs toSpec cfg.generators;
        };

    nixseal.secrets = builtins.listToAttrs (
      map (x: {
        name = secretName x.gen x.file;
        value = {
          file = encryptedFileOf x.gen x.g x.file x.f;
          inherit (x.f)
            owner
            group
            mode
            neededForUsers
            ;
        };
      }) generatedSecrets
    );

    assertions = [
      {
        assertion = hostProblem == null;
        message = "nixseal.generators: ${toString hostProblem}.";
      }
      {
        assertion = secretFiles == [ ] || cfg.generatedDir != null;
        message = "nixseal.generators has secret files, but nixseal.generatedDir is not set; set it to the secrets repository's generated directory (a Nix path, e.g. ./secrets/generated).";
      }
    ]
    ++ map (x: {
      assertion = false;
      message = "${
        shared.optionPath "generators" x.gen "files"
      }.${x.file}: generated/${outputOf x.gen x.g x.file x.f} does not exist yet; run `nixseal generate --flake .#${toString cfg.hostName}` in the secrets repository and commit what it stages.";
    }) missingSecrets
    ++ lib.concatLists (
      lib.mapAttrsToList (gen: g: [
        {
          assertion =
            builtins.length (
              builtins.filter (x: x != null) [
                g.script
                g.import.command
                g.builtin
              ]
            ) == 1;
          message = "nixseal.generators.${gen}: set exactly one of script, import.command and builtin.";
        }
        {
          assertion = g.builtin == null || builtins.length (builtinKindsOf g.builtin) == 1;
          message = "nixseal.generators.${gen}.builtin: set exactly one kind (password, hex, age-key, ssh-ed25519, wireguard or hash).";
        }
        {
          assertion = g.import.command == null || (builtins.length (builtins.attrNames g.files) == 1 && g.prompts == { });
          message = "nixseal.generators.${gen}: an import.command generator has exactly one file (the command's output) and no prompts.";
        }
      ]) cfg.generators
    );
  };
}

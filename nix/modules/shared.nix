# What the NixOS and home-manager modules share: the rules of docs/manifest.md, checked at
# evaluation time so that a bad option fails the build with a message naming the option instead
# of failing at activation, and the option types that keep secrets out of the store.
#
# Nothing here reads a file: evaluation never sees a secret, only names and store paths of
# *encrypted* files.
{ lib }:
let
  inherit (lib)
    all
    concatStringsSep
    hasInfix
    hasPrefix
    hasSuffix
    isStringLike
    mkOptionType
    splitString
    stringLength
    types
    ;

  storePrefix = "${builtins.storeDir}/";
in
rec {
  manifestVersion = 1;

  formats = [
    "age"
    "yaml"
    "json"
    "dotenv"
    "ini"
    "binary"
  ];
  sopsFormats = [
    "yaml"
    "json"
    "dotenv"
    "ini"
    "binary"
  ];

  # The placeholder that stands for a secret in template contents (docs/manifest.md). Its hash
  # is of the *name*: it says nothing about the value.
  placeholderFor = name: "<nixseal:${builtins.hashString "sha256" name}:placeholder>";
  placeholderPattern = "<nixseal:[0-9a-f]{64}:placeholder>";

  # The placeholders a text uses (each once), in order of first appearance.
  placeholdersIn =
    text:
    lib.unique (
      map builtins.head (builtins.filter builtins.isList (builtins.split "(${placeholderPattern})" text))
    );

  # Secret and template names: relative paths of segments made of [A-Za-z0-9._@+=-], no `.` or
  # `..` segment, at most 255 bytes a segment and 4096 in all (docs/manifest.md).
  validNameSegment =
    s: s != "." && s != ".." && stringLength s <= 255 && builtins.match "[A-Za-z0-9._@+=-]+" s != null;
  validName = name: stringLength name <= 4096 && all validNameSegment (splitString "/" name);

  # Every proper directory prefix of a name: "a/b/c" -> [ "a" "a/b" ].
  directoriesOf =
    name:
    let
      segments = splitString "/" name;
      n = builtins.length segments;
    in
    builtins.genList (i: concatStringsSep "/" (lib.take (i + 1) segments)) (n - 1);

  # Names that are also a directory of another name ("a" and "a/b"): the installer could not
  # make both. Linear: a set of every directory prefix, then one lookup per name.
  namesUsedAsDirectories =
    names:
    let
      dirs = lib.genAttrs (lib.concatMap directoriesOf names) (_: true);
    in
    builtins.filter (name: dirs ? ${name}) names;

  # The rules below are those of src/common/validation.ts (the manifest and the build-secrets
  # policy); test/nix/rules.test.ts holds both sides to one table.

  # Absolute, normalised (no `.`/`..` segment, no `//`, no trailing `/`), not `/` itself, no
  # newline or carriage return (Nix strings hold no NUL), at most 4096 bytes.
  isNormalisedAbsolute =
    p:
    builtins.isString p
    && hasPrefix "/" p
    && p != "/"
    && stringLength p <= 4096
    && !(hasInfix "\n" p)
    && !(hasInfix "\r" p)
    && all (s: s != "" && s != "." && s != "..") (lib.tail (splitString "/" p));

  isInStore = p: hasPrefix storePrefix p;

  # A path on the host that must never be copied to the store: private keys, target paths. A Nix
  # path value (`./key.txt`) is refused by the type, because interpolating it would copy the
  # file into the world-readable store.
  hostPath = mkOptionType {
    name = "nixsealHostPath";
    description = "absolute path on the host, as a string (not a Nix path: that would copy the file to the store), outside the Nix store";
    descriptionClass = "noun";
    check = x: isNormalisedAbsolute x && !(isInStore x);
    merge = lib.mergeEqualOption;
  };

  # The encrypted file: a Nix path (copied to the store, encrypted) or a store path string (a
  # flake input, a derivation). A string outside the store is accepted by the type and refused
  # by an assertion (and by the manifest itself), so the message can name the secret.
  encryptedFile = mkOptionType {
    name = "nixsealEncryptedFile";
    description = "path to an encrypted file (copied to the Nix store) or a Nix store path";
    descriptionClass = "noun";
    check = x: builtins.isPath x || isStringLike x;
    merge = lib.mergeEqualOption;
  };

  # True for a Nix path value or a string/derivation that lies in the store. Never reads the
  # file and never copies a path value (toString of a path does not copy).
  fileIsStorable =
    f: builtins.isPath f || (isStringLike f && isInStore (if builtins.isString f then f else f.outPath or ""));

  # The string the manifest holds: interpolating a path value copies the encrypted file into the
  # store here, and only here.
  fileString = f: "${f}";

  # The format a file's name suggests, as sops chooses its store: .yaml/.yml, .json, .env, .ini;
  # anything else is an age file (sops binary files must say `format = "binary"`).
  formatOf =
    f:
    let
      base = baseNameOf (toString f);
    in
    if hasSuffix ".yaml" base || hasSuffix ".yml" base then
      "yaml"
    else if hasSuffix ".json" base then
      "json"
    else if hasSuffix ".env" base then
      "dotenv"
    else if hasSuffix ".ini" base then
      "ini"
    else
      "age";

  # "0400", "440": 3 or 4 octal digits, at most 0777 (no setuid, setgid or sticky bit).
  modePattern = "0?[0-7]{3}";
  validMode = s: builtins.isString s && builtins.match modePattern s != null;
  mode = types.strMatching modePattern;

  # A decimal id: no leading zero, at most 4294967294 ((uid_t)-1 is no owner).
  isNumericId =
    s:
    builtins.isString s
    && builtins.match "0|[1-9][0-9]{0,9}" s != null
    && builtins.fromJSON s <= 4294967294;

  # A user or group: a name as shadow's useradd/groupadd accept it ([A-Za-z0-9_.][A-Za-z0-9_.-]*
  # with an optional final `$`, not all digits, not `.` or `..`) within NixOS's limit of 31
  # characters, or a decimal id.
  validPrincipal =
    s:
    builtins.isString s
    && (
      if builtins.match "[0-9]+" s != null then
        isNumericId s
      else
        stringLength s <= 31
        && s != "."
        && s != ".."
        && builtins.match "[A-Za-z0-9_.][A-Za-z0-9_.-]*[$]?" s != null
    );
  principal = types.addCheck (types.strMatching "[A-Za-z0-9_.][A-Za-z0-9_.-]*[$]?") validPrincipal;

  # A systemd unit name (systemd.unit(5) characters) with its type suffix, at most 255
  # characters: no `/`, no whitespace.
  unitPattern = "[A-Za-z0-9:_.\\@-]+[.](service|socket|target|device|mount|automount|swap|timer|path|slice|scope)";
  validUnitName = s: builtins.isString s && stringLength s <= 255 && builtins.match unitPattern s != null;
  unitName = types.addCheck (types.strMatching unitPattern) (s: stringLength s <= 255);

  # A service name in `services = [ "foo" ]` (the attribute of systemd.services), with or without
  # its .service suffix.
  serviceAttr = s: lib.removeSuffix ".service" s;

  # The systemd credential ID of a secret: credential names may not contain `/`, so the
  # subdirectories of a name become `-`.
  credentialId = name: builtins.replaceStrings [ "/" ] [ "-" ] name;

  # An option's location for messages: nixseal.secrets."db/password".file
  optionPath = kind: name: attr: "nixseal.${kind}.${lib.strings.escapeNixIdentifier name}.${attr}";

  # Writes the manifest: with pkgs a derivation (checked by `nixseal install --check` at build
  # time when `check` is set), without pkgs (evaluation tests) builtins.toFile.
  writeManifest =
    {
      pkgs,
      name,
      value,
      check ? null,
    }:
    let
      text = builtins.toJSON value;
    in
    if pkgs == null then
      builtins.toFile name text
    else
      pkgs.writeTextFile {
        inherit name text;
        checkPhase = lib.optionalString (check != null) ''
          ${check} install --check --manifest "$out"
        '';
      };

  # Problems that must stop a manifest from being written at all, whatever happens to the
  # assertions (a manifest read directly from system.build, a module that drops assertions).
  failIfAny =
    problems: value:
    if problems == [ ] then
      value
    else
      throw "nixseal: refusing to write the manifest:\n${concatStringsSep "\n" (map (p: "- ${p}") problems)}";
}

# Evaluates the nixseal NixOS module (and the modules given) on the stub, with nixpkgs's lib.
# Each attribute is one thing a test looks at, evaluated alone with `-A`.
{
  nixpkgsLib,
  modules,
}:
let
  lib = import (nixpkgsLib + "/lib");
  eval = lib.evalModules {
    modules = [
      ./nixos-stub.nix
      ../../nix/modules/nixos.nix
    ]
    ++ map (m: /. + m) modules;
  };
  c = eval.config;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  manifest = c.system.build.nixsealManifest;
  usersManifest = c.system.build.nixsealUsersManifest;
  # As a system build forces them: every assertion, then both manifests (bench/nix-eval.ts).
  checkedManifest = builtins.deepSeq (map (a: a.assertion) c.assertions) [
    c.system.build.nixsealManifest
    c.system.build.nixsealUsersManifest
  ];
  pushPlan = c.system.build.nixsealPushPlan;
  warnings = c.warnings;
  activationScripts = c.system.activationScripts;
  services = c.systemd.services;
  placeholder = c.nixseal.placeholder;
  secrets = c.nixseal.secrets;
  templates = c.nixseal.templates;
  identityPaths = c.nixseal.identityPaths;
  # What the system would hold apart from the manifests: every option value this module sets.
  outsideManifests = builtins.toJSON {
    inherit (c.system) activationScripts;
    inherit (c.systemd) services;
    inherit (c.users) users groups;
  };
  groups = c.users.groups;
  systemPackages = c.environment.systemPackages;
  config = c;
}

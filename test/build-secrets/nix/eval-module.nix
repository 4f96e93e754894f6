# Evaluates nix/modules/build-secrets.nix with the stub and a configuration given as JSON.
{ nixpkgsLib, module, configJson }:
let
  lib = import nixpkgsLib;
  eval = lib.evalModules {
    modules = [
      ./module-stub.nix
      module
      (builtins.fromJSON configJson)
    ];
  };
  c = eval.config;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  settings = c.nix.settings;
  policy = c.environment.etc."nixseal/build-secrets.json" or null;
  tmpfiles = c.systemd.tmpfiles.rules;
  sweep = c.systemd.services.nixseal-build-secrets-sweep.serviceConfig.ExecStart or null;
  preHookText = if c.nix.settings ? pre-build-hook then builtins.readFile c.nix.settings.pre-build-hook else null;
  postHookText = if c.nix.settings ? post-build-hook then builtins.readFile c.nix.settings.post-build-hook else null;
}

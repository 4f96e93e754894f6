# Evaluates the nixseal home-manager module (and the modules given) on the stub.
{
  nixpkgsLib,
  modules,
}:
let
  lib = import (nixpkgsLib + "/lib");
  eval = lib.evalModules {
    modules = [
      ./home-manager-stub.nix
      ../../nix/modules/home-manager.nix
    ]
    ++ map (m: /. + m) modules;
  };
  c = eval.config;
  service = c.systemd.user.services.nixseal;
  # ExecStart is "<shell> <script>"; the script is a store file.
  script = lib.last (lib.splitString " " service.Service.ExecStart);
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  inherit service script;
  scriptText = builtins.readFile script;
  activation = c.home.activation;
  secretsDir = c.nixseal.secretsDir;
  placeholder = c.nixseal.placeholder;
}

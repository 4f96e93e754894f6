# Evaluates flake.nix's outputs without the flake machinery (no network, no nixpkgs): `outputs`
# is called with nixpkgs's lib and a stand-in for nixpkgs's packages, whose callPackage returns a
# fake nixseal derivation (building the real one needs nixpkgs). Then the exported modules are
# evaluated together on the stubs, as a configuration importing them would.
{
  nixpkgsLib,
  modules,
}:
let
  lib = import (nixpkgsLib + "/lib");
  system = "x86_64-linux";
  fakePackage = {
    type = "derivation";
    name = "nixseal-flake-package";
    outPath = builtins.toFile "nixseal-flake-package-stub" "";
    meta.mainProgram = "nixseal";
  };
  # Only what the modules use of pkgs when it is present.
  fakePkgs = {
    stdenv.hostPlatform.system = system;
    writeTextFile = { name, text, ... }: builtins.toFile name text;
    writeScript = name: text: builtins.toFile name text;
    writeShellScript = name: text: builtins.toFile name text;
    runtimeShell = "/bin/sh";
    gnused = "/fake-gnused";
    coreutils = "/fake-coreutils";
    gnupg = fakePackage;
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: {
      stdenv.hostPlatform.system = system;
      callPackage = _: _: fakePackage;
    });
  };
  self = (import ../../flake.nix).outputs { inherit self nixpkgs; };

  nixos = lib.evalModules {
    modules = [
      ./nixos-stub.nix
      self.nixosModules.default
      self.nixosModules.agenix-compat
      self.nixosModules.sops-compat
      self.nixosModules.nixops-keys-compat
      { _module.args.pkgs = fakePkgs; }
    ]
    ++ map (m: /. + m) modules;
  };
  home = lib.evalModules {
    modules = [
      ./home-manager-stub.nix
      self.homeManagerModules.default
      { _module.args.pkgs = fakePkgs; }
      { nixseal.templates.t.content = "x"; }
    ];
  };
in
{
  outputs = lib.mapAttrs (_: v: if builtins.isAttrs v then builtins.attrNames v else v) {
    inherit (self)
      nixosModules
      homeManagerModules
      overlays
      lib
      ;
    packages = self.packages.${system};
    apps = self.apps.${system};
  };
  packageInScripts = nixos.config.system.activationScripts.nixseal.text;
  fakePackage = fakePackage.outPath;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) nixos.config.assertions);
  homeService = home.config.systemd.user.services.nixseal.Service.ExecStart;
  homeScript = builtins.readFile (lib.last (lib.splitString " " home.config.systemd.user.services.nixseal.Service.ExecStart));
  app = self.apps.${system}.default.program;
  pushPlan = nixos.config.system.build.nixsealPushPlan;
  systemPackages = nixos.config.environment.systemPackages;
  services = nixos.config.systemd.services;
}

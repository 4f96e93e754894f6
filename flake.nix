{
  description = "nixseal: secrets for Nix and NixOS that never leak into the Nix store";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Each exported module brings the flake's own package as the default nixseal.package. A
      # module with a `key` is imported once, however many of them a configuration imports.
      withPackage = name: module: {
        key = "nixseal/flake/${name}";
        _file = "${toString ./flake.nix}#${name}";
        imports = [
          module
          packageDefaultModule
        ];
      };

      packageDefaultModule =
        { pkgs, ... }:
        {
          key = "nixseal/flake/package-default";
          config.nixseal.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
    in
    {
      packages = forAllSystems (pkgs: rec {
        nixseal = pkgs.callPackage ./nix/package.nix { };
        default = nixseal;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });

      overlays.default = final: _prev: { nixseal = final.callPackage ./nix/package.nix { }; };

      nixosModules = {
        default = withPackage "nixos" ./nix/modules/nixos.nix;
        nixseal = self.nixosModules.default;
        # Migration in one import: existing age.secrets / sops.secrets definitions become
        # nixseal secrets (each imports the main module too).
        agenix-compat = withPackage "agenix-compat" ./nix/modules/agenix-compat.nix;
        sops-compat = withPackage "sops-compat" ./nix/modules/sops-compat.nix;
        # NixOps/colmena `deployment.keys` sent by `nixseal push` (docs/push.md): on a host
        # deployed without them (declares `deployment.*`), or inside a colmena hive or NixOps
        # network (uses theirs).
        nixops-keys-compat = withPackage "nixops-keys-compat" ./nix/modules/nixops-keys-compat.nix;
        colmena-keys-compat = withPackage "colmena-keys-compat" ./nix/modules/colmena-keys-compat.nix;
      };

      homeManagerModules = {
        default = withPackage "home-manager" ./nix/modules/home-manager.nix;
        nixseal = self.homeManagerModules.default;
      };

      lib = import ./nix/lib { };

      # fetchurl and fetchgit with this system's fetcher (build-time secrets, docs/build-secrets.md).
      libFor = forAllSystems (
        pkgs:
        import ./nix/lib {
          fetcher = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/lib/node_modules/nixseal/dist/src/build-secrets/fetcher.js";
          interpreter = "${pkgs.nodejs}/bin/node";
          git = "${pkgs.gitMinimal}/bin/git";
          system = pkgs.stdenv.hostPlatform.system;
        }
      );
    };
}

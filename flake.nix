{
  description = "silo: the store side of Nix in one Go binary (binary cache, push queue, store publisher, store daemon)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      plain = import ./nix/plain.nix;
    in
    {
      # go.mod asks for Go 1.26.8: take nixpkgs' Go 1.26 where the default is older.
      overlays.default = final: prev: {
        silo = final.callPackage ./nix/package.nix { buildGoModule = final.buildGo126Module or final.buildGoModule; };
      };

      packages = forAll (pkgs: rec {
        silo = (self.overlays.default pkgs pkgs).silo;
        default = silo;
      });

      apps = forAll (pkgs: {
        default = { type = "app"; program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/silo"; };
      });

      # services.silo.{serve,publish,queue,daemon,gc}; see docs/deploy.md.
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.silo.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      checks = forAll (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;

        # packaging/systemd is exactly what the module renders (as TestPlainUnitsCurrent checks).
        plain-units = assert builtins.all (n: builtins.readFile (./packaging/systemd + "/${n}") == plain.${n}) (builtins.attrNames plain);
          pkgs.runCommand "silo-plain-units-current" { } "touch $out";

        # The module with nixpkgs' own module system: every service on, each unit file built.
        nixos-units = let
          system = nixpkgs.lib.nixosSystem {
            inherit (pkgs.stdenv.hostPlatform) system;
            modules = [
              self.nixosModules.default
              {
                boot.isContainer = true;
                system.stateVersion = "25.05";
                nix.enable = false;
                services.silo = {
                  serve.enable = true;
                  publish = { enable = true; secrets.signing-key-file = [ "/run/keys/publish.sec" ]; };
                  queue = { enable = true; settings.to = "https://cache.example.org/main"; };
                  daemon.enable = true;
                  gc.enable = true;
                };
              }
            ];
          };
          units = nixpkgs.lib.filterAttrs (n: _: nixpkgs.lib.hasPrefix "silo-" n) system.config.systemd.units;
        in pkgs.linkFarm "silo-nixos-units" (nixpkgs.lib.mapAttrsToList (n: u: { name = n; path = "${u.unit}/${n}"; }) units);
      });
    };
}

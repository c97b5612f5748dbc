# silo, built with nixpkgs' buildGoModule.
#
# vendorHash is the NAR hash (SRI) of what `go mod vendor` writes for
# go.mod and go.sum, which is what buildGoModule's goModules derivation
# produces. It was computed here without nixpkgs (go mod vendor, then the
# NAR hash), and internal/units' TestVendorHashCurrent recomputes it on
# every test run: after a dependency change that test fails and prints
# the new value to put here.
{ lib, buildGoModule }:
buildGoModule {
  pname = "silo";
  version = "0.1.0-dev";
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../go.mod ../go.sum ../cmd ../internal ../packaging ../nix ../bench ];
  };
  vendorHash = "sha256-jKsFHt9HNJcvZSIS5MJscbWxvPovLgZw6JE/Svcwses=";
  subPackages = [ "cmd/silo" ];
  env.CGO_ENABLED = "0"; # pure Go (SQLite is modernc.org/sqlite)
  ldflags = [ "-s" "-w" ];

  # Every package's tests, not only cmd/silo's. Tests that need the real
  # Nix, root, systemd or PostgreSQL skip in the build sandbox (CI unset);
  # ./test.sh runs them all.
  checkPhase = ''
    runHook preCheck
    export HOME=$TMPDIR
    go test -p $NIX_BUILD_CORES ./...
    runHook postCheck
  '';

  meta = {
    description = "The store side of Nix in one binary: binary cache, push queue, store publisher, store daemon";
    mainProgram = "silo";
    platforms = lib.platforms.linux;
  };
}

# The pkgs that plain.nix and the tests pass to module.nix instead of
# nixpkgs: silo and Nix are prefixes (silo at SILO/bin/silo), and the
# writers make real files in the store with /bin/sh, so tests can run what
# the module writes. Not nixpkgs: no stdenv, no checks of the scripts.
{ silo ? "/usr/local", nix ? "/usr" }:
let
  write = name: dest: mode: text: derivation {
    inherit name text dest mode;
    PATH = "/usr/bin:/bin";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''mkdir -p "$(dirname "$out$dest")" && printf %s "$text" > "$out$dest" && chmod "$mode" "$out$dest"'' ];
  };
in
{
  inherit silo nix;
  runtimeShell = "/bin/sh";
  writeText = name: text: write name "" "0444" text;
  writeScript = name: text: write name "" "0555" text;
  writeTextDir = path: text: write (baseNameOf path) "/${path}" "0444" text;
  writeShellScriptBin = name: text: write name "/bin/${name}" "0555" ("#!/bin/sh\n" + text);
}

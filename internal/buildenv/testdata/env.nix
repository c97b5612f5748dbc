# Derivations whose builder is `env -0`: the build log is exactly the
# environment Nix 2.8 gave the builder, in order. gen.sh builds them.
let
  sys = "x86_64-linux";
  src = builtins.toFile "src.txt" "source\n";
  dep = derivation { name = "dep"; system = sys; builder = "/bin/sh"; args = [ "-c" "echo ${src} > $out" ]; };
  envBuilder = { system = sys; builder = "/usr/bin/env"; args = [ "-0" ]; };
in {
  plain = derivation (envBuilder // {
    name = "plain";
    outputs = [ "out" "dev" ];
    PATH = "/custom/path";
    HOME = "/custom/home";
    TMPDIR = "/overridden";
    passAsFile = [ "big" ];
    big = "contents of ${dep}";
    exportReferencesGraph = [ "graph" dep ];
    esc = "a\nb\tc\"d";
    impureEnvVars = [ "FOO" ];
  });
  structured = derivation (envBuilder // {
    name = "structured";
    __structuredAttrs = true;
    outputs = [ "out" "dev" ];
    x = [ 1 2 ];
    passAsFile = [ "y" ];
    y = "not a file with structured attrs";
  });
  fixed = derivation (envBuilder // {
    name = "fixed";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "0000000000000000000000000000000000000000000000000000";
    impureEnvVars = [ "FOO" "MISSING" ];
  });
}

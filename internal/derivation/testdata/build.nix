# Derivations gen.sh builds with the real Nix 2.8 (sandboxed, in a chroot
# store) so that what Nix hands a builder can be compared byte for byte:
# .attrs.json, .attrs.sh, passAsFile files, exportReferencesGraph files.
let
  sys = "x86_64-linux";
  sh = script: { system = sys; builder = "/bin/sh"; args = [ "-c" ("PATH=/bin:/usr/bin; set -e; " + script) ]; };
  src = builtins.toFile "src.txt" "source file\n";
  dep = derivation (sh "echo ${src} > $out" // { name = "dep"; });
  dep2 = derivation (sh "echo ${dep} > $out" // { name = "dep2"; });
  copyAttrs = "source $NIX_BUILD_TOP/.attrs.sh; mkdir -p \${outputs[out]} \${outputs[dev]}; cp $NIX_BUILD_TOP/.attrs.json $NIX_BUILD_TOP/.attrs.sh \${outputs[out]}/";
  floatingDrv = derivation (sh "echo a > $out; echo b > $bin" // {
    name = "floating-built";
    __contentAddressed = true;
    outputs = [ "out" "bin" ];
  });
in {
  structured = derivation (sh copyAttrs // {
    builder = "/bin/bash";
    name = "structured-built";
    __structuredAttrs = true;
    outputs = [ "out" "dev" ];
    str = "a\"b\\c\nd\re\tf ünï'q'" + builtins.fromJSON "\" ctl:\\u0001\\u001f\\u007f\\u0080\"";
    ints = [ 0 1 (-1) 16777217 2147483647 2147483648 3000000000 (-3000000000) 9007199254740993 ];
    floats = [ 1.5 0.1 1.23456789 100000.0 1000000.0 1.0e30 0.0001 0.00001 (-2.5) 123456789.0 2.0 1.0e10 3.0e9 ];
    oneFloat = 1.0e10;
    intBig = 3000000000;
    floatInt = 2.0;
    bools = [ true false ];
    t = true;
    f = false;
    nul = null;
    nested = { a = { b = [ 1 "x" ]; }; c = true; "d e" = "f"; };
    attrsOfSimple = { x = "1"; y = 2; z = null; w = false; v = 2.5; "q'k" = "v'v"; };
    listOfMixed = [ "a" 1 null true ];
    listWithList = [ [ 1 ] ];
    emptyList = [ ];
    emptyAttrs = { };
    "not-a-var" = "skipped";
    _under = "ok";
    "1digit" = "no";
    refs = "${dep2}";
    exportReferencesGraph = { graph = [ dep2 ]; srcGraph = [ src ]; };
  });
  plain = derivation (sh ''
    mkdir $out
    cp $bigPath $out/big
    cp $otherPath $out/other
    echo "$bigPath $otherPath" > $out/names
    cp graph g2 $out/
    env | sort | grep -v '^PWD=\|^SHLVL=\|^_=' > $out/env
  '' // {
    name = "plain-built";
    passAsFile = [ "big" "other" ];
    big = "passed as a file\nwith ${dep}";
    other = "x";
    exportReferencesGraph = [ "graph" dep2 "g2" src ];
    impureEnvVars = [ "http_proxy" ];
  });
  floating = floatingDrv;
  # Deferred (its input floats): Nix resolves it before building and
  # writes the resolved derivation to the store (Derivation::tryResolve).
  consumer = derivation (sh "echo ${floatingDrv} ${floatingDrv.bin} > $out" // { name = "resolved-consumer"; });
}

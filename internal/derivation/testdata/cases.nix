# Derivations covering every feature of the .drv format; gen.sh
# instantiates them with the real Nix 2.8 into testdata/drv/.
let
  sys = "x86_64-linux";
  mk = attrs: derivation ({ system = sys; builder = "/bin/sh"; } // attrs);
  src = builtins.toFile "src.txt" "source file\n";
  dirSrc = ./srcdir;
  simple = mk {
    name = "simple";
    args = [ "-c" "echo \"quoted\" back\\slash $out\n\r\ttab" "" (builtins.fromJSON "\"ünïcödé \\u0001\"") ];
    esc = "a\"b\\c\nd\re\tf";
    ctrl = builtins.fromJSON "\"bell:\\u0007 del:\\u007f esc:\\u001b\"";
    empty = "";
  };
  multi = mk {
    name = "multi";
    outputs = [ "out" "dev" "lib" "doc" ];
    args = [ "-c" "for o in $outputs; do echo > \${!o}; done" ];
  };
  withInputs = mk {
    name = "with-inputs";
    a = simple;
    b = "${multi.dev} ${multi.lib}";
    s = src;
    d = dirSrc;
  };
  fixed = algo: mode: hash: mk {
    name = "fixed-${algo}-${mode}";
    outputHashAlgo = algo;
    outputHashMode = mode;
    outputHash = hash;
  };
  fixedFlat = {
    md5 = fixed "md5" "flat" "d41d8cd98f00b204e9800998ecf8427e";
    sha1 = fixed "sha1" "flat" "da39a3ee5e6b4b0d3255bfef95601890afd80709";
    sha256 = fixed "sha256" "flat" "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    sha512 = fixed "sha512" "flat" "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
  };
  fixedRec = {
    md5 = fixed "md5" "recursive" "d41d8cd98f00b204e9800998ecf8427e";
    sha1 = fixed "sha1" "recursive" "da39a3ee5e6b4b0d3255bfef95601890afd80709";
    sha256 = fixed "sha256" "recursive" "1ycf6fnl6r9rg10fb0lw5m7pcpqb4k2fsjdnm8gq6rsx6cvy1pga";
    sha512 = fixed "sha512" "recursive" "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
  };
  # Depends on a fixed-output derivation: hashDerivationModulo uses its fixed hash.
  onFixed = mk { name = "on-fixed"; f = fixedRec.sha256; g = fixedFlat.sha1; };
  floating = mk {
    name = "floating";
    __contentAddressed = true;
    outputs = [ "out" "bin" ];
    args = [ "-c" "echo $out $bin" ];
  };
  floatingFlat = mk {
    name = "floating-flat";
    __contentAddressed = true;
    outputHashMode = "flat";
    outputHashAlgo = "sha1";
  };
  # Input-addressed on top of floating: outputs deferred, placeholders in env.
  deferred = mk { name = "deferred"; f = floating; fb = floating.bin; };
  onDeferred = mk { name = "on-deferred"; d = deferred; };
  impure = mk { name = "impure"; __impure = true; outputs = [ "out" "x" ]; };
  onImpure = mk { name = "on-impure"; i = impure; };
  structured = mk {
    name = "structured";
    __structuredAttrs = true;
    outputs = [ "out" "dev" ];
    str = "a\"b\\c\nd\re\tf ünï'q'" + builtins.fromJSON "\" ctl:\\u0001\\u001f\\u007f\"";
    ints = [ 0 1 (-1) 16777217 3000000000 (-3000000000) 9007199254740993 ];
    floats = [ 1.5 0.1 1.23456789 100000.0 1000000.0 1.0e30 0.0001 0.00001 (-2.5) 123456789.0 2.0 ];
    bools = [ true false ];
    nul = null;
    nested = { a = { b = [ 1 "x" ]; }; c = true; "d e" = "f"; };
    attrsOfSimple = { x = "1"; y = 2; z = null; w = false; v = 2.5; };
    emptyList = [ ];
    emptyAttrs = { };
    "not-a-var" = "skipped";
    _under = "ok";
    requiredSystemFeatures = [ "kvm" "big-parallel" ];
    preferLocalBuild = true;
    allowSubstitutes = false;
    outputChecks.out = { allowedReferences = [ ]; maxSize = 1000; };
    inputDrv = simple;
  };
  checks = mk {
    name = "checks";
    allowedReferences = [ "out" simple ];
    disallowedRequisites = [ multi.dev ];
    requiredSystemFeatures = "kvm  nixos-test";
    passAsFile = [ "big" "other" ];
    big = "passed as a file";
    other = "x";
    exportReferencesGraph = [ "graph" simple "g2" src ];
    preferLocalBuild = true;
    allowSubstitutes = "";
    impureEnvVars = [ "http_proxy" "FOO" ];
  };
in {
  inherit simple multi withInputs onFixed floating floatingFlat deferred onDeferred impure onImpure structured checks;
  fixedFlatMd5 = fixedFlat.md5;
  fixedFlatSha1 = fixedFlat.sha1;
  fixedFlatSha256 = fixedFlat.sha256;
  fixedFlatSha512 = fixedFlat.sha512;
  fixedRecMd5 = fixedRec.md5;
  fixedRecSha1 = fixedRec.sha1;
  fixedRecSha256 = fixedRec.sha256;
  fixedRecSha512 = fixedRec.sha512;
}

# The few nixpkgs library functions module.nix uses, written here so that
# the module evaluates under this machine's Nix 2.8 without nixpkgs
# (current nixpkgs needs Nix >= 2.18). gen-units.sh (plain.nix) and the
# tests use it; NixOS evaluates the module with nixpkgs' own lib.
#
# What it keeps of the module system: options declared with types (values
# checked) and defaults; definitions merged by priority (mkIf, mkMerge,
# mkOverride, mkDefault, mkForce, pushed down into attributes); listOf
# concatenated, attrsOf and submodules (with freeformType) merged per
# attribute, other values required to agree. What it leaves out: option
# documentation, apply, imports of modules by key, type coercions.
# nixosStub declares the NixOS options the module sets, as plain values.
let
  inherit (builtins) all attrNames concatMap concatStringsSep elem filter foldl'
    head isAttrs isBool isFunction isInt isList isPath isString length listToAttrs
    map mapAttrs removeAttrs toJSON;

  isType = t: v: isAttrs v && (v._type or null) == t;
  showLoc = concatStringsSep ".";
  show = v: if isAttrs v && v ? outPath then v.outPath else if isFunction v then "<function>" else toJSON v;
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  mkOverride = priority: content: { _type = "override"; inherit priority content; };

  # A definition without mkIf/mkMerge/mkOverride at its top, as a list of
  # { priority; value; } (plain definitions have priority 100).
  discharge = priority: v:
    if isType "if" v then (if v.condition then discharge priority v.content else [ ])
    else if isType "merge" v then concatMap (discharge priority) v.contents
    else if isType "override" v then discharge v.priority v.content
    else [{ inherit priority; value = v; }];

  # The definitions of attribute k inside attribute-set definitions.
  children = defs: k: concatMap (d:
    if isAttrs d.value && d.value ? ${k} then discharge d.priority d.value.${k} else [ ]) defs;

  # Only the definitions of the highest priority (lowest number) count.
  pick = defs:
    let p = foldl' (m: d: if d.priority < m then d.priority else m) 100000 defs;
    in filter (d: d.priority == p) defs;

  mergeDefs = loc: type: defs: type.merge loc (pick defs);

  mergeOption = loc: opt: defs:
    let type = opt.type or types.anything; in
    if length defs > 0 then mergeDefs loc type defs
    else if opt ? default then type.merge loc [{ priority = 1500; value = opt.default; }]
    else throw "The option `${showLoc loc}' is used but not defined.";

  mkType = name: check: merge: { _type = "type"; inherit name check merge; };
  checked = type: loc: defs: map (d:
    if type.check d.value then d.value
    else throw "The option `${showLoc loc}' is not of type ${type.name}: ${show d.value}") defs;
  mergeEqual = type: loc: defs:
    let vs = checked type loc defs; v = head vs; in
    if all (x: x == v) vs then v
    else throw "The option `${showLoc loc}' has conflicting definitions: ${concatStringsSep ", " (map show vs)}";
  scalar = name: check: let t = mkType name check (loc: defs: mergeEqual t loc defs); in t;

  mergeAttrs = elemType: loc: defs:
    let keys = unique (concatMap (d:
      if isAttrs d.value then attrNames d.value
      else throw "The option `${showLoc loc}' is not an attribute set: ${show d.value}") defs);
    in listToAttrs (map (k: { name = k; value = mergeDefs (loc ++ [ k ]) elemType (children defs k); }) keys);

  types = rec {
    anything = mkType "anything" (_: true) (loc: defs:
      if all (d: isAttrs d.value && !(d.value ? outPath)) defs then mergeAttrs anything loc defs
      else if all (d: isList d.value) defs then concatMap (d: d.value) defs
      else mergeEqual anything loc defs);
    bool = scalar "bool" isBool;
    int = scalar "int" isInt;
    str = scalar "str" isString;
    path = scalar "path" (v: isPath v || isString v);
    package = scalar "package" (v: isString v || isPath v || (isAttrs v && v ? outPath));
    lines = mkType "lines" isString (loc: defs: concatStringsSep "\n" (checked lines loc defs));
    enum = vs: scalar "one of ${toJSON vs}" (v: elem v vs);
    listOf = t: mkType "list of ${t.name}" (v: isList v && all t.check v)
      (loc: defs: concatMap (d:
        if isList d.value then map (x: t.merge loc [{ inherit (d) priority; value = x; }]) d.value
        else throw "The option `${showLoc loc}' is not a list: ${show d.value}") defs);
    attrsOf = t: mkType "attribute set of ${t.name}" (v: isAttrs v && all t.check (builtins.attrValues v))
      (mergeAttrs t);
    nullOr = t: mkType "null or ${t.name}" (v: v == null || t.check v) (loc: defs:
      if all (d: d.value == null) defs then null
      else if all (d: d.value != null) defs then t.merge loc defs
      else throw "The option `${showLoc loc}' has conflicting definitions: null and not null");
    either = a: b: mkType "${a.name} or ${b.name}" (v: a.check v || b.check v) (loc: defs:
      if all (d: a.check d.value) defs then a.merge loc defs
      else if all (d: b.check d.value) defs then b.merge loc defs
      else throw "The option `${showLoc loc}' is neither ${a.name} nor ${b.name}: ${concatStringsSep ", " (map (d: show d.value) defs)}");
    oneOf = ts: foldl' either (head ts) (builtins.tail ts);
    submodule = spec: mkType "submodule" isAttrs (loc: defs:
      let
        declared = spec.options or { };
        free = if spec ? freeformType
          then spec.freeformType.merge loc (map (d: d // { value = removeAttrs d.value (attrNames declared); }) defs)
          else let extra = filter (k: !(declared ? ${k})) (unique (concatMap (d: attrNames d.value) defs)); in
            if extra == [ ] then { } else throw "The option `${showLoc (loc ++ [ (head extra) ])}' does not exist.";
      in free // mapAttrs (k: o: mergeOption (loc ++ [ k ]) o (children defs k)) declared);
  };

  # Declarations of all modules as one tree; an option declared twice is an error.
  mergeDecls = loc: a: b: a // mapAttrs (k: v:
    if !(a ? ${k}) then v
    else if isType "option" v || isType "option" a.${k} then throw "The option `${showLoc (loc ++ [ k ])}' is declared twice."
    else mergeDecls (loc ++ [ k ]) a.${k} v) b;

  # Above the options, definitions stay as written: the definition of
  # attribute k inside v has v's mkIf, mkMerge and mkOverride pushed down
  # onto it, so that finding which options a module defines never
  # evaluates a condition (which may read those very options).
  sub = k: v:
    let wrap = c: f: if c == null then null else f c; in
    if isType "if" v then wrap (sub k v.content) (c: v // { content = c; })
    else if isType "override" v then wrap (sub k v.content) (c: v // { content = c; })
    else if isType "merge" v then
      (let cs = filter (c: c != null) (map (sub k) v.contents); in
       if length cs == 0 then null else v // { contents = cs; })
    else if isAttrs v && v ? ${k} then v.${k}
    else null;
  subs = defs: k: filter (c: c != null) (map (sub k) defs);
  keysOf = v:
    if isType "if" v || isType "override" v then keysOf v.content
    else if isType "merge" v then concatMap keysOf v.contents
    else if isAttrs v then attrNames v
    else [ ];

  mergeTree = loc: decl: defs: mapAttrs (k: node:
    if isType "option" node then mergeOption (loc ++ [ k ]) node (concatMap (discharge 100) (subs defs k))
    else mergeTree (loc ++ [ k ]) node (subs defs k)) decl;

  # Paths defined but not declared (the real module system refuses them).
  undeclared = loc: decl: defs: concatMap (k:
    if !(decl ? ${k}) then [ (showLoc (loc ++ [ k ])) ]
    else if isType "option" decl.${k} then [ ]
    else undeclared (loc ++ [ k ]) decl.${k} (subs defs k)) (unique (concatMap keysOf defs));

  evalModules = { modules, specialArgs ? { } }:
    let
      args = specialArgs // { inherit lib config; };
      norm = m:
        let v = if isFunction m then m args else m; in
        if v ? options || v ? config || v ? imports
        then { options = v.options or { }; config = v.config or { }; imports = v.imports or [ ]; }
        else { options = { }; config = v; imports = [ ]; };
      load = m: let n = norm (if isPath m || isString m then import m else m); in [ n ] ++ concatMap load n.imports;
      mods = concatMap load modules;
      decls = foldl' (mergeDecls [ ]) { } (map (m: m.options) mods);
      defs = map (m: m.config) mods;
      config = mergeTree [ ] decls defs;
    in
    {
      inherit config;
      undeclared = undeclared [ ] decls defs;
      failedAssertions = map (a: a.message) (filter (a: !a.assertion) config.assertions);
    };

  lib = {
    inherit types evalModules mkOverride;
    mkOption = args: args // { _type = "option"; };
    mkEnableOption = name: lib.mkOption { type = types.bool; default = false; description = "Whether to enable ${name}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    literalExpression = text: { _type = "literalExpression"; inherit text; };

    # The NixOS options module.nix sets, declared as plain values. This is
    # not NixOS: nothing here checks what NixOS would do with them.
    nixosStub = {
      options = with types; let o = type: default: lib.mkOption { inherit type default; }; in {
        assertions = o (listOf anything) [ ];
        nix.enable = o bool true;
        nix.settings = o (attrsOf anything) { };
        environment.etc = o (attrsOf anything) { };
        environment.systemPackages = o (listOf anything) [ ];
        users.users = o (attrsOf anything) { };
        users.groups = o (attrsOf anything) { };
        systemd.tmpfiles.rules = o (listOf str) [ ];
        systemd.units = o (attrsOf (submodule {
          options.text = o (nullOr str) null;
          options.wantedBy = o (listOf str) [ ];
        })) { };
      };
    };
  };
in
lib

# Text formats the module writes, in builtins only: silo's TOML config
# (flat keys, strings/numbers/booleans/arrays: builtins.toJSON prints each
# of those as valid TOML), nix.conf, and Nix's machines file.
let
  inherit (builtins) attrNames concatStringsSep filter isBool isList isInt map toJSON toString;
  lines = ls: concatStringsSep "" (map (l: l + "\n") ls);
  dash = l: if l == [ ] then "-" else concatStringsSep "," l;
  orDash = v: if v == null then "-" else v;
in
{
  # toTOML { jobs = 4; to = "https://x"; } -> "jobs = 4\nto = \"https://x\"\n".
  # null values are left out (silo's default applies).
  toTOML = attrs: lines (map (k: "${k} = ${toJSON attrs.${k}}")
    (filter (k: attrs.${k} != null) (attrNames attrs)));

  # nix.conf: lists space-separated, booleans true/false, null left out.
  nixConf = attrs: lines (map (k:
    let v = attrs.${k}; in
    "${k} = ${if isList v then concatStringsSep " " (map toString v)
             else if isBool v then (if v then "true" else "false")
             else toString v}")
    (filter (k: attrs.${k} != null) (attrNames attrs)));

  # One line per machine: URI, systems, SSH key, max jobs, speed factor,
  # supported features, mandatory features, public host key ("-": none).
  machines = ms: lines (map (m: concatStringsSep " " [
    "${m.protocol}://${if m.sshUser == null then "" else m.sshUser + "@"}${m.hostName}"
    (dash m.systems)
    (orDash m.sshKey)
    (toString m.maxJobs)
    (toString m.speedFactor)
    (dash m.supportedFeatures)
    (dash m.mandatoryFeatures)
    (orDash m.publicHostKey)
  ]) ms);
}

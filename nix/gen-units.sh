#!/bin/sh
# Regenerates packaging/systemd from nix/plain.nix (module.nix and
# units.nix evaluated for a machine without NixOS). Run it after changing
# any of nix/*.nix; internal/units' TestPlainUnitsCurrent fails until then.
# Needs only the Nix client (nix-bin 2.8 is enough) and no nixpkgs.
set -eu
cd "$(dirname "$0")/.."
out=packaging/systemd
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Hermetic: no user or system nix.conf changes the evaluation.
export NIX_CONF_DIR="$tmp" NIX_USER_CONF_FILES="$tmp/none" HOME="$tmp"
ev() { nix --extra-experimental-features nix-command eval --raw --file nix/plain.nix --apply "$1"; }
names=$(ev 'u: builtins.concatStringsSep "\n" (builtins.attrNames u)')
rm -f "$out"/silo-*
for n in $names; do
  ev "u: u.\"$n\"" > "$out/$n"
  case $n in *.service | *.socket | *.timer) chmod 0644 "$out/$n" ;; *) chmod 0755 "$out/$n" ;; esac
done
echo "gen-units.sh: wrote $(echo "$names" | wc -l) files to $out"

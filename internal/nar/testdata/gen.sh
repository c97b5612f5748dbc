#!/usr/bin/env bash
# Regenerates the golden files in this directory with the real Nix (2.8):
#   NAME.nar   nix-store --dump of a tree built below
#   NAME.ls    the listing `nix copy --to file://...?write-nar-listing=true` writes
#   NAME.hash  nix hash path --base32 of the tree
# Run as root on a machine with Nix: ./gen.sh
set -euo pipefail
cd "$(dirname "$0")"
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export LC_ALL=C
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mk_mixed() {
  local d=$1
  mkdir -p "$d/empty-dir" "$d/sub dir/nested"
  printf 'hello\n' > "$d/file"
  : > "$d/empty"
  printf '#!/bin/sh\necho hi\n' > "$d/exec"; chmod 755 "$d/exec"
  printf 'x' > "$d/sub dir/nested/seven-b"
  printf '12345678' > "$d/eight"
  ln -s /nix/store/absolute-target "$d/abs-link"
  ln -s ../file "$d/sub dir/rel-link"
  ln -s does-not-exist "$d/dangling"
  # Names that sort differently bytewise than in most locales.
  for n in B a _x Z é É 'é-é' '-dash' '.hidden' 'tab	name' 'quote"back\slash' $'new\nline' $'\x7f'; do
    printf '%s' "$n" > "$d/$n"
  done
  printf '\xff\xfe' > "$d/$(printf 'bad-utf8-\xff')"
}

mk_deep() {
  local d=$1 p=$1
  for i in $(seq 1 100); do p="$p/d$i"; done
  mkdir -p "$p"
  printf 'bottom\n' > "$p/f"
}

mkdir "$work/mixed"; mk_mixed "$work/mixed"
mkdir "$work/deep"; mk_deep "$work/deep"
printf 'just a file\n' > "$work/file"
printf '#!/bin/sh\n' > "$work/exec"; chmod 755 "$work/exec"
ln -s /nix/store/some-target "$work/symlink"
mkdir "$work/emptydir"

cache="$work/cache"
for name in mixed deep file exec symlink emptydir; do
  nix-store --dump "$work/$name" > "$name.nar"
  nix hash path --base32 "$work/$name" > "$name.hash"
  sp=$(nix-store --add "$work/$name")
  nix copy --to "file://$cache?write-nar-listing=true&compression=none" "$sp"
  cp "$cache/$(basename "$sp" | cut -c1-32).ls" "$name.ls"
done
echo "gen.sh: wrote $(ls *.nar | wc -l) NARs with listings and hashes"

#!/bin/sh
# Regenerates the golden narinfo files with the real Nix 2.8 (Debian
# nix-bin). Run as root from anywhere: sh internal/narinfo/testdata/gen.sh
#
# The derivations are fixed (no nonce), so their store paths and NAR hashes
# are the same on every machine and every run; only the xz FileHash may
# change with the xz library. key.sec is a test-only key, checked in so that
# tests can reproduce Nix's signatures byte for byte.
set -eu
cd "$(dirname "$0")"
export NIX_CONFIG='experimental-features = nix-command
sandbox = false
build-users-group =
substituters =
narinfo-cache-positive-ttl = 0
narinfo-cache-negative-ttl = 0'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HOME="$tmp/home"

[ -f key.sec ] || nix-store --generate-binary-cache-key golden-1 key.sec key.pub
[ -f key2.sec ] || nix-store --generate-binary-cache-key golden-2 key2.sec key2.pub

build() { nix-store --realise "$(nix-instantiate --expr "$1")"; }
drv() { printf 'derivation { name = "%s"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "%s"]; %s }' "$@"; }

dep=$(build "$(drv silo-golden-dep 'echo dep > \$out' '')")
# References: the dep, a source path, and itself; deriver: its .drv.
printf 'source for silo golden tests\n' > "$tmp/src"
src=$(nix-store --add "$tmp/src")
main=$(build "$(drv silo-golden 'echo \$dep \$src \$out > \$out' "dep = builtins.storePath \"$dep\"; src = builtins.storePath \"$src\";")")

# Two signatures: one in the local store, one added by the cache on upload.
nix store sign --key-file key2.sec "$main"
for c in none xz; do
	nix copy --to "file://$tmp/$c?compression=$c&secret-key=$PWD/key.sec" "$main"
	for p in "$main" "$dep" "$src"; do
		h=$(basename "$p" | cut -c1-32)
		name=$(basename "$p" | cut -c34-)
		cp "$tmp/$c/$h.narinfo" "$name-$c.narinfo"
	done
done
ls -l ./*.narinfo

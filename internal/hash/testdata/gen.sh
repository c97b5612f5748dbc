#!/bin/sh
# Regenerates golden.txt with the real Nix 2.8: for every file under inputs/
# and every algorithm, "<file> <algo> <base16> <nix32> <sri>" as printed by
# nix hash file --type ALGO --base16 / --base32 / --sri.
set -eu
cd "$(dirname "$0")"
export NIX_CONFIG='experimental-features = nix-command'
export HOME="${TMPDIR:-/tmp}"
for f in inputs/*; do
	for algo in md5 sha1 sha256 sha512; do
		printf '%s %s %s %s %s\n' "$(basename "$f")" "$algo" \
			"$(nix hash file --type "$algo" --base16 "$f")" \
			"$(nix hash file --type "$algo" --base32 "$f")" \
			"$(nix hash file --type "$algo" --sri "$f")"
	done
done > golden.txt

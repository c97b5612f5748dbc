#!/bin/sh
# Regenerates golden.txt with the real Nix 2.8: one line per digest,
# "<hex> <nix32 as printed by nix hash to-base32>". Nix only converts whole
# hashes, so the digests have md5, sha1, sha256 and sha512 sizes.
set -eu
cd "$(dirname "$0")"
export NIX_CONFIG='experimental-features = nix-command'
export HOME="${TMPDIR:-/tmp}"
pat() { # pat BYTE COUNT: COUNT copies of the hex byte
	i=0; while [ "$i" -lt "$2" ]; do printf %s "$1"; i=$((i + 1)); done
}
{
	for spec in md5:16 sha1:20 sha256:32 sha512:64; do
		algo=${spec%:*} n=${spec#*:}
		for hex in "$(pat 00 "$n")" "$(pat ff "$n")" "01$(pat 00 $((n - 1)))" "$(pat 00 $((n - 1)))80" \
			"$(head -c "$n" /dev/urandom | od -An -tx1 | tr -d ' \n')" \
			"$(printf 'silo nix32 golden' | nix hash file --type "$algo" --base16 /dev/stdin)"; do
			printf '%s %s\n' "$hex" "$(nix hash to-base32 --type "$algo" "$hex")"
		done
	done
} > golden.txt

#!/usr/bin/env bash
# Regenerates the golden compressed NARs with the real tools (Debian's xz,
# zstd, bzip2, gzip, lz4, brotli) and the real Nix's nix-store --dump.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/t/sub"
seq 1 2000 > "$tmp/t/numbers"
printf '#!/bin/sh\necho hi\n' > "$tmp/t/sub/run"
chmod +x "$tmp/t/sub/run"
ln -s numbers "$tmp/t/link"
nix-store --dump "$tmp/t" > small.nar
xz -6 -k -c small.nar > small.nar.xz
zstd -q -3 -c small.nar > small.nar.zst
bzip2 -9 -c small.nar > small.nar.bz2
gzip -9 -n -c small.nar > small.nar.gz
lz4 -q -c small.nar > small.nar.lz4
brotli -q 11 -c small.nar > small.nar.br

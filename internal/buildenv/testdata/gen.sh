#!/usr/bin/env bash
# Regenerates the golden environments under testdata/ with the real Nix
# 2.8 (sandboxed builds in a throwaway chroot store; needs root):
#   <case>.env   the builder's environment as `env -0` printed it
#   drv/         the .drv files (and dep's closure) the test reads
#   pathinfo.json  nix path-info --json -r of dep (for exportReferencesGraph)
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/conf" "$tmp/home"
cat > "$tmp/conf/nix.conf" <<CONF
experimental-features = nix-command
sandbox = true
sandbox-paths = /bin /lib /lib64 /usr
build-users-group =
substituters =
cores = 3
CONF
st="$tmp/st"
nixenv() { env -i PATH="$PATH" HOME="$tmp/home" NIX_CONF_DIR="$tmp/conf" FOO=from-the-daemon "$@"; }
rm -rf drv && mkdir drv
for c in plain structured fixed; do
  drvPath=$(nixenv nix-instantiate --store "$st" env.nix -A "$c" 2>/dev/null)
  nixenv nix-build --store "$st" "$drvPath" --no-out-link >/dev/null 2>&1 || true
  nixenv nix-store --store "$st" -l "$drvPath" > "$c.env"
  echo "$drvPath" > "$c.drvpath"
done
cp "$st"/nix/store/*.drv drv/
dep=$(grep -ho '/nix/store/[a-z0-9]*-dep"' drv/*plain.drv | head -1 | tr -d '"')
nixenv nix path-info --store "$st" --json -r "$dep" > pathinfo.json

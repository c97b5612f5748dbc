#!/usr/bin/env bash
# Regenerates the golden files under testdata/ with the real Nix 2.8
# (Debian's nix-bin), in throwaway chroot stores; needs root (the builds of
# build.nix run in Nix's sandbox).
#   drv/*.drv        every .drv Nix writes for cases.nix and build.nix
#   show.json        nix show-derivation of all of them
#   other/*.drv      cases.nix instantiated with the store directory /other/store
#   other-show.json  nix show-derivation -r of those
#   built/<case>/    what Nix handed the builders of build.nix (.attrs.json,
#                    .attrs.sh, passAsFile and exportReferencesGraph files, env)
#   built/pathinfo.json      nix path-info --json -r of the paths those refer to
#   built/realisations.json  realisations of the floating build (staticOutputHashes)
#   built/consumer-realisation.json  that of the deferred derivation built on it
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/conf" "$tmp/home"
cat > "$tmp/conf/nix.conf" <<CONF
experimental-features = nix-command ca-derivations impure-derivations
sandbox = true
sandbox-paths = /bin /lib /lib64 /usr
build-users-group =
substituters =
cores = 4
CONF
nixenv() { env -i PATH="$PATH" HOME="$tmp/home" NIX_CONF_DIR="$tmp/conf" "$@"; }
st="$tmp/st"
other="$tmp/other?store=/other/store"

rm -rf drv other built && mkdir -p drv other built
nixenv nix-instantiate --store "$st" cases.nix >/dev/null 2>&1
nixenv nix-build --store "$st" build.nix --no-out-link >/dev/null 2>&1
cp "$st"/nix/store/*.drv drv/
# All of them, including the resolved derivations Nix wrote while building.
# shellcheck disable=SC2046
nixenv nix show-derivation --store "$st" $(for f in drv/*.drv; do echo "/nix/store/${f#drv/}"; done) > show.json

otop=$(nixenv nix-instantiate --store "$other" cases.nix 2>/dev/null)
cp "$tmp"/other/nix/store/*.drv other/
# shellcheck disable=SC2086
nixenv nix show-derivation --store "$other" -r $otop > other-show.json

for c in structured plain; do
  out=$(nixenv nix-build --store "$st" build.nix -A "$c.out" --no-out-link 2>/dev/null)
  mkdir -p "built/$c"
  cp -r "$st$out"/. "built/$c/"
  chmod -R u+w "built/$c"
done
nixenv nix path-info --store "$st" --json -r "$(nixenv nix-build --store "$st" build.nix -A plain --no-out-link 2>/dev/null)" \
  "$(grep -o '/nix/store/[a-z0-9]*-src.txt' built/plain/g2)" > built/pathinfo.json
nixenv nix realisation info --store "$st" --json -f build.nix floating.out floating.bin > built/realisations.json
nixenv nix realisation info --store "$st" --json -f build.nix consumer > built/consumer-realisation.json
echo "gen.sh: $(ls drv | wc -l) derivations, $(ls other | wc -l) in /other/store"

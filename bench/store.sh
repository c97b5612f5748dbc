#!/usr/bin/env bash
# Benchmarks silo's local-store engine (nixstore, nixgc) against the real
# nix-store in local mode, on fresh chroot stores (nix-store --store ROOT),
# alternating the two and keeping each one's best of $RUNS:
#
#   1. add: a tree added recursively (nix-store --add), by default the Go
#      toolchain (GOROOT: ~15,000 files, ~250 MB NAR). Target: silo faster.
#   2. gc:  collecting $GARBAGE dead paths (nix-store --gc). Target: <= 0.7x.
#
# Both sides start from identical stores (the gc store is made once and
# copied). Needs root and the real Nix.
#
#   bench/store.sh                   # defaults below
#   TREE=/some/dir GARBAGE=5000 RUNS=5 bench/store.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TREE=${TREE:-$(go env GOROOT)}
GARBAGE=${GARBAGE:-5000}
RUNS=${RUNS:-3}
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'

work=$(mktemp -d /tmp/silo-bench-store.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/store" ./bench/store
export HOME=$work/home XDG_CACHE_HOME=$work/home/.cache   # Nix's cache, not the user's

# elapsed CMD...: runs CMD, prints its wall time in seconds.
elapsed() {
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
min() { printf '%s\n' "$@" | sort -g | head -1; }

echo "add: $(du -sh "$TREE" | cut -f1) in $(find "$TREE" -type f | wc -l) files from $TREE, best of $RUNS"
echo "  (silo: dump and add in one process, as nix-store --add; silo-nar: the NAR from nix-store --dump on a pipe, as a daemon gets it)"
silo=() nar=() nix=()
for i in $(seq "$RUNS"); do
  silo+=("$(elapsed "$work/store" add "$work/add-silo-$i" "$TREE")")
  nar+=("$(elapsed sh -c "nix-store --dump '$TREE' | '$work/store' add-nar '$work/add-nar-$i' '$(basename "$TREE")'")")
  nix+=("$(elapsed nix-store --store "$work/add-nix-$i" --add "$TREE")")
  a=$(ls "$work/add-silo-$i/nix/store") b=$(ls "$work/add-nar-$i/nix/store") c=$(ls "$work/add-nix-$i/nix/store")
  if [ "$a" != "$c" ] || [ "$b" != "$c" ]; then echo "add: different paths: $a / $b / $c" >&2; exit 1; fi
  rm -rf "$work/add-silo-$i" "$work/add-nar-$i" "$work/add-nix-$i"
done
s=$(min "${silo[@]}") a=$(min "${nar[@]}") n=$(min "${nix[@]}")
printf '  silo %.2fs  silo-nar %.2fs  nix-store %.2fs  ratio %.2f / %.2f (target < 1)\n' "$s" "$a" "$n" "$(echo "$s / $n" | bc -l)" "$(echo "$a / $n" | bc -l)"

echo "import: the same tree as an exported path (silo: AddToStoreNar from a pipe; nix-store --import), best of $RUNS"
nix-store --store "$work/src" --add "$TREE" > "$work/path"
p=$(cat "$work/path")
nix-store --store "$work/src" --export "$p" > "$work/export"
nix-store --dump "$work/src$p" > "$work/nar"
h=$(nix-store --store "$work/src" -q --hash "$p") size=$(stat -c %s "$work/nar")
silo=() nix=()
for i in $(seq "$RUNS"); do
  silo+=("$(elapsed sh -c "'$work/store' import '$work/imp-silo-$i' '$p' '$h' '$size' < '$work/nar'")")
  nix+=("$(elapsed sh -c "nix-store --store '$work/imp-nix-$i' --import < '$work/export'")")
  rm -rf "$work/imp-silo-$i" "$work/imp-nix-$i"
done
rm -rf "$work/src" "$work/export" "$work/nar"
s=$(min "${silo[@]}") n=$(min "${nix[@]}")
printf '  silo %.2fs  nix-store --import %.2fs  ratio %.2f (target < 1)\n' "$s" "$n" "$(echo "$s / $n" | bc -l)"

echo "gc: $GARBAGE dead paths, best of $RUNS"
"$work/store" garbage "$work/garbage" "$GARBAGE" 2>/dev/null
silo=() nix=()
for i in $(seq "$RUNS"); do
  cp -a "$work/garbage" "$work/gc-silo"
  cp -a "$work/garbage" "$work/gc-nix"
  sync
  silo+=("$(elapsed "$work/store" gc "$work/gc-silo")")
  nix+=("$(elapsed nix-store --store "$work/gc-nix" --gc)")
  left_s=$(ls "$work/gc-silo/nix/store" | wc -l) left_n=$(ls "$work/gc-nix/nix/store" | wc -l)
  if [ "$left_s" != "$left_n" ]; then echo "gc: silo left $left_s entries, nix-store $left_n" >&2; exit 1; fi
  rm -rf "$work/gc-silo" "$work/gc-nix"
done
s=$(min "${silo[@]}") n=$(min "${nix[@]}")
printf '  silo %.2fs  nix-store %.2fs  ratio %.2f (target <= 0.7)\n' "$s" "$n" "$(echo "$s / $n" | bc -l)"

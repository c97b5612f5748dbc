#!/usr/bin/env bash
# Side-by-side timings of silo's NAR code against Nix 2.8 and cat, on a big
# tree treated as a store path (default: the Go toolchain, ~236 MB of NAR,
# ~17,000 files; it is only read). Prints medians, ratios and peak RSS.
#
#   bench/nar.sh [TREE]        RUNS=9 by default
#
# Targets: `silo nar dump | cat` within 15% of `cat NAR | cat`; `silo hash
# path` at most 0.7x `nix hash path`; peak RSS under 32 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:-/usr/local/go}
runs=${RUNS:-9}
export NIX_CONFIG=$'experimental-features = nix-command\n'

if [ ! -x /usr/bin/time ]; then
  echo "bench/nar.sh: installing GNU time for peak RSS" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/silo" ./cmd/silo
silo=$work/silo
nix-store --dump "$tree" > "$work/tree.nar"
nar_size=$(stat -c %s "$work/tree.nar")
files=$(find "$tree" | wc -l)

# Correctness first: same bytes, same hash.
"$silo" nar dump "$tree" | cmp - "$work/tree.nar"
[ "$("$silo" hash path "$tree")" = "$(nix hash path "$tree")" ] || { echo "hash mismatch" >&2; exit 1; }

# seconds CMD: wall time of one run of a shell command, in seconds.
seconds() {
  local t0 t1
  t0=$(date +%s%N)
  bash -c "$1"
  t1=$(date +%s%N)
  echo "scale=4; ($t1 - $t0) / 1000000000" | bc
}

declare -A cmds=(
  [cat]="cat '$work/tree.nar' | cat > /dev/null"
  [silo_dump]="'$silo' nar dump '$tree' | cat > /dev/null"
  [nix_dump]="nix-store --dump '$tree' | cat > /dev/null"
  [silo_hash]="'$silo' hash path '$tree' > /dev/null"
  [nix_hash]="nix hash path '$tree' > /dev/null"
  [silo_hash_flat]="'$silo' hash path '$work/tree.nar' > /dev/null"
)
order=(cat silo_dump nix_dump silo_hash nix_hash silo_hash_flat)
declare -A samples
for name in "${order[@]}"; do bash -c "${cmds[$name]}"; done # warm the page cache
for _ in $(seq "$runs"); do # interleaved, so load drifts hit every command alike
  for name in "${order[@]}"; do
    samples[$name]+="$(seconds "${cmds[$name]}") "
  done
done
declare -A med best
for name in "${order[@]}"; do
  sorted=$(echo "${samples[$name]}" | tr ' ' '\n' | grep . | sort -n)
  med[$name]=$(echo "$sorted" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  best[$name]=$(echo "$sorted" | head -1)
done
ratio() { echo "scale=2; $1 / $2" | bc; }

# peak KCMD: peak RSS of a command in MiB.
peak() { /usr/bin/time -f %M bash -c "exec $1" 2>&1 >/dev/null | tail -1 | awk '{printf "%.1f", $1/1024}'; }
big=$work/big
mkdir "$big" && truncate -s 2G "$big/sparse" && echo data >> "$big/sparse"

echo "tree: $tree ($((nar_size / 1000000)) MB of NAR, $files files), $runs runs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(the machine may be shared: best-of-N is the least disturbed figure, the median the typical one)"
printf '  %-32s %8s %8s\n' "" median best
for pair in "cat NAR | cat:cat" "silo nar dump | cat:silo_dump" "nix-store --dump | cat:nix_dump" \
  "silo hash path:silo_hash" "nix hash path:nix_hash" "silo hash path NAR (one file):silo_hash_flat"; do
  printf '  %-32s %7ss %7ss\n' "${pair%%:*}" "${med[${pair##*:}]}" "${best[${pair##*:}]}"
done
verdict() { if [ "$(echo "$1 <= $2" | bc)" = 1 ]; then echo ok; else echo MISSED; fi; }
echo "ratios (median, best):"
for r in "silo dump / cat pipe:silo_dump:cat:1.15" "silo dump / nix-store dump:silo_dump:nix_dump:" \
  "silo hash / nix hash path:silo_hash:nix_hash:0.70"; do
  IFS=: read -r label a b target <<<"$r"
  m=$(ratio "${med[$a]}" "${med[$b]}")
  bb=$(ratio "${best[$a]}" "${best[$b]}")
  line=$(printf '  %-28s %5s %5s' "$label" "$m" "$bb")
  [ -n "$target" ] && line+="   (target <= $target: median $(verdict "$m" "$target"), best $(verdict "$bb" "$target"))"
  echo "$line"
done
echo "peak RSS (MiB, target < 32):"
for c in "'$silo' nar dump '$tree'" "'$silo' hash path '$tree'" "'$silo' hash path '$big'" \
  "'$silo' nar ls '$work/tree.nar'" "'$silo' nar restore '$work/restored' < '$work/tree.nar'" \
  "nix-store --dump '$tree'" "nix hash path '$tree'"; do
  printf '  %6s  %s\n' "$(peak "$c")" "$(echo "$c" | sed "s#'$work/silo'#silo#; s#$work/##g; s#'##g")"
done

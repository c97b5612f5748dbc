#!/usr/bin/env bash
# Benchmarks `silo push` against `nix copy --to` pushing the same closure
# into the same silo server (silo serve), each run into a fresh cache, both
# with zstd at the same level $LEVEL (1 by default; Nix's own default is 3):
# Nix gets ?compression=zstd&compression-level=$LEVEL, silo push
# --compression-level $LEVEL. Wall time of each push, best of $RUNS
# alternating runs.
#
# The closure: $PATHS small paths of varied size and file count, $LARGE
# large ones ($LARGE_MB MiB each, half compressible), and a root. Afterwards
# both caches must hold the whole closure (nix path-info --store on each).
#
# Target (issue 4): silo push at least 2x faster than nix copy.
# Needs root and the real Nix (it builds the closure into /nix/store).
#
#   bench/push.sh                        # defaults below
#   PATHS=400 LARGE=4 LARGE_MB=64 RUNS=3 LEVEL=3 bench/push.sh
#
# Each run also reports the CPU time of the pushing client and of the
# server (both compete for the same cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${PATHS:-300}
LARGE=${LARGE:-4}
LARGE_MB=${LARGE_MB:-32}
RUNS=${RUNS:-2}
JOBS=${JOBS:-8}
LEVEL=${LEVEL:-1}
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'

work=$(mktemp -d /tmp/silo-bench-push.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/silo" ./cmd/silo
silo=${SILO:-$work/silo} # SILO=/path/to/silo: benchmark another build (say, of an older commit)
export HOME=$work/home XDG_CONFIG_HOME=$work/config XDG_CACHE_HOME=$work/cache
mkdir -p "$HOME"

# --- the closure
nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$work/root.nix" <<NIX
let mk = name: script: deps: derivation { inherit name deps; system = builtins.currentSystem;
  builder = "/bin/sh"; nonce = "$nonce"; args = ["-c" ("export PATH=/usr/bin:/bin; mkdir -p \$out/d; " + script)]; };
  leaves = import $work/leaves.nix mk;
in mk "push-root" "echo \$deps > \$out/d/deps" leaves
NIX
{
  echo 'mk: ['
  for ((i = 0; i < PATHS; i++)); do
    if ((i < LARGE)); then
      # half random bytes, half their hex dump: compresses to about 70%
      half=$((LARGE_MB << 19))
      echo "  (mk \"push-large-$i\" \"head -c $half /dev/urandom > \$out/d/r; od -An -tx1 \$out/d/r | head -c $half > \$out/d/t\" [])"
    else
      files=$((1 + i % 7)); size=$((512 + (i * 7919) % 131072))
      echo "  (mk \"push-$i\" \"for f in \$(seq $files); do head -c $size /dev/urandom | od -An -tx1 | head -c $size > \$out/d/f\$f; done\" [])"
    fi
  done
  echo ']'
} > "$work/leaves.nix"
echo "push.sh: building a closure of $((PATHS + 1)) paths ($LARGE of $LARGE_MB MiB)..." >&2
root=$(nix build --quiet --max-jobs 2 --no-link --json --impure -f "$work/root.nix" 2>"$work/build.log" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
[ -n "$root" ] || { tail -20 "$work/build.log" >&2; exit 1; }
count=$(nix-store -qR "$root" | wc -l)
total=$(nix path-info -S "$root" | awk '{print $2}')
echo "push.sh: closure of $count paths, $((total >> 20)) MiB of NARs" >&2

# --- the server, one fresh cache per push
port=$((20000 + RANDOM % 10000))
url=http://127.0.0.1:$port
"$silo" serve --data-dir "$work/data" --listen "127.0.0.1:$port" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 50); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done
newcache() { # newcache NAME: creates the cache and a push token; prints the token
  "$silo" cache create "$1" --public --data-dir "$work/data" >/dev/null 2>&1
  "$silo" token create --cache "$1" --push --data-dir "$work/data" 2>/dev/null
}

servercpu() { # CPU seconds (user+sys) the server has used so far
  awk '{ printf "%.2f\n", ($14 + $15) / 100 }' "/proc/${pids[0]}/stat"
}
seconds() { # seconds CMD...: wall time of a command, in seconds; its CPU and the server's go to $work/cpu
  local t0 t1 s0 s1
  s0=$(servercpu)
  t0=$(date +%s%N)
  /usr/bin/time -f '%U %S' -o "$work/time" "$@" >>"$work/push.log" 2>&1
  t1=$(date +%s%N)
  s1=$(servercpu)
  awk -v s0="$s0" -v s1="$s1" '{ printf "(client CPU %.2f s, server CPU %.2f s)", $1 + $2, s1 - s0 }' "$work/time" > "$work/cpu"
  echo "scale=3; ($t1 - $t0) / 1000000000" | bc
}
best_nix=; best_silo=
for ((r = 0; r < RUNS; r++)); do
  tok=$(newcache "nix$r")
  printf 'machine 127.0.0.1 password %s\n' "$tok" > "$work/netrc"
  t=$(seconds nix copy --to "$url/nix$r?compression=zstd&compression-level=$LEVEL" --option netrc-file "$work/netrc" "$root")
  echo "run $r: nix copy --to   $t s $(cat "$work/cpu")" | tee -a "$work/results"
  best_nix=$(echo "$t" "$best_nix" | awk '{ print ($2 == "" || $1 < $2) ? $1 : $2 }')

  tok=$(newcache "silo$r")
  "$silo" login "silo$r" "$url/silo$r" "$tok" 2>/dev/null
  t=$(seconds "$silo" push --to "silo$r" --jobs "$JOBS" --compression-level "$LEVEL" "$root")
  echo "run $r: silo push      $t s $(cat "$work/cpu")" | tee -a "$work/results"
  best_silo=$(echo "$t" "$best_silo" | awk '{ print ($2 == "" || $1 < $2) ? $1 : $2 }')

  for c in "nix$r" "silo$r"; do
    n=$(nix path-info -r --store "$url/$c" "$root" 2>/dev/null | wc -l)
    [ "$n" -eq "$count" ] || { echo "push.sh: cache $c holds $n of $count paths" >&2; tail -20 "$work/push.log" >&2; exit 1; }
  done
done
echo
echo "closure: $count paths, $((total >> 20)) MiB of NARs; zstd level $LEVEL for both, silo push --jobs $JOBS; best of $RUNS alternating runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v n="$best_nix" -v s="$best_silo" 'BEGIN { printf "nix copy %.2f s, silo push %.2f s: silo push %.2fx faster (target >= 2)\n", n, s, n / s }'

#!/usr/bin/env bash
# Benchmarks substitution by `silo daemon` against the real nix-daemon
# (Nix 2.8) in one run: each daemon serves a private, empty store and
# substitutes a closure of $PATHS paths (about $MB MB of NAR: random and
# text data, zstd in the cache) from one `silo serve` (a private cache per
# store directory, read with a netrc token), when the real Nix client asks
# `nix-store -r ROOT` through its socket. Wall time, median of $RUNS runs
# taken in turn (silo, nix, silo, nix, ...); the store is emptied before
# each run's clock starts. narinfo caching is off for both
# (narinfo-cache-*-ttl = 0), so every run asks the cache everything.
# Then the peak RSS of each daemon during one more substitution.
#
# Target (issue 11): silo <= 0.7x nix-daemon's time; silo's memory bounded
# (no NAR held whole).
#
#   bench/substitute.sh
#   RUNS=3 PATHS=100 MB=100 bench/substitute.sh
#   MAXJOBS=4 bench/substitute.sh      # both daemons with max-jobs = 4
#                                      # (Nix 2.8 substitutes in build slots)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
PATHS=${PATHS:-300}
MB=${MB:-300}
MAXJOBS=${MAXJOBS:-1}

work=$(mktemp -d /tmp/silo-bench-subst.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  chmod -R u+w "$work" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin"; go build -o "$work/bin/silo" ./cmd/silo
silo=${SILO:-$work/bin/silo}

env_of() {
  local r=$work/$1
  echo "NIX_STORE_DIR=$r/store NIX_STATE_DIR=$r/state NIX_LOG_DIR=$r/log NIX_CONF_DIR=$r/conf" \
    "NIX_DAEMON_SOCKET_PATH=$r/socket HOME=$r/home XDG_CACHE_HOME=$r/home/.cache NIX_USER_CONF_FILES= NIX_CONFIG="
}
client() { local n=$1; shift; env $(env_of "$n") NIX_REMOTE="unix://$work/$n/socket" "$@"; }
now() { echo "$EPOCHREALTIME"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# --- the cache: silo serve, one private cache per daemon's store directory
data=$work/serve
"$silo" init --data-dir "$data" > /dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for n in silo nix; do
  mkdir -p "$work/$n"
  "$silo" cache create "c$n" --store-dir "$work/$n/store" --data-dir "$data" |
    awk '/Public key:/ {print $3}' > "$work/$n/key"
  echo "machine 127.0.0.1 password $("$silo" token create --cache "c$n" --push --data-dir "$data" 2> /dev/null)" > "$work/$n/netrc"
done
"$silo" serve --data-dir "$data" --listen "127.0.0.1:$port" --log-level warn > "$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" > /dev/null 2>&1 && break; sleep 0.1; done

# --- the closure: leaves of varied size (half random, half text), groups
# of ten referring to them, a root; made in a scratch store of each store
# directory and pushed with nix copy.
mkdir -p "$work/data"
leaves=$(( (PATHS - 1) * 10 / 11 )) # + (leaves+9)/10 groups + the root = PATHS
per=$(( MB * 1000000 * 6 / 7 / leaves )) # base64 makes the text half 4/3 as large
for ((i = 0; i < leaves; i++)); do
  d=$work/data/leaf$i; mkdir -p "$d/sub"
  size=$(( per / 2 + (i * 7919) % per ))
  [ $(( i % 2 )) -eq 0 ] || size=$(( 2 * per - size ))
  head -c $(( size / 2 )) /dev/urandom > "$d/blob"
  head -c $(( size / 2 )) /dev/urandom | base64 > "$d/text"
  for ((j = 0; j < i % 8; j++)); do echo "file $i $j" > "$d/sub/f$j"; done
done
conf_common='experimental-features = nix-command
sandbox = false
build-users-group =
fsync-metadata = false
gc-reserved-space = 0
narinfo-cache-positive-ttl = 0
narinfo-cache-negative-ttl = 0'
for n in silo nix; do
  src=$work/src-$n
  uri="local?store=$work/$n/store&real=$src/store&state=$src/state&log=$src/log"
  mkdir -p "$src" "$work/$n/conf" "$work/$n/home"
  printf '%s\nsubstituters =\n' "$conf_common" > "$work/$n/conf/nix.conf"
  env $(env_of "$n") NIX_REMOTE= nix-store --store "$uri" --add "$work"/data/leaf* > "$src/leaves"
  expr="let leaves = [ $(sed 's/.*/(builtins.storePath "&")/' "$src/leaves" | tr '\n' ' ') ];
    groups = builtins.genList (g: builtins.toFile \"group\${toString g}\" (toString (builtins.genList (i: builtins.elemAt leaves (g * 10 + i)) (if g * 10 + 10 > builtins.length leaves then builtins.length leaves - g * 10 else 10)))) ((builtins.length leaves + 9) / 10);
    in builtins.toFile \"root\" (toString groups)"
  env $(env_of "$n") NIX_REMOTE= nix-instantiate --store "$uri" --read-write-mode --eval -E "$expr" | tr -d '"' > "$work/$n/root"
  env $(env_of "$n") NIX_REMOTE= nix copy --store "$uri" --to "http://127.0.0.1:$port/c$n?compression=zstd" \
    --option netrc-file "$work/$n/netrc" "$(cat "$work/$n/root")" 2> /dev/null
  echo "machine 127.0.0.1 password $("$silo" token create --cache "c$n" --pull --data-dir "$data" 2> /dev/null)" > "$work/$n/pull.netrc"
  printf '%s\nsubstituters = http://127.0.0.1:%s/c%s\ntrusted-public-keys = %s\nnetrc-file = %s\nmax-jobs = %s\n' \
    "$conf_common" "$port" "$n" "$(cat "$work/$n/key")" "$work/$n/pull.netrc" "$MAXJOBS" > "$work/$n/conf/nix.conf"
  rm -rf "$src"
done
nar_mb=$(du -sm "$data" | awk '{print $1}')

start() { # start NAME PROGRAM...
  local n=$1; shift
  rm -f "$work/$n/socket"
  env $(env_of "$n") NIX_REMOTE= "$@" > "$work/$n/daemon.log" 2>&1 &
  pids+=($!)
  eval "pid_$n=$!"
  for _ in $(seq 100); do [ -S "$work/$n/socket" ] && return; sleep 0.1; done
  echo "daemon $n did not start:" >&2; cat "$work/$n/daemon.log" >&2; exit 1
}
wipe() {
  chmod -R u+w "$work/$1/store" 2>/dev/null || true
  rm -rf "$work/$1/store" "$work/$1/state"
  mkdir -p "$work/$1/store" "$work/$1/state"
  client "$1" nix store ping > /dev/null 2>&1
}
run() { client "$1" nix-store -r "$(cat "$work/$1/root")"; }
check() { # the whole closure is valid and verifies
  local got
  got=$(client "$1" nix-store -qR "$(cat "$work/$1/root")" | wc -l)
  [ "$got" -ge "$PATHS" ] || { echo "$1: only $got paths substituted" >&2; exit 1; }
  client "$1" nix-store --verify --check-contents 2>&1 | grep -q error && { echo "$1: verify failed" >&2; exit 1; }
  return 0
}

start silo "$silo" daemon --quiet
start nix nix-daemon

: > "$work/t.silo"; : > "$work/t.nix"
for ((i = 0; i < RUNS; i++)); do
  for n in silo nix; do
    wipe "$n"
    t0=$(now)
    run "$n" > "$work/$n/out" 2>&1 || { echo "substitution ($n) failed:" >&2; tail -20 "$work/$n/out" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc -l >> "$work/t.$n"
    [ "$i" -eq 0 ] && check "$n"
  done
done
s=$(median < "$work/t.silo"); x=$(median < "$work/t.nix")
closure=$(client silo nix-store -qR "$(cat "$work/silo/root")" | wc -l)
size=$(client silo nix path-info -S "$(cat "$work/silo/root")" | awk '{printf "%.0f", $2 / 1e6}')
printf 'substitute %d paths, %s MB of NAR (cache holds %s MB), max-jobs %s\n' "$closure" "$size" "$nar_mb" "$MAXJOBS"
printf 'subst  silo %8.3fs  nix-daemon %8.3fs  ratio %.2f  (median of %d)\n' "$s" "$x" "$(echo "$s / $x" | bc -l)" "$RUNS"

# --- memory: one more substitution each, silo restarted so that its peak
# is this one's; nix-daemon's processes summed while it runs.
kill "$pid_silo"; wait "$pid_silo" 2>/dev/null || true
start silo "$silo" daemon --quiet
for n in silo nix; do
  wipe "$n"
  run "$n" > "$work/$n/out" 2>&1 &
  cpid=$!
  peak=0
  while kill -0 "$cpid" 2>/dev/null; do
    if [ "$n" = nix ]; then
      rss=0
      for c in $(pgrep -P "$pid_nix" || true) "$pid_nix"; do
        r=$(awk '/VmRSS/ {print $2}' "/proc/$c/status" 2>/dev/null || true); rss=$((rss + ${r:-0}))
      done
      if [ "$rss" -gt "$peak" ]; then peak=$rss; fi
    fi
    sleep 0.05
  done
  wait "$cpid" || { echo "substitution ($n) failed" >&2; exit 1; }
  if [ "$n" = silo ]; then peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid_silo/status"); fi
  printf 'mem    %-10s peak %6.1f MiB while substituting the closure\n' "$n" "$(echo "$peak / 1024" | bc -l)"
done

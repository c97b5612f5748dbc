#!/usr/bin/env bash
# A/B benchmark of two silo builds serving the same closure: narinfo
# lookups and NAR downloads over $CONNS keep-alive connections, the two
# servers measured in alternation ($ROUNDS rounds of $DURATION each), on
# the same CPU, by the same client on another CPU. On a shared, busy
# machine alternation is what makes the ratio mean something: both builds
# see the same neighbours. Prints, per kind, the median rate of each build,
# the median server CPU per request, and the ratios B/A.
#
#   SILO_A=/tmp/silo-old bench/ab.sh          # B is this tree's build
#   SILO_A=/tmp/a SILO_B=/tmp/b ROUNDS=8 DURATION=8s bench/ab.sh
#
# Needs root and the real Nix.
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${PATHS:-200}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-16}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'

work=$(mktemp -d /tmp/silo-bench-ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/silo-b" ./cmd/silo
go build -o "$work/load" ./bench/serve/load
A=${SILO_A:?set SILO_A to the build to compare with}
B=${SILO_B:-$work/silo-b}
export HOME=$work/home XDG_CACHE_HOME=$work/cache
mkdir -p "$HOME"

nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
{
  echo 'let mk = name: size: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh";'
  echo "  nonce = \"$nonce\"; args = [\"-c\" \"export PATH=/usr/bin:/bin; mkdir -p \$out; head -c \${toString size} /dev/urandom > \$out/f\"]; }; in ["
  for ((i = 0; i < PATHS; i++)); do echo "  (mk \"ab-$i\" $((1024 + (i * 7919) % 200000)))"; done
  echo ']'
} > "$work/paths.nix"
echo "ab.sh: building $PATHS paths..." >&2
mapfile -t paths < <(nix build --no-link --json -f "$work/paths.nix" | tr ',' '\n' | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')

# start NAME BINARY PORT: a server with one public cache holding the paths.
start() {
  local data=$work/data-$1
  "$2" init --data-dir "$data" >/dev/null 2>&1 || true  # admin commands need a data dir (older builds made one)
  "$2" cache create bench --public --data-dir "$data" >/dev/null
  local tok
  tok=$("$2" token create --cache bench --push --data-dir "$data" 2>/dev/null)
  echo "machine 127.0.0.1 password $tok" > "$work/netrc-$1"
  taskset -c "$SERVER_CPU" "$2" serve --data-dir "$data" --listen "127.0.0.1:$3" --log-level warn 2>>"$work/$1.log" &
  pids+=($!)
  eval "pid_$1=$!"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$3/healthz" >/dev/null && break; sleep 0.1; done
  nix copy --to "http://127.0.0.1:$3/bench?compression=zstd" --option netrc-file "$work/netrc-$1" "${paths[@]}" 2>/dev/null
  : > "$work/narinfos-$1"; : > "$work/nars-$1"
  for p in "${paths[@]}"; do
    local h u
    h=$(basename "$p" | cut -c1-32)
    echo "http://127.0.0.1:$3/bench/$h.narinfo" >> "$work/narinfos-$1"
    u=$(curl -sf "http://127.0.0.1:$3/bench/$h.narinfo" | sed -n 's/^URL: //p')
    echo "http://127.0.0.1:$3/bench/$u" >> "$work/nars-$1"
  done
}
port=$((20000 + RANDOM % 10000))
start a "$A" "$port"
start b "$B" "$((port + 1))"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# run SIDE KIND CTYPE: one measurement; appends "rate cpu_us_per_request" to $work/SIDE-KIND.
run() {
  local pid t0 t1 out req secs
  eval "pid=\$pid_$1"
  t0=$(ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" "$work/load" -c "$CONNS" -urls "$work/$2-$1" -duration "$DURATION" -content-type "$3" -label "$1-$2")
  t1=$(ticks "$pid")
  req=$(tr ' ' '\n' <<<"$out" | sed -n 's/^requests=//p')
  secs=$(tr ' ' '\n' <<<"$out" | sed -n 's/^seconds=//p')
  rate=$(tr ' ' '\n' <<<"$out" | sed -n "s/^$4=//p")
  echo "$out server_cpu_us_per_req=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$req" 'BEGIN { printf "%.1f", 1e6 * (b - a) / hz / n }')" >&2
  awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$req" -v r="$rate" 'BEGIN { printf "%s %.2f\n", r, 1e6 * (b - a) / hz / n }' >> "$work/$1-$2"
}
for ((r = 0; r < ROUNDS; r++)); do
  for side in a b; do run "$side" narinfos text/x-nix-narinfo req_per_s; done
  for side in b a; do run "$side" nars application/x-nix-nar MiB_per_s; done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "A = $A, B = $B; $PATHS paths, $CONNS connections, $ROUNDS alternating rounds of $DURATION; server on CPU $SERVER_CPU, client on CPU $LOAD_CPU; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in narinfos:req/s nars:MiB/s; do
  k=${kind%%:*} unit=${kind#*:}
  ra=$(cut -d' ' -f1 "$work/a-$k" | median); rb=$(cut -d' ' -f1 "$work/b-$k" | median)
  ca=$(cut -d' ' -f2 "$work/a-$k" | median); cb=$(cut -d' ' -f2 "$work/b-$k" | median)
  awk -v k="$k" -v u="$unit" -v ra="$ra" -v rb="$rb" -v ca="$ca" -v cb="$cb" 'BEGIN {
    printf "%-8s median rate A %8.0f %s, B %8.0f %s, B/A %.2f; server CPU per request A %.1f us, B %.1f us, B/A %.2f\n", k, ra, u, rb, u, rb / ra, ca, cb, cb / ca }'
done

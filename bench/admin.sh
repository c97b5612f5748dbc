#!/usr/bin/env bash
# Benchmarks silo serve answering narinfo lookups while admin commands
# (silo token create/list/revoke, silo cache create/list/info) loop beside
# it on the same data directory, against the same load without them, in
# one run. Every lookup must be answered 200 (bench/serve/load stops at the
# first other answer): admin commands must never make the server fail a
# request (issue 8: "disk I/O error (8714)" when an admin command made
# SQLite rebuild the WAL index under the server).
#
#   1. $PATHS small paths are built and pushed with nix copy.
#   2. bench/serve/load fetches their narinfos over 16 keep-alive
#      connections for $DURATION: once alone, once with admin commands
#      looping, $RUNS times alternating.
#
# Prints the lookups answered, the admin commands run and the ratio of the
# rates. Needs root and the real Nix.
#
#   bench/admin.sh
#   PATHS=100 DURATION=20s RUNS=2 bench/admin.sh
#   SILO=/tmp/silo-old bench/admin.sh      # another build, say of an older commit
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${PATHS:-100}
DURATION=${DURATION:-20s}
RUNS=${RUNS:-2}
CONNS=${CONNS:-16}
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'

work=$(mktemp -d /tmp/silo-bench-admin.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/silo" ./cmd/silo
go build -o "$work/load" ./bench/serve/load
silo=${SILO:-$work/silo}
export HOME=$work/home XDG_CACHE_HOME=$work/cache
mkdir -p "$HOME"

nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
{
  echo 'let mk = name: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh";'
  echo "  nonce = \"$nonce\"; args = [\"-c\" \"echo \$name > \$out\"]; }; in ["
  for ((i = 0; i < PATHS; i++)); do echo "  (mk \"admin-bench-$i\")"; done
  echo ']'
} > "$work/paths.nix"
echo "admin.sh: building $PATHS paths..." >&2
mapfile -t paths < <(nix build --no-link --json -f "$work/paths.nix" | tr ',' '\n' | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')

data=$work/data
"$silo" init --data-dir "$data" >/dev/null 2>&1 || true  # admin commands need a data dir (older builds made one)
"$silo" cache create bench --public --data-dir "$data" >/dev/null
token=$("$silo" token create --cache bench --push --data-dir "$data" 2>/dev/null)
echo "machine 127.0.0.1 password $token" > "$work/netrc"
port=$((20000 + RANDOM % 10000))
"$silo" serve --data-dir "$data" --listen "127.0.0.1:$port" --log-level warn 2>>"$work/silo.log" &
silo_pid=$!
pids+=($silo_pid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port/bench"
nix copy --to "$base?compression=zstd" --option netrc-file "$work/netrc" "${paths[@]}"
for p in "${paths[@]}"; do echo "$base/$(basename "$p" | cut -c1-32).narinfo"; done > "$work/urls"

# admin_loop FILE RUN: runs admin commands until FILE exists, counting them.
admin_loop() {
  local n=0 i=0 tok id name
  while [[ ! -e $1 ]]; do
    i=$((i + 1))
    name="admin-bench-$2-$i"
    "$silo" cache create "$name" --data-dir "$data" >/dev/null
    tok=$("$silo" token create --cache "$name" --push --data-dir "$data" 2>/dev/null)
    id=$(cut -d_ -f2 <<<"$tok")
    "$silo" token list --data-dir "$data" >/dev/null
    "$silo" token revoke "$id" --data-dir "$data" >/dev/null
    "$silo" cache list --data-dir "$data" >/dev/null
    "$silo" cache info "$name" --data-dir "$data" >/dev/null
    n=$((n + 6))
  done
  echo "$n"
}

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
maxof() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
alone=0; beside=0; total_beside=0; admin_total=0; failed=0
for ((r = 0; r < RUNS; r++)); do
  out=$(nice "$work/load" -c "$CONNS" -urls "$work/urls" -duration "$DURATION" -content-type text/x-nix-narinfo -label alone)
  echo "$out" >&2
  alone=$(maxof "$alone" "$(field "$out" req_per_s)")

  rm -f "$work/stop"
  admin_loop "$work/stop" "$r" > "$work/admin-count" &
  admin_pid=$!
  if out=$(nice "$work/load" -c "$CONNS" -urls "$work/urls" -duration "$DURATION" -content-type text/x-nix-narinfo -label beside-admin 2>"$work/load.err"); then
    echo "$out" >&2
  else
    failed=$((failed + 1))
    echo "admin.sh: a lookup failed beside admin commands: $(cat "$work/load.err")" >&2
  fi
  touch "$work/stop"
  wait "$admin_pid"
  admin_total=$((admin_total + $(cat "$work/admin-count")))
  if [[ -n $out ]]; then
    beside=$(maxof "$beside" "$(field "$out" req_per_s)")
    total_beside=$((total_beside + $(field "$out" requests)))
  fi
done
grep -E 'level=(ERROR|WARN)' "$work/silo.log" >&2 || true

echo
echo "narinfo lookups, $CONNS connections, $DURATION x $RUNS: alone $(printf %.0f "$alone")/s; beside admin commands $(printf %.0f "$beside")/s, ratio $(awk -v a="$beside" -v b="$alone" 'BEGIN { printf "%.2f", a / b }')"
echo "beside $admin_total admin commands: $total_beside lookups answered, runs with a failed lookup: $failed (target 0)"
[[ $failed -eq 0 ]]

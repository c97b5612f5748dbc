#!/usr/bin/env bash
# Benchmarks silo serve on PostgreSQL + S3 (a replica) against silo serve on
# its embedded SQLite + disk, side by side in one run, with real servers:
# Debian's PostgreSQL (durable: fsync and synchronous commits on) and
# versitygw, both started here as nobody in a temporary directory.
#
#   1. A closure of $PATHS paths ($LARGE of them $LARGE_MB MiB) is pushed with
#      nix copy to the embedded server, then moved with silo migrate-data to
#      PostgreSQL + S3, so both serve the same paths (and the move is timed).
#   2. narinfo rate: the same client (bench/serve/load) fetches every narinfo
#      from each server with 1 and 16 connections for $DURATION, best of
#      $RUNS alternating runs. Everything server-side (silo, and PostgreSQL's
#      processes for the replica) runs on CPU $SERVER_CPU, the client on
#      $LOAD_CPU. Target: PostgreSQL >= 0.5x SQLite.
#   3. NAR throughput: every NAR through the replica (streamed from S3)
#      against the same objects read from the S3 server directly (presigned
#      URLs), 16 connections, in two layouts: "S3 apart" gives the S3 server
#      CPU $SERVER_CPU to itself (as on a machine of its own) and the client,
#      plus silo when it is in the path, CPU $LOAD_CPU; "unpinned" lets all
#      of them share both CPUs. Target: >= 0.8x direct.
#   4. Push: silo push of the closure into fresh storage each time (a new
#      embedded server; a replica on a new database and bucket), best of
#      $PUSH_RUNS alternating runs. Target: S3 replica <= 1.2x disk.
#   5. Memory: the replica restarted, then $BIG uploads and $BIG downloads of
#      $BIG_MB MiB NARs at once; its peak RSS (VmHWM). Target: < 150 MiB.
#      Needs about $BIG x $BIG_MB MiB of free disk for the S3 server for a
#      moment (BIG=0 skips it).
#
# Needs root and the real Nix, PostgreSQL's server (apt-get install
# postgresql) and versitygw (./test.sh installs both).
#
#   bench/scale.sh
#   PATHS=300 LARGE=6 LARGE_MB=32 DURATION=10s RUNS=2 PUSH_RUNS=2 BIG=16 BIG_MB=1024 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${PATHS:-300}
LARGE=${LARGE:-6}
LARGE_MB=${LARGE_MB:-32}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-2}
PUSH_RUNS=${PUSH_RUNS:-2}
BIG=${BIG:-16}
BIG_MB=${BIG_MB:-1024}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
[ -x "$pg_bin/postgres" ] || { echo "scale.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
versitygw=${SILO_VERSITYGW:-$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")}
[ -x "$versitygw" ] || { echo "scale.sh: versitygw is not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)" >&2; exit 1; }
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'

work=$(mktemp -d /tmp/silo-bench-scale.XXXXXX)
chmod 755 "$work"
pids=()
closure=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  if [ ${#closure[@]} -gt 0 ]; then nix-store --delete "${closure[@]}" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
for tool in silo:cmd/silo load:bench/serve/load s3tool:bench/scale/s3tool narput:bench/scale/narput; do
  go build -o "$work/${tool%%:*}" "./${tool#*:}"
done
# Nix and silo login keep their state here, not in the caller's home.
export HOME=$work/home XDG_CACHE_HOME=$work/cache XDG_CONFIG_HOME=$work/config
mkdir -p "$HOME"
silo=$work/silo
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups --pdeathsig SIGTERM -- "$@"; }
waitfor() { # waitfor WHAT CMD...: retries CMD for 30 s
  local what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "scale.sh: $what did not come up" >&2; exit 1
}

# --- PostgreSQL (production settings) and the S3 server, as nobody
mkdir -p "$work/pg" "$work/s3"
chown nobody:nogroup "$work/pg" "$work/s3"
as_nobody "$pg_bin/initdb" -D "$work/pg/data" -U silo --auth=trust --locale=C >/dev/null
taskset -c "$SERVER_CPU" setpriv --reuid=65534 --regid=65534 --clear-groups --pdeathsig SIGTERM -- \
  "$pg_bin/postgres" -D "$work/pg/data" -k "$work/pg" -c listen_addresses= -c max_connections=200 >"$work/pg.log" 2>&1 &
pg_pid=$!
pids+=($pg_pid)
waitfor PostgreSQL psql -h "$work/pg" -U silo -d postgres -c 'SELECT 1'
psql -q -h "$work/pg" -U silo -d postgres -c 'CREATE DATABASE silo'
db="postgres:///silo?host=$work/pg&user=silo"

s3_port=$((20000 + RANDOM % 10000))
export AWS_ACCESS_KEY_ID=bench$RANDOM AWS_SECRET_ACCESS_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# setpriv execs versitygw, so $! is its pid.
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
  setpriv --reuid=65534 --regid=65534 --clear-groups --pdeathsig SIGTERM -- \
  "$versitygw" --port "127.0.0.1:$s3_port" --keep-alive --quiet posix "$work/s3" >"$work/s3.log" 2>&1 &
s3_pid=$!
pids+=($s3_pid)
s3=http://127.0.0.1:$s3_port
waitfor versitygw curl -s -o /dev/null "$s3"
"$work/s3tool" mkbucket "$s3" silo
blobs="s3://silo?endpoint=$s3&region=us-east-1"

# --- the closure: $PATHS leaves of varied sizes and file counts, one root
nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkexpr='mk = name: script: deps: derivation { inherit name deps; system = builtins.currentSystem;
  builder = "/bin/sh"; nonce = "'$nonce'"; args = ["-c" ("export PATH=/usr/bin:/bin; mkdir -p $out/d; " + script)]; };'
{
  echo "let $mkexpr in mk \"scale-root\" \"echo \$deps > \$out/d/deps\" ["
  for ((i = 0; i < PATHS; i++)); do
    if ((i < LARGE)); then
      echo "  (mk \"scale-large-$i\" \"head -c $((LARGE_MB << 20)) /dev/urandom > \$out/d/f\" [])"
    else
      files=$((1 + i % 7)); size=$((512 + (i * 7919) % 131072))
      echo "  (mk \"scale-$i\" \"for f in \$(seq $files); do head -c $size /dev/urandom | od -An -tx1 | head -c $size > \$out/d/f\$f; done\" [])"
    fi
  done
  echo ']'
} > "$work/root.nix"
echo "scale.sh: building a closure of $((PATHS + 1)) paths ($LARGE of $LARGE_MB MiB)..." >&2
root=$(nix build --quiet --max-jobs 2 --no-link --json -f "$work/root.nix" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
mapfile -t closure < <(nix-store -qR "$root")
total=$(nix path-info -S "$root" | awk '{print $2}')

# --- the embedded server, filled by nix copy, then moved to PostgreSQL + S3
data=$work/data
port_a=$((s3_port + 1)); port_b=$((s3_port + 2))
"$silo" init --data-dir "$data" >/dev/null 2>&1 || true  # admin commands need a data dir (older builds made one)
"$silo" cache create bench --public --data-dir "$data" >/dev/null
token=$("$silo" token create --cache '*' --push --data-dir "$data" 2>/dev/null)
echo "machine 127.0.0.1 password $token" > "$work/netrc"
start_serve() { # start_serve PORT ARGS...: runs silo serve on SERVER_CPU; sets $serve_pid
  local port=$1; shift
  taskset -c "$SERVER_CPU" "$silo" serve --listen "127.0.0.1:$port" --log-level warn "$@" 2>>"$work/serve-$port.log" &
  serve_pid=$!
  pids+=($serve_pid)
  waitfor "silo serve on $port" curl -sf "http://127.0.0.1:$port/healthz"
}
start_serve "$port_a" --data-dir "$data"; pid_a=$serve_pid
a=http://127.0.0.1:$port_a
echo "scale.sh: pushing ${#closure[@]} paths ($((total >> 20)) MiB of NARs) to the embedded server..." >&2
nix copy --to "$a/bench?compression=zstd" --option netrc-file "$work/netrc" "$root"
t0=$(date +%s.%N)
"$silo" migrate-data --from "$data" --to "$db" --blobs "$blobs" > "$work/move.log" 2>&1 || { cat "$work/move.log" >&2; exit 1; }
t1=$(date +%s.%N)
move_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
start_serve "$port_b" --db "$db" --blobs "$blobs"; pid_b=$serve_pid
b=http://127.0.0.1:$port_b

: > "$work/a-narinfos"; : > "$work/b-narinfos"; : > "$work/b-nars"; : > "$work/keys"
for p in "${closure[@]}"; do
  h=$(basename "$p" | cut -c1-32)
  echo "$a/bench/$h.narinfo" >> "$work/a-narinfos"
  echo "$b/bench/$h.narinfo" >> "$work/b-narinfos"
  url=$(curl -sf "$b/bench/$h.narinfo" | sed -n 's/^URL: //p')
  echo "$b/bench/$url" >> "$work/b-nars"
  echo "$url" >> "$work/keys"
done
"$work/s3tool" presign "$s3" silo < "$work/keys" > "$work/s3-nars"
# The same bytes both ways.
paste -d ' ' "$work/b-nars" "$work/s3-nars" > "$work/pairs"
head -20 "$work/pairs" | while read -r x y; do
  cmp -s <(curl -sf "$x") <(curl -sf "$y") || { echo "scale.sh: $x differs from the object in S3" >&2; exit 1; }
done

cpu_ticks() { for p; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done | awk '{s += $1} END {print s + 0}'; }
hz=$(getconf CLK_TCK)
run() { # run <load args...> -- <server pids...>: one load run; prints the load's line plus server CPU
  local args=() t0 t1 out secs
  while [ "$1" != "--" ]; do args+=("$1"); shift; done; shift
  t0=$(cpu_ticks "$@")
  out=$("${loadcmd[@]}" "$work/load" "${args[@]}" -duration "$DURATION")
  t1=$(cpu_ticks "$@")
  secs=$(tr ' ' '\n' <<<"$out" | sed -n 's/^seconds=//p')
  echo "$out $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" 'BEGIN { printf "server_cpu=%.0f%%", 100 * (b - a) / hz / s }')" | tee -a "$work/results" >&2
}
field() { tail -1 "$work/results" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
xacts() { psql -Atq -h "$work/pg" -U silo -d postgres -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'silo'"; }
maxof() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
summary=()

if [ -n "${HOLD:-}" ]; then # debugging: keep the servers up for $HOLD seconds
  echo "scale.sh: holding: embedded $a, replica $b, S3 $s3, db $db, work $work" >&2
  sleep "$HOLD"
fi

# --- narinfo rate: SQLite vs PostgreSQL, server side on one CPU
loadcmd=(taskset -c "$LOAD_CPU")
for c in 1 16; do
  best_a=0; best_b=0
  for ((r = 0; r < RUNS; r++)); do
    run -c "$c" -urls "$work/a-narinfos" -content-type text/x-nix-narinfo -label "sqlite-narinfo-c$c" -- "$pid_a"
    best_a=$(maxof "$best_a" "$(field req_per_s)")
    pg_all="$pg_pid $(pgrep -P "$pg_pid" | tr '\n' ' ')" # the postmaster and its backends
    x0=$(xacts)
    # shellcheck disable=SC2086
    run -c "$c" -urls "$work/b-narinfos" -content-type text/x-nix-narinfo -label "postgres-narinfo-c$c" -- "$pid_b" $pg_all
    best_b=$(maxof "$best_b" "$(field req_per_s)")
    awk -v a="$x0" -v b="$(xacts)" -v n="$(field requests)" 'BEGIN { printf "  (PostgreSQL queries per narinfo request: %.2f)\n", (b - a) / n }' | tee -a "$work/results" >&2
  done
  summary+=("$(awk -v c="$c" -v s="$best_b" -v n="$best_a" 'BEGIN { printf "narinfo rate, %2d conn:     PostgreSQL %7.0f/s,     SQLite %7.0f/s,     ratio %.2f (target >= 0.5)", c, s, n, s / n }')")
done

# --- NAR throughput: through the replica from S3 vs straight from S3, in two
# layouts: the S3 server alone on SERVER_CPU (as if on its own machine) with
# the client, and silo when it is in the path, on LOAD_CPU; then nothing pinned.
nar_round() { # nar_round LABEL: best of RUNS for both, appended to the summary
  local best_s3=0 best_b=0
  "$work/load" -c 16 -urls "$work/s3-nars" -label warm >/dev/null
  "$work/load" -c 16 -urls "$work/b-nars" -label warm >/dev/null
  for ((r = 0; r < RUNS; r++)); do
    run -c 16 -urls "$work/s3-nars" -label "s3-direct-nar-c16-$1" -- "$s3_pid"
    best_s3=$(maxof "$best_s3" "$(field MiB_per_s)")
    run -c 16 -urls "$work/b-nars" -content-type application/x-nix-nar -label "replica-nar-c16-$1" -- "$pid_b" "$s3_pid"
    best_b=$(maxof "$best_b" "$(field MiB_per_s)")
  done
  summary+=("$(awk -v s="$best_b" -v n="$best_s3" -v l="$1" 'BEGIN { printf "NAR throughput, 16 conn, %-9s through the replica %6.0f MiB/s, S3 directly %6.0f MiB/s, ratio %.2f (target >= 0.8)", l ":", s, n, s / n }')")
}
loadcmd=(taskset -c "$LOAD_CPU")
taskset -pc "$LOAD_CPU" "$pid_b" >/dev/null; taskset -pc "$SERVER_CPU" "$s3_pid" >/dev/null
nar_round "S3 apart"
loadcmd=()
taskset -pc 0-1 "$pid_b" >/dev/null; taskset -pc 0-1 "$s3_pid" >/dev/null
nar_round unpinned

# --- push: silo push into fresh storage: a new embedded server (disk) vs a new
# replica on a new database and bucket, so that every NAR is really stored
seconds() { local t0 t1; t0=$(date +%s%N); "$@" >>"$work/push.log" 2>&1; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
best_disk=; best_s3push=
port_p=$((s3_port + 3))
for ((r = 0; r < PUSH_RUNS; r++)); do
  for side in disk s3; do
    if [ $side = disk ]; then
      adm=(--data-dir "$work/push-$r")
    else
      psql -q -h "$work/pg" -U silo -d postgres -c "CREATE DATABASE push_$r"
      "$work/s3tool" mkbucket "$s3" "push-$r"
      adm=(--db "postgres:///push_$r?host=$work/pg&user=silo" --blobs "s3://push-$r?endpoint=$s3&region=us-east-1")
    fi
    "$silo" cache create push --public "${adm[@]}" >/dev/null
    ptok=$("$silo" token create --cache push --push "${adm[@]}" 2>/dev/null)
    start_serve "$port_p" "${adm[@]}"
    "$silo" login "push-$side-$r" "http://127.0.0.1:$port_p/push" "$ptok" 2>/dev/null
    t=$(seconds "$silo" push --to "push-$side-$r" --jobs 8 "$root")
    kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
    echo "run $r: silo push of the closure into fresh $side storage: $t s" | tee -a "$work/results" >&2
    if [ $side = disk ]; then best_disk=$(echo "$t" "$best_disk" | awk '{ print ($2 == "" || $1 < $2) ? $1 : $2 }')
    else best_s3push=$(echo "$t" "$best_s3push" | awk '{ print ($2 == "" || $1 < $2) ? $1 : $2 }'); fi
  done
done
summary+=("$(awk -v s="$best_s3push" -v d="$best_disk" 'BEGIN { printf "silo push of %s paths:  to an S3 replica %.2f s, to a disk server %.2f s, ratio %.2f (target <= 1.2)", "'"${#closure[@]}"'", s, d, s / d }')")

# --- memory: BIG uploads and BIG downloads of BIG_MB MiB at once
if ((BIG > 0)); then
  echo "scale.sh: building and pushing 2 NARs of $BIG_MB MiB for the downloads..." >&2
  {
    echo "let $mkexpr in ["
    for i in 0 1; do echo "  (mk \"scale-big-$i\" \"head -c $((BIG_MB << 20)) /dev/urandom > \$out/d/f\" [])"; done
    echo "]"
  } > "$work/big.nix"
  mapfile -t big < <(nix build --max-jobs 2 --no-link --json -f "$work/big.nix" | tr ',' '\n' | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
  closure+=("${big[@]}")
  nix copy --to "$b/bench?compression=zstd" --option netrc-file "$work/netrc" "${big[@]}"
  : > "$work/big-urls"
  for ((i = 0; i < BIG; i++)); do
    h=$(basename "${big[$((i % 2))]}" | cut -c1-32)
    echo "$b/bench/$(curl -sf "$b/bench/$h.narinfo" | sed -n 's/^URL: //p')" >> "$work/big-urls"
  done
  kill "$pid_b"; wait "$pid_b" 2>/dev/null || true
  start_serve "$port_b" --db "$db" --blobs "$blobs"; pid_b=$serve_pid
  taskset -pc 0-1 "$pid_b" >/dev/null
  rss_before=$(awk '/VmHWM/ {print $2}' "/proc/$pid_b/status")
  SILO_TOKEN=$token "$work/narput" -n "$BIG" -size "${BIG_MB}M" -same "$b/bench" > "$work/narput.log" 2>&1 &
  up=$!
  "$work/load" -c "$BIG" -urls "$work/big-urls" -label "replica-${BIG}x${BIG_MB}MiB-downloads" | tee -a "$work/results" >&2
  wait "$up" || { cat "$work/narput.log" >&2; exit 1; }
  tee -a "$work/results" < "$work/narput.log" >&2
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid_b/status")
  summary+=("$(awk -v p="$peak" -v b="$rss_before" -v n="$BIG" -v m="$BIG_MB" 'BEGIN { printf "replica peak RSS, %d uploads + %d downloads of %d MiB at once: %.1f MiB (%.1f before; target < 150)", n, n, m, p / 1024, b / 1024 }')")
fi

echo
cat "$work/results"
echo
echo "closure: ${#closure[@]} paths, $((total >> 20)) MiB of NARs; silo migrate-data moved it to PostgreSQL + S3 in ${move_s}s; $DURATION per load run, best of $RUNS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${summary[@]}"

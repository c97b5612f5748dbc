#!/usr/bin/env bash
# Benchmarks silo serve against nginx serving the same files statically.
#
#   1. A closure of $PATHS paths ($LARGE of them $LARGE_MB MiB) is built and
#      pushed to silo serve with nix copy (compression=zstd); every narinfo
#      and NAR file silo then serves is saved to disk for nginx, so both
#      serve the same bytes.
#   2. The same client (bench/serve/load) fetches every narinfo, then
#      every NAR, with 1 and with 16 keep-alive connections, for $DURATION
#      each, best of $RUNS alternating runs. The server under test (silo or
#      nginx, one nginx worker) runs on CPU $SERVER_CPU only and the client
#      on CPU $LOAD_CPU only (taskset), so that on a small machine both
#      servers get the same single core and the client does not compete
#      with them. Each result line shows the server's and the client's CPU
#      use: a client near 100% means the client, not the server, was the
#      limit. Both must answer every request 200 with the same
#      Content-Type, and serve the same bytes (checked for every file).
#   3. Memory: silo is restarted (so its peak RSS counts only this phase)
#      and 16 clients download $BIG_NARS NARs of 1 GiB at once; the script
#      prints silo's peak RSS (VmHWM).
#
# Targets (issue 3): narinfo rate >= 0.5x nginx, NAR throughput >= 0.8x
# nginx, peak RSS < 150 MiB. Needs root and the real Nix; installs nginx
# with apt-get if it is missing.
#
#   bench/serve.sh
#   PATHS=300 LARGE=6 LARGE_MB=32 DURATION=10s RUNS=2 BIG_NARS=2 bench/serve.sh
#   SERVER_CPU=0 LOAD_CPU=1 BIG_NARS=0 bench/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${PATHS:-300}
LARGE=${LARGE:-6}
LARGE_MB=${LARGE_MB:-32}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-2}
BIG_NARS=${BIG_NARS:-2}    # distinct 1 GiB NARs for the memory test (0 skips it)
SERVER_CPU=${SERVER_CPU:-0} # the one CPU silo and nginx run on
LOAD_CPU=${LOAD_CPU:-1}     # the CPU(s) the load client runs on

on_load_cpu() { taskset -c "$LOAD_CPU" "$@"; }
taskset -c "$SERVER_CPU" true && on_load_cpu true || { echo "serve.sh: cannot pin to CPUs $SERVER_CPU and $LOAD_CPU (set SERVER_CPU and LOAD_CPU)" >&2; exit 1; }

if ! command -v nginx >/dev/null 2>&1; then
  echo "serve.sh: installing nginx" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
NGINX=$(command -v nginx)
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'

work=$(mktemp -d /tmp/silo-bench-serve.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/silo" ./cmd/silo
go build -o "$work/load" ./bench/serve/load

# --- the closure: $PATHS leaves of varied sizes and file counts, one root
nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkexpr='mk = name: script: deps: derivation { inherit name deps; system = builtins.currentSystem;
  builder = "/bin/sh"; nonce = "'$nonce'"; args = ["-c" ("export PATH=/usr/bin:/bin; mkdir -p $out/d; " + script)]; };'
{
  echo "let $mkexpr in mk \"bench-root\" \"echo \$deps > \$out/d/deps\" ["
  for ((i = 0; i < PATHS; i++)); do
    if ((i < LARGE)); then
      echo "  (mk \"bench-large-$i\" \"head -c $((LARGE_MB << 20)) /dev/urandom > \$out/d/f\" [])"
    else
      files=$((1 + i % 7)); size=$((512 + (i * 7919) % 262144))
      echo "  (mk \"bench-$i\" \"for f in \$(seq $files); do head -c $size /dev/urandom > \$out/d/f\$f; done\" [])"
    fi
  done
  echo ']'
} > "$work/root.nix"
echo "serve.sh: building a closure of $((PATHS + 1)) paths ($LARGE of $LARGE_MB MiB)..." >&2
root=$(nix build --max-jobs 2 --no-link --json -f "$work/root.nix" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
mapfile -t closure < <(nix-store -qR "$root")
total=$(nix path-info -S "$root" | awk '{print $2}')

# --- silo serve with one public cache, pushed to by nix copy
port=$((20000 + RANDOM % 10000)); nginx_port=$((port + 1))
data="$work/data"
"$work/silo" init --data-dir "$data" >/dev/null 2>&1 || true  # admin commands need a data dir (older builds made one)
"$work/silo" cache create bench --public --data-dir "$data" >/dev/null
token=$("$work/silo" token create --cache bench --push --data-dir "$data" 2>/dev/null)
echo "machine 127.0.0.1 password $token" > "$work/netrc"
start_silo() {
  # taskset execs silo, so $! is silo's pid.
  taskset -c "$SERVER_CPU" "$work/silo" serve --data-dir "$data" --listen "127.0.0.1:$port" --log-level warn 2>>"$work/silo.log" &
  silo_pid=$!
  pids+=($silo_pid)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "serve.sh: silo serve did not start:" >&2; cat "$work/silo.log" >&2; exit 1
}
start_silo
base="http://127.0.0.1:$port/bench"
echo "serve.sh: pushing ${#closure[@]} paths ($((total >> 20)) MiB of NARs) with nix copy..." >&2
t0=$(date +%s.%N)
nix copy --to "$base?compression=zstd" --option netrc-file "$work/netrc" "$root"
t1=$(date +%s.%N)
push_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

# --- the same files for nginx
mkdir -p "$work/www/bench/nar"
curl -sf "$base/nix-cache-info" > "$work/www/bench/nix-cache-info"
: > "$work/silo-nars"; : > "$work/nginx-nars"; : > "$work/silo-narinfos"; : > "$work/nginx-narinfos"
for p in "${closure[@]}"; do
  h=$(basename "$p" | cut -c1-32)
  curl -sf "$base/$h.narinfo" > "$work/www/bench/$h.narinfo"
  url=$(sed -n 's/^URL: //p' "$work/www/bench/$h.narinfo")
  curl -sf "$base/$url" > "$work/www/bench/$url"
  echo "$base/$url" >> "$work/silo-nars"
  echo "http://127.0.0.1:$nginx_port/bench/$url" >> "$work/nginx-nars"
  echo "$base/$h.narinfo" >> "$work/silo-narinfos"
  echo "http://127.0.0.1:$nginx_port/bench/$h.narinfo" >> "$work/nginx-narinfos"
done
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar zst; }
  client_body_temp_path $work/nginx/tmp;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
EOF
# taskset execs nginx (its master stays in the foreground) and the worker
# inherits the CPU.
taskset -c "$SERVER_CPU" "$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=($nginx_pid)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$nginx_port/bench/nix-cache-info" >/dev/null && break; sleep 0.1; done

# Check they serve the same bytes with the same Content-Type, then warm both.
ctype() { curl -sf -o /dev/null -w '%{content_type}' "$1"; }
for kind in narinfos nars; do
  paste -d ' ' "$work/silo-$kind" "$work/nginx-$kind" | while read -r s n; do
    cmp -s <(curl -sf "$s") <(curl -sf "$n") || { echo "serve.sh: silo and nginx serve different bytes for $s" >&2; exit 1; }
  done
  s=$(head -1 "$work/silo-$kind"); n=$(head -1 "$work/nginx-$kind")
  [[ $(ctype "$s") == "$(ctype "$n")" ]] || { echo "serve.sh: Content-Type: silo $(ctype "$s"), nginx $(ctype "$n")" >&2; exit 1; }
done
on_load_cpu "$work/load" -c 16 -urls "$work/nginx-nars" -label warm >/dev/null
on_load_cpu "$work/load" -c 16 -urls "$work/silo-nars" -label warm >/dev/null

# cpu_ticks PID...: user+system clock ticks the processes (and their
# threads) have used.
cpu_ticks() { for p; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }
hz=$(getconf CLK_TCK)
run() { # run <conns> <field> <label> <urls> <content-type> <server pids...>
  local c=$1 field=$2 label=$3 urls=$4 ctype=$5; shift 5
  local t0 t1 out
  t0=$(cpu_ticks "$@")
  out=$(on_load_cpu "$work/load" -c "$c" -urls "$urls" -duration "$DURATION" -content-type "$ctype" -label "$label")
  t1=$(cpu_ticks "$@")
  secs=$(tr ' ' '\n' <<<"$out" | sed -n 's/^seconds=//p')
  echo "$out $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" 'BEGIN { printf "server_cpu=%.0f%%", 100 * (b - a) / hz / s }')" >>"$work/results"
  tail -1 "$work/results" >&2
  tr ' ' '\n' <<<"$out" | sed -n "s/^$field=//p"
}
nginx_pids=("$nginx_pid" $(pgrep -P "$nginx_pid"))
maxof() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
summary=()
for c in 1 16; do
  nar_nginx=0; nar_silo=0; ni_nginx=0; ni_silo=0
  for ((r = 0; r < RUNS; r++)); do
    ni_nginx=$(maxof "$ni_nginx" "$(run "$c" req_per_s "nginx-narinfo-c$c" "$work/nginx-narinfos" text/x-nix-narinfo "${nginx_pids[@]}")")
    ni_silo=$(maxof "$ni_silo" "$(run "$c" req_per_s "silo-narinfo-c$c" "$work/silo-narinfos" text/x-nix-narinfo "$silo_pid")")
    nar_nginx=$(maxof "$nar_nginx" "$(run "$c" MiB_per_s "nginx-nar-c$c" "$work/nginx-nars" application/x-nix-nar "${nginx_pids[@]}")")
    nar_silo=$(maxof "$nar_silo" "$(run "$c" MiB_per_s "silo-nar-c$c" "$work/silo-nars" application/x-nix-nar "$silo_pid")")
  done
  summary+=("$(awk -v c="$c" -v s="$ni_silo" -v n="$ni_nginx" 'BEGIN { printf "narinfo rate,   %2d conn: silo %7.0f/s,     nginx %7.0f/s,     ratio %.2f (target >= 0.5)", c, s, n, s / n }')")
  summary+=("$(awk -v c="$c" -v s="$nar_silo" -v n="$nar_nginx" 'BEGIN { printf "NAR throughput, %2d conn: silo %7.0f MiB/s, nginx %7.0f MiB/s, ratio %.2f (target >= 0.8)", c, s, n, s / n }')")
done

# --- memory: 16 clients streaming 1 GiB NARs
if ((BIG_NARS > 0)); then
  echo "serve.sh: building and pushing $BIG_NARS NARs of 1 GiB..." >&2
  {
    echo "let $mkexpr in ["
    for ((i = 0; i < BIG_NARS; i++)); do echo "  (mk \"bench-1g-$i\" \"head -c 1073741824 /dev/urandom > \$out/d/f\" [])"; done
    echo "]"
  } > "$work/big.nix"
  mapfile -t big < <(nix build --max-jobs 2 --no-link --json -f "$work/big.nix" | tr ',' '\n' | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
  nix copy --to "$base?compression=zstd" --option netrc-file "$work/netrc" "${big[@]}"
  : > "$work/big-urls"
  for ((i = 0; i < 16; i++)); do
    p=${big[$((i % ${#big[@]}))]}
    h=$(basename "$p" | cut -c1-32)
    echo "$base/$(curl -sf "$base/$h.narinfo" | sed -n 's/^URL: //p')" >> "$work/big-urls"
  done
  kill "$silo_pid"; wait "$silo_pid" 2>/dev/null || true
  start_silo
  rss_before=$(awk '/VmHWM/ {print $2}' "/proc/$silo_pid/status")
  on_load_cpu "$work/load" -c 16 -urls "$work/big-urls" -label silo-16x1GiB | tee -a "$work/results"
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$silo_pid/status")
  summary+=("$(awk -v p="$peak" -v b="$rss_before" 'BEGIN { printf "peak RSS, 16 clients x 1 GiB NARs: %.1f MiB (%.1f MiB before; target < 150)", p / 1024, b / 1024 }')")
fi

echo
cat "$work/results"
echo
echo "closure: ${#closure[@]} paths, $((total >> 20)) MiB of NARs, pushed by nix copy in ${push_s}s; $DURATION per run, best of $RUNS; server on CPU $SERVER_CPU, client on CPU $LOAD_CPU"
printf '%s\n' "${summary[@]}"

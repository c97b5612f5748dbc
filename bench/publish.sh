#!/usr/bin/env bash
# Benchmarks silo publish against nginx serving the same closure as static
# files: NARs dumped beforehand with nix-store --dump, and the narinfos silo
# itself serves, saved to disk. Both are measured by the same client
# (bench/serve/load, shared with bench/serve.sh) with the same number of keep-alive connections:
#
#   1. NAR throughput: every NAR of the closure, round-robin, for $DURATION.
#   2. narinfo rate: every narinfo, round-robin, for $DURATION.
#
# Targets (issue 5): silo >= 0.8x nginx for NARs, >= 0.5x for narinfos.
# Needs root and the real Nix (it builds the closure into /nix/store);
# installs nginx with apt-get if it is missing.
#
#   bench/publish.sh                  # defaults below
#   PATHS=300 LARGE=6 LARGE_MB=32 CONNS=16 DURATION=10s bench/publish.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS=${PATHS:-300}       # paths in the closure, besides its root
LARGE=${LARGE:-6}         # how many of them are large
LARGE_MB=${LARGE_MB:-32}  # size of a large path's single file
CONNS=${CONNS:-16}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-2}           # alternating runs per server; the best counts

if ! command -v nginx >/dev/null 2>&1; then
  echo "publish.sh: installing nginx" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
NGINX=$(command -v nginx)
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'

work=$(mktemp -d /tmp/silo-bench-publish.XXXXXX)
pids=()
closure=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  # The closure is built fresh every run (random nonce) and is no GC root:
  # delete it rather than leave ~350 MiB per run in the store.
  if [ ${#closure[@]} -gt 0 ]; then nix-store --delete "${closure[@]}" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

go build -o "$work/silo" ./cmd/silo
go build -o "$work/load" ./bench/serve/load

# --- the closure: $PATHS leaves of varied sizes and file counts, one root
nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$work/root.nix" <<EOF
let mk = name: script: deps: derivation { inherit name deps; system = builtins.currentSystem;
  builder = "/bin/sh"; nonce = "$nonce"; args = ["-c" ("export PATH=/usr/bin:/bin; mkdir -p \$out/d; " + script)]; };
  leaves = import $work/leaves.nix mk;
in mk "bench-root" "echo \$deps > \$out/d/deps" leaves
EOF
{
  echo 'mk: ['
  for ((i = 0; i < PATHS; i++)); do
    if ((i < LARGE)); then
      echo "  (mk \"bench-large-$i\" \"head -c $((LARGE_MB << 20)) /dev/urandom > \$out/d/f\" [])"
    else
      files=$((1 + i % 7)); size=$((512 + (i * 7919) % 262144))
      echo "  (mk \"bench-$i\" \"for f in \$(seq $files); do head -c $size /dev/urandom > \$out/d/f\$f; done\" [])"
    fi
  done
  echo ']'
} > "$work/leaves.nix"
echo "publish.sh: building a closure of $((PATHS + 1)) paths ($LARGE of $LARGE_MB MiB)..." >&2
root=$(nix build --max-jobs 2 --no-link --json --impure -f "$work/root.nix" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
mapfile -t closure < <(nix-store -qR "$root")
total=$(nix path-info -S "$root" | awk '{print $2}')
echo "publish.sh: closure of ${#closure[@]} paths, $((total >> 20)) MiB of NARs" >&2

# --- silo publish
nix-store --generate-binary-cache-key bench-1 "$work/key.sec" "$work/key.pub"
silo_port=$((20000 + RANDOM % 10000)); nginx_port=$((silo_port + 1))
"$work/silo" publish --listen "127.0.0.1:$silo_port" --signing-key-file "$work/key.sec" 2>"$work/silo.log" &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$silo_port/nix-cache-info" >/dev/null && break; sleep 0.1; done

# --- the same files for nginx: narinfos as silo serves them, NARs dumped
mkdir -p "$work/www/nar"
cp <(curl -sf "http://127.0.0.1:$silo_port/nix-cache-info") "$work/www/nix-cache-info"
: > "$work/silo-nars"; : > "$work/nginx-nars"; : > "$work/silo-narinfos"; : > "$work/nginx-narinfos"
for p in "${closure[@]}"; do
  h=$(basename "$p" | cut -c1-32)
  curl -sf "http://127.0.0.1:$silo_port/$h.narinfo" > "$work/www/$h.narinfo"
  url=$(sed -n 's/^URL: //p' "$work/www/$h.narinfo")
  nix-store --dump "$p" > "$work/www/$url"
  echo "http://127.0.0.1:$silo_port/$url" >> "$work/silo-nars"
  echo "http://127.0.0.1:$nginx_port/$url" >> "$work/nginx-nars"
  echo "http://127.0.0.1:$silo_port/$h.narinfo" >> "$work/silo-narinfos"
  echo "http://127.0.0.1:$nginx_port/$h.narinfo" >> "$work/nginx-narinfos"
done

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  types { text/x-nix-narinfo narinfo; application/x-nix-archive nar; }
  client_body_temp_path $work/nginx/tmp;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
EOF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$nginx_port/nix-cache-info" >/dev/null && break; sleep 0.1; done

# First pass over every NAR: this warms the page cache, and is the pass in
# which silo hashes each NAR (later passes check stat digests instead).
"$work/load" -c "$CONNS" -urls "$work/nginx-nars" -label nginx-nar-first-pass | tee -a "$work/results" >/dev/null
"$work/load" -c "$CONNS" -urls "$work/silo-nars" -label silo-nar-first-pass | tee -a "$work/results" >/dev/null
for i in 0 $((${#closure[@]} / 2)); do
  u=$(sed -n "$((i + 1))p" "$work/silo-nars")
  cmp <(curl -sf "$u") <(curl -sf "${u/$silo_port/$nginx_port}") || { echo "publish.sh: silo and nginx serve different bytes for $u" >&2; exit 1; }
done

run() { # run <field> <label> <urls> [content-type]: one measurement, prints the field's value
  "$work/load" -c "$CONNS" -urls "$3" -duration "$DURATION" -label "$2" ${4:+-content-type "$4"} | tee -a "$work/results" |
    tr ' ' '\n' | sed -n "s/^$1=//p"
}
maxof() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
nar_nginx=0; nar_silo=0; ni_nginx=0; ni_silo=0
for ((r = 0; r < RUNS; r++)); do
  nar_nginx=$(maxof "$nar_nginx" "$(run MiB_per_s nginx-nar "$work/nginx-nars")")
  nar_silo=$(maxof "$nar_silo" "$(run MiB_per_s silo-nar "$work/silo-nars")")
  ni_nginx=$(maxof "$ni_nginx" "$(run req_per_s nginx-narinfo "$work/nginx-narinfos" text/x-nix-narinfo)")
  ni_silo=$(maxof "$ni_silo" "$(run req_per_s silo-narinfo "$work/silo-narinfos" text/x-nix-narinfo)")
done
cat "$work/results"
echo
echo "closure: ${#closure[@]} paths, $((total >> 20)) MiB of NARs; $CONNS connections, $DURATION per run, best of $RUNS alternating runs"
awk -v s="$nar_silo" -v n="$nar_nginx" 'BEGIN { printf "NAR throughput: silo %.0f MiB/s, nginx %.0f MiB/s, ratio %.2f (target >= 0.8)\n", s, n, s / n }'
awk -v s="$ni_silo" -v n="$ni_nginx" 'BEGIN { printf "narinfo rate:   silo %.0f/s, nginx %.0f/s, ratio %.2f (target >= 0.5)\n", s, n, s / n }'

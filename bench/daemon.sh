#!/usr/bin/env bash
# Benchmarks `silo daemon` against the real nix-daemon (Nix 2.8) in one run,
# each serving a private store of its own (same settings), with the real Nix
# client talking to it over its socket. Wall time, median of $RUNS runs
# taken in turn (silo, nix, silo, nix, ...); what a run needs is set up
# before its clock starts. Prints each figure and the ratio silo/nix.
#
#   add   nix-store --add of a Go toolchain tree ($GOTREE, /usr/local/go:
#         about 236 MB of NAR, 17,000 files) into an empty store
#   copy  nix copy --to the daemon of a $PATHS-path closure (from a local
#         store with the same store directory) into an empty store
#   info  nix path-info -r --json of that closure
#   gc    nix-store --gc collecting $DEAD dead paths
#   mem   peak RSS of the daemon while $CLIENTS clients import at once
#         (nix-store --import of a different $MEM_MB MiB path each)
#
# Targets (issue 10): add <= 0.7x, copy <= 0.7x, info <= 0.5x, gc <= 0.7x,
# silo's memory under 64 MiB.
#
#   bench/daemon.sh                    # all
#   RUNS=3 bench/daemon.sh add info    # some
#   SILO=/path/to/silo bench/daemon.sh # another build
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
GOTREE=${GOTREE:-/usr/local/go}
PATHS=${PATHS:-300}
DEAD=${DEAD:-5000}
CLIENTS=${CLIENTS:-16}
MEM_MB=${MEM_MB:-32}
[ $# -eq 0 ] && set -- add copy info gc mem

work=$(mktemp -d /tmp/silo-bench-daemon.XXXXXX)
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

conf='experimental-features = nix-command
sandbox = false
build-users-group =
substituters =
fsync-metadata = false
gc-reserved-space = 0
keep-derivations = false'

# env NAME: the environment of a client (or daemon) of store NAME.
env_of() {
  local r=$work/$1
  echo "NIX_STORE_DIR=$r/store NIX_STATE_DIR=$r/state NIX_LOG_DIR=$r/log NIX_CONF_DIR=$r/conf" \
    "NIX_DAEMON_SOCKET_PATH=$r/socket HOME=$r/home XDG_CACHE_HOME=$r/home/.cache NIX_USER_CONF_FILES= NIX_CONFIG="
}
# client NAME CMD...: run a Nix command through NAME's daemon.
client() { local n=$1; shift; env $(env_of "$n") NIX_REMOTE="unix://$work/$n/socket" "$@"; }
# local NAME CMD...: run the real Nix directly on NAME's store.
localnix() { local n=$1; shift; env $(env_of "$n") NIX_REMOTE=local "$@"; }

start() { # start NAME PROGRAM...
  local n=$1; shift
  mkdir -p "$work/$n/conf" "$work/$n/home"
  echo "$conf" > "$work/$n/conf/nix.conf"
  env $(env_of "$n") NIX_REMOTE= "$@" > "$work/$n/daemon.log" 2>&1 &
  pids+=($!)
  eval "pid_$n=$!"
  for _ in $(seq 100); do [ -S "$work/$n/socket" ] && return; sleep 0.1; done
  echo "daemon $n did not start:" >&2; cat "$work/$n/daemon.log" >&2; exit 1
}
start silo "$silo" daemon --quiet
start nix nix-daemon

wipe() { # empty NAME's store, as Nix's tests do (the daemon re-creates the
  # database on the next connection). The state directory must exist: with
  # store = auto, a nix-daemon that finds none connects to its own socket.
  chmod -R u+w "$work/$1/store" 2>/dev/null || true
  rm -rf "$work/$1/store" "$work/$1/state"
  mkdir -p "$work/$1/store" "$work/$1/state"
}

now() { echo "$EPOCHREALTIME"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# cpu NAME: CPU seconds the daemon of NAME has used so far, with its
# finished children (nix-daemon serves each connection in a child).
cpu() {
  local pid
  eval "pid=\$pid_$1"
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15 + $16 + $17) / hz}' "/proc/$pid/stat"
}

# bench LABEL PREPARE RUN: time RUN (a function taking the store name)
# after PREPARE, in turn for silo and nix, and print medians and the ratio:
# wall time of the client command, and CPU time of the daemon while it ran.
bench() {
  local label=$1 prepare=$2 run=$3
  : > "$work/t.silo"; : > "$work/t.nix"; : > "$work/c.silo"; : > "$work/c.nix"
  for ((i = 0; i < RUNS; i++)); do
    for n in silo nix; do
      $prepare "$n"
      sleep 0.2 # let the preparation's connections end
      local t0 t1 c0 c1
      c0=$(cpu "$n"); t0=$(now)
      $run "$n" > "$work/$n/out" 2>&1 || { echo "$label ($n) failed:" >&2; cat "$work/$n/out" >&2; exit 1; }
      t1=$(now)
      sleep 0.2 # nix-daemon's child is counted once it has exited
      c1=$(cpu "$n")
      echo "$t1 - $t0" | bc -l >> "$work/t.$n"
      echo "$c1 - $c0" | bc -l >> "$work/c.$n"
    done
  done
  local s x cs cx
  s=$(median < "$work/t.silo"); x=$(median < "$work/t.nix")
  cs=$(median < "$work/c.silo"); cx=$(median < "$work/c.nix")
  printf '%-6s wall: silo %7.3fs nix-daemon %7.3fs ratio %.2f | daemon CPU: silo %6.3fs nix-daemon %6.3fs ratio %.2f  (medians of %d)\n' \
    "$label" "$s" "$x" "$(echo "$s / $x" | bc -l)" "$cs" "$cx" "$(echo "$cs / ($cx + 0.000001)" | bc -l)" "$RUNS"
}

# --- add: the Go tree
prep_add() { wipe "$1"; client "$1" nix store ping > /dev/null 2>&1; }
run_add() { client "$1" nix-store --add "$GOTREE"; }

# --- copy / info: a closure of $PATHS content-addressed paths of varied
# size in a local store that shares the daemon's store directory: leaves,
# groups of ten referring to them, and a root.
make_closure() { # NAME: build the source store for NAME's store directory
  local n=$1 src=$work/src-$1
  local uri="local?store=$work/$n/store&real=$src/store&state=$src/state&log=$src/log"
  if [ ! -d "$work/data" ]; then
    mkdir -p "$work/data"
    for ((i = 0; i < PATHS * 9 / 10; i++)); do
      d=$work/data/leaf$i; mkdir -p "$d/sub"
      head -c $(( (i * 7919) % 200000 + 100 )) /dev/urandom > "$d/blob"
      for ((j = 0; j < i % 8; j++)); do echo "file $i $j" > "$d/sub/f$j"; done
    done
  fi
  mkdir -p "$src"
  env $(env_of "$n") NIX_REMOTE= nix-store --store "$uri" --add "$work"/data/leaf* > "$src/leaves"
  local expr="let leaves = [ $(sed 's/.*/(builtins.storePath "&")/' "$src/leaves" | tr '\n' ' ') ];
    groups = builtins.genList (g: builtins.toFile \"group\${toString g}\" (toString (builtins.genList (i: builtins.elemAt leaves (g * 10 + i)) (if g * 10 + 10 > builtins.length leaves then builtins.length leaves - g * 10 else 10)))) ((builtins.length leaves + 9) / 10);
    in builtins.toFile \"root\" (toString groups)"
  env $(env_of "$n") NIX_REMOTE= nix-instantiate --store "$uri" --read-write-mode --eval -E "$expr" | tr -d '"' > "$src/root"
  echo "$uri" > "$src/uri"
}
prep_copy() { wipe "$1"; client "$1" nix store ping > /dev/null 2>&1; }
run_copy() { client "$1" nix copy --from "$(cat "$work/src-$1/uri")" --to "unix://$work/$1/socket" "$(cat "$work/src-$1/root")"; }
prep_info() { :; }
run_info() { client "$1" nix path-info -r --json "$(cat "$work/src-$1/root")"; }

# --- gc: $DEAD dead paths, added by the real Nix in local mode
make_dead() {
  if [ ! -d "$work/dead" ]; then
    mkdir -p "$work/dead"
    for ((i = 0; i < DEAD; i++)); do echo "dead $i" > "$work/dead/d$i"; done
  fi
}
prep_gc() { wipe "$1"; localnix "$1" nix-store --add "$work"/dead/d* > /dev/null; }
run_gc() { client "$1" nix-store --gc; }

for what in "$@"; do
  case $what in
  add) bench add prep_add run_add ;;
  copy|info)
    [ -f "$work/src-silo/root" ] || { make_closure silo; make_closure nix; }
    if [ "$what" = copy ]; then bench copy prep_copy run_copy
    else
      [ -n "$(client silo nix-store --check-validity "$(cat "$work/src-silo/root")" 2>/dev/null; echo)" ] || true
      for n in silo nix; do prep_copy "$n"; run_copy "$n" > /dev/null 2>&1; done
      printf 'info: closure of %s paths\n' "$(client silo nix-store -qR "$(cat "$work/src-silo/root")" | wc -l)"
      bench info prep_info run_info
      # The floor: the same command on the same store without any daemon
      # (the real Nix in local mode), which no daemon can beat.
      : > "$work/t.local"
      for ((i = 0; i < RUNS; i++)); do
        t0=$(now); localnix silo nix path-info -r --json "$(cat "$work/src-silo/root")" > /dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >> "$work/t.local"
      done
      printf 'info   floor: the client alone (local mode, no daemon) %.3fs\n' "$(median < "$work/t.local")"
    fi ;;
  gc) make_dead; bench gc prep_gc run_gc ;;
  mem)
    # $CLIENTS different paths of $MEM_MB MiB, exported from a scratch store.
    mkdir -p "$work/memsrc"
    for ((i = 0; i < CLIENTS; i++)); do
      head -c $((MEM_MB << 20)) /dev/urandom > "$work/memsrc/big$i"
    done
    wipe silo; wipe nix
    for n in silo nix; do # each path exported to a file of its own, then deleted
      localnix "$n" nix-store --add "$work"/memsrc/big* > "$work/$n/big"
      i=0
      for p in $(cat "$work/$n/big"); do localnix "$n" nix-store --export "$p" > "$work/$n/e$i"; i=$((i + 1)); done
      localnix "$n" nix-store --delete $(cat "$work/$n/big") > /dev/null 2>&1
    done
    # Restart silo so that its peak is this test's.
    kill "$pid_silo"; wait "$pid_silo" 2>/dev/null || true
    start silo "$silo" daemon --quiet
    for n in silo nix; do
      t0=$(now)
      cpids=()
      for ((i = 0; i < CLIENTS; i++)); do
        client "$n" nix-store --import < "$work/$n/e$i" > "$work/$n/import$i.log" 2>&1 &
        cpids+=($!)
      done
      peak=0
      running() { local p; for p in "${cpids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
      while running; do
        if [ "$n" = nix ]; then # nix-daemon forks a process per connection: sum them
          rss=0
          for c in $(pgrep -P "$pid_nix" || true) "$pid_nix"; do
            r=$(awk '/VmRSS/ {print $2}' "/proc/$c/status" 2>/dev/null || true); rss=$((rss + ${r:-0}))
          done
          if [ "$rss" -gt "$peak" ]; then peak=$rss; fi
        fi
        sleep 0.05
      done
      for p in "${cpids[@]}"; do wait "$p" || { echo "an import into $n failed:" >&2; cat "$work/$n"/import*.log >&2; exit 1; }; done
      t1=$(now)
      if [ "$n" = silo ]; then peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid_silo/status"); fi
      invalid=$(client "$n" nix-store --check-validity --print-invalid $(cat "$work/$n/big") | wc -l || true)
      printf 'mem    %-10s peak %6.1f MiB with %d clients importing %d MiB each (%.2fs; %d paths left invalid)\n' \
        "$n" "$(echo "$peak / 1024" | bc -l)" "$CLIENTS" "$MEM_MB" "$(echo "$t1 - $t0" | bc -l)" "$invalid"
    done ;;
  *) echo "unknown benchmark $what (add copy info gc mem)" >&2; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# Per-build overhead of the sandbox: silo's (internal/sandbox with the silo
# binary as its init step, a trivial `sh -c :` build as a build user,
# sandboxed vs on the host) beside the
# real Nix 2.8's (nix-build of $N trivial derivations with sandbox = true
# vs false, the same sandbox-paths, build users from the nixbld group).
# Prints both overheads in ms per build and their ratio (each figure the
# best of $R runs, the machine being shared). Needs root.
#
#   bench/sandbox.sh          # N=40 R=3
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-40}
R=${R:-3}
work=$(mktemp -d /tmp/silo-bench-sandbox.XXXXXX)
trap 'rm -rf "$work"' EXIT

go build -o "$work/silo" ./cmd/silo
silo=$(SILO_INIT="$work/silo" CI=true go test -run XXX -bench 'BenchmarkRun/(plain|sandboxed)$' -benchtime "${N}x" -count "$R" ./internal/sandbox |
  awk '/BenchmarkRun\/plain/ {if (!p || $3 < p) p=$3} /BenchmarkRun\/sandboxed-/ && !/no-userns/ && !/network/ {if (!s || $3 < s) s=$3} END {printf "%.2f %.2f", p/1e6, s/1e6}')
read -r silo_plain silo_sb <<<"$silo"

getent group nixbld >/dev/null || { echo "bench/sandbox.sh: the real Nix needs the nixbld group" >&2; exit 1; }
nixrun() { # sandbox -> ms per build
  mkdir -p "$work/conf-$1"
  cat > "$work/conf-$1/nix.conf" <<CONF
experimental-features = nix-command
sandbox = $1
sandbox-paths = /bin /lib /lib64 /usr
build-users-group = nixbld
substituters =
max-jobs = 1
CONF
  local nonce expr start end
  nonce=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  expr="builtins.genList (i: derivation { name = \"t\${toString i}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [\"-c\" \"echo > \$out\"]; n = \"$nonce\"; }) $N"
  start=$(date +%s%N)
  env -i PATH="$PATH" HOME="$work" NIX_CONF_DIR="$work/conf-$1" nix-build --no-out-link -E "$expr" >/dev/null 2>&1
  end=$(date +%s%N)
  echo "scale=2; ($end - $start) / 1000000 / $N" | bc
}
best() { # sandbox -> best of R runs
  local b="" v
  for _ in $(seq "$R"); do
    v=$(nixrun "$1")
    if [ -z "$b" ] || [ "$(echo "$v < $b" | bc)" = 1 ]; then b=$v; fi
  done
  echo "$b"
}
nix_plain=$(best false)
nix_sb=$(best true)

silo_over=$(echo "scale=2; $silo_sb - $silo_plain" | bc)
nix_over=$(echo "scale=2; $nix_sb - $nix_plain" | bc)
printf 'silo: %6.2f ms/build on the host, %6.2f sandboxed: overhead %5.2f ms\n' "$silo_plain" "$silo_sb" "$silo_over"
printf 'nix:  %6.2f ms/build on the host, %6.2f sandboxed: overhead %5.2f ms (whole nix-build, per derivation)\n' "$nix_plain" "$nix_sb" "$nix_over"
printf 'sandbox overhead ratio silo/nix: %.2f\n' "$(echo "scale=3; $silo_over / $nix_over" | bc)"

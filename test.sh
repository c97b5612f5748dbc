#!/usr/bin/env bash
# Runs silo's whole test suite. On a fresh Debian machine with Go it first
# installs what the integration tests need (the real Nix, nginx for the
# benchmarks' reference), so nothing that needs them is skipped.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v nix >/dev/null 2>&1 || need+=(nix-bin)
# The README test (internal/readmetest) runs the README's commands on a scratch machine.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze and systemd-socket-activate, for the deployment tests (internal/units).
command -v systemd-socket-activate >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing ${need[*]}; run as root or install them: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

export CI="${CI:-}"
go vet ./...
# -p 2: the suite runs real Nix and servers; two packages at once fit a 2-core machine.
go test -p 2 -count=1 -timeout 45m "$@" ./...

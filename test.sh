#!/usr/bin/env bash
# Runs silo's whole test suite. On a fresh Debian machine with Go it first
# installs what the integration tests need (the real Nix, PostgreSQL, the
# S3 server versitygw; nginx for the benchmarks' reference), so nothing
# that needs them is skipped.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v nix >/dev/null 2>&1 || need+=(nix-bin)
# The README test (internal/readmetest) runs the README's commands on a scratch machine.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze and systemd-socket-activate, for the deployment tests (internal/units).
command -v systemd-socket-activate >/dev/null 2>&1 || need+=(systemd)
# PostgreSQL's server binaries (the tests start throwaway clusters).
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
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

# The S3 server, from the Go module proxy (about a minute to build, once).
VERSITYGW_VERSION=v1.8.0
gobin=$(go env GOBIN); gobin=${gobin:-$(go env GOPATH)/bin}
if [ -z "${SILO_VERSITYGW:-}" ]; then
  SILO_VERSITYGW=$(command -v versitygw || echo "$gobin/versitygw")
  if [ ! -x "$SILO_VERSITYGW" ]; then
    echo "test.sh: installing versitygw $VERSITYGW_VERSION into $gobin"
    go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
    SILO_VERSITYGW=$gobin/versitygw
  fi
fi
export SILO_VERSITYGW

export CI="${CI:-}"
go vet ./...
# -p 2: the suite runs real Nix and servers; two packages at once fit a 2-core machine.
go test -p 2 -count=1 -timeout 45m "$@" ./...

package readmetest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
)

// systemdPath is the PATH systemd gives services, nix-daemon included.
const systemdPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// debianNixConf is /etc/nix/nix.conf as Debian's nix-bin installs it.
const debianNixConf = `# see https://nixos.org/nix/manual/#sec-conf-file

# So far the sandbox feature does not seem to work on Debian:
# https://github.com/NixOS/nixpkgs/pull/47794#issuecomment-429575989
sandbox = false
`

// background matches a command line run in the background ("cmd &  # ...").
var background = regexp.MustCompile(`[^&]&\s*(#.*)?$`)

// readmeScript returns the README's sh blocks after the first (the two
// contract commands: a server in the foreground and the test suite
// itself) as one bash script. After each background command it waits
// until the process listens, as a person waits for a server to start.
func readmeScript(readme string) (string, int, error) {
	var b strings.Builder
	blocks := 0
	in, heredoc := false, ""
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in = true
			blocks++
			if blocks > 1 {
				fmt.Fprintf(&b, "\n# --- README block %d\n", blocks)
			}
			continue
		case in && heredoc == "" && strings.TrimSpace(line) == "```":
			in = false
			continue
		case !in || blocks == 1:
			continue
		}
		b.WriteString(line + "\n")
		if heredoc != "" {
			if line == heredoc {
				heredoc = ""
			}
			continue
		}
		if i := strings.Index(line, "<<'"); i >= 0 {
			heredoc, _, _ = strings.Cut(line[i+3:], "'")
			continue
		}
		if background.MatchString(line) {
			b.WriteString("__wait_listen $!\n")
		}
	}
	if in {
		return "", 0, fmt.Errorf("README.md: unterminated code block")
	}
	return b.String(), blocks - 1, sc.Err()
}

func TestReadmeScript(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	script, n, err := readmeScript(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("README has %d command blocks after the first, want the quick starts", n)
	}
	if !regexp.MustCompile(`silo serve &.*\n__wait_listen \$!`).MatchString(script) {
		t.Errorf("the script does not wait for silo serve to listen:\n%s", script)
	}
	for _, want := range []string{
		"/usr/local/bin/silo hook || true", // the hook: absolute path, never fails
		"systemctl restart nix-daemon",
		"silo init",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("README commands lack %q:\n%s", want, script)
		}
	}
	if strings.Contains(script, "exec silo hook") {
		t.Errorf("README's hook relies on PATH (nix-daemon runs it with systemd's)")
	}
}

// checks run after the README's commands, in the same shell.
const checks = `
set +x
echo "== checks"
hookout=$(readlink -f result)
case "$hookout" in *-built-by-the-daemon) ;; *) echo "./result is $hookout, not the daemon's build"; exit 1;; esac
grep -q "post-build-hook = /etc/nix/silo-hook" /etc/nix/nix.conf
for i in $(seq 300); do
  st=$(silo queue status --json)
  if echo "$st" | grep -q '"pending": 0' && echo "$st" | grep -q '"roots": 0' && echo "$st" | grep -q '"spooled": 0' && ! echo "$st" | grep -q '"done": 0,'; then break; fi
  sleep 0.2
done
echo "$st"
echo "$st" | grep -q '"failed": 0'
hp=$(basename "$hookout" | cut -c1-32)
echo "-- the hook's upload is in the cache"
curl -fsS "http://127.0.0.1:8080/main/$hp.narinfo"
echo "-- the real Nix substitutes it, trusting the key silo use wrote to /etc/nix/nix.conf"
# (the daemon looked the path up before building it: forget that answer)
nix-store --store "$S/store1" --option substituters http://127.0.0.1:8080/main --option narinfo-cache-negative-ttl 0 --realise "$hookout"
echo "-- the hook cannot fail a build, even with silo gone"
mv /usr/local/bin/silo /usr/local/bin/silo.away
NIX_REMOTE=daemon nix-build --no-out-link -E 'derivation { name = "no-silo"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo $t > $out"]; t = toString builtins.currentTime; }'
mv /usr/local/bin/silo.away /usr/local/bin/silo
echo "-- silo publish serves the store; the key silo use wrote to ~/.config/nix/nix.conf verifies it"
curl -fsS http://127.0.0.1:5000/nix-cache-info
nix-store --store "$S/store2" --option substituters http://127.0.0.1:5000 --option narinfo-cache-negative-ttl 0 --realise "$hookout"
echo README-OK
`

// machine sets up the scratch machine inside the namespaces and runs the
// README's commands as root in a login-like environment.
const machine = `set -euo pipefail
ip link set lo up
for d in /etc /var/lib /usr/local/bin; do
  n=$(echo "$d" | tr / _)
  mkdir -p "$S/ov$n/upper" "$S/ov$n/work"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$S/ov$n/upper,workdir=$S/ov$n/work" "$d"
done
# A fresh Debian machine: Debian's nix.conf and nothing else of silo's or Nix's.
rm -rf /etc/nix /etc/silo /var/lib/silo /usr/local/bin/silo
mkdir /etc/nix
printf '%s' "$DEBIAN_NIX_CONF" > /etc/nix/nix.conf
mount -t tmpfs tmpfs /nix/var/nix/daemon-socket
mkdir -p "$S/gomod" "$S/gocache"
mount --bind "$REAL_GOMODCACHE" "$S/gomod"
mount --bind "$REAL_GOCACHE" "$S/gocache"
mount -t tmpfs tmpfs /root
# Go's caches at their own paths (build cache keys include source paths).
mkdir -p "$REAL_GOMODCACHE" "$REAL_GOCACHE"
mount --bind "$S/gomod" "$REAL_GOMODCACHE"
mount --bind "$S/gocache" "$REAL_GOCACHE"
systemctl start nix-daemon
env -i HOME=/root USER=root LOGNAME=root TERM=dumb S="$S" PATH="$S/shim:$GODIR:` + systemdPath + `" \
  GOMODCACHE="$REAL_GOMODCACHE" GOCACHE="$REAL_GOCACHE" GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
  bash -c 'set -euo pipefail; PS4="+ \$(date +%T.%3N) "; set -x; . "$S/functions.sh"; . "$S/readme.sh"; . "$S/checks.sh"'
`

const functions = `__wait_listen() {
  local pid=$1
  for i in $(seq 300); do
    if ss -Hlnp 2>/dev/null | grep -q "pid=$pid,"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "background command $pid exited" >&2; return 1; fi
    sleep 0.1
  done
  echo "background command $pid never listened" >&2
  return 1
}
`

// systemctl is the scratch machine's: it (re)starts nix-daemon as
// Debian's unit does (ExecStart=/usr/bin/nix-daemon --daemon), with
// systemd's environment.
const systemctl = `#!/bin/bash
set -eu
case "$1 ${2%.service}" in
"start nix-daemon"|"restart nix-daemon")
  if [ -f "$S/nix-daemon.pid" ]; then kill "$(cat "$S/nix-daemon.pid")" 2>/dev/null || true; fi
  env -i PATH=` + systemdPath + ` setsid /usr/bin/nix-daemon --daemon >>"$S/nix-daemon.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$S/nix-daemon.pid"
  for i in $(seq 200); do
    if ss -Hlxp 2>/dev/null | grep /nix/var/nix/daemon-socket/socket | grep -q "pid=$pid,"; then exit 0; fi
    sleep 0.05
  done
  echo "nix-daemon did not start:" >&2; cat "$S/nix-daemon.log" >&2; exit 1;;
*) echo "systemctl on the scratch machine knows only: start|restart nix-daemon" >&2; exit 1;;
esac
`

// TestREADME runs the README's commands on a scratch machine.
func TestREADME(t *testing.T) {
	nixtest.Require(t)
	for _, tool := range []string{"unshare", "ss", "curl", "ip", "go", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI is set but %s is missing: %v", tool, err)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	script, _, err := readmeScript(string(data))
	if err != nil {
		t.Fatal(err)
	}
	goenv := func(k string) string {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		return strings.TrimSpace(string(out))
	}
	goBin, _ := exec.LookPath("go")
	S := t.TempDir()
	os.MkdirAll(filepath.Join(S, "shim"), 0o755)
	files := map[string]string{"readme.sh": script, "checks.sh": checks, "machine.sh": machine, "functions.sh": functions, "shim/systemctl": systemctl}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(S, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	repo, _ := filepath.Abs("../..")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation", "private",
		"bash", filepath.Join(S, "machine.sh"))
	cmd.Dir = repo
	cmd.Env = []string{"PATH=" + filepath.Join(S, "shim") + ":" + os.Getenv("PATH"), "S=" + S, "DEBIAN_NIX_CONF=" + debianNixConf,
		"REAL_GOMODCACHE=" + goenv("GOMODCACHE"), "REAL_GOCACHE=" + goenv("GOCACHE"), "GODIR=" + filepath.Dir(goBin)}
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	daemonLog, _ := os.ReadFile(filepath.Join(S, "nix-daemon.log"))
	if err != nil || !strings.Contains(string(out), "README-OK") {
		t.Fatalf("README's commands failed on a scratch machine: %v\n%s\n--- nix-daemon log:\n%s", err, out, daemonLog)
	}
	t.Logf("README's commands ran in %v", time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Logf("transcript:\n%s", out)
	}
}

package worker_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/worker"
)

func TestClientAgainstNixDaemon(t *testing.T) {
	n := nixtest.Require(t)
	dep := n.Build("dep", "echo dep > $out")
	top := n.Build("top", "echo $dep0 > $out", dep)
	sock := n.StartDaemon()

	ctx := context.Background()
	var logs []string
	c, err := worker.Dial(ctx, sock, &worker.Options{Log: func(s string) { logs = append(logs, s) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Version(); got != worker.ProtocolVersion {
		t.Errorf("negotiated version %#x, want %#x (Nix 2.8)", got, worker.ProtocolVersion)
	}
	if got := c.NixVersion(); !strings.HasPrefix(got, "2.") {
		t.Errorf("NixVersion = %q, want 2.x", got)
	}

	info, err := c.QueryPathInfo(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.References) != 1 || info.References[0] != dep {
		t.Errorf("references of %s = %q, want [%s]", top, info.References, dep)
	}
	if len(info.NarHash) != 64 || info.NarSize == 0 || !strings.HasSuffix(info.Deriver, ".drv") || !info.Ultimate {
		t.Errorf("implausible path info %+v", info)
	}

	missing := filepath.Dir(top) + "/00000000000000000000000000000000-missing"
	if _, err := c.QueryPathInfo(ctx, missing); !errors.Is(err, worker.ErrNotValid) {
		t.Errorf("QueryPathInfo(missing) error = %v, want ErrNotValid", err)
	}

	for _, tt := range []struct {
		path string
		want bool
	}{{top, true}, {dep, true}, {missing, false}} {
		got, err := c.IsValidPath(ctx, tt.path)
		if err != nil || got != tt.want {
			t.Errorf("IsValidPath(%s) = %v, %v; want %v", tt.path, got, err, tt.want)
		}
	}

	hp := filepath.Base(top)[:32]
	if got, err := c.QueryPathFromHashPart(ctx, hp); err != nil || got != top {
		t.Errorf("QueryPathFromHashPart(%s) = %q, %v; want %s", hp, got, err, top)
	}
	if got, err := c.QueryPathFromHashPart(ctx, "00000000000000000000000000000000"); err != nil || got != "" {
		t.Errorf("QueryPathFromHashPart(zeros) = %q, %v; want empty", got, err)
	}

	valid, err := c.QueryValidPaths(ctx, []string{top, missing, dep})
	if err != nil {
		t.Fatal(err)
	}
	if len(valid) != 2 {
		t.Errorf("QueryValidPaths = %q, want %s and %s", valid, top, dep)
	}

	// A cancelled context fails the call promptly.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.IsValidPath(cctx, top); !errors.Is(err, context.Canceled) {
		t.Errorf("IsValidPath with cancelled context: %v, want context.Canceled", err)
	}

	// A daemon error (not a store path at all) is reported without the
	// terminal colours, and leaves the client broken: the daemon hangs up.
	c2, err := worker.Dial(ctx, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var de *worker.DaemonError
	_, err = c2.QueryPathInfo(ctx, "/not/a/store/path")
	if !errors.As(err, &de) || de.Message != "path '/not/a/store/path' is not in the Nix store" {
		t.Errorf("QueryPathInfo(/not/a/store/path) error = %v, want a DaemonError saying it is not in the store", err)
	}
	if !c2.Broken() {
		t.Errorf("client not broken after a daemon error")
	}
	if _, err := c2.IsValidPath(ctx, top); err == nil {
		t.Errorf("IsValidPath on a broken client succeeded")
	}
}

func TestDialNotADaemon(t *testing.T) {
	_, err := worker.Dial(context.Background(), filepath.Join(t.TempDir(), "none"), nil)
	if err == nil || !strings.Contains(err.Error(), "nix-daemon") {
		t.Errorf("Dial(nonexistent) = %v, want an error naming nix-daemon", err)
	}
}

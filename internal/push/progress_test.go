package push

import (
	"errors"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/storepath"
)

func TestDisplay(t *testing.T) {
	p, _ := storepath.DefaultDir.ParseBase("00000000000000000000000000000000-a")
	info := &localstore.PathInfo{Path: p, NarSize: 3 << 20}
	ni := &narinfo.NarInfo{NarSize: 3 << 20, FileSize: 1 << 20}
	for _, tty := range []bool{false, true} {
		var out strings.Builder
		d := NewDisplay(&out, tty)
		d.Planned(Result{Closure: 5, SignedUpstream: 1, Present: 2}, []*localstore.PathInfo{info, info})
		d.NarBytes(3 << 20)
		d.Uploaded(info, ni, nil)
		d.Uploaded(info, nil, errors.New("boom"))
		d.Finish(Result{Closure: 5, SignedUpstream: 1, Present: 2, Uploaded: 1, Failed: 1, NarBytes: 3 << 20, FileBytes: 1 << 20}, nil)
		got := out.String()
		for _, want := range []string{
			"closure: 5 paths; 1 signed upstream, 2 already in the cache, 2 to upload (6.0 MiB)",
			"failed /nix/store/00000000000000000000000000000000-a: boom",
			"uploaded 1 paths (3.0 MiB NAR, 1.0 MiB compressed)",
			"1 FAILED",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("tty=%v: output lacks %q:\n%s", tty, want, got)
			}
		}
		if perPath := strings.Contains(got, "uploaded /nix/store/"); perPath == tty {
			t.Errorf("tty=%v: per-path lines present = %v, want %v", tty, perPath, !tty)
		}
	}
	// A push that fails before planning prints no summary.
	var out strings.Builder
	NewDisplay(&out, false).Finish(Result{}, errors.New("cache unreachable"))
	if out.Len() != 0 {
		t.Errorf("summary printed before a pre-flight error: %q", out.String())
	}
	tests := map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 30: "5.0 GiB"}
	for n, want := range tests {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

package push_test

import (
	"context"
	"io"
	"testing"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/storepath"
)

// discardTarget accepts everything and keeps nothing: the benchmark
// measures the client side only (dump, hash, compress).
type discardTarget struct{}

func (discardTarget) Init(context.Context, storepath.Dir) error { return nil }
func (discardTarget) Missing(_ context.Context, h []string) ([]string, error) {
	return h, nil
}
func (discardTarget) HasFile(context.Context, string) (bool, error) { return false, nil }
func (discardTarget) PutFile(_ context.Context, _, _ string, _ int64, open func() (io.Reader, error)) error {
	r, err := open()
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, r)
	return err
}
func (discardTarget) String() string { return "discard" }

// BenchmarkUploadNAR measures one upload of a 32 MiB half-compressible
// path: NAR dump, NAR hash check, zstd, file hash and buffering.
func BenchmarkUploadNAR(b *testing.B) {
	n := nixtest.Require(b)
	p := n.Build("bench", "/usr/bin/head -c 16777216 /dev/urandom > $out.r; /usr/bin/od -An -tx1 $out.r | /usr/bin/head -c 16777216 > $out.t; /bin/cat $out.r $out.t > $out; /bin/rm $out.r $out.t")
	store, err := localstore.Open(context.Background(), storepath.DefaultDir)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	sp, _ := storepath.DefaultDir.Parse(p)
	info, err := store.QueryPathInfo(context.Background(), sp)
	if err != nil {
		b.Fatal(err)
	}
	u := &push.Uploader{Target: discardTarget{}}
	b.SetBytes(int64(info.NarSize))
	for b.Loop() {
		if _, err := u.UploadNAR(context.Background(), info, nil); err != nil {
			b.Fatal(err)
		}
	}
}

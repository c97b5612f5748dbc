package substitute

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// QueryRealisation reads realisations/<id>.doi from the first cache that
// has it, over HTTP and file://; a .doi naming another output is refused.
func TestQueryRealisation(t *testing.T) {
	empty := newTestCache(t, storepath.DefaultDir, compress.None, "StoreDir: /nix/store\nPriority: 1\n")
	tc := newTestCache(t, storepath.DefaultDir, compress.None, "")
	out := makeItem(t, tc.storeDir, "ca-out", "x")
	dep := makeItem(t, tc.storeDir, "dep-out", "y")
	id := nixdb.DrvOutput{Hash: hash.Sum(hash.SHA256, []byte("drv")), Output: "out"}
	depID := nixdb.DrvOutput{Hash: hash.Sum(hash.SHA256, []byte("dep")), Output: "out"}
	js, err := worker.Realisation{ID: id.String(), OutPath: out.info.Path.Base(), Signatures: []string{"k-1:sig"},
		DependentRealisations: map[string]string{depID.String(): dep.info.Path.Base()}}.JSON()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(tc.dir, "realisations"), 0o755)
	tc.write("realisations/"+id.String()+".doi", []byte(js))
	for _, uri := range []string{tc.url(), tc.fileURL()} {
		e := newEnv(t, config(keysOf(tc), empty.url(), uri))
		r, c, err := e.s.QueryRealisation(context.Background(), id)
		if err != nil || r == nil || c.URI != uri || r.OutPath != out.info.Path || len(r.Signatures) != 1 ||
			r.DependentRealisations[depID] != dep.info.Path {
			t.Errorf("%s: QueryRealisation = %+v, %v, %v", uri, r, c, err)
		}
		if r, _, err := e.s.QueryRealisation(context.Background(), depID); r != nil || err != nil {
			t.Errorf("%s: a realisation no cache has: %+v, %v", uri, r, err)
		}
	}
	tc.write("realisations/"+depID.String()+".doi", []byte(js)) // the wrong id inside
	e := newEnv(t, config(keysOf(tc), tc.fileURL()))
	if _, _, err := e.s.QueryRealisation(context.Background(), depID); err == nil || !strings.Contains(err.Error(), "it is the realisation of") {
		t.Errorf("a .doi of another output: %v", err)
	}
}

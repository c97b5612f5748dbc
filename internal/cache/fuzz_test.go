package cache

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/silo-cache/silo/internal/compress"
)

// FuzzReceiveNAR feeds arbitrary upload bodies through verification: it
// must never panic, answer anything but a 4xx for bad input, or leave a
// committed blob behind.
func FuzzReceiveNAR(f *testing.F) {
	good := dirNAR("a", "x", "b", "y")
	f.Add(good)
	f.Add(fileNAR("hello"))
	for _, m := range []string{compress.Zstd, compress.XZ} {
		var buf bytes.Buffer
		w, _ := compress.NewWriter(m, &buf, 0)
		w.Write(good)
		w.Close()
		f.Add(buf.Bytes())
	}
	f.Add([]byte{})
	e := newEnv(f, Options{MaxNARSize: 1 << 20})
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := e.srv.receiveNAR(context.Background(), bytes.NewReader(body), 1<<20)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.status < 400 || he.status >= 500 {
				t.Fatalf("bad upload answered %v", err)
			}
			return
		}
		res.abort()
	})
}

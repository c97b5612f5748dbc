package daemon

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/worker"
)

type fuzzConn struct {
	io.Reader
	io.Writer
}

func (fuzzConn) Close() error { return nil }

// encodeRequest builds a seed: operations as a client would send them.
func encodeRequest(f func(e *worker.Encoder)) []byte {
	var b bytes.Buffer
	e := worker.NewEncoder(&b)
	f(e)
	e.Flush()
	return b.Bytes()
}

// FuzzServerRequest feeds arbitrary bytes to the server as a client's
// requests after the handshake: decoding must never panic, hang or
// allocate what the bytes merely claim, and every request ends in a reply,
// an error, or the end of the connection.
func FuzzServerRequest(f *testing.F) {
	dir := f.TempDir()
	dirs, err := nixconf.NewDirs(func(k string) (string, bool) {
		switch k {
		case "NIX_STORE_DIR":
			return dir + "/store", true
		case "NIX_STATE_DIR":
			return dir + "/state", true
		case "NIX_LOG_DIR":
			return dir + "/log", true
		case "NIX_CONF_DIR":
			return dir + "/conf", true
		}
		return "", false
	})
	if err != nil {
		f.Fatal(err)
	}
	settings := nixconf.Defaults(dirs)
	settings.Set("fsync-metadata", "false")
	settings.Set("gc-reserved-space", "0")
	srv := New(Options{Config: &nixconf.Config{Dirs: dirs, Settings: settings}})
	o, err := storeOptions(srv.opts.Store, settings, func(string) {})
	if err != nil {
		f.Fatal(err)
	}
	store, err := nixstore.Open(context.Background(), o)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	sp := dir + "/store/" + "00000000000000000000000000000000-x"
	nar := narFile([]byte("fuzz"))
	for _, seed := range [][]byte{
		encodeRequest(func(e *worker.Encoder) { e.Uint64(uint64(worker.OpIsValidPath)); e.String(sp) }),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpQueryValidPaths))
			e.Strings([]string{sp})
			e.Uint64(0)
		}),
		encodeRequest(func(e *worker.Encoder) { e.Uint64(uint64(worker.OpQueryPathInfo)); e.String(sp) }),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpAddToStore))
			e.String("f")
			e.String("fixed:r:sha256")
			e.Strings(nil)
			e.Bool(false)
			NewFramedWriterForTest(e, nar)
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpAddToStoreNar))
			e.String(sp)
			e.String("")
			e.String(sha256Hex(nar))
			e.Strings(nil)
			e.Uint64(0)
			e.Uint64(uint64(len(nar)))
			e.Bool(false)
			e.Strings(nil)
			e.String("")
			e.Bool(false)
			e.Bool(true)
			NewFramedWriterForTest(e, nar)
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpAddMultipleToStore))
			e.Bool(false)
			e.Bool(true)
			var inner bytes.Buffer
			ie := worker.NewEncoder(&inner)
			ie.Uint64(1)
			ie.WritePathInfo(sp, &worker.PathInfo{NarHash: sha256Hex(nar), NarSize: uint64(len(nar))}, true, 16)
			ie.Raw(nar)
			ie.Flush()
			NewFramedWriterForTest(e, inner.Bytes())
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpSetOptions))
			for range 12 {
				e.Uint64(0)
			}
			e.Uint64(1)
			e.String("keep-outputs")
			e.String("true")
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpQueryMissing))
			e.Strings([]string{sp + ".drv!out"})
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpCollectGarbage))
			e.Uint64(1)
			e.Strings(nil)
			e.Bool(false)
			e.Uint64(0)
			e.Uint64(0)
			e.Uint64(0)
			e.Uint64(0)
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpRegisterDrvOutput))
			e.String(`{"id":"sha256:` + sha256Hex(nil) + `!out","outPath":"00000000000000000000000000000000-x","signatures":[],"dependentRealisations":{}}`)
		}),
		encodeRequest(func(e *worker.Encoder) {
			e.Uint64(uint64(worker.OpAddBuildLog))
			e.String("00000000000000000000000000000000-x.drv")
			NewFramedWriterForTest(e, []byte("log"))
		}),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := newConn(srv, fuzzConn{bytes.NewReader(data), io.Discard}, &Peer{PID: -1, UID: -1, GID: -1, Trusted: true})
		c.minor = 34
		c.log = worker.NewLogChannel(c.enc, c.minor)
		c.store, c.dir = store, store.Dir()
		for {
			op, err := c.dec.Uint64()
			if err != nil {
				return
			}
			if err := c.perform(ctx, worker.Op(op)); err != nil {
				return
			}
		}
	})
}

// NewFramedWriterForTest writes data as one framed stream.
func NewFramedWriterForTest(e *worker.Encoder, data []byte) {
	w := worker.NewFramedWriter(e)
	w.Write(data)
	w.Close()
}

package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/worker"
)

// benchDaemon serves a fresh private store in-process (no real Nix
// needed) and returns its socket and store directory.
func benchDaemon(b *testing.B) (sock, storeDir string) {
	b.Helper()
	if os.Getenv("SILO_BENCH_NIX") != "" {
		return nixBenchDaemon(b)
	}
	root := b.TempDir()
	os.MkdirAll(root+"/conf", 0o755)
	os.WriteFile(root+"/conf/nix.conf", []byte("fsync-metadata = false\ngc-reserved-space = 0\nbuild-users-group =\n"), 0o644)
	env := map[string]string{"NIX_STORE_DIR": root + "/store", "NIX_STATE_DIR": root + "/state", "NIX_LOG_DIR": root + "/log",
		"NIX_CONF_DIR": root + "/conf", "HOME": root, "NIX_USER_CONF_FILES": ""}
	cfg, err := nixconf.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		b.Fatal(err)
	}
	sock = filepath.Join(root, "socket")
	l, err := Listen(sock, func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); New(Options{Config: cfg}).Serve(ctx, l) }()
	b.Cleanup(func() { cancel(); <-done })
	return sock, root + "/store"
}

// BenchmarkAddMultipleToStore imports closures of 300 small paths in one
// AddMultipleToStore, as nix copy --to does.
func BenchmarkAddMultipleToStore(b *testing.B) {
	sock, storeDir := benchDaemon(b)
	c := dialRaw(b, sock)
	const paths = 300
	var bytesPerOp int64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		var inner bytes.Buffer
		ie := worker.NewEncoder(&inner)
		ie.Uint64(paths)
		for j := range paths {
			nar := narFile(fmt.Appendf(nil, "path %d of closure %d\n%s", j, i, bytes.Repeat([]byte("x"), j*64)))
			p := sourcePath(b, storeDir, fmt.Sprintf("p%d", j), nar)
			ie.WritePathInfo(p, &worker.PathInfo{NarHash: sha256Hex(nar), NarSize: uint64(len(nar))}, true, 16)
			ie.Raw(nar)
		}
		ie.Flush()
		bytesPerOp = int64(inner.Len())
		b.StartTimer()
		c.enc.Uint64(uint64(worker.OpAddMultipleToStore))
		c.enc.Bool(false)
		c.enc.Bool(true)
		NewFramedWriterForTest(c.enc, inner.Bytes())
		if err := c.stderr(); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(bytesPerOp)
	b.ReportMetric(float64(paths*b.N)/b.Elapsed().Seconds(), "paths/s")
}

// BenchmarkQueryPathInfo asks for the info of a valid path, the hot path
// of nix path-info and nix copy.
func BenchmarkQueryPathInfo(b *testing.B) {
	sock, _ := benchDaemon(b)
	c := dialRaw(b, sock)
	p, err := c.addFile("info", []byte("queried\n"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c.enc.Uint64(uint64(worker.OpQueryPathInfo))
		c.enc.String(p)
		if err := c.stderr(); err != nil {
			b.Fatal(err)
		}
		c.dec.Uint64()
		if _, _, err := c.dec.ReadPathInfo(false, 34); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConcurrentImports imports 16 different 8 MiB paths at once
// (AddToStoreNar from 16 connections), as parallel nix copy jobs do.
func BenchmarkConcurrentImports(b *testing.B) {
	sock, storeDir := benchDaemon(b)
	const clients = 16
	cs := make([]*rawClient, clients)
	for i := range cs {
		cs[i] = dialRaw(b, sock)
	}
	for n := 0; b.Loop(); n++ {
		b.StopTimer()
		nars := make([][]byte, clients)
		paths := make([]string, clients)
		for i := range nars {
			nars[i] = narFile(append(fmt.Appendf(nil, "%d %d\n", n, i), bytes.Repeat([]byte{byte(i)}, 8<<20)...))
			paths[i] = sourcePath(b, storeDir, fmt.Sprintf("big%d", i), nars[i])
		}
		b.StartTimer()
		errs := make(chan error, clients)
		for i, c := range cs {
			go func() { errs <- c.addNar(paths[i], sha256Hex(nars[i]), uint64(len(nars[i])), nil, "", nars[i]) }()
		}
		for range clients {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(clients * len(nars[0])))
	}
}

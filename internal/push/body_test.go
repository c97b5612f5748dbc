package push

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// A streamed NAR body gives the same compressed NAR whether the transport
// copies it with WriteTo or reads it; it decompresses to the path's NAR;
// a NAR whose size differs from the database's fails either way.
func TestNarBodyWriteToAndRead(t *testing.T) {
	n := nixtest.Require(t)
	p := n.Build("body", "/bin/mkdir $out; /usr/bin/head -c 3000000 /dev/urandom > $out/r; echo hi > $out/s")
	store, err := localstore.Open(context.Background(), storepath.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sp, _ := storepath.DefaultDir.Parse(p)
	info, err := store.QueryPathInfo(context.Background(), sp)
	if err != nil {
		t.Fatal(err)
	}
	u := &Uploader{}
	body := func(info *localstore.PathInfo) *narBody {
		return &narBody{u: u, ctx: context.Background(), info: info, compression: "zstd"}
	}

	var viaWriteTo bytes.Buffer
	b1 := body(info)
	if _, err := b1.WriteTo(&viaWriteTo); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	b2 := body(info)
	viaRead, err := io.ReadAll(b2)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if err := b1.finish(); err != nil {
		t.Fatal(err)
	}
	if err := b2.finish(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaWriteTo.Bytes(), viaRead) || b1.fileSize != int64(len(viaRead)) || b2.fileSize != int64(len(viaRead)) {
		t.Fatalf("WriteTo gave %d bytes (fileSize %d), Read %d (fileSize %d)", viaWriteTo.Len(), b1.fileSize, len(viaRead), b2.fileSize)
	}
	dec, err := zstd.NewReader(bytes.NewReader(viaRead))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	hw := hash.NewWriter(hash.SHA256)
	if _, err := io.Copy(hw, dec); err != nil {
		t.Fatal(err)
	}
	if hw.Sum() != info.NarHash || hw.Size() != info.NarSize {
		t.Errorf("decompressed body: %s, %d bytes; want %s, %d", hw.Sum(), hw.Size(), info.NarHash, info.NarSize)
	}

	wrong := *info
	wrong.NarSize++
	if _, err := body(&wrong).WriteTo(io.Discard); err == nil || !strings.Contains(err.Error(), "was modified") {
		t.Errorf("WriteTo with a wrong NarSize: %v", err)
	}
	bw := body(&wrong)
	if _, err := io.ReadAll(bw); err == nil || !strings.Contains(err.Error(), "was modified") {
		t.Errorf("Read with a wrong NarSize: %v", err)
	}
	if err := bw.finish(); err == nil {
		t.Errorf("finish after a wrong NarSize: no error")
	}
}

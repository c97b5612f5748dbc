package nar

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// addSeeds adds the golden NARs (from the real Nix) and the malicious ones.
func addSeeds(f *testing.F) {
	for _, name := range goldenNames(f) {
		f.Add(readGolden(f, name, ".nar"))
	}
	for _, m := range maliciousNARs("/outside") {
		if len(m.nar) < 64<<10 {
			f.Add(m.nar)
		}
	}
}

// FuzzReader checks that Reader either rejects its input with ErrInvalid or
// accepts exactly the canonical NARs: what it accepts re-encodes through
// Writer to the same bytes.
func FuzzReader(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		w := NewWriter(&out)
		err := Copy(w, NewReader(bytes.NewReader(data)))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Writer refused what Reader accepted: %v", err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("accepted a non-canonical NAR: re-encoding gives %d bytes for %d", out.Len(), len(data))
		}
	})
}

// FuzzList checks that List and WriteListing agree on every input.
func FuzzList(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		l, lerr := List(bytes.NewReader(data))
		var streamed bytes.Buffer
		werr := WriteListing(&streamed, bytes.NewReader(data))
		if (lerr == nil) != (werr == nil) {
			t.Fatalf("List error %v, WriteListing error %v", lerr, werr)
		}
		if lerr != nil {
			return
		}
		js, _ := l.MarshalJSON()
		if !bytes.Equal(js, streamed.Bytes()) {
			t.Fatalf("List.MarshalJSON:\n%s\nWriteListing:\n%s", js, streamed.Bytes())
		}
	})
}

// FuzzRestore checks that Restore either creates a tree that dumps back to
// its input, or fails and leaves nothing behind.
func FuzzRestore(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "out")
		if err := Restore(context.Background(), bytes.NewReader(data), dir); err != nil {
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("failed restore (%v) left %v behind", err, entries)
			}
			return
		}
		var dumped bytes.Buffer
		if err := Dump(context.Background(), &dumped, dir); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dumped.Bytes(), data) {
			t.Fatalf("Dump(Restore(nar)) != nar: %s", firstDiff(dumped.Bytes(), data))
		}
	})
}

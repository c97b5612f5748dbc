package nixgc_test

import (
	"bytes"
	"testing"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/storepath"
)

// FuzzParseTempRoots: any file contents parse without panicking, into
// paths of the store directory each of which was NUL-terminated in the
// input.
func FuzzParseTempRoots(f *testing.F) {
	f.Add([]byte("/nix/store/00000000000000000000000000000000-a\x00/nix/store/11111111111111111111111111111111-b\x00"))
	f.Add([]byte("/nix/store/00000000000000000000000000000000-a\x00/nix/store/1111"))
	f.Add([]byte("d"))
	f.Add([]byte("\x00\x00/etc/passwd\x00/nix/store/../x\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range nixgc.ParseTempRoots(storepath.DefaultDir, data) {
			if p.Dir() != storepath.DefaultDir {
				t.Fatalf("%s is not in the store", p)
			}
			if !bytes.Contains(data, []byte(p.String()+"\x00")) {
				t.Fatalf("%s was not a terminated entry of %q", p, data)
			}
		}
	})
}

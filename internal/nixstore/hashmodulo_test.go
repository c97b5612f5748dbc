package nixstore

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
)

// naiveHashModulo is HashModuloSink over the whole input at once.
func naiveHashModulo(data []byte, modulus string) hash.Hash {
	s := bytes.Clone(data)
	var pos []int
	for j := 0; ; {
		i := bytes.Index(s[j:], []byte(modulus))
		if i < 0 {
			break
		}
		j += i
		pos = append(pos, j)
		clear(s[j : j+len(modulus)])
		j += len(modulus)
	}
	for _, p := range pos {
		s = append(s, fmt.Sprintf("|%d", p)...)
	}
	return hash.Sum(hash.SHA256, s)
}

// FuzzHashModulo: the streaming hash equals the one-shot one however the
// input is split.
func FuzzHashModulo(f *testing.F) {
	const mod = "0123456789abcdfghijklmnpqrsvwxyz"
	f.Add([]byte("xx"+mod+"yy"+mod), 3)
	f.Add([]byte(mod[:20]+mod+mod[5:]), 17)
	f.Add([]byte(mod+mod), 31)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		if split <= 0 {
			split = 1
		}
		m := newHashModulo(hash.SHA256, mod)
		for b := data; len(b) > 0; {
			n := min(split, len(b))
			m.Write(b[:n])
			b = b[n:]
		}
		if got, want := m.Sum(), naiveHashModulo(data, mod); got != want {
			t.Fatalf("streamed %v, want %v", got, want)
		}
	})
}

package nar

// Costs a hostile NAR can impose on a reader (issue 8): they must grow
// linearly with the NAR, and limits on objects and depth must hold.

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// deepNAR nests depth directories named by 255-byte names, each also
// holding one empty file.
func deepNAR(depth int) []byte {
	name := strings.Repeat("d", 255)
	var b bytes.Buffer
	b.Write(toks(magic))
	for range depth {
		b.Write(toks("(", "type", "directory", "entry", "(", "name", "a", "node", "(", "type", "regular", "contents", "", ")", ")",
			"entry", "(", "name", name, "node"))
	}
	b.Write(toks("(", "type", "directory", ")"))
	for range depth {
		b.Write(toks(")", ")"))
	}
	return b.Bytes()
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Reading, listing and re-encoding a NAR costs memory linear in its size,
// however deep it nests long names: four times the depth costs about four
// times as much, not sixteen (a reader building every entry's full path
// pays depth times name length per entry).
func TestHostileDeepNARCostsLinear(t *testing.T) {
	consumers := []struct {
		name string
		run  func(nr *Reader) error
	}{
		{"WriteReaderListing", func(nr *Reader) error { return WriteReaderListing(io.Discard, nr) }},
		{"Copy", func(nr *Reader) error {
			w := NewWriter(io.Discard)
			if err := Copy(w, nr); err != nil {
				return err
			}
			return w.Close()
		}},
		{"Next", func(nr *Reader) error {
			for {
				if _, err := nr.Next(); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
			}
		}},
	}
	const shallow, deep = 200, 800
	small, big := deepNAR(shallow), deepNAR(deep)
	for _, c := range consumers {
		t.Run(c.name, func(t *testing.T) {
			cost := func(data []byte) uint64 {
				return allocated(func() {
					nr := NewReader(bytes.NewReader(data))
					nr.SetLimits(Limits{MaxDepth: 1000})
					if err := c.run(nr); err != nil {
						t.Fatal(err)
					}
				})
			}
			cost(small) // warm up pools
			a, b := cost(small), cost(big)
			t.Logf("depth %d (%d KiB): %d KiB allocated; depth %d (%d KiB): %d KiB", shallow, len(small)>>10, a>>10, deep, len(big)>>10, b>>10)
			// Linear: b/a near deep/shallow = 4 (plus fixed buffers); quadratic: near 16.
			if b > 6*a+1<<20 {
				t.Errorf("depth x4 costs x%.1f in memory: not linear in the NAR", float64(b)/float64(a))
			}
			if b > 4*uint64(len(big))+1<<20 {
				t.Errorf("a %d KiB NAR made the reader allocate %d KiB", len(big)>>10, b>>10)
			}
		})
	}
}

// The Reader's limits on objects and depth hold, and errors say which.
func TestHostileReaderLimits(t *testing.T) {
	many := func(n int) []byte {
		var entries [][]byte
		for i := range n {
			entries = append(entries, entry(strings.Repeat("f", 4)+string(rune('a'+i/676))+string(rune('a'+i/26%26))+string(rune('a'+i%26)), regular("")))
		}
		return dirOf(entries...)
	}
	tests := []struct {
		name   string
		nar    []byte
		limits Limits
		want   string // "" means accepted
	}{
		{"objects at the limit", many(99), Limits{MaxObjects: 100}, ""},
		{"one object too many", many(100), Limits{MaxObjects: 100}, "more than 100 objects"},
		{"depth at the limit", deepNAR(9), Limits{MaxDepth: 10}, ""},
		{"one level too deep", deepNAR(10), Limits{MaxDepth: 10}, "nested deeper than 10"},
		{"default depth", deepNAR(DefaultMaxDepth), Limits{}, "nested deeper than 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nr := NewReader(bytes.NewReader(tt.nar))
			nr.SetLimits(tt.limits)
			err := WriteReaderListing(io.Discard, nr)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

package postgres

import (
	"testing"

	"github.com/silo-cache/silo/internal/pgtest"
)

// BenchmarkVersion measures the per-request cost of change detection:
// one round trip to the server.
func BenchmarkVersion(b *testing.B) {
	s, err := Open(ctx, pgtest.New(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if _, err := s.Version(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

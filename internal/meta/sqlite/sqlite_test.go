package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/metatest"
)

func TestConformance(t *testing.T) {
	metatest.Run(t, func(t *testing.T) meta.Store {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "silo.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// The admin commands write through their own connection while the server
// runs; the server must see their writes on its next call.
func TestTwoProcessesShareTheDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	server, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	admin, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	if _, err := server.Token(ctx, "t1"); err == nil {
		t.Fatal("token exists before it is created")
	}
	if err := admin.CreateToken(ctx, meta.Token{ID: "t1", Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Token(ctx, "t1"); err != nil {
		t.Errorf("server does not see the admin's new token: %v", err)
	}
	if err := admin.DeleteToken(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Token(ctx, "t1"); err == nil {
		t.Errorf("server still sees the revoked token")
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCache(ctx, meta.Cache{Name: "main", SecretKey: "k"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Cache(ctx, "main"); err != nil {
		t.Errorf("cache lost across reopen: %v", err)
	}
}

func BenchmarkVersion(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "silo.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.Version(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

package auth

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/meta"
)

func TestNewAndCheck(t *testing.T) {
	now := time.Now()
	text, rec, err := NewRandom("team-*", meta.PermPush, now.Add(time.Hour), "ci")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rec.Hash), text) || len(rec.Hash) != 32 {
		t.Errorf("record holds %d hash bytes", len(rec.Hash))
	}
	id, err := ID(text)
	if err != nil || id != rec.ID {
		t.Fatalf("ID(%q) = %q, %v; want %q", text, id, err, rec.ID)
	}
	if err := Check(rec, text, now); err != nil {
		t.Errorf("Check of the right token: %v", err)
	}
	tests := []struct {
		name string
		text string
		at   time.Time
	}{
		{"wrong secret", text[:len(text)-1] + "x", now},
		{"empty", "", now},
		{"expired", text, now.Add(time.Hour)},
		{"long expired", text, now.Add(48 * time.Hour)},
	}
	for _, tt := range tests {
		if err := Check(rec, tt.text, tt.at); !errors.Is(err, ErrRejected) {
			t.Errorf("%s: Check = %v, want ErrRejected", tt.name, err)
		}
	}
	never := rec
	never.Expires = time.Time{}
	if err := Check(never, text, now.Add(100*365*24*time.Hour)); err != nil {
		t.Errorf("token without expiry rejected: %v", err)
	}
}

func TestIDMalformed(t *testing.T) {
	for _, s := range []string{"", "silo_", "silo_abc_def", "token", "silo_abcdefghij_", "Bearer x"} {
		if _, err := ID(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("ID(%q) = %v, want ErrMalformed", s, err)
		}
	}
}

func TestAllows(t *testing.T) {
	tests := []struct {
		pattern string
		perms   meta.Perm
		cache   string
		want    meta.Perm
		ok      bool
	}{
		{"*", meta.PermPull, "main", meta.PermPull, true},
		{"*", meta.PermPull, "main", meta.PermPush, false},
		{"main", meta.PermPush, "main", meta.PermPull, true},
		{"main", meta.PermPush, "other", meta.PermPull, false},
		{"team-*", meta.PermAdmin, "team-a", meta.PermPush, true},
		{"team-*", meta.PermAdmin, "teamb", meta.PermPull, false},
		{"main", meta.PermPull | meta.PermPush, "main", meta.PermAdmin, false},
	}
	for _, tt := range tests {
		if got := Allows(meta.Token{CachePattern: tt.pattern, Perms: tt.perms}, tt.cache, tt.want); got != tt.ok {
			t.Errorf("Allows(%q %s, %q, %s) = %v", tt.pattern, PermString(tt.perms), tt.cache, PermString(tt.want), got)
		}
	}
}

func TestFromRequest(t *testing.T) {
	tests := []struct {
		header string
		text   string
		ok     bool
	}{
		{"", "", false},
		{"Bearer silo_x", "silo_x", true},
		{"Basic OnNpbG9feA==", "silo_x", true}, // ":silo_x", Nix's netrc with no login
		{"Digest foo", "", true},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest("GET", "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		text, ok := FromRequest(r)
		if text != tt.text || ok != tt.ok {
			t.Errorf("FromRequest(%q) = %q, %v; want %q, %v", tt.header, text, ok, tt.text, tt.ok)
		}
	}
}

func TestNewRejects(t *testing.T) {
	if _, _, err := NewRandom("[", meta.PermPull, time.Time{}, ""); err == nil {
		t.Errorf("bad pattern accepted")
	}
	if _, _, err := NewRandom("*", 0, time.Time{}, ""); err == nil {
		t.Errorf("token without permissions accepted")
	}
}

func FuzzID(f *testing.F) {
	text, _, _ := NewRandom("*", meta.PermPull, time.Time{}, "")
	for _, s := range []string{text, "", "silo_", "silo_abcdefghij_x", "silo__", "Bearer silo_x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ID(s)
		if err == nil && (len(id) != 10 || !strings.HasPrefix(s, "silo_"+id+"_")) {
			t.Errorf("ID(%q) = %q: not the embedded ID", s, id)
		}
	})
}

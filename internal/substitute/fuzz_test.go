package substitute

import (
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/storepath"
)

func FuzzParseCacheURI(f *testing.F) {
	for _, s := range []string{"https://cache.nixos.org/", "file:///tmp/c?store=/fnord/store&priority=5",
		"http://h/x?trusted=1&want-mass-query=0&compression=xz", "s3://bucket", "file://", "http://%zz?priority=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		c, _, _, err := parseCacheURI(uri, storepath.DefaultDir, &recLogger{})
		if err != nil {
			return
		}
		if !strings.HasPrefix(c.URI, "http://") && !strings.HasPrefix(c.URI, "https://") && !strings.HasPrefix(c.URI, "file://") {
			t.Errorf("parseCacheURI(%q).URI = %q", uri, c.URI)
		}
		if strings.Contains(c.URI, "?") && !strings.Contains(strings.SplitN(uri, "?", 2)[0], "?") {
			t.Errorf("parameters left in URI %q", c.URI)
		}
	})
}

func FuzzParseCacheInfo(f *testing.F) {
	f.Add([]byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"))
	f.Add([]byte("Priority: x\n"))
	f.Add([]byte("no colon\n:\nStoreDir:\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parseCacheInfo(data)
	})
}

func TestParseCacheURI(t *testing.T) {
	tests := []struct {
		uri, want, store string
		prio             int
		trusted, mass    bool
		err              string
	}{
		{uri: "https://cache.nixos.org/", want: "https://cache.nixos.org", store: "/nix/store"},
		{uri: "file:///tmp/c?store=/fnord/store", want: "file:///tmp/c", store: "/fnord/store"},
		{uri: "http://h/c?priority=7&trusted=true&want-mass-query=1", want: "http://h/c", store: "/nix/store", prio: 7, trusted: true, mass: true},
		{uri: "daemon", err: "only http://, https:// and file:// binary caches"},
		{uri: "http://h?priority=high", err: "setting 'priority' has invalid value 'high'"},
		{uri: "http://h?trusted=maybe", err: "Boolean setting 'trusted' has invalid value 'maybe'"},
	}
	for _, tt := range tests {
		c, prio, mass, err := parseCacheURI(tt.uri, storepath.DefaultDir, &recLogger{})
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.uri, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.uri, err)
			continue
		}
		gotPrio, gotMass := 0, false
		if prio != nil {
			gotPrio = *prio
		}
		if mass != nil {
			gotMass = *mass
		}
		if c.URI != tt.want || string(c.StoreDir) != tt.store || gotPrio != tt.prio || c.Trusted != tt.trusted || gotMass != tt.mass {
			t.Errorf("%s: %+v prio %d mass %v", tt.uri, c, gotPrio, gotMass)
		}
	}
	log := &recLogger{}
	parseCacheURI("http://h?bogus=1&compression=zstd", storepath.DefaultDir, log)
	if log.text() != "warning: unknown setting 'bogus'" {
		t.Errorf("warnings: %q", log.text())
	}
}

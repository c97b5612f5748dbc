package netrc

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLookup(t *testing.T) {
	const data = `# a comment
machine 127.0.0.1 password tok1
machine cache.example.org login alice password "with space\" and quote"
machine cache.example.org password second-is-ignored
macdef init
machine evil password fromMacro

default login anon password dflt
`
	f := Parse(data)
	tests := []struct {
		host string
		want Entry
		ok   bool
	}{
		{"127.0.0.1", Entry{Password: "tok1"}, true},
		{"cache.example.org", Entry{Login: "alice", Password: `with space" and quote`}, true},
		{"evil", Entry{Login: "anon", Password: "dflt"}, true},
		{"other", Entry{Login: "anon", Password: "dflt"}, true},
	}
	for _, tt := range tests {
		got, ok := f.Lookup(tt.host)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v, %v", tt.host, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := Parse("machine a password b").Lookup("c"); ok {
		t.Error("a host without entry and no default matched")
	}
	if e, ok := Parse("machine a\npassword b login c").Lookup("a"); !ok || e.Password != "b" || e.Login != "c" {
		t.Errorf("tokens across lines: %+v %v", e, ok)
	}
}

func TestRead(t *testing.T) {
	f, err := Read(filepath.Join(t.TempDir(), "missing"))
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if _, ok := f.Lookup("x"); ok {
		t.Error("missing file has entries")
	}
	p := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(p, []byte("machine h password p\n"), 0o600)
	if f, err = Read(p); err != nil {
		t.Fatal(err)
	}
	if e, _ := f.Lookup("h"); e.Password != "p" {
		t.Errorf("Lookup after Read = %+v", e)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("machine h login l password p\ndefault password d\n")
	f.Add("macdef x\nline\n\nmachine \"q\\\"\" password \"unterminated")
	f.Fuzz(func(t *testing.T, data string) {
		nf := Parse(data)
		nf.Lookup("h")
		nf.Lookup("")
	})
}

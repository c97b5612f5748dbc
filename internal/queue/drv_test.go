package queue

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDrvOutputs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  bool
	}{
		{`Derive([("out","/nix/store/6l405hcr875xc7sk1b5vshs6xjx3v29a-t2","","")],[],[],"x86_64-linux","/bin/sh",[],[])`,
			[]string{"/nix/store/6l405hcr875xc7sk1b5vshs6xjx3v29a-t2"}, false},
		{`Derive([("dev","/nix/store/a-x-dev","",""),("out","/nix/store/b-x","","")],[]`,
			[]string{"/nix/store/a-x-dev", "/nix/store/b-x"}, false},
		{`Derive([("out","/nix/store/c-src","r:sha256","0a1b")],`, []string{"/nix/store/c-src"}, false},
		{`Derive([("out","","r:sha256","")],`, nil, false}, // floating CA: no path yet
		{`Derive([("o\"ut","/nix/store/d-\\q","","")]`, []string{`/nix/store/d-\q`}, false},
		{`Derive([])`, nil, false},
		{`Derive([("out","/nix/store/x"`, nil, true},
		{`Derive([("out")],`, nil, true},
		{`{"out": "/nix/store/x"}`, nil, true},
		{``, nil, true},
	}
	for _, tt := range tests {
		got, err := parseDrvOutputs(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("parseDrvOutputs(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" && !tt.err {
			t.Errorf("parseDrvOutputs(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseDrvOutputs(f *testing.F) {
	f.Add(`Derive([("out","/nix/store/6l405hcr875xc7sk1b5vshs6xjx3v29a-t2","","")],[],[],"x86_64-linux","/bin/sh",[],[])`)
	f.Add(`Derive([("a","b\\","c\"","d"),("e","","","")]`)
	f.Fuzz(func(t *testing.T, s string) { parseDrvOutputs(s) })
}

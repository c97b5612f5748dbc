package nixconf

import (
	"strings"
	"testing"
)

// FuzzApply feeds arbitrary configuration text to the nix.conf parser: it
// must never panic, and whatever it accepts must print and re-read to the
// same settings.
func FuzzApply(f *testing.F) {
	f.Add("keep-outputs = true\nextra-substituters = a b\n# c\n")
	f.Add("include /nonexistent\n!include x\n")
	f.Add("sandbox = relaxed\nmax-jobs = auto\naccess-tokens = a=b c\nexperimental-features = flakes bogus\n")
	f.Fuzz(func(t *testing.T, conf string) {
		s := Defaults(&Dirs{Conf: "/etc/nix"})
		if err := s.Apply(conf, "/fuzz/nix.conf"); err != nil {
			return
		}
		again := Defaults(&Dirs{Conf: "/etc/nix"})
		var b strings.Builder
		for _, name := range Names() {
			if v := s.String(name); v != "" && !strings.ContainsAny(v, "#\n") {
				b.WriteString(name + " = " + v + "\n")
			} else if v == "" {
				b.WriteString(name + " =\n")
			}
		}
		if err := again.Apply(b.String(), "/fuzz/again.conf"); err != nil {
			t.Fatalf("re-reading printed settings: %v\n%s", err, b.String())
		}
	})
}

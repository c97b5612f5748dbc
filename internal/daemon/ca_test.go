package daemon

import (
	"regexp"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/worker"
)

// stripANSI removes terminal colours, as the Nix client does when its
// stderr is not a terminal (Nix colours the arguments of its messages).
func stripANSI(s string) string { return ansi.ReplaceAllString(s, "") }

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestRealisations registers and queries CA derivation output
// realisations (ca-derivations), byte for byte as nix-daemon answers.
func TestRealisations(t *testing.T) {
	script := func(s *testStore) []string {
		c := dialRaw(t, s.sock)
		defer c.conn.Close()
		p, err := c.addFile("realised", []byte("realised output\n"))
		if err != nil {
			t.Fatal(err)
		}
		q, _ := c.addFile("other", []byte("another output\n"))
		id := "sha256:" + strings.Repeat("ab", 32) + "!out"
		register := func(out string) string {
			c.enc.Uint64(uint64(worker.OpRegisterDrvOutput))
			c.enc.String(`{"dependentRealisations":{},"id":"` + id + `","outPath":"` + base(out) + `","signatures":["k:sig"]}`)
			if err := c.stderr(); err != nil {
				return "error: " + stripANSI(err.Error())
			}
			return "ok"
		}
		query := func(id string) []string {
			c.enc.Uint64(uint64(worker.OpQueryRealisation))
			c.enc.String(id)
			if err := c.stderr(); err != nil {
				return []string{"error: " + err.Error()}
			}
			ss, err := c.dec.Strings()
			if err != nil {
				t.Fatal(err)
			}
			return ss
		}
		out := []string{register(p)}
		out = append(out, query(id)...)
		out = append(out, register(q), register(p))
		out = append(out, query("sha256:"+strings.Repeat("cd", 32)+"!out")...)
		bad := query("not-an-id")
		out = append(out, boolStr(len(bad) == 1 && strings.HasPrefix(bad[0], "error: ")))
		// The output map of a derivation that is not valid is an error.
		c.enc.Uint64(uint64(worker.OpQueryDerivationOutputMap))
		c.enc.String(s.store + "/" + strings.Repeat("0", 32) + "-x.drv")
		if err := c.stderr(); err != nil {
			out = append(out, "error: "+stripANSI(err.Error()))
		}
		return out
	}
	compareWithNix(t, "experimental-features = nix-command ca-derivations\n", script)
}

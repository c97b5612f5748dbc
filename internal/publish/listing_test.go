package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixtest"
)

// listingScript builds a tree with every kind of NAR entry, names Nix's JSON
// writer must escape, and file sizes that need padding.
const listingScript = `export PATH=/usr/bin:/bin
mkdir -p $out/sub/deeper $out/empty-dir
echo hello > $out/sub/file
: > $out/empty
printf '#!/bin/sh\n' > $out/sub/run; chmod +x $out/sub/run
ln -s sub/file $out/link
ln -s /nonexistent/target $out/dangling
printf x > "$out/we\"ird\\name	tab"
printf ab > "$out/$(printf 'ctl\001x\177\303\251')"
head -c 100001 /dev/urandom > $out/sub/deeper/big
`

// TestListingMatchesNix compares writeListing with the .ls files Nix 2.8
// writes (nix copy --to file://...?write-nar-listing=true), byte for byte,
// and the NAR size the walk computes with the size Nix registered.
func TestListingMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	paths := []string{
		n.Build("listing-tree", listingScript),
		n.Build("listing-file", `printf '1234567' > $out`),
		n.Build("listing-exec", `PATH=/usr/bin:/bin; echo '#!/bin/sh' > $out; chmod +x $out`),
		n.Build("listing-link", `PATH=/usr/bin:/bin; ln -s /some/where $out`),
	}
	cache := t.TempDir()
	n.Run("nix", append([]string{"copy", "--to", "file://" + cache + "?write-nar-listing=true&compression=none"}, paths...)...)
	var infos []struct {
		Path    string `json:"path"`
		NarSize int64  `json:"narSize"`
	}
	if err := json.Unmarshal([]byte(n.Run("nix", append([]string{"path-info", "--json"}, paths...)...)), &infos); err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		t.Run(filepath.Base(info.Path), func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(cache, strings.SplitN(filepath.Base(info.Path), "-", 2)[0]+".ls"))
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			size, err := writeListing(context.Background(), &got, info.Path)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got.String()); diff != "" {
				t.Errorf("listing differs from Nix's (-nix +silo):\n%s", diff)
			}
			if size != info.NarSize {
				t.Errorf("walk computed NAR size %d, Nix registered %d", size, info.NarSize)
			}
		})
	}
}

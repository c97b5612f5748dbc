package builtins

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixtest"
)

// TestFetchurlMatchesNix fetches file:// URLs (a flat executable file and
// an xz-compressed NAR to unpack) with the real Nix's <nix/fetchurl.nix>
// and with Fetchurl, and compares the results.
func TestFetchurlMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	dir := t.TempDir()
	nonce := nixtest.Nonce()
	file := filepath.Join(dir, "tool-"+nonce)
	os.WriteFile(file, []byte("#!/bin/sh\necho "+nonce+"\n"), 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "sub/f"), []byte(nonce), 0o644)
	os.Symlink("sub/f", filepath.Join(tree, "link"))
	narXZ := filepath.Join(dir, "tree.nar.xz")
	dump := exec.Command("sh", "-c", "nix-store --dump \"$1\" | xz > \"$2\"", "sh", tree, narXZ)
	dump.Env = n.Env()
	if out, err := dump.CombinedOutput(); err != nil {
		t.Fatalf("nix-store --dump | xz: %v: %s", err, out)
	}
	narHash := strings.TrimSpace(n.Run("nix", "hash", "path", "--type", "sha256", "--base32", tree))
	fileHash := strings.TrimSpace(n.Run("nix", "hash", "file", "--type", "sha256", "--base32", file))
	exe := filepath.Join(dir, "exe")
	os.WriteFile(exe, []byte("#!/bin/sh\necho "+nonce+"\n"), 0o755)
	exeHash := strings.TrimSpace(n.Run("nix", "hash", "path", "--type", "sha256", "--base32", exe))
	tests := []struct {
		name, args string
		env        map[string]string
	}{
		{"flat executable", fmt.Sprintf(`url = "file://%s"; sha256 = "%s"; executable = true;`, file, exeHash),
			map[string]string{"url": "file://" + file, "executable": "1", "outputHashMode": "recursive"}},
		{"flat", fmt.Sprintf(`url = "file://%s"; sha256 = "%s";`, file, fileHash),
			map[string]string{"url": "file://" + file, "outputHashMode": "flat", "outputHashAlgo": "sha256", "outputHash": fileHash}},
		{"unpack nar.xz", fmt.Sprintf(`url = "file://%s"; sha256 = "%s"; unpack = true;`, narXZ, narHash),
			map[string]string{"url": "file://" + narXZ, "unpack": "1", "outputHashMode": "recursive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expr := fmt.Sprintf(`import <nix/fetchurl.nix> { %s }`, tt.args)
			var res []struct {
				Outputs map[string]string `json:"outputs"`
			}
			js, err := n.Try("nix", "build", "--json", "--no-link", "--impure", "--expr", expr)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(js), &res); err != nil || len(res) != 1 {
				t.Fatalf("nix build: %v", err)
			}
			out := filepath.Join(t.TempDir(), "out")
			tt.env["out"] = out
			if err := Fetchurl(context.Background(), tt.env, FetchOptions{}); err != nil {
				t.Fatal(err)
			}
			want, got := treeWithModes(t, res[0].Outputs["out"]), treeWithModes(t, out)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("fetched result differs from Nix's (-nix +silo):\n%s", diff)
			}
		})
	}
}

func TestFetchurlHTTP(t *testing.T) {
	content := []byte("served content")
	h := hash.Sum(hash.SHA256, content)
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.Path)
		if _, pass, ok := r.BasicAuth(); !ok || pass != "secret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/mirror/sha256/" + h.Base16(), "/file":
			w.Write(content)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	netrc := "machine 127.0.0.1 login x password secret\n"
	ctx := context.Background()
	env := func(out string) map[string]string {
		return map[string]string{"out": out, "url": srv.URL + "/missing", "outputHashMode": "flat", "outputHashAlgo": "sha256", "outputHash": h.Nix32()}
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := Fetchurl(ctx, env(out), FetchOptions{Netrc: netrc, HashedMirrors: []string{srv.URL + "/nothing", srv.URL + "/mirror"}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !bytes.Equal(b, content) {
		t.Errorf("fetched %q", b)
	}
	if len(seen) != 2 || seen[1] != "/mirror/sha256/"+h.Base16() {
		t.Errorf("requests %q", seen)
	}
	// Without credentials the server refuses, and the error names the URL.
	out2 := filepath.Join(t.TempDir(), "out")
	e := env(out2)
	e["url"] = srv.URL + "/file"
	if err := Fetchurl(ctx, e, FetchOptions{}); err == nil || !strings.Contains(err.Error(), "unable to download '"+srv.URL+"/file': HTTP error 401") {
		t.Errorf("no credentials: %v", err)
	}
	if err := Fetchurl(ctx, e, FetchOptions{Netrc: "default login a password secret"}); err != nil {
		t.Errorf("default netrc entry: %v", err)
	}
	if err := Fetchurl(ctx, map[string]string{"out": out2 + "x", "url": "ftp://x"}, FetchOptions{}); err == nil {
		t.Error("ftp accepted")
	}
	if _, _, ok := netrcLookup("machine other password p\nmachine 127.0.0.1 login l password q", "127.0.0.1"); !ok {
		t.Error("netrc second machine not found")
	}
	if u, p, _ := netrcLookup("machine other password p\nmachine 127.0.0.1 login l password q", "127.0.0.1"); u != "l" || p != "q" {
		t.Errorf("netrc = %s %s", u, p)
	}
}

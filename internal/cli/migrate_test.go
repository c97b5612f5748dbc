package cli

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/pgtest"
)

// synthPath is a store path made up for a test, uploaded as Nix uploads.
type synthPath struct {
	path, narinfo string
	nar           []byte
}

// synthPaths makes n store paths of small files; each of the later ones
// refers to the one before it.
func synthPaths(t *testing.T, n int, prefix string) []synthPath {
	var out []synthPath
	for i := range n {
		var rnd [20]byte
		rand.Read(rnd[:])
		p := fmt.Sprintf("/nix/store/%s-%s-%d", nix32.Encode(rnd[:]), prefix, i)
		var refs []string
		if i > 0 && i%3 != 0 {
			refs = append(refs, filepath.Base(out[i-1].path))
		}
		content := fmt.Sprintf("path %d of %s\n%s\n", i, prefix, strings.Join(refs, " "))
		var buf bytes.Buffer
		w := nar.NewWriter(&buf)
		w.WriteHeader(&nar.Header{Type: nar.TypeRegular, Size: int64(len(content))})
		w.Write([]byte(content))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		h := hash.Sum(hash.SHA256, buf.Bytes())
		ni := fmt.Sprintf("StorePath: %s\nURL: nar/%s.nar\nCompression: none\nFileHash: %s\nFileSize: %d\nNarHash: %s\nNarSize: %d\nReferences: %s\n",
			p, h.Nix32(), h, buf.Len(), h, buf.Len(), strings.Join(refs, " "))
		out = append(out, synthPath{path: p, narinfo: ni, nar: buf.Bytes()})
	}
	return out
}

func upload(t *testing.T, base, token string, ps []synthPath) {
	t.Helper()
	put := func(url string, body []byte) {
		req, _ := http.NewRequest("PUT", url, bytes.NewReader(body))
		req.SetBasicAuth("", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("PUT %s: %s", url, resp.Status)
		}
	}
	for _, p := range ps {
		h := hash.Sum(hash.SHA256, p.nar)
		put(base+"/nar/"+h.Nix32()+".nar", p.nar)
		put(base+"/"+filepath.Base(p.path)[:32]+".narinfo", []byte(p.narinfo))
	}
}

// An embedded installation with a few hundred paths moves to PostgreSQL
// and S3 without pushing again: the real Nix substitutes every path from
// a replica on the new storage with the cache's old key and the old
// tokens, and running the move again adds what came since and nothing
// twice.
func TestMigrateData(t *testing.T) {
	n := nixtest.Require(t)
	s := newScaled(t)
	data := filepath.Join(t.TempDir(), "data")
	embedded := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(s.bin, append(args, "--data-dir", data)...)
		cmd.Env = s.env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("silo %v: %v", args, err)
		}
		return string(out)
	}
	embedded("init")
	key := publicKeyOf(t, embedded("cache", "create", "main"))
	push := strings.TrimSpace(embedded("token", "create", "--cache", "main", "--push"))
	old := startServe(t, s.bin, data)
	first := synthPaths(t, 300, "moved")
	upload(t, old.url+"/main", push, first)

	migrate := func() string {
		t.Helper()
		cmd := exec.Command(s.bin, "migrate-data", "--from", data, "--to", s.db, "--blobs", s.bucket.URL())
		cmd.Env = s.env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("silo migrate-data: %v\n%s", err, stderr.String())
		}
		return string(out)
	}
	out := migrate()
	for _, want := range []string{"caches  1 created", "tokens  1 created", "NARs    300 recorded", "paths   300 recorded"} {
		if !strings.Contains(out, want) {
			t.Errorf("first move: output lacks %q:\n%s", want, out)
		}
	}
	// More pushed to the old server, then moved again: only the new.
	second := synthPaths(t, 20, "later")
	upload(t, old.url+"/main", push, second)
	out = migrate()
	for _, want := range []string{"caches  0 created, 1 there already", "NARs    20 recorded, 300 there already", "paths   20 recorded, 300 there already"} {
		if !strings.Contains(out, want) {
			t.Errorf("second move: output lacks %q:\n%s", want, out)
		}
	}
	old.cmd.Process.Kill()
	old.cmd.Wait()

	if got := publicKeyOf(t, s.silo("cache", "info", "main")); got != key {
		t.Errorf("public key after the move %s, want %s", got, key)
	}
	r := s.replica()
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+push+"\n"), 0o600)
	var paths []string
	for _, p := range append(first, second...) {
		paths = append(paths, p.path)
	}
	store := filepath.Join(t.TempDir(), "store")
	// The cache is private: the old push token reads it.
	n.Run("nix", append([]string{"copy", "--from", r.url + "/main", "--to", store,
		"--option", "netrc-file", netrc, "--option", "trusted-public-keys", key}, paths...)...)
	for _, p := range []synthPath{first[0], first[299], second[19]} {
		got, err := os.ReadFile(filepath.Join(store, p.path))
		if err != nil || !bytes.Contains(p.nar, got) || len(got) == 0 {
			t.Errorf("%s substituted from the new storage: %q, %v", p.path, got, err)
		}
	}
	// The new storage takes pushes as well.
	upload(t, r.url+"/main", push, synthPaths(t, 3, "after"))
	if out := migrate(); !strings.Contains(out, "NARs    0 recorded, 320 there already") {
		t.Errorf("a third move did something:\n%s", out)
	}
}

// silo migrate brings a PostgreSQL schema up to date and says so; it
// refuses SQLite and URLs with passwords.
func TestMigrateCommand(t *testing.T) {
	db := pgtest.StartT(t, pgtest.Options{}).NewDatabase(t)
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	if code := Main(t.Context(), []string{"migrate", "--db", db}, env); code != 0 {
		t.Fatalf("silo migrate: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "from schema version 0 to") {
		t.Errorf("first migrate said %q", out.String())
	}
	out.Reset()
	if code := Main(t.Context(), []string{"migrate", "--db", db}, env); code != 0 || !strings.Contains(out.String(), "already") {
		t.Errorf("second migrate: exit %d, said %q", code, out.String())
	}
	for _, args := range [][]string{
		{"migrate"},
		{"migrate", "--db", "postgres://silo:hunter2@db/silo"},
		{"cache", "list", "--db", "postgres://silo@db/silo?password=hunter2"},
		{"cache", "list", "--db", "mysql://db/silo"},
	} {
		errOut.Reset()
		if code := Main(t.Context(), args, env); code != 2 {
			t.Errorf("silo %v: exit %d, want 2 (usage)", args, code)
		}
		if strings.Contains(errOut.String(), "hunter2") {
			t.Errorf("silo %v: the error shows the password: %s", args, errOut.String())
		}
	}
}
